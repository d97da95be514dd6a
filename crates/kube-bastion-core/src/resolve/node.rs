//! `nodes/proxy`: the preferred node address and the kubelet port, or another port over the
//! generic transport.

use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use super::{
    AppProtocol, Candidate, Candidates, EndpointState, Host, NodeAddressType, ResolveOptions,
    Target, TransportKind, address_not_allowed, bad_port, digits_port, is_decimal_of,
};
use crate::{ClusterView, DestinationPolicy, Scheme, Status};

pub(super) fn resolve(
    view: &dyn ClusterView,
    id: &crate::TargetId,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    let name = id.name();
    let node = view
        .node(name)
        .ok_or_else(|| Status::not_found("nodes", name))?;
    let address = preferred_address(&node, &options.kubelet.preferred_address_types)?;
    let host = node_host(address, &options.policy)?;
    let kubelet_port = kubelet_port(&node, options.kubelet.default_port);

    let port_text = id.port();
    let (scheme, transport, port) =
        if port_text.is_empty() || is_decimal_of(port_text, kubelet_port) {
            (Scheme::Https, TransportKind::Kubelet, kubelet_port)
        } else {
            let port = digits_port(port_text)
                .flatten()
                .ok_or_else(|| bad_port(port_text, "node", name))?;
            (
                id.scheme().unwrap_or(Scheme::Http),
                TransportKind::Generic,
                port,
            )
        };
    Ok(Target {
        scheme,
        scheme_explicit: id.scheme().is_some(),
        protocol: AppProtocol::Http,
        transport,
        candidates: Candidates::from([Candidate {
            host,
            port: Some(port),
            pod: None,
            state: EndpointState::Ready,
        }]),
        service: None,
        tls_server_name: Some(address.to_owned()),
    })
}

/// The first address of the first preferred type (outer loop over the preference, inner over
/// the node's order), else 500 `no preferred addresses found; known addresses: [...]` with
/// the list printed as Go's `%v` prints `[]NodeAddress`.
fn preferred_address<'n>(
    node: &'n Node,
    preference: &[NodeAddressType],
) -> Result<&'n str, Status> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or(&[]);
    for wanted in preference {
        if let Some(found) = addresses.iter().find(|a| a.type_ == wanted.as_str()) {
            return Ok(&found.address);
        }
    }
    let mut known = String::from("[");
    for (i, address) in addresses.iter().enumerate() {
        if i > 0 {
            known.push(' ');
        }
        let _ = write!(known, "{{{} {}}}", address.type_, address.address);
    }
    known.push(']');
    Err(Status::internal(format!(
        "no preferred addresses found; known addresses: {known}"
    )))
}

/// An IP literal (a zone makes it a link-local one, judged without the zone) is checked
/// here; anything else is a host name for the caller to resolve and check.
fn node_host(address: &str, policy: &DestinationPolicy) -> Result<Host, Status> {
    let literal = address.split_once('%').map_or(address, |(ip, _zone)| ip);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if address.contains('%') {
            // Go dials a zoned address as-is; zones only exist on link-local addresses.
            return Err(address_not_allowed());
        }
        policy.check(ip)?;
        return Ok(Host::Ip(ip));
    }
    if address.is_empty() {
        return Err(Status::bad_request("no addresses for hostname"));
    }
    Ok(Host::Name(address.to_owned()))
}

/// `status.daemonEndpoints.kubeletEndpoint.port` when it is a usable port, else `default`.
fn kubelet_port(node: &Node, default: u16) -> u16 {
    node.status
        .as_ref()
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .and_then(|k| u16::try_from(k.port).ok())
        .filter(|port| *port > 0)
        .unwrap_or(default)
}
