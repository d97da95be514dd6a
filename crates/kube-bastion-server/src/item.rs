//! [`Item`]: one stored object of a kind the API serves, shared (`Arc`) with the snapshot
//! it came from, so events and lists never copy objects.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_bastion::core::{ClusterSnapshot, Object};

/// One object of a served kind.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// A Pod.
    Pod(Arc<Pod>),
    /// A Service.
    Service(Arc<Service>),
    /// An Endpoints object.
    Endpoints(Arc<Endpoints>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// A Node.
    Node(Arc<Node>),
    /// A Namespace.
    Namespace(Arc<Namespace>),
}

impl Item {
    /// The object of an event, shared with `snapshot` when the snapshot still holds that
    /// very version (same resourceVersion), copied otherwise.
    pub(crate) fn of_event(object: &Object, snapshot: &ClusterSnapshot) -> Item {
        let namespace = object.namespace().unwrap_or("");
        let name = object.name();
        let rv = &object.metadata().resource_version;
        macro_rules! shared {
            ($variant:ident, $o:expr) => {{
                match snapshot.get::<$variant>(namespace, name) {
                    Some(stored) if &stored.metadata.resource_version == rv => {
                        Item::$variant(Arc::clone(stored))
                    }
                    _ => Item::$variant(Arc::new($o.clone())),
                }
            }};
        }
        match object {
            Object::Pod(o) => shared!(Pod, o),
            Object::Service(o) => shared!(Service, o),
            Object::Endpoints(o) => shared!(Endpoints, o),
            Object::EndpointSlice(o) => shared!(EndpointSlice, o),
            Object::Node(o) => shared!(Node, o),
            Object::Namespace(o) => shared!(Namespace, o),
        }
    }

    /// The object as JSON.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let result = match self {
            Item::Pod(o) => serde_json::to_vec(&**o),
            Item::Service(o) => serde_json::to_vec(&**o),
            Item::Endpoints(o) => serde_json::to_vec(&**o),
            Item::EndpointSlice(o) => serde_json::to_vec(&**o),
            Item::Node(o) => serde_json::to_vec(&**o),
            Item::Namespace(o) => serde_json::to_vec(&**o),
        };
        // k8s-openapi types always serialize.
        result.unwrap_or_default()
    }
}
