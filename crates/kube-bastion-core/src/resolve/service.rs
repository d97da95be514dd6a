//! `services/proxy`: service port number → port name through the Service, then every
//! endpoint of that port from the service's [`ServiceBackends`], filtered by the
//! destination policy.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use super::{AppProtocol, ResolveOptions, ServiceInfo, Target, TransportKind, parse_go_int};
use crate::go::quote as go_quote;
use crate::view::{ServiceBackends, Source};
use crate::{ClusterView, Scheme, Status};

pub(super) fn resolve(
    view: &dyn ClusterView,
    namespace: &str,
    id: &crate::TargetId,
    raw_id: &str,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    let name = id.name();
    let service = view.service(namespace, name);
    let port_name: &str = match parse_go_int(id.port()) {
        Some(number) => {
            let service = service
                .as_deref()
                .ok_or_else(|| Status::not_found("services", name))?;
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_deref())
                .unwrap_or(&[]);
            let port = ports
                .iter()
                .find(|p| i64::from(p.port) == number)
                .ok_or_else(|| {
                    Status::service_unavailable(format!(
                        "no service port {number} found for service {}",
                        go_quote(name)
                    ))
                })?;
            port.name.as_deref().unwrap_or("")
        }
        None => id.port(),
    };

    // Backends the view keeps (a snapshot's) are shared by requests: their filtered lists
    // are worth caching. Backends computed for this request alone are not.
    let (backends, kept) = match view.service_backends(namespace, name) {
        Some(backends) => (backends, true),
        None => (
            Arc::new(ServiceBackends::compute(view, namespace, name)),
            false,
        ),
    };
    match backends.source {
        Source::Missing => return Err(Status::not_found("endpoints", name)),
        Source::Endpoints { no_subsets: true } => {
            return Err(no_endpoints(name));
        }
        Source::Endpoints { no_subsets: false } | Source::Slices => {}
    }
    let group = backends.ports.iter().find(|p| &*p.name == port_name);
    let candidates = group
        .map(|g| g.candidates(&options.policy, kept))
        .unwrap_or_default();
    if candidates.is_empty() {
        return Err(no_endpoints(raw_id));
    }

    let service_port = service
        .as_deref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|spec| spec.ports.as_deref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
        });
    let app_protocol = service_port
        .and_then(|p| p.app_protocol.as_deref())
        .or_else(|| group.and_then(|g| g.app_protocol.as_deref()));
    let scheme = match id.scheme() {
        Some(scheme) => scheme,
        None => match app_protocol {
            Some("https" | "kubernetes.io/wss") => Scheme::Https,
            _ => Scheme::Http,
        },
    };
    let protocol = match (scheme, app_protocol) {
        (Scheme::Http, Some("kubernetes.io/h2c")) => AppProtocol::H2c,
        _ => AppProtocol::Http,
    };
    Ok(Target {
        scheme,
        scheme_explicit: id.scheme().is_some(),
        protocol,
        transport: TransportKind::Generic,
        candidates,
        service: Some(service_info(service.as_deref(), namespace, name, port_name)),
        tls_server_name: Some(service_dns_name(name, namespace)),
    })
}

/// `<name>.<namespace>.svc`.
fn service_dns_name(name: &str, namespace: &str) -> String {
    let mut out = String::with_capacity(name.len() + namespace.len() + 5);
    out.push_str(name);
    out.push('.');
    out.push_str(namespace);
    out.push_str(".svc");
    out
}

fn no_endpoints(name: &str) -> Status {
    Status::service_unavailable(format!(
        "no endpoints available for service {}",
        go_quote(name)
    ))
}

/// The session-affinity timeout kube-proxy uses when `ClientIP` affinity has no config.
pub const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: u32 = 10800;

/// The Service annotation that selects a balancing policy for one Service, overriding the
/// configured one (`kube_bastion::BalancerConfig::policy`).
///
/// Accepted values (case-insensitive, surrounding blanks ignored): `random`, `round-robin`
/// (also `roundrobin`, `round_robin`), `least-request` (also `leastrequest`,
/// `least_request`), `peak-ewma` (also `peakewma`, `peak_ewma`, `ewma`). Any other value
/// falls back to the configured policy and logs one warning per distinct value.
///
/// ```yaml
/// metadata:
///   annotations:
///     kube-bastion.io/balancer: least-request
/// ```
pub const BALANCER_ANNOTATION: &str = "kube-bastion.io/balancer";

/// The Service annotation with which a Service asks to be told who is calling it: with the
/// value `true` (case-insensitive, surrounding blanks ignored), requests proxied to its
/// endpoints through `services/proxy` carry the authenticated user in the front-proxy
/// headers `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group` and `X-Remote-Extra-<key>`,
/// as kube-apiserver's aggregator sends them to an extension apiserver. Any other value,
/// or none, sends no identity (kube-apiserver's behaviour for every proxy request).
/// Whatever the client sent under those names is removed in every case.
///
/// ```yaml
/// metadata:
///   annotations:
///     kube-bastion.io/forward-identity: "true"
/// ```
pub const FORWARD_IDENTITY_ANNOTATION: &str = "kube-bastion.io/forward-identity";

fn service_info(
    service: Option<&Service>,
    namespace: &str,
    name: &str,
    port_name: &str,
) -> ServiceInfo {
    let spec = service.and_then(|s| s.spec.as_ref());
    let client_ip_affinity_seconds = spec
        .filter(|spec| spec.session_affinity.as_deref() == Some("ClientIP"))
        .map(|spec| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_CLIENT_IP_AFFINITY_SECONDS)
        });
    let annotations = service.and_then(|s| s.metadata.annotations.as_ref());
    let balancer = annotations
        .and_then(|a| a.get(BALANCER_ANNOTATION))
        .cloned();
    let forward_identity = annotations
        .and_then(|a| a.get(FORWARD_IDENTITY_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    ServiceInfo {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port_name: port_name.to_owned(),
        client_ip_affinity_seconds,
        balancer,
        forward_identity,
    }
}
