//! What resolution reads: the [`ClusterView`] trait (one consistent view of the cluster),
//! the [`ClusterSource`] that hands views out, and the per-service [`ServiceBackends`] a
//! view may precompute.
//!
//! The trait and [`ServiceBackends`] live together, below both the cluster model
//! ([`crate::cluster`]) and resolution ([`crate::resolve`]): a view returns backends, and
//! backends are computed from a view.

mod backends;
mod candidate;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use backends::ServiceBackends;
pub(crate) use backends::{Source, port_in_range};
pub use candidate::{Candidate, Candidates, EndpointState, Host};

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

    /// The service's endpoints, already validated and grouped by port name, when this view
    /// precomputes them ([`ClusterSnapshot`](crate::ClusterSnapshot) does). `None` (the default) makes resolution
    /// compute them from the objects on every request with [`ServiceBackends::compute`],
    /// which gives the same answer, only slower.
    fn service_backends(&self, namespace: &str, service: &str) -> Option<Arc<ServiceBackends>> {
        let _ = (namespace, service);
        None
    }
}

/// Something that hands out consistent [`ClusterView`]s, one per request.
pub trait ClusterSource: Send + Sync {
    /// The current view.
    fn view(&self) -> Arc<dyn ClusterView>;

    /// Whether the views are complete. A source that fills itself from a live cluster
    /// returns `false` until its initial lists are in: a lookup in a partial view could
    /// answer `404` for an object that exists, so the proxy answers
    /// [`Status::not_synced`](crate::Status::not_synced) (`503`) instead of resolving.
    /// The default is `true`.
    fn is_synced(&self) -> bool {
        true
    }
}

impl<V: ClusterView + 'static> ClusterSource for Arc<V> {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.clone()
    }
}
