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

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};

use crate::go::quote as go_quote;
use crate::policy::parse_ip_lenient;
use crate::{ClusterView, DestinationPolicy, ProxyRequest, ResourceKind, Scheme, Status};

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
    /// The pod behind this endpoint, when known (shared with the snapshot: cloning a
    /// candidate does not copy the name).
    pub pod: Option<Arc<str>>,
    /// Readiness (always `Ready` for pods and nodes).
    pub state: EndpointState,
}

impl Candidate {
    /// `host[:port]` as upstream's location host prints it (`1.2.3.4`, `1.2.3.4:80`,
    /// `[fd00::1]:80`).
    pub fn authority(&self) -> String {
        let mut out = String::new();
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => {
                let _ = write!(out, "{ip}");
            }
            Host::Ip(IpAddr::V6(ip)) => {
                let _ = write!(out, "[{ip}]");
            }
            Host::Name(name) => out.push_str(name),
        }
        if let Some(port) = self.port {
            let _ = write!(out, ":{port}");
        }
        out
    }

    /// The port to dial: the explicit one or the scheme's default.
    pub fn dial_port(&self, scheme: Scheme) -> u16 {
        self.port.unwrap_or(scheme.default_port())
    }
}

/// The candidate endpoints of a [`Target`]: an immutable list shared by reference count.
///
/// Cloning it is O(1) whatever its length: service resolution hands out the list its
/// [`ServiceBackends`] precomputed (when the destination policy keeps every address, the usual
/// case) instead of copying it per request, and a balancer can tell by
/// [`same_list`](Self::same_list) that two targets carry the very same list. It reads as a
/// slice (`candidates[0]`, `.len()`, `.iter()`).
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use kube_bastion_core::{Candidate, Candidates, EndpointState, Host};
///
/// let candidates: Candidates = (1..=3)
///     .map(|last| Candidate {
///         host: Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
///         port: Some(8080),
///         pod: None,
///         state: EndpointState::Ready,
///     })
///     .collect();
/// let shared = candidates.clone();
/// assert!(shared.same_list(&candidates));
/// assert_eq!(shared[2].authority(), "10.0.0.3:8080");
/// assert_eq!(shared.len(), 3);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Candidates(Arc<[Candidate]>);

impl Candidates {
    /// The shared list.
    pub fn as_arc(&self) -> &Arc<[Candidate]> {
        &self.0
    }

    /// Whether `self` and `other` are the same list (one allocation), not merely equal ones.
    pub fn same_list(&self, other: &Candidates) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The candidates as a slice.
    pub fn as_slice(&self) -> &[Candidate] {
        &self.0
    }
}

impl Default for Candidates {
    fn default() -> Self {
        Self(Arc::from([]))
    }
}

impl std::ops::Deref for Candidates {
    type Target = [Candidate];

    fn deref(&self) -> &[Candidate] {
        &self.0
    }
}

impl AsRef<[Candidate]> for Candidates {
    fn as_ref(&self) -> &[Candidate] {
        &self.0
    }
}

impl fmt::Debug for Candidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl From<Vec<Candidate>> for Candidates {
    fn from(list: Vec<Candidate>) -> Self {
        Self(Arc::from(list))
    }
}

impl From<Arc<[Candidate]>> for Candidates {
    fn from(list: Arc<[Candidate]>) -> Self {
        Self(list)
    }
}

impl<const N: usize> From<[Candidate; N]> for Candidates {
    fn from(list: [Candidate; N]) -> Self {
        Self(Arc::from(list))
    }
}

impl FromIterator<Candidate> for Candidates {
    fn from_iter<I: IntoIterator<Item = Candidate>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Candidates {
    type Item = &'a Candidate;
    type IntoIter = std::slice::Iter<'a, Candidate>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
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
        ResourceKind::Pod => resolve_pod(view, namespace, &id, options),
        ResourceKind::Service => resolve_service(view, namespace, &id, request.raw_id(), options),
        ResourceKind::Node => resolve_node(view, &id, options),
    }
}

fn resolve_pod(
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

/// Whether `ip` (exact text) is one of the pod's IPs.
fn pod_has_ip(pod: &Pod, ip: &str) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().any(|p| p.ip == ip),
        _ => status.pod_ip.as_deref() == Some(ip),
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

fn port_in_range(number: i32) -> Option<u16> {
    u16::try_from(number).ok()
}

/// A port written as decimal digits only (leading zeros allowed), which is what Go's
/// `url.URL.Port` accepts: `None` when `text` is not all digits, `Some(None)` when it is but
/// the value is above 65535.
fn digits_port(text: &str) -> Option<Option<u16>> {
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
fn is_decimal_of(text: &str, port: u16) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.parse::<u16>() == Ok(port)
}

fn bad_port(port: &str, kind: &str, name: &str) -> Status {
    Status::service_unavailable(format!(
        "invalid port {} for {kind} {}",
        go_quote(port),
        go_quote(name)
    ))
}

fn address_not_allowed() -> Status {
    Status::bad_request("address not allowed")
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, in range.
fn parse_go_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's parser accepts the same sign and digit forms.
    text.parse().ok()
}

fn resolve_service(
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
    let balancer = service
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(BALANCER_ANNOTATION))
        .cloned();
    ServiceInfo {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port_name: port_name.to_owned(),
        client_ip_affinity_seconds,
        balancer,
    }
}

fn resolve_node(
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

/// Where a service's endpoints came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// No EndpointSlice and no Endpoints object: 404 `endpoints "<name>" not found`.
    Missing,
    /// The Endpoints object (no slice is labelled for the service).
    Endpoints {
        /// It has zero subsets: 503 `no endpoints available for service "<name>"`.
        no_subsets: bool,
    },
    /// The EndpointSlices labelled for the service.
    Slices,
}

/// One endpoint address of one port, already validated against its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    ip: IpAddr,
    port: u16,
    pod: Arc<str>,
    state: EndpointState,
}

/// The endpoints of one service port name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortBackends {
    name: Box<str>,
    app_protocol: Option<Box<str>>,
    /// While building: ready entries first, then serving-while-terminating ones.
    entries: Vec<Entry>,
    /// The ready candidates, shared with every `Target` that takes them whole.
    ready: Candidates,
    /// The serving-while-terminating candidates.
    terminating: Candidates,
    /// Every ready candidate passes kube-apiserver's global-unicast rule.
    ready_global: bool,
    /// Every serving-while-terminating candidate passes it.
    terminating_global: bool,
    /// The last list a filtering policy produced.
    filtered: Filtered,
}

/// The last policy-filtered copy of a port's candidates, with the policy that made it, so a
/// policy that filters (deny CIDRs, or addresses outside kube-apiserver's rule admitted by
/// allow CIDRs) copies a Service's list once per snapshot instead of once per request, and
/// every request gets the same shared list (which the balancer binds its state to). Keyed
/// by the policy itself, compared by value. Not part of the backends' identity: clones
/// start empty and any two compare equal.
#[derive(Default)]
struct Filtered(arc_swap::ArcSwapOption<(DestinationPolicy, Candidates)>);

impl Filtered {
    fn get(&self, policy: &DestinationPolicy) -> Option<Candidates> {
        let cached = self.0.load();
        match cached.as_deref() {
            Some((made_by, list)) if made_by == policy => Some(list.clone()),
            _ => None,
        }
    }

    fn put(&self, policy: &DestinationPolicy, list: &Candidates) {
        self.0.store(Some(Arc::new((policy.clone(), list.clone()))));
    }
}

impl Clone for Filtered {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Filtered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Filtered {}

impl fmt::Debug for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Filtered")
    }
}

impl PortBackends {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            app_protocol: None,
            entries: Vec::new(),
            ready: Candidates::default(),
            terminating: Candidates::default(),
            ready_global: true,
            terminating_global: true,
            filtered: Filtered::default(),
        }
    }

    /// Orders, deduplicates and turns the entries into candidate lists.
    fn finish(&mut self) {
        // Stable: source order within each state.
        self.entries
            .sort_by_key(|e| e.state != EndpointState::Ready);
        let mut seen: HashSet<(IpAddr, u16)> = HashSet::with_capacity(self.entries.len());
        let (mut ready, mut terminating) = (Vec::new(), Vec::new());
        for entry in std::mem::take(&mut self.entries) {
            if !seen.insert((entry.ip, entry.port)) {
                continue;
            }
            let global = crate::policy::is_global_unicast(entry.ip);
            let candidate = Candidate {
                host: Host::Ip(entry.ip),
                port: Some(entry.port),
                pod: Some(Arc::clone(&entry.pod)),
                state: entry.state,
            };
            match entry.state {
                EndpointState::Ready => {
                    self.ready_global &= global;
                    ready.push(candidate);
                }
                EndpointState::ServingTerminating => {
                    self.terminating_global &= global;
                    terminating.push(candidate);
                }
            }
        }
        self.ready = Candidates::from(ready);
        self.terminating = Candidates::from(terminating);
    }

    /// The ready candidates the policy admits; only when there is none, the serving-while-
    /// terminating ones it admits. Without deny CIDRs, a list whose every address is global
    /// unicast is shared as it is (O(1), whatever its length); otherwise the admitted
    /// candidates are copied into a new list, once per policy when `cache` (the backends
    /// are a snapshot's, shared by requests): later requests share that copy.
    fn candidates(&self, policy: &DestinationPolicy, cache: bool) -> Candidates {
        let no_deny = policy.denied().is_empty();
        if no_deny && self.ready_global && !self.ready.is_empty() {
            return self.ready.clone();
        }
        if !cache {
            return self.filter(policy, no_deny);
        }
        if let Some(list) = self.filtered.get(policy) {
            return list;
        }
        let list = self.filter(policy, no_deny);
        self.filtered.put(policy, &list);
        list
    }

    fn filter(&self, policy: &DestinationPolicy, no_deny: bool) -> Candidates {
        let admitted = |list: &Candidates, global: bool| -> Candidates {
            if no_deny && global {
                return list.clone();
            }
            let allowed = |c: &&Candidate| match c.host {
                Host::Ip(ip) => policy.allows(ip),
                Host::Name(_) => false,
            };
            list.iter().filter(allowed).cloned().collect()
        };
        let ready = admitted(&self.ready, self.ready_global);
        if ready.is_empty() {
            admitted(&self.terminating, self.terminating_global)
        } else {
            ready
        }
    }
}

/// A service's endpoints, validated against the cluster and grouped by port name: what
/// service resolution selects from.
///
/// Built from the EndpointSlices labelled `kubernetes.io/service-name: <service>` (slices in
/// name order, endpoints in slice order; FQDN slices ignored), or, when the service has no
/// slice, from its Endpoints object (subsets in order, only `addresses`, never
/// `notReadyAddresses`). An address is kept only when its `targetRef` names a pod in the
/// service's namespace that exists and has exactly that IP among its `status.podIPs`
/// (kube-apiserver's protection against hand-written endpoints). Slice endpoints are kept
/// when `ready` is true or unset ([`EndpointState::Ready`]) or when they are `serving`
/// (true or unset) while `terminating` ([`EndpointState::ServingTerminating`]).
///
/// [`ClusterSnapshot`](crate::ClusterSnapshot) precomputes one per service; other
/// [`ClusterView`]s get them computed per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBackends {
    source: Source,
    ports: Vec<PortBackends>,
}

impl ServiceBackends {
    /// The backends of a service with neither EndpointSlices nor an Endpoints object.
    pub fn missing() -> Self {
        Self {
            source: Source::Missing,
            ports: Vec::new(),
        }
    }

    /// Computes the backends of `namespace/service` from `view`'s objects.
    pub fn compute(view: &dyn ClusterView, namespace: &str, service: &str) -> Self {
        let slices = view.endpoint_slices(namespace, service);
        let mut ports: Vec<PortBackends> = Vec::new();
        let valid = |ip: &str, target| validate(view, namespace, ip, target);
        let source = if !slices.is_empty() {
            let mut ordered: Vec<_> = slices.iter().collect();
            ordered.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            for slice in ordered {
                if slice.address_type == "FQDN" {
                    continue;
                }
                for port in slice.ports.iter().flatten() {
                    let Some(number) = port.port.and_then(port_in_range).filter(|p| *p > 0) else {
                        continue;
                    };
                    let name = port.name.as_deref().unwrap_or("");
                    let group = group_for(&mut ports, name, port.app_protocol.as_deref());
                    for endpoint in &slice.endpoints {
                        let conditions = endpoint.conditions.as_ref();
                        let ready = conditions.and_then(|c| c.ready) != Some(false);
                        let serving = conditions.and_then(|c| c.serving) != Some(false);
                        let terminating = conditions.and_then(|c| c.terminating) == Some(true);
                        let state = if ready {
                            EndpointState::Ready
                        } else if serving && terminating {
                            EndpointState::ServingTerminating
                        } else {
                            continue;
                        };
                        let Some(address) = endpoint.addresses.first() else {
                            continue;
                        };
                        if let Some((ip, pod)) = valid(address, endpoint.target_ref.as_ref()) {
                            group.entries.push(Entry {
                                ip,
                                port: number,
                                pod: pod.into(),
                                state,
                            });
                        }
                    }
                }
            }
            Source::Slices
        } else if let Some(endpoints) = view.endpoints(namespace, service) {
            let subsets = endpoints.subsets.as_deref().unwrap_or(&[]);
            for subset in subsets {
                let addresses = subset.addresses.as_deref().unwrap_or(&[]);
                for port in subset.ports.iter().flatten() {
                    let Some(number) = port_in_range(port.port).filter(|p| *p > 0) else {
                        continue;
                    };
                    let name = port.name.as_deref().unwrap_or("");
                    let group = group_for(&mut ports, name, port.app_protocol.as_deref());
                    for address in addresses {
                        if let Some((ip, pod)) = valid(&address.ip, address.target_ref.as_ref()) {
                            let state = EndpointState::Ready;
                            group.entries.push(Entry {
                                ip,
                                port: number,
                                pod: pod.into(),
                                state,
                            });
                        }
                    }
                }
            }
            Source::Endpoints {
                no_subsets: subsets.is_empty(),
            }
        } else {
            Source::Missing
        };
        for group in &mut ports {
            group.finish();
        }
        Self { source, ports }
    }

    /// The port names with at least one usable endpoint (before the destination policy), in
    /// first-seen order.
    pub fn port_names(&self) -> impl Iterator<Item = &str> {
        self.ports
            .iter()
            .filter(|p| !p.ready.is_empty() || !p.terminating.is_empty())
            .map(|p| &*p.name)
    }

    /// How many validated endpoint addresses the port `name` has (before the destination
    /// policy; ready and serving-while-terminating ones alike).
    pub fn endpoint_count(&self, port_name: &str) -> usize {
        self.ports
            .iter()
            .find(|p| &*p.name == port_name)
            .map_or(0, |p| p.ready.len() + p.terminating.len())
    }
}

/// The endpoint address `ip` with this `targetRef` is valid when the reference names a pod in
/// `namespace` that exists and has exactly `ip` among its pod IPs.
fn validate<'t>(
    view: &dyn ClusterView,
    namespace: &str,
    ip: &str,
    target: Option<&'t ObjectReference>,
) -> Option<(IpAddr, &'t str)> {
    let target = target?;
    if target.namespace.as_deref() != Some(namespace) {
        return None;
    }
    let pod_name = target.name.as_deref()?;
    let pod = view.pod(namespace, pod_name)?;
    if !pod_has_ip(&pod, ip) {
        return None;
    }
    Some((parse_ip_lenient(ip)?, pod_name))
}

fn group_for<'a>(
    ports: &'a mut Vec<PortBackends>,
    name: &str,
    app_protocol: Option<&str>,
) -> &'a mut PortBackends {
    let index = match ports.iter().position(|p| &*p.name == name) {
        Some(index) => index,
        None => {
            ports.push(PortBackends::new(name));
            ports.len() - 1
        }
    };
    let group = &mut ports[index];
    if group.app_protocol.is_none() {
        group.app_protocol = app_protocol.map(Into::into);
    }
    group
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
