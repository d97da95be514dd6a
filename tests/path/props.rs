//! Property tests: id round trips, routing never panics, and the authorized name and
//! namespace are always the ones resolution uses.

use http::{HeaderMap, HeaderValue, Method, Uri};
use kube_bastion_core::{Plan, ProxyRequest, Route, Scheme, TargetId};
use proptest::prelude::*;

use crate::pct;

fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z:]{0,10}",
        "(http|https|HTTP|ftp|)(:[a-z0-9]{0,4}){0,4}",
    ]
}

fn scheme() -> impl Strategy<Value = Option<Scheme>> {
    prop_oneof![
        Just(None),
        Just(Some(Scheme::Http)),
        Just(Some(Scheme::Https))
    ]
}

/// Request targets biased towards the proxy grammar: escapes (valid or not), dot segments,
/// empty segments, colons, non-ASCII.
fn target() -> impl Strategy<Value = Vec<u8>> {
    let piece = "([a-z0-9:.;@~é ]|%[0-9A-Fa-f]{2}|%[g-z]|%|/|\\.\\.|\\?|#){0,8}";
    (
        prop_oneof![
            Just("/api/v1/nodes/"),
            Just("/api/v1/namespaces/"),
            Just("/api/v1/namespaces/ns/pods/"),
            Just("/api/v1/namespaces/ns/services/"),
            Just("/api/v1/namespaces/ns/nodes/"),
            Just("/"),
        ],
        piece,
        prop_oneof![
            Just("/proxy"),
            Just("/proxy/"),
            Just("/prox%79"),
            Just("/"),
            Just("")
        ],
        piece,
    )
        .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}").into_bytes())
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "CONNECT",
            "TRACE"
        ])
        .prop_map(|m| m.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..10),
    ]
}

/// Everything a caller can do with a routed request must hold together and never panic.
fn exercise(method: &[u8], target: &[u8], connection: &[u8]) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(connection) {
        headers.insert(http::header::CONNECTION, value);
    }
    let Route::Proxy(request) = ProxyRequest::route(&method, &uri, &headers) else {
        return;
    };
    let attributes = request.attributes();
    assert_eq!(attributes.name, request.raw_id());
    assert_eq!(attributes.namespace.as_deref(), request.namespace());
    assert_eq!(attributes.resource, request.kind().resource());
    assert!(!request.raw_id().is_empty());
    assert!(request.prefix().starts_with("/api/v1/") && request.prefix().ends_with("/proxy"));
    let _ = request.check();
    match request.target_id() {
        Ok(id) => assert_eq!(TargetId::parse(&attributes.name), Ok(id)),
        Err(status) => assert_eq!(status.code(), 400),
    }
    match request.plan() {
        Plan::Redirect { location } => {
            assert!(HeaderValue::from_str(&location).is_ok(), "{location:?}");
            assert!(matches!(request.method(), &Method::GET | &Method::HEAD));
            assert!(!request.is_upgrade());
        }
        Plan::Forward {
            path_and_query,
            forwarded_uri,
        } => {
            let parsed: http::uri::PathAndQuery =
                path_and_query.parse().expect("a valid request target");
            let path = parsed.path();
            assert!(path.starts_with('/'), "{path}");
            // Cleaned: no empty, `.` or `..` segment except a final empty one.
            let segments: Vec<&str> = path[1..].split('/').collect();
            for (i, segment) in segments.iter().enumerate() {
                assert!(*segment != "." && *segment != "..", "{path}");
                assert!(!segment.is_empty() || i + 1 == segments.len(), "{path}");
            }
            assert_eq!(parsed.query(), request.query());
            assert!(
                HeaderValue::from_str(&forwarded_uri).is_ok(),
                "{forwarded_uri:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn split_then_join_round_trips(id in id_like()) {
        if let Ok(parsed) = TargetId::parse(&id) {
            prop_assert_eq!(TargetId::parse(&parsed.join()), Ok(parsed.clone()));
            prop_assert_eq!(parsed.join(), parsed.to_string());
        }
    }

    #[test]
    fn join_then_split_round_trips(
        scheme in scheme(),
        name in "[^:]{1,8}",
        port in "[^:]{0,5}",
    ) {
        let id = TargetId::new(scheme, name.clone(), port.clone()).expect("valid parts");
        let back = TargetId::parse(&id.join()).expect("joined ids split");
        prop_assert_eq!(back.scheme(), scheme);
        prop_assert_eq!(back.name(), name.as_str());
        prop_assert_eq!(back.port(), port.as_str());
    }

    #[test]
    fn route_never_panics_on_any_bytes(
        method in method(),
        target in prop::collection::vec(any::<u8>(), 0..64),
        connection in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        exercise(&method, &target, &connection);
    }

    #[test]
    fn route_never_panics_near_the_grammar(
        method in method(),
        target in target(),
        query in "(\\?([a-zA-Z=&%;+]|dryRun){0,6})?",
        connection in prop_oneof![Just(b"Upgrade".to_vec()), prop::collection::vec(any::<u8>(), 0..16)],
    ) {
        let mut target = target;
        target.extend_from_slice(query.as_bytes());
        exercise(&method, &target, &connection);
    }

    /// Any namespace and id, percent-encoded into the path, come back exactly, and the
    /// authorization attributes carry exactly those.
    #[test]
    fn authorized_name_and_namespace_are_the_routed_ones(
        // A `/` cannot be carried: `%2F` decodes to a separator before the split, as upstream.
        namespace in "[^/]{1,12}",
        id in id_like().prop_filter("non-empty, no slash", |s| !s.is_empty() && !s.contains('/')),
        node in any::<bool>(),
    ) {
        let path = if node {
            format!("/api/v1/nodes/{}/proxy/x", pct(&id, false))
        } else {
            format!("/api/v1/namespaces/{}/services/{}/proxy/x", pct(&namespace, false), pct(&id, false))
        };
        let uri: Uri = path.parse().expect("percent-encoded paths parse");
        let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) else {
            panic!("{path} should route");
        };
        prop_assert_eq!(request.raw_id(), id.as_str());
        prop_assert_eq!(request.namespace(), (!node).then_some(namespace.as_str()));
        let attributes = request.attributes();
        prop_assert_eq!(attributes.name.as_str(), request.raw_id());
        prop_assert_eq!(attributes.namespace.as_deref(), request.namespace());
        prop_assert_eq!(request.target_id().ok(), TargetId::parse(&id).ok());
    }
}
