//! `request_mapping.json`: from method, path and query to authorization attributes, the
//! `path` option, the 301 or the backend request target and `X-Forwarded-Uri`.

use kube_bastion_core::{Plan, Route};

use crate::{route, s, support::data::vector_rows};

/// Rows whose proxy prefix we compute differently on purpose (docs/compatibility.md):
/// upstream trims the backend path off the request path as a plain string suffix, which for
/// dot-segment and empty-segment paths is not the route prefix. We rewrite links under the
/// route prefix. (`X-Forwarded-Uri` keeps upstream's value.)
const PREFIX_DEVIATIONS: &[(&str, &str)] = &[
    (
        "/api/v1/namespaces/ns/pods/p/proxy/a/../b",
        "/api/v1/namespaces/ns/pods/p/proxy",
    ),
    (
        "/api/v1/namespaces/ns/pods/p/proxy/../../../secrets",
        "/api/v1/namespaces/ns/pods/p/proxy",
    ),
    (
        "/api/v1/namespaces/ns/pods/p/proxy/a//b",
        "/api/v1/namespaces/ns/pods/p/proxy",
    ),
];

#[test]
fn every_request_mapping_row() {
    let rows = vector_rows("request_mapping.json");
    assert!(!rows.is_empty());
    let mut deviations_seen = 0;
    for row in &rows {
        let input = &row["input"];
        let (method, path, query) = (s(input, "method"), s(input, "path"), s(input, "query"));
        let expected = &row["expected"];
        let result = s(expected, "result");
        let label = format!("{method} {path}?{query}");

        let request = match route(method, path, query, &[]) {
            Route::NotProxy => {
                // Only the removed legacy `/api/v1/proxy/...` form is not a proxy route.
                assert!(result.starts_with("404 (legacy"), "{label}: {result}");
                continue;
            }
            Route::Proxy(request) => request,
        };
        assert!(!result.starts_with("404"), "{label} must not be routed");

        if let Some(authz) = expected.get("authz") {
            assert_eq!(authz["is_resource_request"].as_bool(), Some(true));
            let attributes = request.attributes();
            assert_eq!(attributes.verb, s(authz, "verb"), "{label}");
            assert_eq!(attributes.resource, s(authz, "resource"), "{label}");
            assert_eq!(attributes.subresource, s(authz, "subresource"), "{label}");
            assert_eq!(attributes.name, s(authz, "name"), "{label}");
            assert_eq!(
                attributes.namespace.as_deref().unwrap_or(""),
                s(authz, "namespace"),
                "{label}"
            );
        }
        if let Some(option) = expected.get("path_option") {
            let option = option.as_str().expect("path_option");
            assert_eq!(request.path_option(), option.as_bytes(), "{label}");
        }

        match result {
            "301" => {
                assert_eq!(request.check(), Ok(()));
                assert_eq!(
                    request.plan(),
                    Plan::Redirect {
                        location: s(expected, "location_header").to_owned()
                    },
                    "{label}"
                );
            }
            "proxied" => {
                assert_eq!(request.check(), Ok(()));
                assert!(request.target_id().is_ok());
                assert_eq!(
                    request.plan(),
                    Plan::Forward {
                        path_and_query: s(expected, "backend_request_uri").to_owned(),
                        forwarded_uri: s(expected, "x_forwarded_uri").to_owned(),
                    },
                    "{label}"
                );
                let upstream_prefix = s(expected, "path_prepend");
                match PREFIX_DEVIATIONS.iter().find(|(p, _)| *p == path) {
                    Some((_, ours)) => {
                        assert_ne!(upstream_prefix, *ours, "{label}: not a deviation");
                        assert_eq!(request.prefix(), *ours, "{label}");
                        deviations_seen += 1;
                    }
                    None => assert_eq!(request.prefix(), upstream_prefix, "{label}"),
                }
            }
            "400" => {
                let status = request.check().expect_err("400");
                let want = &expected["status"];
                assert_eq!(
                    u64::from(status.code()),
                    want["code"].as_u64().expect("code")
                );
                assert_eq!(status.reason(), want["reason"].as_str());
                assert_eq!(status.message(), s(want, "message"));
            }
            other if other.starts_with("not proxied: authz verb ''") => {
                // Authorization sees verb ""; if it allows, the method is not routed: 405.
                assert_eq!(request.attributes().verb, "");
                let status = request.check().expect_err("405");
                assert_eq!(status.code(), 405);
                assert_eq!(status.reason(), Some("MethodNotAllowed"));
            }
            other => panic!("{label}: unhandled result {other:?}"),
        }
    }
    assert_eq!(deviations_seen, PREFIX_DEVIATIONS.len());
}

/// The spec's table rows that are not in the vector file.
#[test]
fn spec_table_rows() {
    let plan = crate::proxy("GET", "/api/v1/namespaces/ns/pods/p/proxy/a%20b(c)", "").plan();
    assert_eq!(
        plan,
        Plan::Forward {
            path_and_query: "/a%20b%28c%29".to_owned(),
            forwarded_uri: "/api/v1/namespaces/ns/pods/p/proxy/a%20b%28c%29".to_owned(),
        }
    );
    let request = crate::proxy("OPTIONS", "/api/v1/namespaces/ns/pods/p/proxy/x", "");
    assert_eq!(request.attributes().verb, "");
    assert_eq!(request.check(), Ok(()));
}

/// Deliberate difference: the query is kept on upgrade requests (upstream drops it,
/// kubernetes/kubernetes#77142), and an upgrade of a bare `/proxy` is forwarded to `/`.
#[test]
fn upgrade_keeps_the_query() {
    let upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket")];
    let Route::Proxy(request) = route(
        "GET",
        "/api/v1/namespaces/ns/pods/p/proxy/ws",
        "token=a&x=%2F",
        &upgrade,
    ) else {
        panic!("proxy route");
    };
    assert!(request.is_upgrade());
    let Plan::Forward { path_and_query, .. } = request.plan() else {
        panic!("forwarded");
    };
    assert_eq!(path_and_query, "/ws?token=a&x=%2F");

    let Route::Proxy(request) = route("GET", "/api/v1/namespaces/ns/pods/p/proxy", "a=1", &upgrade)
    else {
        panic!("proxy route");
    };
    let Plan::Forward { path_and_query, .. } = request.plan() else {
        panic!("an upgrade is never redirected");
    };
    assert_eq!(path_and_query, "/?a=1");
}
