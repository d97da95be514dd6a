//! The location-stage rows of `error_responses.json`: each is reproduced against a cluster
//! and compared code, reason and message (placeholders filled in).

use kube_bastion_core::{DestinationPolicy, ResolveOptions, Status, Target};
use serde_json::json;

use crate::common::{
    cluster, endpoints, node, node_path, pod, pod_path, resolve_path, service, service_path,
};
use crate::support::data::vector_rows;

/// Conditions answered before or after resolution, by other parts of the library (their
/// tests own these rows).
const OTHER_STAGES: &[&str] = &[
    "dryRun query parameter present",
    "backend round trip fails (non-upgrade)",
    "upgrade dial/TLS fails",
    "upgrade: backend status 1xx-3xx other than 101",
    "upgrade: backend status >= 400",
    "empty subpath with GET/HEAD",
    "unauthenticated",
];

/// Reproduces `condition` (for `resource` when the row names one): the result and the
/// values of the message placeholders.
fn reproduce(
    condition: &str,
    resource: Option<&str>,
) -> (Result<Target, Status>, Vec<(&'static str, String)>) {
    let cluster = cluster(vec![
        pod("ns", "web-0", &["10.0.0.1"], json!([])),
        service("ns", "web", json!([{"name": "http", "port": 80}])),
        endpoints(
            "ns",
            "web",
            json!([{"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "web-0"}}],
                    "ports": [{"name": "http", "port": 8080}]}]),
        ),
        service("ns", "empty", json!([{"port": 80}])),
        endpoints("ns", "empty", json!([])),
        node("bare", json!([]), 0),
        node(
            "home",
            json!([{"type": "InternalIP", "address": "127.0.0.1"}]),
            0,
        ),
        node(
            "named",
            json!([{"type": "Hostname", "address": "localhost"}]),
            0,
        ),
    ]);
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let run = |path: String| resolve_path(&*view, &path, &options);
    match (condition, resource) {
        ("id fails SplitSchemeNamePort", Some("pods")) => (
            run(pod_path("ns", "ftp:web-0:80")),
            vec![("<id>", "ftp:web-0:80".into())],
        ),
        ("id fails SplitSchemeNamePort", Some("services")) => (
            run(service_path("ns", "a:b:c:d")),
            vec![("<id>", "a:b:c:d".into())],
        ),
        ("id fails SplitSchemeNamePort", Some("nodes")) => (
            run(node_path("HTTPS:home:1")),
            vec![("<id>", "HTTPS:home:1".into())],
        ),
        ("pod not found", _) => (
            run(pod_path("ns", "web-9:80")),
            vec![("<name>", "web-9".into())],
        ),
        ("service numeric port, service not found", _) => (
            run(service_path("ns", "gone:80")),
            vec![("<name>", "gone".into())],
        ),
        ("service numeric port not declared", _) => (
            run(service_path("ns", "web:81")),
            vec![("<n>", "81".into()), ("<name>", "web".into())],
        ),
        ("Endpoints has zero subsets", _) => (
            run(service_path("ns", "empty")),
            vec![("<name>", "empty".into())],
        ),
        ("no subset/port/valid address match", _) => (
            run(service_path("ns", "https:web:metrics")),
            vec![("<full id as given>", "https:web:metrics".into())],
        ),
        ("node has no address of a preferred type", _) => {
            (run(node_path("bare")), vec![("[...]", "[]".into())])
        }
        ("node address not global unicast (any resolved IP)", _) => {
            (run(node_path("home:8080")), vec![])
        }
        ("node hostname resolves to nothing", _) => {
            // The caller resolved `localhost` (a Hostname address) to nothing.
            let target = run(node_path("named")).expect("a host name is left to the caller");
            let checked = DestinationPolicy::kube_default()
                .check_resolved(&[])
                .map(|()| target);
            (checked, vec![])
        }
        other => panic!("no reproduction for {other:?}"),
    }
}

#[test]
fn location_stage_error_rows() {
    let rows = vector_rows("error_responses.json");
    let mut reproduced = 0;
    for row in &rows {
        let condition = row["condition"].as_str().expect("condition");
        if OTHER_STAGES.contains(&condition) {
            continue;
        }
        let (result, fills) = reproduce(condition, row["resource"].as_str());
        let mut message = row["message"].as_str().expect("message").to_owned();
        for (placeholder, value) in fills {
            assert!(message.contains(placeholder), "{condition}: {placeholder}");
            message = message.replace(placeholder, &value);
        }
        let status = result.expect_err(condition);
        let reason = row["reason"].as_str().filter(|r| !r.is_empty());
        assert_eq!(
            status.code(),
            row["code"].as_u64().expect("code") as u16,
            "{condition}"
        );
        assert_eq!(status.reason(), reason, "{condition}");
        assert_eq!(status.message(), message, "{condition}");
        reproduced += 1;
    }
    assert_eq!(
        reproduced + OTHER_STAGES.len(),
        rows.len(),
        "every row is accounted for"
    );
    assert_eq!(reproduced, 11);
}
