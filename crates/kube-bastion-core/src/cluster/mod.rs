//! The cluster model: Pods, Services, Endpoints, EndpointSlices, Nodes and Namespaces.
//!
//! [`ClusterView`] is what resolution reads; [`ClusterSnapshot`] is an immutable, indexed,
//! persistent implementation of it, and [`MemoryCluster`] hands out snapshots while a
//! writer publishes new ones (an atomically swapped `Arc`, so readers never take a lock).
//! A writer applies a batch of [`Change`]s and gets the [`ClusterEvent`]s they caused, in
//! work proportional to the batch, not to the cluster.
//!
//! * `object`: [`Object`], [`ObjectKind`], [`StoredKind`];
//! * `load`: [`parse_objects`] from YAML or JSON;
//! * `snapshot` and `index`: [`ClusterSnapshot`] and its derived indexes;
//! * `writer`: [`MemoryCluster`], [`Change`], [`ClusterEvent`].
//!
//! ```
//! use kube_bastion_core::MemoryCluster;
//!
//! let cluster = MemoryCluster::from_yaml(r#"
//! apiVersion: v1
//! kind: List
//! items:
//! - apiVersion: v1
//!   kind: Pod
//!   metadata: {name: web, namespace: shop}
//!   status: {podIPs: [{ip: 10.0.0.5}]}
//! - apiVersion: v1
//!   kind: ConfigMap
//!   metadata: {name: ignored, namespace: shop}
//! "#).unwrap();
//! let snapshot = cluster.snapshot();
//! assert_eq!(snapshot.pods(Some("shop")).len(), 1);
//! assert_eq!(snapshot.namespaces(), ["shop"]);
//! ```

mod index;
mod load;
mod object;
mod snapshot;
mod writer;

pub use crate::view::{ClusterSource, ClusterView};
pub(crate) use load::parse_documents;
pub use load::{LoadError, parse_objects};
pub use object::{Object, ObjectKind, StoredKind};
pub use snapshot::ClusterSnapshot;
pub use writer::{Change, ClusterEvent, EventType, MemoryCluster};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The namespace given to namespaced objects that do not name one (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";
