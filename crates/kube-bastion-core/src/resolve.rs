//! Target resolution: from a [`ProxyRequest`] and a [`ClusterView`] to a [`Target`] (every
//! valid candidate endpoint, the scheme and the transport) or kube-apiserver's exact error.

use std::net::IpAddr;

use crate::{ClusterView, DestinationPolicy, ProxyRequest, Scheme, Status};

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

/// Where a candidate lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address, already approved by the destination policy.
    Ip(IpAddr),
    /// A DNS name (node `Hostname`/`*DNS` addresses): the caller resolves it once, judges
    /// every address with [`DestinationPolicy::check_resolved`] and dials what it checked.
    Name(String),
}

/// Readiness of a service endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Ready (or unknown readiness, which counts as ready).
    Ready,
    /// Not ready but serving while terminating: used only when nothing is ready.
    ServingTerminating,
}

/// One endpoint a request may go to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The address.
    pub host: Host,
    /// The port, or `None` when the id and the pod named none (dial the scheme's default).
    pub port: Option<u16>,
    /// The pod behind this endpoint, when known.
    pub pod: Option<String>,
    /// Readiness (always `Ready` for pods and nodes).
    pub state: EndpointState,
}

impl Candidate {
    /// `host[:port]` as upstream's location host prints it (`1.2.3.4`, `1.2.3.4:80`,
    /// `[fd00::1]:80`).
    pub fn authority(&self) -> String {
        todo!()
    }

    /// The port to dial: the explicit one or the scheme's default.
    pub fn dial_port(&self, scheme: Scheme) -> u16 {
        self.port.unwrap_or(scheme.default_port())
    }
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
    /// Every valid candidate, ready ones first; never empty.
    pub candidates: Vec<Candidate>,
    /// Set for services.
    pub service: Option<ServiceInfo>,
    /// The name to verify a TLS backend against, when there is a meaningful one
    /// (`svc.ns.svc` for services, the node address for kubelets).
    pub tls_server_name: Option<String>,
}

/// Resolves a parsed proxy request against a cluster view.
pub fn resolve(
    view: &dyn ClusterView,
    request: &ProxyRequest,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    let _ = (view, request, options);
    todo!()
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
        Self { policy: DestinationPolicy::kube_default(), kubelet: KubeletOptions::default() }
    }
}
