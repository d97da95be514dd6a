//! `services/proxy` resolution: every row of `service_location.json`, run once against the
//! Endpoints objects of the vectors and once against equivalent EndpointSlices; then
//! readiness, appProtocol, affinity and the destination policy.

use kube_bastion_core::{
    AppProtocol, DestinationPolicy, Host, MemoryCluster, ResolveOptions, Scheme, TransportKind,
};
use serde_json::{Value, json};

use crate::common::{
    assert_status, assert_status_value, cluster, endpoints, endpoints_as_slices, location, pod,
    resolve_path, service, service_path,
};
use crate::readiness::readiness_cluster;
use crate::support::data::vector_rows;

/// Which source of endpoints a fixture is built with.
#[derive(Clone, Copy, Debug)]
enum Source {
    Endpoints,
    Slices,
}

fn build(fixture: &Value, source: Source) -> MemoryCluster {
    let ns = fixture["namespace"].as_str().unwrap_or("default");
    let mut objects = Vec::new();
    for p in fixture["pods"].as_array().into_iter().flatten() {
        let ips: Vec<&str> = p["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        objects.push(pod(
            ns,
            p["name"].as_str().expect("pod name"),
            &ips,
            json!([]),
        ));
    }
    for s in fixture["services"].as_array().into_iter().flatten() {
        objects.push(service(
            ns,
            s["name"].as_str().expect("service name"),
            s["ports"].clone(),
        ));
    }
    for e in fixture["endpoints"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("endpoints name");
        match source {
            Source::Endpoints => objects.push(endpoints(ns, name, e["subsets"].clone())),
            Source::Slices => objects.extend(endpoints_as_slices(ns, name, &e["subsets"])),
        }
    }
    cluster(objects)
}

/// Turns a single-service row (`service`, `endpoints`, `pods`) into the shared fixture form.
fn row_fixture(input: &Value) -> Value {
    let name = input["service"]["name"].clone();
    json!({
        "namespace": input["namespace"],
        "pods": input["pods"],
        "services": [input["service"]],
        "endpoints": [{"name": name, "subsets": input["endpoints"]["subsets"]}],
    })
}

fn run_service_vectors(source: Source) {
    let rows = vector_rows("service_location.json");
    let shared = rows
        .iter()
        .find(|r| !r["fixture"].is_null())
        .expect("shared fixture")["fixture"]
        .clone();
    let shared_cluster = build(&shared, source);
    let mut checked = 0;
    for (i, row) in rows.iter().enumerate() {
        if !row["fixture"].is_null() {
            continue;
        }
        let input = &row["input"];
        let id = input["id"].as_str().expect("id");
        let (cluster, ns) = if input["fixture"] == "shared" {
            (
                None,
                shared["namespace"].as_str().expect("namespace").to_owned(),
            )
        } else {
            let fixture = row_fixture(input);
            let ns = fixture["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            (Some(build(&fixture, source)), ns)
        };
        let view = cluster.as_ref().unwrap_or(&shared_cluster).snapshot();
        let result = resolve_path(&*view, &service_path(&ns, id), &ResolveOptions::default());
        let expected = &row["expected"];
        let context = format!("{source:?} row {i} ({id})");
        if let Some(location_expected) = expected["location"].as_str() {
            let target = result.unwrap_or_else(|e| panic!("{context}: {e:?}"));
            // Every fixture has exactly one valid endpoint for the port, so upstream's random
            // pick and our full candidate list agree.
            assert_eq!(target.candidates.len(), 1, "{context}: {target:?}");
            assert_eq!(location(&target), location_expected, "{context}");
            assert_eq!(target.transport, TransportKind::Generic);
            assert_eq!(target.protocol, AppProtocol::Http);
            let info = target.service.as_ref().expect("service info");
            assert_eq!(info.namespace, ns);
            let parsed = kube_bastion_core::TargetId::parse(id).expect("valid id");
            assert_eq!(info.name, parsed.name(), "{context}");
            assert_eq!(
                target.tls_server_name,
                Some(format!("{}.{ns}.svc", info.name))
            );
        } else {
            let error = if expected["error"].is_object() {
                &expected["error"]
            } else {
                &expected["error_detail_derived"]
            };
            assert!(error.is_object(), "{context}: no error detail");
            assert_status_value(&result, error);
        }
        checked += 1;
    }
    assert!(checked >= 23, "only {checked} rows checked");
}

#[test]
fn service_location_vectors_with_endpoints() {
    run_service_vectors(Source::Endpoints);
}

#[test]
fn service_location_vectors_with_endpoint_slices() {
    run_service_vectors(Source::Slices);
}

#[test]
fn numeric_ports_follow_go_parse_int() {
    let rows = vector_rows("service_location.json");
    let shared = rows[0]["fixture"].clone();
    for source in [Source::Endpoints, Source::Slices] {
        let cluster = build(&shared, source);
        let view = cluster.snapshot();
        let options = ResolveOptions::default();
        for id in ["unnamed:+93", "unnamed:093", "unnamed:0000093"] {
            let target = resolve_path(&*view, &service_path("default", id), &options).expect(id);
            assert_eq!(location(&target), "//1.2.3.4:80", "{id}");
        }
        let result = resolve_path(&*view, &service_path("default", "unnamed:-93"), &options);
        assert_status(
            &result,
            503,
            Some("ServiceUnavailable"),
            r#"no service port -93 found for service "unnamed""#,
        );
        // Out of int64 range: not a number for ParseInt, so a port *name*.
        let id = "unnamed:99999999999999999999";
        let result = resolve_path(&*view, &service_path("default", id), &options);
        assert_status(
            &result,
            503,
            Some("ServiceUnavailable"),
            r#"no endpoints available for service "unnamed:99999999999999999999""#,
        );
        let result = resolve_path(&*view, &service_path("default", "https:named:"), &options);
        assert_status(
            &result,
            503,
            Some("ServiceUnavailable"),
            r#"no endpoints available for service "https:named:""#,
        );
    }
}

fn app_protocol_cluster() -> MemoryCluster {
    let ports = json!([
        {"name": "plain", "port": 80, "appProtocol": "http"},
        {"name": "tls", "port": 443, "appProtocol": "https"},
        {"name": "grpc", "port": 9000, "appProtocol": "kubernetes.io/h2c"},
        {"name": "ws", "port": 8081, "appProtocol": "kubernetes.io/ws"},
        {"name": "wss", "port": 8443, "appProtocol": "kubernetes.io/wss"},
        {"name": "other", "port": 7000, "appProtocol": "example.com/custom"},
        {"name": "none", "port": 7001},
        {"name": "slice-says-https", "port": 7002},
    ]);
    let slice_ports = json!([
        {"name": "plain", "port": 8080}, {"name": "tls", "port": 8443}, {"name": "grpc", "port": 9000},
        {"name": "ws", "port": 8081}, {"name": "wss", "port": 9443}, {"name": "other", "port": 7000},
        {"name": "none", "port": 7001}, {"name": "slice-says-https", "port": 7002, "appProtocol": "https"},
    ]);
    cluster(vec![
        service("ns", "app", ports),
        pod("ns", "a", &["10.0.0.1"], json!([])),
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "app-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "app"}},
            "addressType": "IPv4",
            "ports": slice_ports,
            "endpoints": [{"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a"}}],
        }),
    ])
}

#[test]
fn app_protocol_picks_the_scheme_when_the_id_names_none() {
    let cluster = app_protocol_cluster();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let cases = [
        ("app:80", Scheme::Http, false, AppProtocol::Http),
        ("app:443", Scheme::Https, false, AppProtocol::Http),
        ("app:9000", Scheme::Http, false, AppProtocol::H2c),
        ("app:8081", Scheme::Http, false, AppProtocol::Http),
        ("app:8443", Scheme::Https, false, AppProtocol::Http),
        ("app:7000", Scheme::Http, false, AppProtocol::Http),
        ("app:7001", Scheme::Http, false, AppProtocol::Http),
        (
            "app:slice-says-https",
            Scheme::Https,
            false,
            AppProtocol::Http,
        ),
        // An explicit scheme always wins; h2c only applies to plain HTTP.
        ("https:app:80", Scheme::Https, true, AppProtocol::Http),
        ("http:app:443", Scheme::Http, true, AppProtocol::Http),
        ("http:app:9000", Scheme::Http, true, AppProtocol::H2c),
        ("https:app:9000", Scheme::Https, true, AppProtocol::Http),
        ("https:app:grpc", Scheme::Https, true, AppProtocol::Http),
        ("app:grpc", Scheme::Http, false, AppProtocol::H2c),
    ];
    for (id, scheme, explicit, protocol) in cases {
        let target = resolve_path(&*view, &service_path("ns", id), &options).expect(id);
        assert_eq!(
            (target.scheme, target.scheme_explicit, target.protocol),
            (scheme, explicit, protocol),
            "{id}"
        );
        assert_eq!(target.tls_server_name.as_deref(), Some("app.ns.svc"));
    }
}

#[test]
fn service_info_carries_affinity_and_balancer() {
    let with = |spec: Value, annotations: Value| {
        let mut svc = service("ns", "web", json!([{"name": "http", "port": 80}]));
        for (k, v) in spec.as_object().expect("spec").iter() {
            svc["spec"][k] = v.clone();
        }
        svc["metadata"]["annotations"] = annotations;
        let cluster = cluster(vec![
            svc,
            pod("ns", "a", &["10.0.0.1"], json!([])),
            endpoints(
                "ns",
                "web",
                json!([{"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a"}}],
                        "ports": [{"name": "http", "port": 8080}]}]),
            ),
        ]);
        let target = resolve_path(
            &*cluster.snapshot(),
            &service_path("ns", "web:80"),
            &ResolveOptions::default(),
        )
        .expect("resolves");
        target.service.expect("service info")
    };
    let info = with(
        json!({"sessionAffinity": "ClientIP"}),
        json!({"kube-bastion.io/balancer": "round-robin"}),
    );
    assert_eq!(info.client_ip_affinity_seconds, Some(10800));
    assert_eq!(info.balancer.as_deref(), Some("round-robin"));
    assert_eq!(
        (
            info.namespace.as_str(),
            info.name.as_str(),
            info.port_name.as_str()
        ),
        ("ns", "web", "http")
    );
    let info = with(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        json!({}),
    );
    assert_eq!(info.client_ip_affinity_seconds, Some(60));
    assert_eq!(info.balancer, None);
    let info = with(
        json!({"sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        json!(null),
    );
    assert_eq!(info.client_ip_affinity_seconds, None);
}

#[test]
fn every_service_candidate_passes_the_destination_policy() {
    let cluster = readiness_cluster(&[
        ("a", "10.0.0.1", json!({"ready": true})),
        ("b", "10.0.1.1", json!({"ready": true})),
        (
            "c",
            "10.0.2.1",
            json!({"ready": false, "serving": true, "terminating": true}),
        ),
    ]);
    let view = cluster.snapshot();
    let deny = |cidr: &str| ResolveOptions {
        policy: DestinationPolicy::kube_default().deny(cidr.parse().expect("cidr")),
        ..ResolveOptions::default()
    };
    let hosts = |options: &ResolveOptions| -> Vec<Host> {
        resolve_path(&*view, &service_path("ns", "web:80"), options)
            .map(|t| t.candidates.iter().map(|c| c.host.clone()).collect())
            .unwrap_or_default()
    };
    let ip = |s: &str| Host::Ip(s.parse().expect("ip"));
    assert_eq!(hosts(&deny("10.0.0.0/24")), [ip("10.0.1.1")]);
    // With every ready endpoint refused, the serving-terminating one is the fallback.
    assert_eq!(hosts(&deny("10.0.0.0/23")), [ip("10.0.2.1")]);
    let result = resolve_path(&*view, &service_path("ns", "web:80"), &deny("10.0.0.0/16"));
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "web:80""#,
    );
}

#[test]
fn the_candidate_list_is_shared_from_the_snapshot_unless_the_policy_filters_it() {
    let cluster = readiness_cluster(&[
        ("a", "10.0.0.1", json!({"ready": true})),
        ("b", "10.0.1.1", json!({"ready": true})),
    ]);
    let view = cluster.snapshot();
    let path = service_path("ns", "web:80");
    let resolve_with = |options: &ResolveOptions| {
        resolve_path(&*view, &path, options)
            .expect("resolves")
            .candidates
    };
    // Nothing to filter: every request gets the snapshot's own list, not a copy.
    let first = resolve_with(&ResolveOptions::default());
    let second = resolve_with(&ResolveOptions::default());
    assert!(first.same_list(&second));
    assert_eq!(first.len(), 2);
    // A deny CIDR filters: a copy with only what the policy admits, made once per snapshot
    // and policy and then shared by every request under that policy.
    let deny = |cidr: &str| ResolveOptions {
        policy: DestinationPolicy::kube_default().deny(cidr.parse().expect("cidr")),
        ..ResolveOptions::default()
    };
    let filtered = resolve_with(&deny("10.0.0.0/24"));
    assert!(filtered.same_list(&resolve_with(&deny("10.0.0.0/24"))));
    assert!(!filtered.same_list(&first));
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].host, Host::Ip("10.0.1.1".parse().expect("ip")));
    // Another policy never gets that copy: its own list, then the first policy's again.
    let other = resolve_with(&deny("10.0.1.0/24"));
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].host, Host::Ip("10.0.0.1".parse().expect("ip")));
    let again = resolve_with(&deny("10.0.0.0/24"));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].host, Host::Ip("10.0.1.1".parse().expect("ip")));
}

#[test]
fn selectorless_and_external_name_services() {
    let cluster = cluster(vec![
        service("ns", "legacy", json!([{"port": 80}])),
        endpoints(
            "ns",
            "legacy",
            json!([{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]),
        ),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "ns"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    ]);
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let result = resolve_path(&*view, &service_path("ns", "legacy"), &options);
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no endpoints available for service "legacy""#,
    );
    let result = resolve_path(&*view, &service_path("ns", "ext"), &options);
    assert_status(
        &result,
        404,
        Some("NotFound"),
        r#"endpoints "ext" not found"#,
    );
    let result = resolve_path(&*view, &service_path("ns", "ext:80"), &options);
    assert_status(
        &result,
        503,
        Some("ServiceUnavailable"),
        r#"no service port 80 found for service "ext""#,
    );
}
