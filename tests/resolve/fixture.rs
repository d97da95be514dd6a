//! Resolution against `tests/fixtures/cluster.yaml`, a `kubectl get -o yaml` style List with
//! several namespaces, multi-port services, mixed EndpointSlice conditions, dual-stack pods
//! and nodes with several address types.

use kube_bastion_core::{
    AppProtocol, EndpointState, Host, KubeletOptions, MemoryCluster, NodeAddressType, ObjectKind,
    ResolveOptions, Scheme, TransportKind, parse_objects,
};

use crate::common::{assert_status, node_path, pod_path, resolve_path, service_path};
use crate::support::data::fixture;

fn load() -> MemoryCluster {
    MemoryCluster::from_yaml(&fixture("cluster.yaml")).expect("fixture loads")
}

fn authorities(cluster: &MemoryCluster, ns: &str, id: &str) -> Vec<(String, EndpointState)> {
    let target = resolve_path(
        &*cluster.snapshot(),
        &service_path(ns, id),
        &ResolveOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{ns}/{id}: {e:?}"));
    target
        .candidates
        .iter()
        .map(|c| (c.authority(), c.state))
        .collect()
}

#[test]
fn fixture_loads_with_listings() {
    let cluster = load();
    let snapshot = cluster.snapshot();
    let counts = snapshot.counts();
    assert_eq!(counts[&ObjectKind::Pod], 10);
    assert_eq!(counts[&ObjectKind::Service], 4);
    assert_eq!(counts[&ObjectKind::Endpoints], 2);
    assert_eq!(counts[&ObjectKind::EndpointSlice], 4);
    assert_eq!(counts[&ObjectKind::Node], 4);
    assert_eq!(counts[&ObjectKind::Namespace], 2);
    assert_eq!(snapshot.namespaces(), ["monitoring", "payments", "shop"]);
    let names = |pods: Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>>| -> Vec<String> {
        pods.iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    p.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        names(snapshot.pods(None)),
        [
            "monitoring/prometheus-0",
            "payments/api-0",
            "payments/api-1",
            "shop/db-0",
            "shop/pending-0",
            "shop/v6-0",
            "shop/web-0",
            "shop/web-1",
            "shop/web-2",
            "shop/web-3",
        ]
    );
    assert_eq!(
        names(snapshot.pods(Some("payments"))),
        ["payments/api-0", "payments/api-1"]
    );
    assert!(snapshot.pods(Some("nowhere")).is_empty());
    let node_names: Vec<_> = snapshot
        .nodes()
        .iter()
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(node_names, ["node-a", "node-b", "node-c", "node-d"]);
    let slices: Vec<_> = snapshot
        .endpoint_slices_in(Some("shop"))
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(slices, ["web-7xk2p", "web-9qv4d"]);
    assert_eq!(snapshot.endpoint_slices_in(None).len(), 4);
    assert_eq!(snapshot.services(Some("shop")).len(), 2);
    assert_eq!(snapshot.endpoints(None).len(), 2);
    let namespaces: Vec<_> = snapshot
        .namespace_objects()
        .iter()
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(namespaces, ["monitoring", "payments", "shop"]);
    assert!(snapshot.namespace("shop").is_some_and(|n| n.spec.is_some()));
    assert!(
        snapshot.namespace("monitoring").is_none(),
        "only used, no object"
    );
}

#[test]
fn the_fixture_round_trips_through_json() {
    let cluster = load();
    let snapshot = cluster.snapshot();
    let items: Vec<serde_json::Value> = snapshot
        .objects()
        .iter()
        .map(|object| match object {
            kube_bastion_core::Object::Pod(o) => serde_json::to_value(o),
            kube_bastion_core::Object::Service(o) => serde_json::to_value(o),
            kube_bastion_core::Object::Endpoints(o) => serde_json::to_value(o),
            kube_bastion_core::Object::EndpointSlice(o) => serde_json::to_value(o),
            kube_bastion_core::Object::Node(o) => serde_json::to_value(o),
            kube_bastion_core::Object::Namespace(o) => serde_json::to_value(o),
        })
        .collect::<Result<_, _>>()
        .expect("serializes");
    // `kubectl get -o json` form: one pretty-printed List.
    let json = serde_json::to_string_pretty(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    .expect("json");
    let again = MemoryCluster::from_objects(parse_objects(&json).expect("JSON loads"));
    assert_eq!(again.snapshot().counts(), snapshot.counts());
    for (ns, id) in [("shop", "web:80"), ("shop", "db"), ("payments", "api:443")] {
        assert_eq!(
            authorities(&again, ns, id),
            authorities(&cluster, ns, id),
            "{ns}/{id}"
        );
    }
}

#[test]
fn multi_port_dual_stack_service() {
    let cluster = load();
    let ready = |a: &str| (a.to_owned(), EndpointState::Ready);
    // Slices in name order (IPv4 slice, then IPv6 slice); the serving-terminating web-2, the
    // not-serving web-3 and the forged 10.9.9.9 entry are left out.
    assert_eq!(
        authorities(&cluster, "shop", "web:80"),
        [
            ready("10.244.1.10:8080"),
            ready("10.244.2.11:8080"),
            ready("[fd00:10:244:1::a]:8080"),
            ready("[fd00:10:244:2::b]:8080"),
        ]
    );
    assert_eq!(
        authorities(&cluster, "shop", "web:http"),
        authorities(&cluster, "shop", "web:80")
    );
    assert_eq!(
        authorities(&cluster, "shop", "web:443"),
        [ready("10.244.1.10:8443"), ready("10.244.2.11:8443")]
    );

    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let target = resolve_path(&*view, &service_path("shop", "web:80"), &options).expect("web");
    assert_eq!(
        (target.scheme, target.protocol, target.transport),
        (Scheme::Http, AppProtocol::Http, TransportKind::Generic)
    );
    let info = target.service.expect("info");
    assert_eq!(info.client_ip_affinity_seconds, Some(10800));
    assert_eq!(info.balancer.as_deref(), Some("ewma"));
    assert_eq!(info.port_name, "http");
    let target = resolve_path(&*view, &service_path("shop", "web:443"), &options).expect("web");
    assert_eq!(target.scheme, Scheme::Https);
    let target = resolve_path(&*view, &service_path("shop", "web:9000"), &options).expect("web");
    assert_eq!(
        (target.scheme, target.protocol),
        (Scheme::Http, AppProtocol::H2c)
    );
    let target = resolve_path(&*view, &service_path("shop", "web:ws"), &options).expect("web");
    assert_eq!(
        (target.scheme, target.protocol),
        (Scheme::Http, AppProtocol::Http)
    );
    // The service has no unnamed port.
    let result = resolve_path(&*view, &service_path("shop", "web"), &options);
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "web""#,
    );
}

#[test]
fn terminating_only_and_fallback_services() {
    let cluster = load();
    assert_eq!(
        authorities(&cluster, "payments", "api:443"),
        [(
            "10.245.0.6:8443".to_owned(),
            EndpointState::ServingTerminating
        )]
    );
    let target = resolve_path(
        &*cluster.snapshot(),
        &service_path("payments", "api"),
        &ResolveOptions::default(),
    );
    assert_status(
        &target,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "api""#,
    );
    let target = resolve_path(
        &*cluster.snapshot(),
        &service_path("payments", "api:https"),
        &ResolveOptions::default(),
    )
    .expect("api");
    assert_eq!(target.scheme, Scheme::Https, "kubernetes.io/wss");
    assert_eq!(
        target.service.expect("info").client_ip_affinity_seconds,
        Some(600)
    );
    // No slice for db: its Endpoints object, ready addresses only.
    assert_eq!(
        authorities(&cluster, "shop", "db"),
        [("10.244.2.20:5432".to_owned(), EndpointState::Ready)]
    );
    assert_eq!(
        authorities(&cluster, "shop", "db:5432"),
        authorities(&cluster, "shop", "db")
    );
    let result = resolve_path(
        &*cluster.snapshot(),
        &service_path("monitoring", "prometheus:9090"),
        &ResolveOptions::default(),
    );
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "prometheus:9090""#,
    );
}

#[test]
fn fixture_pods() {
    let cluster = load();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let authority = |id: &str| {
        resolve_path(&*view, &pod_path("shop", id), &options)
            .expect(id)
            .candidates[0]
            .authority()
    };
    assert_eq!(
        authority("web-0"),
        "10.244.1.10:8080",
        "primary family, first container port"
    );
    assert_eq!(authority("web-0:grpc"), "10.244.1.10:9000");
    assert_eq!(authority("web-0:admin"), "10.244.1.10:15000");
    assert_eq!(authority("web-3"), "10.244.1.13", "no declared port");
    assert_eq!(authority("v6-0"), "[fd00:10:244:3::c]:80");
    let result = resolve_path(&*view, &pod_path("shop", "pending-0"), &options);
    assert_status(&result, 400, Some("BadRequest"), "address not allowed");
    let result = resolve_path(&*view, &pod_path("payments", "web-0"), &options);
    assert_status(&result, 404, Some("NotFound"), r#"pods "web-0" not found"#);
}

#[test]
fn fixture_nodes() {
    let cluster = load();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let target = resolve_path(&*view, &node_path("node-a"), &options).expect("node-a");
    assert_eq!(
        target.candidates[0].host,
        Host::Name("node-a".into()),
        "Hostname first by default"
    );
    assert_eq!(target.candidates[0].port, Some(10250));
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Https, TransportKind::Kubelet)
    );
    assert_eq!(target.tls_server_name.as_deref(), Some("node-a"));
    let internal = ResolveOptions {
        kubelet: KubeletOptions {
            preferred_address_types: vec![NodeAddressType::InternalIp, NodeAddressType::ExternalIp],
            default_port: 10250,
        },
        ..ResolveOptions::default()
    };
    let target = resolve_path(&*view, &node_path("node-b"), &internal).expect("node-b");
    assert_eq!(target.candidates[0].authority(), "10.0.0.12:11250");
    let target = resolve_path(&*view, &node_path("node-b:10250"), &internal).expect("node-b");
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Http, TransportKind::Generic)
    );
    let result = resolve_path(&*view, &node_path("node-c"), &options);
    assert_status(&result, 400, Some("BadRequest"), "address not allowed");
    let result = resolve_path(&*view, &node_path("node-d"), &options);
    assert_status(
        &result,
        500,
        None,
        "no preferred addresses found; known addresses: []",
    );
    let result = resolve_path(&*view, &node_path("node-e"), &options);
    assert_status(
        &result,
        404,
        Some("NotFound"),
        r#"nodes "node-e" not found"#,
    );
}
