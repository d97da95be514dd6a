//! Kubelet path authorization, from upstream's test table (`tests/vectors/kubelet_authz_paths.json`,
//! copied from the shared vectors: `pkg/kubelet/server/auth_test.go`): the subresources the
//! kubelet asks for each path with fine-grained authorization on, `isSubpath`, and the
//! grants that let a request through; then [`KubeletAuthorizer`] in front of an
//! authorizer, with the one rule where it is stricter than upstream (commands need `create`).

use futures_util::FutureExt;
use http::Method;
use kube_bastion::core::kubelet::{KubeletCheck, is_subpath};
use kube_bastion::{Authorizer, Decision, KubeletAuthorizer, UserInfo, authorize_fn};
use serde_json::Value;

fn rows() -> Vec<Value> {
    let path = format!(
        "{}/tests/vectors/kubelet_authz_paths.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("vector file");
    let value: Value = serde_json::from_str(&text).unwrap();
    value["rows"].as_array().unwrap().clone()
}

fn method(row: &Value) -> Option<Method> {
    row["input"]["method"].as_str().map(|m| m.parse().unwrap())
}

/// Whether `grants` (`"verb nodes/subresource"`) allow `check` as the kubelet asks it.
fn granted(grants: &[&str], check: &KubeletCheck) -> bool {
    check
        .subresources
        .iter()
        .any(|sub| grants.contains(&format!("{} nodes/{sub}", check.verb).as_str()))
}

#[test]
fn subresources_and_verbs_follow_upstreams_table() {
    let (mut checked, mut coarse) = (0, 0);
    for row in rows() {
        let input = &row["input"];
        let expected = &row["expected"];
        let Some(method) = method(&row) else { continue };
        let Some(order) = expected["subresourcesInOrder"].as_array() else {
            continue;
        };
        // Rows of the coarse mode (fine-grained authorization off, the default before 1.33)
        // are not what this crate checks.
        if input["KubeletFineGrainedAuthz"] == Value::Bool(false) {
            coarse += 1;
            continue;
        }
        let path = input["path"].as_str().unwrap();
        let check = KubeletCheck::upstream(&method, path);
        let order: Vec<&str> = order.iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(check.subresources, order.as_slice(), "{}", row["name"]);
        let verb = expected["attributes"][0]["verb"]
            .as_str()
            .or(expected["verb"].as_str())
            .unwrap();
        assert_eq!(check.verb, verb, "{}", row["name"]);
        for attributes in expected["attributes"].as_array().into_iter().flatten() {
            let asked = check.attributes(
                check.subresources[0],
                input["nodeName"].as_str().unwrap_or("node1"),
            );
            assert_eq!(asked.resource, attributes["resource"], "{}", row["name"]);
            assert_eq!(asked.name, attributes["name"], "{}", row["name"]);
            assert_eq!(
                asked.api_version, attributes["apiVersion"],
                "{}",
                row["name"]
            );
            assert_eq!(asked.namespace, None, "{}", row["name"]);
        }
        checked += 1;
    }
    assert_eq!(
        (checked, coarse),
        (32, 25),
        "rows checked, coarse-mode rows skipped"
    );
}

#[test]
fn is_subpath_follows_upstreams_table() {
    let mut checked = 0;
    for row in rows() {
        if row["input"]["function"] != "isSubpath" {
            continue;
        }
        let input = &row["input"];
        assert_eq!(
            is_subpath(
                input["subpath"].as_str().unwrap(),
                input["path"].as_str().unwrap()
            ),
            row["expected"]["result"].as_bool().unwrap(),
            "{}",
            row["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// The rows that grant a user some `nodes` subresources: upstream's outcome for
/// [`KubeletCheck::upstream`], and the same except for a WebSocket exec with only `get`
/// (allowed upstream, refused here) for [`KubeletCheck::for_path`].
#[test]
fn grants_decide_as_upstreams_kubelet_except_commands_need_create() {
    let mut checked = 0;
    for row in rows() {
        let input = &row["input"];
        let (Some(method), Some(grants)) = (method(&row), input["grants"].as_array()) else {
            continue;
        };
        if input["KubeletFineGrainedAuthz"] == Value::Bool(false) || input["component"].is_string()
        {
            continue;
        }
        let grants: Vec<&str> = grants.iter().map(|g| g.as_str().unwrap()).collect();
        let path = input["path"].as_str().unwrap();
        let path = path.split('?').next().unwrap();
        let status = row["expected"]["httpStatus"].as_u64().unwrap();
        let upstream_allows = status < 400;
        assert_eq!(
            granted(&grants, &KubeletCheck::upstream(&method, path)),
            upstream_allows,
            "{}",
            row["name"]
        );
        let ours = granted(&grants, &KubeletCheck::for_path(&method, path));
        if path.starts_with("/exec/") && grants == ["get nodes/proxy"] && upstream_allows {
            assert!(
                !ours,
                "a GET exec with only get nodes/proxy: {}",
                row["name"]
            );
        } else {
            assert_eq!(ours, upstream_allows, "{}", row["name"]);
        }
        checked += 1;
    }
    assert!(checked >= 5, "{checked}");
}

/// An authorizer granting `grants` (`"verb resource/subresource"`) to everyone.
fn grants(grants: &'static [&'static str]) -> impl Authorizer {
    authorize_fn(move |attrs, _| {
        let asked = format!("{} {}/{}", attrs.verb, attrs.resource, attrs.subresource);
        if grants.contains(&asked.as_str()) {
            Decision::Allow
        } else {
            Decision::NoOpinion {
                reason: String::new(),
            }
        }
    })
}

fn decide(authorizer: &impl Authorizer, method: Method, path: &str) -> Decision {
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap()
        .into_parts();
    parts
        .extensions
        .insert(UserInfo::new("alice", "", vec!["dev".into()]));
    let kube_bastion::core::Route::Proxy(request) =
        kube_bastion::core::ProxyRequest::from_parts(&parts)
    else {
        panic!("not a proxy path: {path}");
    };
    let attributes = request.attributes();
    authorizer
        .authorize(&attributes, &parts)
        .now_or_never()
        .expect("no I/O")
}

#[test]
fn the_authorizer_asks_what_the_kubelet_path_needs() {
    let readers = KubeletAuthorizer::new(grants(&["get nodes/proxy", "get pods/proxy"]));
    let node = "/api/v1/nodes/https:node-1:10250/proxy";
    assert_eq!(
        decide(&readers, Method::GET, &format!("{node}/healthz")),
        Decision::Allow
    );
    assert_eq!(
        decide(&readers, Method::GET, &format!("{node}/pods")),
        Decision::Allow
    );
    // `..` is resolved before the path is judged, as the kubelet would see it.
    let exec = decide(
        &readers,
        Method::GET,
        &format!("{node}/healthz/../exec/ns/web/app"),
    );
    assert_eq!(
        exec,
        Decision::deny(
            "alice",
            r#"the kubelet path "/exec/ns/web/app" needs "create" on "nodes/proxy" of node "node-1""#
        )
    );
    // `/stats` has no `nodes/proxy` fallback.
    let stats = decide(&readers, Method::GET, &format!("{node}/stats/summary"));
    assert_eq!(
        stats,
        Decision::deny(
            "alice",
            r#"the kubelet path "/stats/summary" needs "get" on "nodes/stats" of node "node-1""#
        )
    );
    // Pods and Services are not kubelet requests.
    assert_eq!(
        decide(
            &readers,
            Method::GET,
            "/api/v1/namespaces/ns/pods/web/proxy/exec/x"
        ),
        Decision::Allow
    );

    let operators = KubeletAuthorizer::new(grants(&[
        "get nodes/proxy",
        "create nodes/proxy",
        "get nodes/stats",
    ]));
    assert_eq!(
        decide(&operators, Method::GET, &format!("{node}/exec/ns/web/app")),
        Decision::Allow
    );
    assert_eq!(
        decide(&operators, Method::GET, &format!("{node}/stats/summary")),
        Decision::Allow
    );

    // What the inner authorizer refuses stays refused, with its own answer.
    let nobody = KubeletAuthorizer::new(grants(&["get nodes/stats"]));
    assert_eq!(
        decide(&nobody, Method::GET, &format!("{node}/stats/summary")),
        Decision::NoOpinion {
            reason: String::new()
        }
    );
}
