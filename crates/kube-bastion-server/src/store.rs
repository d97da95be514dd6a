//! The server's cluster state: the [`MemoryCluster`] the proxy resolves against, plus an
//! ordered inventory of the same objects for the read-only API. Both are replaced together
//! when a cluster file changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, NamespaceStatus, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_bastion::{ClusterSnapshot, MemoryCluster, Object};

/// Objects of one kind keyed by `(namespace, name)` (namespace empty when cluster-scoped).
pub(crate) type Objects<T> = BTreeMap<(String, String), T>;

/// An immutable, ordered set of the objects the API serves.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// The `resourceVersion` of lists.
    pub(crate) resource_version: u64,
    pub(crate) namespaces: Objects<Namespace>,
    pub(crate) pods: Objects<Pod>,
    pub(crate) services: Objects<Service>,
    pub(crate) endpoints: Objects<Endpoints>,
    pub(crate) endpoint_slices: Objects<EndpointSlice>,
    pub(crate) nodes: Objects<Node>,
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Inventory {
    /// Indexes `objects`; later duplicates replace earlier ones. Namespaces that objects live
    /// in but that no Namespace object declares are added as `Active` namespaces.
    pub(crate) fn new(objects: &[Object], resource_version: u64) -> Self {
        let mut inv = Inventory {
            resource_version,
            ..Inventory::default()
        };
        for object in objects {
            match object {
                Object::Pod(o) => {
                    inv.pods.insert(key(&o.metadata), o.clone());
                }
                Object::Service(o) => {
                    inv.services.insert(key(&o.metadata), o.clone());
                }
                Object::Endpoints(o) => {
                    inv.endpoints.insert(key(&o.metadata), o.clone());
                }
                Object::EndpointSlice(o) => {
                    inv.endpoint_slices.insert(key(&o.metadata), o.clone());
                }
                Object::Node(o) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    inv.nodes.insert((String::new(), name), o.clone());
                }
                Object::Namespace(o) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    inv.namespaces.insert((String::new(), name), o.clone());
                }
            }
        }
        let implied: Vec<String> = inv
            .pods
            .keys()
            .chain(inv.services.keys())
            .chain(inv.endpoints.keys())
            .chain(inv.endpoint_slices.keys())
            .map(|(ns, _)| ns.clone())
            .filter(|ns| !ns.is_empty())
            .collect();
        for ns in implied {
            inv.namespaces
                .entry((String::new(), ns.clone()))
                .or_insert_with(|| Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns),
                        ..ObjectMeta::default()
                    },
                    status: Some(NamespaceStatus {
                        phase: Some("Active".to_owned()),
                        ..NamespaceStatus::default()
                    }),
                    ..Namespace::default()
                });
        }
        inv
    }
}

/// The live cluster state, shared by the proxy and the API.
#[derive(Debug)]
pub(crate) struct Store {
    cluster: Arc<MemoryCluster>,
    inventory: ArcSwap<Inventory>,
    generation: AtomicU64,
}

impl Store {
    /// A store holding `objects`.
    pub(crate) fn new(objects: Vec<Object>) -> Self {
        let inventory = Inventory::new(&objects, 1);
        Store {
            cluster: Arc::new(MemoryCluster::from_objects(objects)),
            inventory: ArcSwap::from_pointee(inventory),
            generation: AtomicU64::new(1),
        }
    }

    /// The cluster the proxy resolves against.
    pub(crate) fn cluster(&self) -> Arc<MemoryCluster> {
        self.cluster.clone()
    }

    /// The current inventory.
    pub(crate) fn inventory(&self) -> Arc<Inventory> {
        self.inventory.load_full()
    }

    /// Replaces the whole state.
    pub(crate) fn replace(&self, objects: Vec<Object>) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.inventory
            .store(Arc::new(Inventory::new(&objects, generation)));
        self.cluster.replace(ClusterSnapshot::from_objects(objects));
    }
}
