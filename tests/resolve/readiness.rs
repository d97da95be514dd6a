//! Which service endpoints are used: ready ones before serving-terminating ones, slice
//! endpoints checked against their pods, and the Endpoints object only without slices.

use kube_bastion_core::{EndpointState, MemoryCluster, ResolveOptions};
use serde_json::{Value, json};

use crate::common::{assert_status, cluster, endpoints, pod, resolve_path, service, service_path};

/// A service with four pods, one per readiness state, plus forged and foreign endpoints.
pub(crate) fn readiness_cluster(conditions: &[(&str, &str, Value)]) -> MemoryCluster {
    let mut objects = vec![service(
        "ns",
        "web",
        json!([{"name": "http", "port": 80, "targetPort": 8080}]),
    )];
    let mut endpoints = Vec::new();
    for (name, ip, condition) in conditions {
        objects.push(pod("ns", name, &[ip], json!([])));
        endpoints.push(json!({
            "addresses": [ip],
            "conditions": condition,
            "targetRef": {"kind": "Pod", "namespace": "ns", "name": name},
        }));
    }
    objects.push(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }));
    cluster(objects)
}

fn candidates(cluster: &MemoryCluster, id: &str) -> Vec<(String, EndpointState)> {
    let target = resolve_path(
        &*cluster.snapshot(),
        &service_path("ns", id),
        &ResolveOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    target
        .candidates
        .iter()
        .map(|c| (c.authority(), c.state))
        .collect()
}

#[test]
fn ready_endpoints_win_over_serving_terminating_ones() {
    let cluster = readiness_cluster(&[
        ("ready", "10.0.0.1", json!({"ready": true})),
        ("unset", "10.0.0.2", json!({})),
        (
            "draining",
            "10.0.0.3",
            json!({"ready": false, "serving": true, "terminating": true}),
        ),
        (
            "dead",
            "10.0.0.4",
            json!({"ready": false, "serving": false, "terminating": true}),
        ),
        ("starting", "10.0.0.5", json!({"ready": false})),
    ]);
    assert_eq!(
        candidates(&cluster, "web:80"),
        [
            ("10.0.0.1:8080".to_owned(), EndpointState::Ready),
            ("10.0.0.2:8080".to_owned(), EndpointState::Ready),
        ]
    );
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
    let cluster = readiness_cluster(&[
        (
            "draining",
            "10.0.0.3",
            json!({"ready": false, "serving": true, "terminating": true}),
        ),
        (
            "unset-serving",
            "10.0.0.6",
            json!({"ready": false, "terminating": true}),
        ),
        (
            "dead",
            "10.0.0.4",
            json!({"ready": false, "serving": false, "terminating": true}),
        ),
        (
            "starting",
            "10.0.0.5",
            json!({"ready": false, "serving": true}),
        ),
    ]);
    assert_eq!(
        candidates(&cluster, "web:http"),
        [
            (
                "10.0.0.3:8080".to_owned(),
                EndpointState::ServingTerminating
            ),
            (
                "10.0.0.6:8080".to_owned(),
                EndpointState::ServingTerminating
            ),
        ]
    );
    // Never one that is neither ready nor serving-while-terminating.
    let cluster = readiness_cluster(&[
        (
            "dead",
            "10.0.0.4",
            json!({"ready": false, "serving": false, "terminating": true}),
        ),
        (
            "starting",
            "10.0.0.5",
            json!({"ready": false, "serving": true}),
        ),
    ]);
    let result = resolve_path(
        &*cluster.snapshot(),
        &service_path("ns", "web:80"),
        &ResolveOptions::default(),
    );
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "web:80""#,
    );
}

#[test]
fn slice_endpoints_are_checked_against_their_pods() {
    let mut cluster_objects = vec![
        service("ns", "web", json!([{"port": 80, "targetPort": 8080}])),
        pod("ns", "a", &["10.0.0.1", "fd00::1"], json!([])),
        pod("ns", "b", &["10.0.0.2"], json!([])),
        pod("other", "c", &["10.0.0.3"], json!([])),
    ];
    let endpoint = |ip: &str, target: Value| json!({"addresses": [ip], "targetRef": target});
    cluster_objects.push(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-a", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": [
            endpoint("10.0.0.1", json!({"kind": "Pod", "namespace": "ns", "name": "a"})),
            endpoint("10.0.0.9", json!({"kind": "Pod", "namespace": "ns", "name": "b"})),
            endpoint("10.0.0.3", json!({"kind": "Pod", "namespace": "other", "name": "c"})),
            endpoint("10.0.0.4", json!({"kind": "Pod", "namespace": "ns", "name": "gone"})),
            endpoint("10.0.0.2", json!(null)),
            endpoint("10.0.0.2", json!({"kind": "Pod", "namespace": "ns", "name": "b"})),
        ],
    }));
    // The IPv6 slice of the same dual-stack service, and a duplicate of an IPv4 address.
    cluster_objects.push(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-b", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv6",
        "ports": [{"port": 8080}],
        "endpoints": [
            endpoint("fd00::1", json!({"kind": "Pod", "namespace": "ns", "name": "a"})),
            endpoint("10.0.0.1", json!({"kind": "Pod", "namespace": "ns", "name": "a"})),
        ],
    }));
    // A slice of another service, and an FQDN slice, are ignored.
    cluster_objects.push(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-c", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "FQDN",
        "ports": [{"port": 8080}],
        "endpoints": [endpoint("a.example", json!({"kind": "Pod", "namespace": "ns", "name": "a"}))],
    }));
    let cluster = cluster(cluster_objects);
    let target = resolve_path(
        &*cluster.snapshot(),
        &service_path("ns", "web"),
        &ResolveOptions::default(),
    )
    .expect("resolves");
    let got: Vec<(String, Option<&str>)> = target
        .candidates
        .iter()
        .map(|c| (c.authority(), c.pod.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.1:8080".to_owned(), Some("a")),
            ("10.0.0.2:8080".to_owned(), Some("b")),
            ("[fd00::1]:8080".to_owned(), Some("a")),
        ]
    );
}

#[test]
fn endpoints_object_is_the_fallback_only_without_slices() {
    let objects = vec![
        service("ns", "web", json!([{"port": 80, "targetPort": 8080}])),
        pod("ns", "a", &["10.0.0.1"], json!([])),
        pod("ns", "b", &["10.0.0.2"], json!([])),
        endpoints(
            "ns",
            "web",
            json!([{
                "addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a"}}],
                "ports": [{"port": 8080}],
            }]),
        ),
    ];
    let only_endpoints = cluster(objects.clone());
    assert_eq!(
        candidates(&only_endpoints, "web"),
        [("10.0.0.1:8080".to_owned(), EndpointState::Ready)]
    );
    let mut with_slice = objects;
    with_slice.push(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b"}}],
    }));
    let with_slice = cluster(with_slice);
    assert_eq!(
        candidates(&with_slice, "web"),
        [("10.0.0.2:8080".to_owned(), EndpointState::Ready)]
    );
}
