//! Target resolution: from a [`ProxyRequest`] and a [`ClusterView`] to a [`Target`] (every
//! valid candidate endpoint, the scheme and the transport) or kube-apiserver's exact error.
//!
//! * pods (`pods/proxy`): the pod's primary IP, the id's port, a container port *named* by
//!   the id, or the first declared container port;
//! * services (`services/proxy`): service port number → port name through the Service, then
//!   every endpoint of that port from the EndpointSlices labelled for the service (or the
//!   Endpoints object when there are none), each one checked against its pod;
//! * nodes (`nodes/proxy`): the preferred node address and the kubelet port, or another port
//!   over the generic transport.
//!
//! Every IP candidate passes the [`DestinationPolicy`]; node host names are left for the
//! caller to resolve once and judge with [`DestinationPolicy::check_resolved`].

mod node;
mod pod;
mod service;

use std::fmt;

use crate::go::quote as go_quote;
use crate::{ClusterView, DestinationPolicy, ProxyRequest, ResourceKind, Scheme, Status};

pub use crate::view::{Candidate, Candidates, EndpointState, Host, ServiceBackends};
pub use service::{
    BALANCER_ANNOTATION, DEFAULT_CLIENT_IP_AFFINITY_SECONDS, FORWARD_IDENTITY_ANNOTATION,
};

/// Node address types, in kube-apiserver's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeAddressType {
    /// `Hostname`.
    Hostname,
    /// `InternalDNS`.
    InternalDns,
    /// `InternalIP`.
    InternalIp,
    /// `ExternalDNS`.
    ExternalDns,
    /// `ExternalIP`.
    ExternalIp,
}

impl NodeAddressType {
    /// The name kube-apiserver uses (`Hostname`, `InternalDNS`, `InternalIP`,
    /// `ExternalDNS`, `ExternalIP`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAddressType::Hostname => "Hostname",
            NodeAddressType::InternalDns => "InternalDNS",
            NodeAddressType::InternalIp => "InternalIP",
            NodeAddressType::ExternalDns => "ExternalDNS",
            NodeAddressType::ExternalIp => "ExternalIP",
        }
    }
}

impl fmt::Display for NodeAddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node address type name that is not one of the five kube-apiserver knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown node address type {0:?}")]
pub struct UnknownNodeAddressType(pub String);

impl std::str::FromStr for NodeAddressType {
    type Err = UnknownNodeAddressType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "Hostname" => NodeAddressType::Hostname,
            "InternalDNS" => NodeAddressType::InternalDns,
            "InternalIP" => NodeAddressType::InternalIp,
            "ExternalDNS" => NodeAddressType::ExternalDns,
            "ExternalIP" => NodeAddressType::ExternalIp,
            _ => return Err(UnknownNodeAddressType(s.to_owned())),
        })
    }
}

/// How nodes' kubelets are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletOptions {
    /// Address preference (`--kubelet-preferred-address-types`); default Hostname,
    /// InternalDNS, InternalIP, ExternalDNS, ExternalIP.
    pub preferred_address_types: Vec<NodeAddressType>,
    /// Port used when a node has no daemon endpoint port (default 10250).
    pub default_port: u16,
}

/// Everything resolution needs besides the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Applied to every candidate address.
    pub policy: DestinationPolicy,
    /// Kubelet addressing.
    pub kubelet: KubeletOptions,
}

/// Which client (TLS identity) carries the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The generic proxy transport (pods, services, non-kubelet node ports).
    Generic,
    /// The kubelet transport (client certificate, kubelet CA).
    Kubelet,
}

/// How HTTP is spoken to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1 on plain connections; ALPN (h2, http/1.1) on TLS.
    Http,
    /// HTTP/2 over cleartext with prior knowledge (`kubernetes.io/h2c`).
    H2c,
}

/// The service behind a services/proxy target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The resolved service port name (possibly empty).
    pub port_name: String,
    /// `spec.sessionAffinity: ClientIP` timeout in seconds, when set.
    pub client_ip_affinity_seconds: Option<u32>,
    /// `metadata.annotations` value of `kube-bastion.io/balancer`, when set.
    pub balancer: Option<String>,
    /// Whether the Service asks for the caller's identity
    /// ([`FORWARD_IDENTITY_ANNOTATION`] is `"true"`).
    pub forward_identity: bool,
}

/// The result of resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The scheme to use (`http` when nothing chose one).
    pub scheme: Scheme,
    /// Whether the id named the scheme explicitly.
    pub scheme_explicit: bool,
    /// How HTTP is spoken.
    pub protocol: AppProtocol,
    /// Which client carries the request.
    pub transport: TransportKind,
    /// Every valid candidate, ready ones first; never empty. Shared: for a Service, usually
    /// the very list its [`ServiceBackends`] holds.
    pub candidates: Candidates,
    /// Set for services.
    pub service: Option<ServiceInfo>,
    /// The name to verify a TLS backend against, when there is a meaningful one
    /// (`svc.ns.svc` for services, the node address for kubelets).
    pub tls_server_name: Option<String>,
}

/// Resolves a parsed proxy request against a cluster view.
///
/// The checks run in kube-apiserver's order, so the first failing one picks the error:
/// the id (400 `invalid ... request`), the object (404), the address (400
/// `address not allowed`, or 500 for a node with no preferred address), then ports and
/// endpoints (503).
pub fn resolve(
    view: &dyn ClusterView,
    request: &ProxyRequest,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    let id = request.target_id()?;
    let namespace = request
        .namespace()
        .unwrap_or(crate::cluster::DEFAULT_NAMESPACE);
    match request.kind() {
        ResourceKind::Pod => pod::resolve(view, namespace, &id, options),
        ResourceKind::Service => service::resolve(view, namespace, &id, request.raw_id(), options),
        ResourceKind::Node => node::resolve(view, &id, options),
    }
}

/// A port written as decimal digits only (leading zeros allowed), which is what Go's
/// `url.URL.Port` accepts: `None` when `text` is not all digits, `Some(None)` when it is but
/// the value is above 65535.
pub(super) fn digits_port(text: &str) -> Option<Option<u16>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 5 {
        return Some(None);
    }
    Some(if digits.is_empty() {
        Some(0)
    } else {
        digits.parse().ok()
    })
}

/// Whether `text` is exactly how Go's `strconv.Itoa` writes `port` (no sign, no leading
/// zero): upstream compares the id's port with the kubelet port as strings.
pub(super) fn is_decimal_of(text: &str, port: u16) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.parse::<u16>() == Ok(port)
}

pub(super) fn bad_port(port: &str, kind: &str, name: &str) -> Status {
    Status::service_unavailable(format!(
        "invalid port {} for {kind} {}",
        go_quote(port),
        go_quote(name)
    ))
}

pub(super) fn address_not_allowed() -> Status {
    Status::bad_request("address not allowed")
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, in range.
pub(super) fn parse_go_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's parser accepts the same sign and digit forms.
    text.parse().ok()
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            preferred_address_types: vec![
                NodeAddressType::Hostname,
                NodeAddressType::InternalDns,
                NodeAddressType::InternalIp,
                NodeAddressType::ExternalDns,
                NodeAddressType::ExternalIp,
            ],
            default_port: 10250,
        }
    }
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self {
            policy: DestinationPolicy::kube_default(),
            kubelet: KubeletOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_int_parsing() {
        assert_eq!(parse_go_int("93"), Some(93));
        assert_eq!(parse_go_int("+93"), Some(93));
        assert_eq!(parse_go_int("093"), Some(93));
        assert_eq!(parse_go_int("-5"), Some(-5));
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("+"), None);
        assert_eq!(parse_go_int("9_3"), None);
        assert_eq!(parse_go_int("0x10"), None);
        assert_eq!(parse_go_int("99999999999999999999"), None);
        assert_eq!(parse_go_int(" 1"), None);
    }

    #[test]
    fn kubelet_port_is_a_string_comparison() {
        assert!(is_decimal_of("10250", 10250));
        assert!(!is_decimal_of("010250", 10250));
        assert!(!is_decimal_of("+10250", 10250));
        assert!(!is_decimal_of("10251", 10250));
        assert!(!is_decimal_of("", 10250));
        assert!(!is_decimal_of("1025000000", 10250));
        assert!(is_decimal_of("0", 0));
        assert!(!is_decimal_of("00", 0));
    }

    #[test]
    fn digit_ports() {
        assert_eq!(digits_port("80"), Some(Some(80)));
        assert_eq!(digits_port("010250"), Some(Some(10250)));
        assert_eq!(digits_port("0"), Some(Some(0)));
        assert_eq!(digits_port("000000000080"), Some(Some(80)));
        assert_eq!(digits_port("65536"), Some(None));
        assert_eq!(digits_port("99999999999999999999"), Some(None));
        assert_eq!(digits_port("+80"), None);
        assert_eq!(digits_port("http"), None);
        assert_eq!(digits_port(""), None);
    }

    #[test]
    fn authority_forms() {
        let candidate = |host, port| Candidate {
            host,
            port,
            pod: None,
            state: EndpointState::Ready,
        };
        let v4 = Host::Ip("1.2.3.4".parse().expect("ip"));
        let v6 = Host::Ip("fd00::1".parse().expect("ip"));
        assert_eq!(candidate(v4.clone(), None).authority(), "1.2.3.4");
        assert_eq!(candidate(v4, Some(80)).authority(), "1.2.3.4:80");
        assert_eq!(candidate(v6.clone(), None).authority(), "[fd00::1]");
        assert_eq!(candidate(v6, Some(80)).authority(), "[fd00::1]:80");
        assert_eq!(
            candidate(Host::Name("n.example".into()), Some(10250)).authority(),
            "n.example:10250"
        );
    }
}
