//! `pods/proxy` resolution: every row of `pod_location.json`, plus named container ports.

use kube_bastion_core::{AppProtocol, EndpointState, Host, ResolveOptions, Scheme, TransportKind};
use serde_json::json;

use crate::common::{
    assert_status, assert_status_value, cluster, containers, location, pod, pod_path, resolve_path,
};
use crate::support::data::vector_rows;

const NS: &str = "default";

#[test]
fn pod_location_vectors() {
    let rows = vector_rows("pod_location.json");
    assert!(rows.len() >= 16, "the vector file shrank");
    for (i, row) in rows.iter().enumerate() {
        let input = &row["input"];
        let id = input["id"].as_str().expect("id");
        let mut objects = Vec::new();
        if !input["pod"].is_null() {
            let spec = &input["pod"];
            let ips: Vec<&str> = spec["podIPs"]
                .as_array()
                .expect("podIPs")
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            let mut object = pod(NS, "foo", &ips, containers(&spec["containers"]));
            object["spec"]["initContainers"] = containers(&spec["initContainers"]);
            objects.push(object);
        }
        let cluster = cluster(objects);
        let result = resolve_path(
            &*cluster.snapshot(),
            &pod_path(NS, id),
            &ResolveOptions::default(),
        );
        let expected = &row["expected"];
        if !expected["error"].is_null() {
            assert_status_value(&result, &expected["error"]);
            continue;
        }
        let target = result.unwrap_or_else(|e| panic!("row {i} ({id}): {e:?}"));
        assert_eq!(target.candidates.len(), 1, "row {i}");
        let candidate = &target.candidates[0];
        assert_eq!(
            candidate.authority(),
            expected["host"].as_str().expect("host"),
            "row {i}"
        );
        assert_eq!(candidate.pod.as_deref(), Some("foo"));
        assert_eq!(candidate.state, EndpointState::Ready);
        match expected["scheme"].as_str().expect("scheme") {
            "" => assert!(
                !target.scheme_explicit && target.scheme == Scheme::Http,
                "row {i}"
            ),
            "https" => assert!(
                target.scheme_explicit && target.scheme == Scheme::Https,
                "row {i}"
            ),
            other => panic!("row {i}: unexpected scheme {other}"),
        }
        if let Some(prefix) = expected["effective_url_prefix"].as_str() {
            assert_eq!(
                format!("{}://{}", target.scheme, candidate.authority()),
                prefix,
                "row {i}"
            );
        }
        assert_eq!(target.transport, TransportKind::Generic);
        assert_eq!(target.protocol, AppProtocol::Http);
        assert_eq!(target.service, None);
        assert!(location(&target).ends_with(expected["host"].as_str().expect("host")));
    }
}

fn named_port_cluster() -> kube_bastion_core::MemoryCluster {
    cluster(vec![
        pod(
            "shop",
            "web",
            &["10.1.0.5"],
            json!([
                {"name": "init-like", "image": "x"},
                {"name": "app", "image": "x", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                ]},
                {"name": "sidecar", "image": "x", "ports": [
                    {"name": "admin", "containerPort": 15000},
                    {"name": "http", "containerPort": 15080},
                ]},
            ]),
        ),
        pod("shop", "pending", &[], json!([{"name": "c", "image": "x"}])),
        pod("shop", "bad-ip", &["not-an-ip"], json!([])),
        pod(
            "shop",
            "loop",
            &["127.0.0.1"],
            json!([{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]),
        ),
        pod(
            "shop",
            "huge-port",
            &["10.1.0.9"],
            json!([{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]),
        ),
    ])
}

#[test]
fn named_container_ports_are_looked_up() {
    let cluster = named_port_cluster();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let port_of = |id: &str| {
        let target = resolve_path(&*view, &pod_path("shop", id), &options).expect(id);
        target.candidates[0].port
    };
    // Upstream leaves container port names as a TODO; we look them up.
    assert_eq!(
        port_of("web:http"),
        Some(8080),
        "first container declaring the name wins"
    );
    assert_eq!(port_of("web:metrics"), Some(9090));
    assert_eq!(
        port_of("web:admin"),
        Some(15000),
        "names are searched in every container"
    );
    assert_eq!(port_of("https:web:admin"), Some(15000));
    // Numbers are numbers, with leading zeros as Go's dialer reads them.
    assert_eq!(port_of("web:9090"), Some(9090));
    assert_eq!(port_of("web:09090"), Some(9090));
    assert_eq!(port_of("web:0"), Some(0));
    // No port: the first declared container port.
    assert_eq!(port_of("web"), Some(8080));
    assert_eq!(port_of("web:"), Some(8080));
    let target = resolve_path(&*view, &pod_path("shop", "web:metrics"), &options).expect("ok");
    assert_eq!(
        target.candidates[0].host,
        Host::Ip("10.1.0.5".parse().expect("ip"))
    );
}

#[test]
fn unknown_port_names_and_out_of_range_ports_are_refused() {
    let cluster = named_port_cluster();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let check = |id: &str, message: &str| {
        let result = resolve_path(&*view, &pod_path("shop", id), &options);
        assert_status(&result, 503, Some("ServiceUnavailable"), message);
    };
    check(
        "web:nope",
        r#"no container port "nope" found for pod "web""#,
    );
    // Go's dialer would not look IANA names up either (url.URL.Port only accepts digits).
    check(
        "web:https",
        r#"no container port "https" found for pod "web""#,
    );
    check("web:+80", r#"no container port "+80" found for pod "web""#);
    check(
        "web:HTTP",
        r#"no container port "HTTP" found for pod "web""#,
    );
    check("web:65536", r#"invalid port "65536" for pod "web""#);
    check("huge-port", r#"invalid port "70000" for pod "huge-port""#);
}

#[test]
fn the_address_is_checked_before_the_port() {
    let cluster = named_port_cluster();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    for id in ["pending", "pending:nope", "bad-ip", "loop", "loop:99999"] {
        let result = resolve_path(&*view, &pod_path("shop", id), &options);
        assert_status(&result, 400, Some("BadRequest"), "address not allowed");
    }
    // An allow CIDR re-admits loopback for a demo; a deny CIDR always wins.
    let demo = ResolveOptions {
        policy: kube_bastion_core::DestinationPolicy::kube_default().allow_loopback(),
        ..ResolveOptions::default()
    };
    let target = resolve_path(&*view, &pod_path("shop", "loop"), &demo).expect("loopback allowed");
    assert_eq!(target.candidates[0].authority(), "127.0.0.1:80");
    let strict = ResolveOptions {
        policy: kube_bastion_core::DestinationPolicy::kube_default()
            .deny("10.1.0.0/16".parse().expect("cidr")),
        ..ResolveOptions::default()
    };
    let result = resolve_path(&*view, &pod_path("shop", "web"), &strict);
    assert_status(&result, 400, Some("BadRequest"), "address not allowed");
}

#[test]
fn pod_ip_falls_back_to_status_pod_ip() {
    let mut object = pod("ns", "old", &[], json!([]));
    object["status"] = json!({"podIP": "10.3.0.1"});
    let cluster = cluster(vec![object]);
    let target = resolve_path(
        &*cluster.snapshot(),
        &pod_path("ns", "old"),
        &ResolveOptions::default(),
    )
    .expect("podIP is used when podIPs is empty");
    assert_eq!(target.candidates[0].authority(), "10.3.0.1");
    assert_eq!(target.candidates[0].port, None);
    assert_eq!(target.candidates[0].dial_port(target.scheme), 80);
}

#[test]
fn pods_are_namespaced() {
    let cluster = named_port_cluster();
    let result = resolve_path(
        &*cluster.snapshot(),
        &pod_path("other", "web"),
        &ResolveOptions::default(),
    );
    assert_status(&result, 404, Some("NotFound"), r#"pods "web" not found"#);
}
