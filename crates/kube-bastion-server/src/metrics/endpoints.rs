//! The balancer's view of every Service endpoint the cluster declares, as gauges.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use kube_bastion::{Balancer, ServiceKey};

use super::label;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_bastion::core::ClusterSnapshot;

/// Every (service port, endpoint address) pair the cluster declares, from EndpointSlices
/// and, for Services without slices, the Endpoints object.
/// (namespace, service, port name) and an endpoint address.
type EndpointRef = ((String, String, String), SocketAddr);

fn endpoint_addresses(snapshot: &ClusterSnapshot) -> BTreeSet<EndpointRef> {
    let mut out = BTreeSet::new();
    let mut sliced = BTreeSet::new();
    for slice in snapshot.iter::<EndpointSlice>(None) {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        sliced.insert((namespace.clone(), service.clone()));
        for port in slice.ports.iter().flatten() {
            let (Some(number), name) = (port.port, port.name.as_deref().unwrap_or("")) else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        let key = (namespace.clone(), service.clone(), name.to_owned());
                        out.insert((key, SocketAddr::new(ip, number)));
                    }
                }
            }
        }
    }
    for endpoints in snapshot.iter::<Endpoints>(None) {
        let namespace = endpoints.metadata.namespace.clone().unwrap_or_default();
        let name = endpoints.metadata.name.clone().unwrap_or_default();
        if sliced.contains(&(namespace.clone(), name.clone())) {
            continue;
        }
        for subset in endpoints.subsets.iter().flatten() {
            for port in subset.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let port_name = port.name.clone().unwrap_or_default();
                let key = (namespace.clone(), name.clone(), port_name);
                for address in subset.addresses.iter().flatten() {
                    if let Ok(ip) = address.ip.parse::<IpAddr>() {
                        out.insert((key.clone(), SocketAddr::new(ip, number)));
                    }
                }
            }
        }
    }
    out
}

/// Per-endpoint balancer state of every endpoint the balancer has seen: requests in
/// flight, consecutive failures, ejection and the latency estimate.
pub(crate) fn endpoint_health(snapshot: &ClusterSnapshot, balancer: &Balancer) -> String {
    let mut in_flight = String::new();
    let mut failures = String::new();
    let mut ejected = String::new();
    let mut latency = String::new();
    for ((namespace, service, port), addr) in endpoint_addresses(snapshot) {
        let key = ServiceKey::new(&namespace, &service, &port);
        let Some(snapshot) = balancer.endpoint(&key, addr) else {
            continue;
        };
        let labels = format!(
            "namespace=\"{}\",service=\"{}\",port=\"{}\",endpoint=\"{addr}\"",
            label(&key.namespace),
            label(&key.name),
            label(&key.port_name)
        );
        let _ = writeln!(
            in_flight,
            "kube_bastion_endpoint_in_flight_requests{{{labels}}} {}",
            snapshot.in_flight
        );
        let _ = writeln!(
            failures,
            "kube_bastion_endpoint_consecutive_failures{{{labels}}} {}",
            snapshot.consecutive_failures
        );
        let _ = writeln!(
            ejected,
            "kube_bastion_endpoint_ejected{{{labels}}} {}",
            u8::from(snapshot.ejected)
        );
        if let Some(estimate) = snapshot.latency {
            let _ = writeln!(
                latency,
                "kube_bastion_endpoint_latency_estimate_seconds{{{labels}}} {}",
                estimate.as_secs_f64()
            );
        }
    }
    format!(
        "# HELP kube_bastion_endpoint_in_flight_requests Requests in flight to a Service endpoint.\n\
         # TYPE kube_bastion_endpoint_in_flight_requests gauge\n{in_flight}\
         # HELP kube_bastion_endpoint_consecutive_failures Failures in a row of a Service endpoint.\n\
         # TYPE kube_bastion_endpoint_consecutive_failures gauge\n{failures}\
         # HELP kube_bastion_endpoint_ejected Whether passive health checking ejected the endpoint (1) or not (0).\n\
         # TYPE kube_bastion_endpoint_ejected gauge\n{ejected}\
         # HELP kube_bastion_endpoint_latency_estimate_seconds The balancer's peak-EWMA latency estimate.\n\
         # TYPE kube_bastion_endpoint_latency_estimate_seconds gauge\n{latency}\
         # HELP kube_bastion_balancer_tracked_endpoints Endpoints the balancer keeps state for.\n\
         # TYPE kube_bastion_balancer_tracked_endpoints gauge\n\
         kube_bastion_balancer_tracked_endpoints {}\n",
        balancer.tracked_endpoints()
    )
}
