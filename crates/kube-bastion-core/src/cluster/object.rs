//! The kinds of object the cluster model keeps: [`Object`] and [`ObjectKind`].

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::DEFAULT_NAMESPACE;

/// One object of a kind the cluster model keeps.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A Pod.
    Pod(Pod),
    /// A Service.
    Service(Service),
    /// An Endpoints object.
    Endpoints(Endpoints),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Node.
    Node(Node),
    /// A Namespace.
    Namespace(Namespace),
}

/// The kinds of [`Object`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `v1/Pod`.
    Pod,
    /// `v1/Service`.
    Service,
    /// `v1/Endpoints`.
    Endpoints,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Node` (cluster-scoped).
    Node,
    /// `v1/Namespace` (cluster-scoped).
    Namespace,
}

impl ObjectKind {
    /// Every kind, in the order snapshots list them.
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Pod,
        ObjectKind::Service,
        ObjectKind::Endpoints,
        ObjectKind::EndpointSlice,
        ObjectKind::Node,
        ObjectKind::Namespace,
    ];

    /// The `kind` as written in manifests (`Pod`, `EndpointSlice`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "Pod",
            ObjectKind::Service => "Service",
            ObjectKind::Endpoints => "Endpoints",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
            ObjectKind::Namespace => "Namespace",
        }
    }

    /// The `apiVersion` of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, ObjectKind::Node | ObjectKind::Namespace)
    }

    pub(super) fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Some(match (api_version, kind) {
            ("v1", "Pod") => ObjectKind::Pod,
            ("v1", "Service") => ObjectKind::Service,
            ("v1", "Endpoints") => ObjectKind::Endpoints,
            ("discovery.k8s.io/v1", "EndpointSlice") => ObjectKind::EndpointSlice,
            ("v1", "Node") => ObjectKind::Node,
            ("v1", "Namespace") => ObjectKind::Namespace,
            _ => return None,
        })
    }
}

impl Object {
    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Pod(_) => ObjectKind::Pod,
            Object::Service(_) => ObjectKind::Service,
            Object::Endpoints(_) => ObjectKind::Endpoints,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Node(_) => ObjectKind::Node,
            Object::Namespace(_) => ObjectKind::Namespace,
        }
    }

    /// Its `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// `metadata.name` (empty when unset).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The namespace the cluster model files it under: `None` for cluster-scoped kinds,
    /// `metadata.namespace` or [`DEFAULT_NAMESPACE`] for the others.
    pub fn namespace(&self) -> Option<&str> {
        self.kind()
            .is_namespaced()
            .then(|| namespace_of(self.metadata()))
    }
}

pub(super) fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

pub(super) mod sealed {
    use super::super::snapshot::{ClusterSnapshot, Namespaced};

    /// Where a snapshot keeps the objects of a kind; not nameable outside the crate.
    pub trait Sealed: Sized {
        fn index(snapshot: &ClusterSnapshot) -> &Namespaced<Self>;
    }
}

/// A kind of object a [`ClusterSnapshot`](super::ClusterSnapshot) stores, for its typed
/// accessors ([`get`](super::ClusterSnapshot::get), [`iter`](super::ClusterSnapshot::iter),
/// [`count`](super::ClusterSnapshot::count)). Implemented for `Pod`, `Service`,
/// `Endpoints`, `EndpointSlice`, `Node` and `Namespace`; sealed.
pub trait StoredKind: sealed::Sealed + Send + Sync + 'static {
    /// The kind.
    const KIND: ObjectKind;
}

macro_rules! stored_kind {
    ($type:ty, $kind:ident, $field:ident) => {
        impl sealed::Sealed for $type {
            fn index(snapshot: &super::ClusterSnapshot) -> &super::snapshot::Namespaced<Self> {
                &snapshot.$field
            }
        }
        impl StoredKind for $type {
            const KIND: ObjectKind = ObjectKind::$kind;
        }
    };
}

stored_kind!(Pod, Pod, pods);
stored_kind!(Service, Service, services);
stored_kind!(Endpoints, Endpoints, endpoints);
stored_kind!(EndpointSlice, EndpointSlice, slices);
stored_kind!(Node, Node, nodes);
stored_kind!(Namespace, Namespace, namespaces);
