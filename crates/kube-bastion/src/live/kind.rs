//! The kinds [`KubeCluster`](super::KubeCluster) watches, and what it keeps of each object.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{
    Container, Endpoints, Namespace, Node, NodeStatus, Pod, PodSpec, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, Resource};
use kube_bastion_core::{Object, ObjectKind};
use serde::de::DeserializeOwned;

/// The annotation `kubectl apply` writes: a copy of the whole object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(super) mod sealed {
    use kube::{Api, Client};
    use kube_bastion_core::Object;

    /// How a kind is watched and stored; not nameable outside the crate.
    pub trait Sealed: Sized {
        /// The API for this kind in `namespace` (every namespace when `None`; cluster-scoped
        /// kinds ignore it).
        fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
        /// The object as stored: the fields the proxy and the read-only API never read are
        /// dropped.
        fn slim(self) -> Object;
    }
}

/// A kind [`KubeCluster`](super::KubeCluster) watches and a
/// [`Feeder`](super::Feeder) accepts: `Pod`, `Service`, `EndpointSlice`, `Endpoints`,
/// `Node` and `Namespace` from k8s-openapi. Sealed.
pub trait WatchedKind:
    sealed::Sealed
    + Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind in the cluster model.
    const KIND: ObjectKind;
}

/// Drops `managedFields` and the last-applied annotation: often most of an object's bytes.
pub(super) fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A pod keeps, of its spec, the containers' names, images and ports (named ports, the
/// pod table), `nodeName` and `hostNetwork`; its status whole.
fn slim_pod(mut pod: Pod) -> Pod {
    slim_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            node_name: spec.node_name,
            host_network: spec.host_network,
            ..PodSpec::default()
        });
    }
    pod
}

/// A node drops its image list and attached volumes (large, never read); it keeps its
/// addresses, daemon endpoints, conditions and node info.
fn slim_node(mut node: Node) -> Node {
    slim_meta(&mut node.metadata);
    if let Some(status) = node.status.take() {
        node.status = Some(NodeStatus {
            images: None,
            volumes_attached: None,
            volumes_in_use: None,
            ..status
        });
    }
    node
}

macro_rules! namespaced_api {
    () => {
        fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
            match namespace {
                Some(namespace) => Api::namespaced(client, namespace),
                None => Api::all(client),
            }
        }
    };
}

macro_rules! cluster_api {
    () => {
        fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
            Api::all(client)
        }
    };
}

macro_rules! watched {
    ($type:ty, $kind:ident, $api:ident, |$object:ident| $slim:expr) => {
        impl sealed::Sealed for $type {
            $api!();
            fn slim(self) -> Object {
                let $object = self;
                Object::$kind($slim)
            }
        }
        impl WatchedKind for $type {
            const KIND: ObjectKind = ObjectKind::$kind;
        }
    };
}

watched!(Pod, Pod, namespaced_api, |pod| slim_pod(pod));
watched!(Service, Service, namespaced_api, |service| {
    let mut service = service;
    slim_meta(&mut service.metadata);
    service
});
watched!(EndpointSlice, EndpointSlice, namespaced_api, |slice| {
    let mut slice = slice;
    slim_meta(&mut slice.metadata);
    slice
});
watched!(Endpoints, Endpoints, namespaced_api, |endpoints| {
    let mut endpoints = endpoints;
    slim_meta(&mut endpoints.metadata);
    endpoints
});
watched!(Node, Node, cluster_api, |node| slim_node(node));
watched!(Namespace, Namespace, cluster_api, |namespace| {
    let mut namespace = namespace;
    slim_meta(&mut namespace.metadata);
    namespace
});

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ContainerImage, ContainerPort, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::sealed::Sealed as _;
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            annotations: Some(BTreeMap::from([(
                LAST_APPLIED.to_owned(),
                "{...}".to_owned(),
            )])),
            labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_pod_keeps_what_resolution_and_the_table_read() {
        let pod = Pod {
            metadata: meta(),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("nginx".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..ContainerPort::default()
                    }]),
                    command: Some(vec!["serve".into()]),
                    ..Container::default()
                }],
                node_name: Some("node-1".into()),
                volumes: Some(vec![Volume::default()]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.5".into()),
                ..PodStatus::default()
            }),
        };
        let Object::Pod(slim) = pod.clone().slim() else {
            panic!("a pod stays a pod");
        };
        assert_eq!(slim.metadata.managed_fields, None);
        assert_eq!(slim.metadata.annotations, None, "the empty map goes too");
        assert_eq!(slim.metadata.labels, pod.metadata.labels);
        let spec = slim.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.volumes, None);
        assert_eq!(
            spec.containers[0].ports,
            pod.spec.as_ref().unwrap().containers[0].ports
        );
        assert_eq!(spec.containers[0].command, None);
        assert_eq!(slim.status, pod.status);
    }

    #[test]
    fn a_node_drops_its_images_and_other_annotations_stay() {
        let mut metadata = meta();
        metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("kept".into(), "yes".into());
        let node = Node {
            metadata,
            status: Some(NodeStatus {
                images: Some(vec![ContainerImage::default()]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        let Object::Node(slim) = node.slim() else {
            panic!("a node stays a node");
        };
        assert_eq!(slim.status.expect("status").images, None);
        let annotations = slim.metadata.annotations.expect("annotations");
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["kept"]);
    }
}
