//! `pods/proxy`: the pod's primary IP, the id's port, a container port *named* by the id,
//! or the first declared container port.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{
    AppProtocol, Candidate, Candidates, EndpointState, Host, ResolveOptions, Target, TransportKind,
    address_not_allowed, bad_port, digits_port,
};
use crate::go::quote as go_quote;
use crate::policy::parse_ip_lenient;
use crate::view::port_in_range;
use crate::{ClusterView, Scheme, Status};

pub(super) fn resolve(
    view: &dyn ClusterView,
    namespace: &str,
    id: &crate::TargetId,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    let name = id.name();
    let pod = view
        .pod(namespace, name)
        .ok_or_else(|| Status::not_found("pods", name))?;
    let ip = primary_pod_ip(&pod)
        .and_then(parse_ip_lenient)
        .ok_or_else(address_not_allowed)?;
    options.policy.check(ip)?;
    let port = match id.port() {
        "" => match first_container_port(&pod) {
            None => None,
            Some(number) => Some(
                port_in_range(number).ok_or_else(|| bad_port(&number.to_string(), "pod", name))?,
            ),
        },
        text => match digits_port(text) {
            Some(number) => Some(number.ok_or_else(|| bad_port(text, "pod", name))?),
            None => Some(named_container_port(&pod, text).ok_or_else(|| {
                Status::service_unavailable(format!(
                    "no container port {} found for pod {}",
                    go_quote(text),
                    go_quote(name)
                ))
            })?),
        },
    };
    let scheme = id.scheme().unwrap_or(Scheme::Http);
    Ok(Target {
        scheme,
        scheme_explicit: id.scheme().is_some(),
        protocol: AppProtocol::Http,
        transport: TransportKind::Generic,
        candidates: Candidates::from([Candidate {
            host: Host::Ip(ip),
            port,
            pod: Some(Arc::from(name)),
            state: EndpointState::Ready,
        }]),
        service: None,
        tls_server_name: None,
    })
}

/// `status.podIPs[0]`, or `status.podIP` when `podIPs` is empty (as the v1 → internal
/// conversion fills it).
fn primary_pod_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    match status.pod_ips.as_deref() {
        Some([first, ..]) => Some(first.ip.as_str()),
        _ => status.pod_ip.as_deref(),
    }
}

/// The first port of the first container (of `spec.containers`, in order) that declares
/// any; protocol and name ignored.
fn first_container_port(pod: &Pod) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find_map(|c| c.ports.as_deref().and_then(<[_]>::first))
        .map(|p| p.container_port)
}

/// The container port named `name` (first container, then first port, in order).
fn named_container_port(pod: &Pod, name: &str) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| port_in_range(p.container_port))
}
