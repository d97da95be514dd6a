//! The derived indexes of a [`ClusterSnapshot`] and how one change updates them: slices
//! grouped by service, every service's [`ServiceBackends`], and which services' endpoints
//! name which pod (so a Pod change recomputes exactly those services).

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::SERVICE_NAME_LABEL;
use super::snapshot::{ClusterSnapshot, Key, SliceGroup, slot};
use crate::view::ServiceBackends;

/// Which services' endpoint objects (EndpointSlices labelled for the service, its Endpoints
/// object) name which pods by `targetRef`: namespace → pod name → service name → how many
/// references. Kept for every reference, valid or not, so a pod that appears later still
/// finds the services waiting for it.
#[derive(Clone, Debug, Default)]
pub(super) struct Refs(OrdMap<Key, OrdMap<Key, OrdMap<Key, u32>>>);

impl Refs {
    fn add<'a>(&mut self, namespace: &str, service: &str, pods: impl Iterator<Item = &'a str>) {
        for pod in pods {
            *slot(slot(slot(&mut self.0, namespace), pod), service) += 1;
        }
    }

    fn remove<'a>(&mut self, namespace: &str, service: &str, pods: impl Iterator<Item = &'a str>) {
        let Some(by_pod) = self.0.get_mut(namespace) else {
            return;
        };
        for pod in pods {
            let Some(services) = by_pod.get_mut(pod) else {
                continue;
            };
            if let Some(count) = services.get_mut(service) {
                *count -= 1;
                if *count == 0 {
                    services.remove(service);
                }
            }
            if services.is_empty() {
                by_pod.remove(pod);
            }
        }
        if by_pod.is_empty() {
            self.0.remove(namespace);
        }
    }

    fn services_of(&self, namespace: &str, pod: &str) -> impl Iterator<Item = &Key> {
        self.0
            .get(namespace)
            .and_then(|by_pod| by_pod.get(pod))
            .into_iter()
            .flat_map(OrdMap::keys)
    }
}

/// The pods an EndpointSlice names in its own namespace.
fn slice_refs<'a>(slice: &'a EndpointSlice, namespace: &'a str) -> impl Iterator<Item = &'a str> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(move |r| r.namespace.as_deref() == Some(namespace))
        .filter_map(|r| r.name.as_deref())
}

/// The pods an Endpoints object's ready addresses name in its own namespace.
fn endpoints_refs<'a>(
    endpoints: &'a Endpoints,
    namespace: &'a str,
) -> impl Iterator<Item = &'a str> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.target_ref.as_ref())
        .filter(move |r| r.namespace.as_deref() == Some(namespace))
        .filter_map(|r| r.name.as_deref())
}

/// Whether two reference lists name the same pods as often (in any order).
fn same<'a>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'a str>) -> bool {
    let mut a: Vec<&str> = a.collect();
    let mut b: Vec<&str> = b.collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn service_label(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// The services one batch of changes touched, whose backends are recomputed once at the end.
///
/// Each method is called with the snapshot before the object is stored or removed, the
/// object's previous state and its next one (`None` when absent).
#[derive(Debug, Default)]
pub(super) struct Dirty {
    services: BTreeSet<(Key, Key)>,
}

impl Dirty {
    pub(super) fn pods(
        &mut self,
        snapshot: &mut ClusterSnapshot,
        namespace: &str,
        name: &str,
        _previous: Option<&Pod>,
        _next: Option<&Arc<Pod>>,
    ) {
        for service in snapshot.refs.services_of(namespace, name) {
            self.services
                .insert((Key::from(namespace), service.clone()));
        }
    }

    /// Backends never read the Service object: nothing to recompute.
    pub(super) fn services(
        &mut self,
        _: &mut ClusterSnapshot,
        _: &str,
        _: &str,
        _: Option<&Service>,
        _: Option<&Arc<Service>>,
    ) {
    }

    pub(super) fn nodes(
        &mut self,
        _: &mut ClusterSnapshot,
        _: &str,
        _: &str,
        _: Option<&Node>,
        _: Option<&Arc<Node>>,
    ) {
    }

    pub(super) fn namespaces(
        &mut self,
        _: &mut ClusterSnapshot,
        _: &str,
        _: &str,
        _: Option<&Namespace>,
        _: Option<&Arc<Namespace>>,
    ) {
    }

    pub(super) fn endpoints(
        &mut self,
        snapshot: &mut ClusterSnapshot,
        namespace: &str,
        name: &str,
        previous: Option<&Endpoints>,
        next: Option<&Arc<Endpoints>>,
    ) {
        let unchanged = match (previous, next) {
            (Some(a), Some(b)) => same(endpoints_refs(a, namespace), endpoints_refs(b, namespace)),
            _ => false,
        };
        if !unchanged {
            if let Some(previous) = previous {
                snapshot
                    .refs
                    .remove(namespace, name, endpoints_refs(previous, namespace));
            }
            if let Some(next) = next {
                snapshot
                    .refs
                    .add(namespace, name, endpoints_refs(next, namespace));
            }
        }
        self.services
            .insert((Key::from(namespace), Key::from(name)));
    }

    pub(super) fn slices(
        &mut self,
        snapshot: &mut ClusterSnapshot,
        namespace: &str,
        name: &str,
        previous: Option<&EndpointSlice>,
        next: Option<&Arc<EndpointSlice>>,
    ) {
        let was = previous.and_then(|p| service_label(p).map(|s| (p, s)));
        let is = next.and_then(|n| service_label(n).map(|s| (n, s)));
        // The usual change (conditions, addresses) keeps the service and the pods named:
        // the reference index stays as it is.
        let same_refs = match (was, is) {
            (Some((p, a)), Some((n, b))) => {
                a == b && same(slice_refs(p, namespace), slice_refs(n, namespace))
            }
            _ => false,
        };
        if let Some((previous, service)) = was {
            if !same_refs {
                snapshot
                    .refs
                    .remove(namespace, service, slice_refs(previous, namespace));
            }
            // Staying in the same service, the update below replaces it in place.
            if is.is_none_or(|(_, next_service)| next_service != service) {
                update_group(snapshot, namespace, service, name, None);
            }
            self.services
                .insert((Key::from(namespace), Key::from(service)));
        }
        if let Some((next, service)) = is {
            if !same_refs {
                snapshot
                    .refs
                    .add(namespace, service, slice_refs(next, namespace));
            }
            update_group(snapshot, namespace, service, name, Some(next));
            self.services
                .insert((Key::from(namespace), Key::from(service)));
        }
    }

    /// Recomputes the backends of every touched service from the snapshot's final state.
    pub(super) fn reindex(self, snapshot: &mut ClusterSnapshot) {
        for (namespace, service) in self.services {
            let has_slices = snapshot
                .slices_by_service
                .get(&*namespace)
                .is_some_and(|services| services.contains_key(&*service));
            let has_endpoints = snapshot
                .endpoints
                .get(&*namespace)
                .is_some_and(|names| names.contains_key(&*service));
            if has_slices || has_endpoints {
                let backends = Arc::new(ServiceBackends::compute(snapshot, &namespace, &service));
                slot(&mut snapshot.backends, &namespace).insert(service, backends);
            } else if let Some(services) = snapshot.backends.get_mut(&*namespace) {
                services.remove(&*service);
                if services.is_empty() {
                    snapshot.backends.remove(&*namespace);
                }
            }
        }
    }
}

/// Replaces (`Some`) or removes (`None`) the slice `name` in its service's group, which
/// stays sorted by name; an emptied group is dropped.
fn update_group(
    snapshot: &mut ClusterSnapshot,
    namespace: &str,
    service: &str,
    name: &str,
    slice: Option<&Arc<EndpointSlice>>,
) {
    let services = slot(&mut snapshot.slices_by_service, namespace);
    let mut group: Vec<Arc<EndpointSlice>> = services
        .get(service)
        .map(|g| {
            g.iter()
                .filter(|s| s.metadata.name.as_deref() != Some(name))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(slice) = slice {
        let at = group.partition_point(|s| s.metadata.name.as_deref() < Some(name));
        group.insert(at, Arc::clone(slice));
    }
    if group.is_empty() {
        services.remove(service);
    } else {
        let group: SliceGroup = Arc::from(group);
        services.insert(Key::from(service), group);
    }
    if services.is_empty() {
        snapshot.slices_by_service.remove(namespace);
    }
}
