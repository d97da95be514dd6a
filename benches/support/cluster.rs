//! Synthetic clusters for the benchmarks: `services` Services with ten ready endpoints each.

#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeAddress, NodeStatus, ObjectReference, Pod, PodIP, PodSpec,
    PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_bastion_core::Object;

pub(crate) const ENDPOINTS_PER_SERVICE: usize = 10;
pub(crate) const NAMESPACES: usize = 100;

pub(crate) fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

/// A ready EndpointSlice endpoint at `address`, referring to pod `namespace/pod_name`.
pub(crate) fn ready_endpoint(namespace: &str, pod_name: String, address: String) -> Endpoint {
    Endpoint {
        addresses: vec![address],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(namespace.into()),
            name: Some(pod_name),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

pub(crate) fn ip(index: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (index >> 16) & 255,
        (index >> 8) & 255,
        index & 255
    )
}

/// `services` Services spread over `NAMESPACES` namespaces, each with ports `http` (80) and
/// `metrics` (9090), one EndpointSlice of `ENDPOINTS_PER_SERVICE` ready endpoints and the
/// pods behind them; plus 100 nodes.
pub(crate) fn objects(services: usize) -> Vec<Object> {
    let mut objects = Vec::with_capacity(services * (ENDPOINTS_PER_SERVICE + 2) + 100);
    for s in 0..services {
        let namespace = format!("ns-{}", s % NAMESPACES);
        let name = format!("svc-{s}");
        let ports = vec![
            ServicePort {
                name: Some("http".into()),
                port: 80,
                ..ServicePort::default()
            },
            ServicePort {
                name: Some("metrics".into()),
                port: 9090,
                ..ServicePort::default()
            },
        ];
        objects.push(Object::Service(Service {
            metadata: meta(Some(&namespace), &name),
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }));
        let mut endpoints = Vec::with_capacity(ENDPOINTS_PER_SERVICE);
        for e in 0..ENDPOINTS_PER_SERVICE {
            let pod_name = format!("{name}-{e}");
            let address = ip(s * ENDPOINTS_PER_SERVICE + e);
            objects.push(Object::Pod(Pod {
                metadata: meta(Some(&namespace), &pod_name),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                status: Some(PodStatus {
                    pod_ips: Some(vec![PodIP {
                        ip: address.clone(),
                    }]),
                    ..PodStatus::default()
                }),
            }));
            endpoints.push(ready_endpoint(&namespace, pod_name, address));
        }
        let mut slice_meta = meta(Some(&namespace), &format!("{name}-abcde"));
        slice_meta.labels = Some(BTreeMap::from([(
            "kubernetes.io/service-name".to_owned(),
            name.clone(),
        )]));
        objects.push(Object::EndpointSlice(EndpointSlice {
            metadata: slice_meta,
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9090),
                    ..EndpointPort::default()
                },
            ]),
        }));
    }
    for n in 0..100 {
        objects.push(Object::Node(Node {
            metadata: meta(None, &format!("node-{n}")),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: format!("192.168.{}.{}", n / 250, n % 250 + 1),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }));
    }
    objects
}
