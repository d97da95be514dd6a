//! `authorization_attributes.json`: the attributes an authorizer sees, and the 403 message.

use kube_bastion_core::Route;

use crate::{route, s, support::data::vector_rows};

#[test]
fn every_authorization_row() {
    let rows = vector_rows("authorization_attributes.json");
    assert!(!rows.is_empty());
    for row in &rows {
        let input = &row["input"];
        let (method, path) = (s(input, "method"), s(input, "path"));
        let headers: Vec<(&str, &str)> = input
            .get("headers")
            .and_then(|h| h.as_object())
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().expect("header value")))
                    .collect()
            })
            .unwrap_or_default();
        let Route::Proxy(request) = route(method, path, "", &headers) else {
            panic!("{method} {path} should be a proxy route");
        };
        let expected = &row["expected"];
        let attributes = request.attributes();
        assert_eq!(attributes.verb, s(expected, "verb"), "{method} {path}");
        assert_eq!(attributes.resource, s(expected, "resource"));
        assert_eq!(attributes.subresource, s(expected, "subresource"));
        assert_eq!(attributes.name, s(expected, "name"));
        assert_eq!(attributes.api_version, "v1");
        if let Some(group) = expected.get("apiGroup") {
            assert_eq!(attributes.api_group, group.as_str().expect("apiGroup"));
        }
        match expected.get("namespace") {
            Some(ns) => assert_eq!(attributes.namespace.as_deref(), ns.as_str()),
            // Rows without a namespace are node rows: cluster-scoped.
            None => assert_eq!(attributes.namespace, None),
        }
        // Upgrade rows say so with a `Connection: Upgrade` header.
        let upgrade = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("connection") && v.to_ascii_lowercase().contains("upgrade")
        });
        assert_eq!(attributes.upgrade, upgrade, "{method} {path}");
        assert_eq!(request.is_upgrade(), upgrade);

        // The 403 for this request, in upstream's words.
        let scope = match attributes.namespace.as_deref() {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let status = attributes.forbidden("jane", "");
        assert_eq!(
            status.message(),
            format!(
                "{r} \"{n}\" is forbidden: User \"jane\" cannot {v} resource \"{r}/proxy\" in API group \"\" {scope}",
                r = attributes.resource,
                n = attributes.name,
                v = attributes.verb,
            )
        );
        assert_eq!((status.code(), status.reason()), (403, Some("Forbidden")));
        let details = status.details().expect("details");
        assert_eq!(details.name.as_deref(), Some(attributes.name.as_str()));
        assert_eq!(details.kind.as_deref(), Some(attributes.resource));
    }
}

#[test]
fn forbidden_with_reason_byte_exact() {
    let Route::Proxy(request) = route("GET", "/api/v1/nodes/n1:10250/proxy/metrics", "", &[])
    else {
        panic!("proxy route");
    };
    let status = request
        .attributes()
        .forbidden("system:serviceaccount:a:b", "no rule");
    assert_eq!(
        String::from_utf8(status.to_json()).expect("utf-8"),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"n1:10250\" is forbidden: User \"system:serviceaccount:a:b\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope: no rule","reason":"Forbidden","details":{"name":"n1:10250","kind":"nodes"},"code":403}"#
    );
}
