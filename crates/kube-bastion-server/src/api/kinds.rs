//! The kinds the API serves ([`Served`]): how each is found in a snapshot and in a watch
//! event, and which field selectors it supports. Namespaces are special: besides the
//! stored Namespace objects, every namespace that objects use is served as an `Active`
//! Namespace ("implied"), carrying the resourceVersion of the answer it appears in.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, NamespaceStatus, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ListableResource, Resource};
use kube_bastion::core::{ClusterSnapshot, StoredKind};

use super::table::Tabular;
use crate::item::Item;

/// A kind the API lists, gets and watches.
pub(crate) trait Served:
    StoredKind + Tabular + Resource + ListableResource + Default + Clone
{
    /// Field selector labels besides `metadata.name` and `metadata.namespace`.
    const FIELDS: &'static [&'static str] = &[];

    /// The value of a field selector label of [`FIELDS`](Self::FIELDS).
    fn field(&self, label: &str) -> Option<String> {
        let _ = label;
        None
    }

    /// The object of a watch event, when it is of this kind.
    fn of(item: &Item) -> Option<&Arc<Self>>;

    /// The objects of this kind in `namespace` (all when `None`) from `start` on, in
    /// `(namespace, name)` order, as served.
    fn served<'a>(
        snapshot: &'a ClusterSnapshot,
        namespace: Option<&'a str>,
        start: (&'a str, &'a str),
    ) -> Box<dyn Iterator<Item = Arc<Self>> + 'a> {
        Box::new(snapshot.iter_from::<Self>(namespace, start).cloned())
    }

    /// Every object of this kind as served, made once, for a kind whose
    /// [`served`](Self::served) computes its objects rather than reading them in place
    /// (namespaces); `None` for the stored kinds.
    fn served_all(snapshot: &ClusterSnapshot) -> Option<Vec<Arc<Self>>> {
        let _ = snapshot;
        None
    }

    /// The object `namespace/name` as served.
    fn served_one(snapshot: &ClusterSnapshot, namespace: &str, name: &str) -> Option<Arc<Self>> {
        snapshot.get::<Self>(namespace, name).cloned()
    }
}

macro_rules! served {
    ($type:ty, $variant:ident) => {
        fn of(item: &Item) -> Option<&Arc<Self>> {
            match item {
                Item::$variant(o) => Some(o),
                _ => None,
            }
        }
    };
}

impl Served for Pod {
    const FIELDS: &'static [&'static str] = &["spec.nodeName", "status.phase", "status.podIP"];

    fn field(&self, label: &str) -> Option<String> {
        match label {
            "spec.nodeName" => self.spec.as_ref()?.node_name.clone(),
            "status.phase" => self.status.as_ref()?.phase.clone(),
            "status.podIP" => self.status.as_ref()?.pod_ip.clone(),
            _ => None,
        }
    }

    served!(Pod, Pod);
}

impl Served for Service {
    served!(Service, Service);
}

impl Served for Endpoints {
    served!(Endpoints, Endpoints);
}

impl Served for EndpointSlice {
    served!(EndpointSlice, EndpointSlice);
}

impl Served for Node {
    served!(Node, Node);
}

impl Served for Namespace {
    served!(Namespace, Namespace);

    fn served<'a>(
        snapshot: &'a ClusterSnapshot,
        _namespace: Option<&'a str>,
        start: (&'a str, &'a str),
    ) -> Box<dyn Iterator<Item = Arc<Self>> + 'a> {
        let rv = snapshot.resource_version();
        let names = snapshot.namespaces();
        let first = names.partition_point(|n| n.as_str() < start.1);
        Box::new(names.into_iter().skip(first).map(move |name| {
            match snapshot.get::<Namespace>("", &name) {
                Some(stored) => Arc::clone(stored),
                None => Arc::new(implied_namespace(&name, rv)),
            }
        }))
    }

    fn served_all(snapshot: &ClusterSnapshot) -> Option<Vec<Arc<Self>>> {
        Some(Self::served(snapshot, None, ("", "")).collect())
    }

    fn served_one(snapshot: &ClusterSnapshot, _namespace: &str, name: &str) -> Option<Arc<Self>> {
        if let Some(stored) = snapshot.get::<Namespace>("", name) {
            return Some(Arc::clone(stored));
        }
        namespace_in_use(snapshot, name)
            .then(|| Arc::new(implied_namespace(name, snapshot.resource_version())))
    }
}

/// Whether any namespaced object lives in `name`.
pub(crate) fn namespace_in_use(snapshot: &ClusterSnapshot, name: &str) -> bool {
    let ns = Some(name);
    snapshot.count::<Pod>(ns) > 0
        || snapshot.count::<Service>(ns) > 0
        || snapshot.count::<Endpoints>(ns) > 0
        || snapshot.count::<EndpointSlice>(ns) > 0
}

/// The `Active` Namespace served for a namespace that objects use but no Namespace object
/// declares.
pub(crate) fn implied_namespace(name: &str, resource_version: u64) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: Some(resource_version.to_string()),
            ..ObjectMeta::default()
        },
        status: Some(NamespaceStatus {
            phase: Some("Active".to_owned()),
            ..NamespaceStatus::default()
        }),
        ..Namespace::default()
    }
}

/// The namespace a `metadata.namespace` field selector compares with: empty for
/// cluster-scoped kinds, `default` for namespaced objects that name none.
pub(crate) fn namespace_field<T: Served>(meta: &ObjectMeta) -> &str {
    if !<T as StoredKind>::KIND.is_namespaced() {
        return "";
    }
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => kube_bastion::core::cluster::DEFAULT_NAMESPACE,
    }
}
