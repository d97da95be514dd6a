//! Kubernetes objects as YAML for the proxy's `MemoryCluster` (pods, Services with their
//! EndpointSlices, nodes), and the cluster and proxy config built from them.

use std::sync::Arc;
use std::time::Duration;

use kube_bastion::{DestinationPolicy, MemoryCluster, ProxyConfig, ProxyConfigBuilder};

/// A pod `ns/name` with IP `ip` (and no declared ports).
pub(crate) fn pod_yaml(ns: &str, name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"
    )
}

/// One Service endpoint: (pod name, IP, target port).
pub(crate) type Endpoint<'a> = (&'a str, &'a str, u16);

/// What an EndpointSlice endpoint's `conditions` say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conditions {
    /// `ready: true` alone.
    Ready,
    /// `serving: true` with `ready` and `terminating` spelled out: ready unless terminating.
    Serving { terminating: bool },
}

/// EndpointSlice `{service}-{index}` of Service `ns/service` with one IPv4 endpoint, whose
/// port is named `http` (optional appProtocol).
pub(crate) fn endpoint_slice_yaml(
    ns: &str,
    service: &str,
    index: usize,
    (pod, ip, target): Endpoint<'_>,
    app_protocol: Option<&str>,
    conditions: Conditions,
) -> String {
    let conditions = match conditions {
        Conditions::Ready => "    ready: true\n".to_owned(),
        Conditions::Serving { terminating } => format!(
            "    ready: {}\n    serving: true\n    terminating: {terminating}\n",
            !terminating
        ),
    };
    let app = app_protocol
        .map(|a| format!("  appProtocol: {a}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-{index}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nendpoints:\n- addresses: [\"{ip}\"]\n  conditions:\n{conditions}  targetRef:\n    kind: Pod\n    name: {pod}\n    namespace: {ns}\nports:\n- name: http\n  port: {target}\n  protocol: TCP\n{app}"
    )
}

/// A Service `ns/name` with one port (`port`, named `http`, optional appProtocol) and one
/// ready EndpointSlice per endpoint.
pub(crate) fn service_yaml(
    ns: &str,
    name: &str,
    port: u16,
    app_protocol: Option<&str>,
    endpoints: &[Endpoint<'_>],
) -> String {
    let app = app_protocol
        .map(|a| format!("    appProtocol: {a}\n"))
        .unwrap_or_default();
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: {port}\n{app}"
    );
    for (i, endpoint) in endpoints.iter().enumerate() {
        y.push_str("---\n");
        y.push_str(&endpoint_slice_yaml(
            ns,
            name,
            i,
            *endpoint,
            app_protocol,
            Conditions::Ready,
        ));
    }
    y
}

/// A Node `name` with one address of type `address_type` (`InternalIP`, `Hostname`, ...)
/// and a kubelet port.
pub(crate) fn node_yaml(
    name: &str,
    address_type: &str,
    address: &str,
    kubelet_port: u16,
) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  addresses:\n  - type: {address_type}\n    address: {address}\n  daemonEndpoints:\n    kubeletEndpoint:\n      Port: {kubelet_port}\n"
    )
}

/// A cluster from YAML documents joined with `---`.
pub(crate) fn cluster(docs: &[String]) -> Arc<MemoryCluster> {
    Arc::new(MemoryCluster::from_yaml(&docs.join("---\n")).expect("valid cluster YAML"))
}

/// A proxy config builder over `cluster` with loopback admitted and a 5 s connect timeout.
pub(crate) fn config_for(cluster: Arc<MemoryCluster>) -> ProxyConfigBuilder {
    ProxyConfig::builder(cluster)
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .connect_timeout(Duration::from_secs(5))
}

/// [`config_for`] the cluster of `docs`.
pub(crate) fn config(docs: &[String]) -> ProxyConfigBuilder {
    config_for(cluster(docs))
}
