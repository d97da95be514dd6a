//! The cluster model: read access to Pods, Services, Endpoints, EndpointSlices and Nodes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Read access to the objects resolution needs. One value is one consistent view.
pub trait ClusterView: Send + Sync {
    /// The pod `namespace/name`.
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>>;
    /// The service `namespace/name`.
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The Endpoints object `namespace/name`.
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Arc<Endpoints>>;
    /// The EndpointSlices labelled `kubernetes.io/service-name: <service>` in `namespace`
    /// (empty when there are none).
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Arc<[Arc<EndpointSlice>]>;
    /// The node `name`.
    fn node(&self, name: &str) -> Option<Arc<Node>>;
}

/// Something that hands out consistent [`ClusterView`]s, one per request.
pub trait ClusterSource: Send + Sync {
    /// The current view.
    fn view(&self) -> Arc<dyn ClusterView>;
}

impl<V: ClusterView + 'static> ClusterSource for Arc<V> {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.clone()
    }
}

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

/// Loading cluster objects failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The text is neither valid YAML nor valid JSON.
    #[error("{0}")]
    Syntax(String),
    /// A document has a supported kind but does not decode as that kind.
    #[error("document {index} ({kind}): {message}")]
    Object {
        /// Zero-based document (or `List` item) index.
        index: usize,
        /// Its `kind`.
        kind: String,
        /// The decoding error.
        message: String,
    },
}

/// Parses objects from YAML (one or many documents), JSON, or a `kind: List` as
/// `kubectl get -o yaml|json` writes it. Kinds other than the supported ones are skipped.
pub fn parse_objects(text: &str) -> Result<Vec<Object>, LoadError> {
    let _ = text;
    todo!()
}

/// An immutable, indexed set of cluster objects: one consistent view.
#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    // private indexes
}

impl ClusterSnapshot {
    /// Builds a snapshot from objects (later duplicates replace earlier ones).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let _ = objects.into_iter();
        todo!()
    }
}

impl ClusterView for ClusterSnapshot {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let _ = (namespace, name);
        todo!()
    }
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        let _ = (namespace, name);
        todo!()
    }
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Arc<Endpoints>> {
        let _ = (namespace, name);
        todo!()
    }
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Arc<[Arc<EndpointSlice>]> {
        let _ = (namespace, service);
        todo!()
    }
    fn node(&self, name: &str) -> Option<Arc<Node>> {
        let _ = name;
        todo!()
    }
}

/// The in-memory [`ClusterSource`]: many readers take consistent snapshots without a lock
/// while a rare writer replaces the whole state.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    // private: an atomically swapped Arc<ClusterSnapshot>
}

impl MemoryCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cluster holding these objects.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let _ = objects.into_iter();
        todo!()
    }

    /// Parses `text` with [`parse_objects`] into a cluster.
    pub fn from_yaml(text: &str) -> Result<Self, LoadError> {
        Ok(Self::from_objects(parse_objects(text)?))
    }

    /// The current snapshot; it stays consistent however the cluster changes afterwards.
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        todo!()
    }

    /// Replaces the whole state; readers holding an older snapshot keep it.
    pub fn replace(&self, snapshot: ClusterSnapshot) {
        let _ = snapshot;
        todo!()
    }
}

impl ClusterSource for MemoryCluster {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.snapshot()
    }
}
