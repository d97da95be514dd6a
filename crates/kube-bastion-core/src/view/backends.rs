//! [`ServiceBackends`]: a service's endpoints validated against its pods and grouped by
//! port name, computed once per snapshot and shared by requests.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

use super::{Candidate, Candidates, ClusterView, EndpointState, Host};
use crate::DestinationPolicy;
use crate::policy::parse_ip_lenient;

/// Where a service's endpoints came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
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
pub(crate) struct PortBackends {
    pub(crate) name: Box<str>,
    pub(crate) app_protocol: Option<Box<str>>,
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
    pub(crate) fn candidates(&self, policy: &DestinationPolicy, cache: bool) -> Candidates {
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
    pub(crate) source: Source,
    pub(crate) ports: Vec<PortBackends>,
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

/// Whether `ip` (exact text) is one of the pod's IPs.
pub(crate) fn pod_has_ip(pod: &Pod, ip: &str) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().any(|p| p.ip == ip),
        _ => status.pod_ip.as_deref() == Some(ip),
    }
}

/// The number as a port, when it is in `0..=65535`.
pub(crate) fn port_in_range(number: i32) -> Option<u16> {
    u16::try_from(number).ok()
}
