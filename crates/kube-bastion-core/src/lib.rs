//! The pure core of kube-bastion.
//!
//! Everything from "an HTTP method, path and query arrived" to "these are the endpoints this
//! request may go to, over this scheme, or this exact kube-apiserver error", with no sockets
//! and no async runtime:
//!
//! * [`path`]: the proxy route grammar (`/api/v1/namespaces/{ns}/pods/{id}/proxy/...`),
//!   path cleaning, re-encoding and the 301 for a bare `/proxy`;
//! * [`id`]: the `scheme:name:port` target id ([`TargetId`]);
//! * [`authz`]: kube-style authorization [`Attributes`] derived from the same parse;
//! * [`cluster`]: the [`ClusterView`] trait and the in-memory [`MemoryCluster`];
//! * [`resolve`]: target resolution for pods, services and nodes ([`Target`]);
//! * [`policy`]: which destination addresses may be dialed ([`DestinationPolicy`]);
//! * [`status`]: `metav1.Status`, the only error body a client ever sees ([`Status`]).
//!
//! (A crate-level example that parses and resolves against a small cluster lives here.)

pub mod authz;
pub mod cluster;
pub mod id;
pub mod path;
pub mod policy;
pub mod resolve;
pub mod status;

pub use authz::Attributes;
pub use cluster::{
    ClusterSnapshot, ClusterSource, ClusterView, LoadError, MemoryCluster, Object, ObjectKind,
    parse_objects,
};
pub use id::{InvalidTargetId, Scheme, TargetId};
pub use path::{Plan, ProxyRequest, ResourceKind, Route};
pub use policy::{AddressNotAllowed, DestinationPolicy};
pub use resolve::{
    AppProtocol, Candidate, EndpointState, Host, KubeletOptions, NodeAddressType, ResolveOptions,
    ServiceBackends, ServiceInfo, Target, TransportKind, resolve,
};
pub use status::Status;

/// Re-export of the `k8s-openapi` crate this crate is built against, so users name the same
/// `Pod`, `Service`, ... types.
pub use k8s_openapi;
