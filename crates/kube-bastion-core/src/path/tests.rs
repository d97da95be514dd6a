//! Unit tests of the route grammar, planning and the Go path helpers.

use super::*;
use http::HeaderValue;

fn route_with(method: &str, uri: &str, connection: Option<&[u8]>) -> Route {
    let mut headers = HeaderMap::new();
    if let Some(value) = connection {
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_bytes(value).expect("header value"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    ProxyRequest::route(&method, &uri.parse().expect("uri"), &headers)
}

fn proxy(method: &str, uri: &str) -> ProxyRequest {
    match route_with(method, uri, None) {
        Route::Proxy(request) => request,
        Route::NotProxy => panic!("{uri} should be a proxy route"),
    }
}

fn forward(path_and_query: &str, forwarded_uri: &str) -> Plan {
    Plan::Forward {
        path_and_query: path_and_query.to_owned(),
        forwarded_uri: forwarded_uri.to_owned(),
    }
}

#[test]
fn not_proxy_routes() {
    for uri in [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v1/pods",
        "/api/v1/namespaces/ns/pods/p",
        "/api/v1/namespaces/ns/pods/p/log",
        "/api/v1/namespaces/ns/pods/p/proxyx",
        "/api/v1/namespaces/ns/pods/p/prox",
        "/api/v1/namespaces/ns/pods/p/",
        "/api/v1/namespaces/ns/pods/p",
        "/api/v1/namespaces/ns/pods/",
        "/api/v1/namespaces/ns",
        "/api/v1/namespaces/",
        "/api/v1/nodes/n",
        "/api/v1/nodes/n/",
        "/api/v1/nodes/n/pro",
        "/api/v1/nodesx/n/proxy",
        "/api/v1/namespaces/ns/podsx/p/proxy",
        "/api/v1/namespaces/ns/pods/p/Proxy",
        "/api/v1/namespaces/ns/nodes/n/proxy",
        "/api/v1/namespaces/ns/secrets/s/proxy",
        "/api/v1/namespaces//pods/p/proxy",
        "/api/v1/namespaces/ns/pods//proxy",
        "/api/v1/nodes//proxy",
        "/api/v1//nodes/n/proxy",
        "//api/v1/nodes/n/proxy",
        "/api/v2/nodes/n/proxy",
        "/apis/apps/v1/namespaces/ns/pods/p/proxy",
        "/api/v1/proxy/namespaces/ns/services/s/",
        // A %2F in the id splits it.
        "/api/v1/namespaces/ns/pods/a%2Fb/proxy",
        // Invalid escapes anywhere.
        "/api/v1/nodes/n/proxy/%zz",
        "/api/v1/nodes/n/proxy/%4",
        "/api/v1/nodes/n%/proxy",
        // Ids and namespaces that are not UTF-8.
        "/api/v1/nodes/%FF/proxy",
        "/api/v1/namespaces/%C3/pods/p/proxy",
    ] {
        assert_eq!(route_with("GET", uri, None), Route::NotProxy, "{uri}");
    }
}

#[test]
fn escaped_grammar_words_are_decoded_first() {
    let request = proxy("GET", "/%61pi/v1/nodes/n/prox%79/x");
    assert_eq!(request.kind(), ResourceKind::Node);
    assert_eq!(request.prefix(), "/api/v1/nodes/n/proxy");
}

#[test]
fn parts() {
    let request = proxy(
        "POST",
        "/api/v1/namespaces/ns/services/https:svc%3A443/proxy/a?b=c",
    );
    assert_eq!(request.kind(), ResourceKind::Service);
    assert_eq!(request.namespace(), Some("ns"));
    assert_eq!(request.raw_id(), "https:svc:443");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.query(), Some("b=c"));
    assert_eq!(&*request.sub_path(), b"/a");
    assert!(!request.is_upgrade());
    let request = proxy("GET", "/api/v1/nodes/n1/proxy?");
    assert_eq!((request.namespace(), request.query()), (None, None));
}

#[test]
fn non_utf8_sub_path_is_forwarded_escaped() {
    let request = proxy("GET", "/api/v1/nodes/n/proxy/caf%E9");
    assert_eq!(&*request.sub_path(), b"/caf\xE9");
    assert_eq!(
        request.plan(),
        forward("/caf%E9", "/api/v1/nodes/n/proxy/caf%E9")
    );
}

#[test]
fn upgrade_detection() {
    let uri = "/api/v1/nodes/n/proxy/x";
    let upgrade = |value: &[u8]| match route_with("GET", uri, Some(value)) {
        Route::Proxy(r) => r.is_upgrade(),
        Route::NotProxy => panic!("proxy route"),
    };
    assert!(upgrade(b"Upgrade"));
    assert!(upgrade(b"keep-alive, UPGRADE"));
    assert!(upgrade(b"xupgradex"));
    assert!(upgrade(b"\xE9 upGrade"));
    assert!(!upgrade(b"keep-alive"));
    assert!(!upgrade(b"upgrad"));
    // Any of several Connection values.
    let mut headers = HeaderMap::new();
    headers.append(http::header::CONNECTION, HeaderValue::from_static("close"));
    headers.append(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    let Route::Proxy(r) = ProxyRequest::route(&Method::GET, &uri.parse().unwrap(), &headers) else {
        panic!("proxy route")
    };
    assert!(r.is_upgrade());
    assert!(r.attributes().upgrade);
}

#[test]
fn check_order_and_dry_run() {
    let status = proxy("PROPFIND", "/api/v1/nodes/n/proxy?dryRun")
        .check()
        .unwrap_err();
    assert_eq!(
        (status.code(), status.reason()),
        (405, Some("MethodNotAllowed"))
    );
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        assert_eq!(proxy(method, "/api/v1/nodes/n/proxy/x?a=1").check(), Ok(()));
        let status = proxy(method, "/api/v1/nodes/n/proxy/x?a=1&dryRun=")
            .check()
            .unwrap_err();
        assert_eq!(status.message(), "dryRun is not supported");
        assert_eq!(status.code(), 400);
    }
    for (query, present) in [
        ("dryRun", true),
        ("dryRun=All", true),
        ("a=1&dryRun=x&b", true),
        ("dry%52un=1", true),
        ("dry%52un", true),
        ("dryrun=All", false),
        ("xdryRun=1", false),
        ("dryRun=%zz", false),
        ("dryRun=1;a=2", false),
        ("dryRun+=1", false),
        ("a=dryRun", false),
        ("%zz&dryRun", true),
    ] {
        assert_eq!(has_dry_run(query), present, "{query}");
    }
}

#[test]
fn target_id_errors_quote_like_go() {
    let status = proxy("GET", "/api/v1/namespaces/ns/pods/a:b:c:d/proxy")
        .target_id()
        .unwrap_err();
    assert_eq!(status.message(), r#"invalid pod request "a:b:c:d""#);
    let status = proxy("GET", "/api/v1/namespaces/ns/services/ftp:%22x%0A:1/proxy")
        .target_id()
        .unwrap_err();
    assert_eq!(status.message(), r#"invalid service request "ftp:\"x\n:1""#);
    let status = proxy("GET", "/api/v1/nodes/%C2%A0:%E2%80%8B:%F0%9F%98%80:/proxy")
        .target_id()
        .unwrap_err();
    assert_eq!(
        status.message(),
        "invalid node request \"\\u00a0:\\u200b:😀:\""
    );
    assert_eq!(status.reason(), Some("BadRequest"));
}

#[test]
fn redirect_for_bare_proxy_on_get_and_head() {
    for method in ["GET", "HEAD"] {
        assert_eq!(
            proxy(method, "/api/v1/nodes/n:1/proxy?a=1&b").plan(),
            Plan::Redirect {
                location: "/api/v1/nodes/n:1/proxy/?a=1&b".to_owned()
            }
        );
    }
    // An empty query adds no `?`.
    assert_eq!(
        proxy("GET", "/api/v1/nodes/n/proxy?").plan(),
        Plan::Redirect {
            location: "/api/v1/nodes/n/proxy/".to_owned()
        }
    );
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert_eq!(
            proxy(method, "/api/v1/nodes/n/proxy?q").plan(),
            forward("/?q", "/api/v1/nodes/n/proxy/"),
            "{method}"
        );
    }
}

#[test]
fn redirect_location_is_header_safe() {
    let Plan::Redirect { location } = proxy(
        "GET",
        "/api/v1/namespaces/n%20s/pods/a%25b%3F%23%0D%0A%C3%A9/proxy?x=%C3%A9",
    )
    .plan() else {
        panic!("redirect")
    };
    assert_eq!(
        location,
        "/api/v1/namespaces/n%20s/pods/a%25b%3F%23%0D%0A%C3%A9/proxy/?x=%C3%A9"
    );
    assert!(HeaderValue::from_str(&location).is_ok());
    // Raw non-ASCII in the query is encoded too.
    let Plan::Redirect { location } = proxy("GET", "/api/v1/nodes/n/proxy?x=é").plan() else {
        panic!("redirect")
    };
    assert_eq!(location, "/api/v1/nodes/n/proxy/?x=%C3%A9");
}

#[test]
fn upgrades_keep_the_query_and_never_redirect() {
    let Route::Proxy(request) = route_with("GET", "/api/v1/nodes/n/proxy?tty=1", Some(b"Upgrade"))
    else {
        panic!("proxy route")
    };
    assert_eq!(request.plan(), forward("/?tty=1", "/api/v1/nodes/n/proxy/"));
    let Route::Proxy(request) = route_with(
        "GET",
        "/api/v1/nodes/n/proxy/exec/ns/p/c?command=ls&stdout=1",
        Some(b"Upgrade"),
    ) else {
        panic!("proxy route")
    };
    assert_eq!(
        request.plan(),
        forward(
            "/exec/ns/p/c?command=ls&stdout=1",
            "/api/v1/nodes/n/proxy/exec/ns/p/c"
        )
    );
}

#[test]
fn backend_path_cleaning_and_escaping() {
    let cases = [
        ("/x/", "/x/", "/api/v1/nodes/n/proxy/x/"),
        ("/", "/", "/api/v1/nodes/n/proxy/"),
        ("///", "/", "/api/v1/nodes/n/proxy/"),
        (
            "/a%20b(c)",
            "/a%20b%28c%29",
            "/api/v1/nodes/n/proxy/a%20b%28c%29",
        ),
        ("/a%2Fb", "/a/b", "/api/v1/nodes/n/proxy/a/b"),
        ("/a%252Fb", "/a%252Fb", "/api/v1/nodes/n/proxy/a%252Fb"),
        (
            "/$&+,:;=@~-_.!*'",
            "/$&+,:;=@~-_.%21%2A%27",
            "/api/v1/nodes/n/proxy/$&+,:;=@~-_.%21%2A%27",
        ),
        ("/./a/./b/.", "/a/b", "/api/v1/nodes/n/proxy/a/b/a/b"),
        ("/a/b/..", "/a", "/api/v1/nodes/n/proxy/a/a"),
        ("/a/b/../", "/a/", "/api/v1/nodes/n/proxy/a/a/"),
        ("/a//b//", "/a/b/", "/api/v1/nodes/n/proxy/a/b/a/b/"),
        ("/%2E%2E/x", "/x", "/api/v1/nodes/n/x"),
    ];
    for (sub, backend, forwarded) in cases {
        let uri = format!("/api/v1/nodes/n/proxy{sub}");
        assert_eq!(
            proxy("GET", &uri).plan(),
            forward(backend, forwarded),
            "{uri}"
        );
    }
}

#[test]
fn forwarded_uri_prefix_is_made_uri_safe() {
    // The suffix does not match, so the whole decoded request path is the prefix.
    let plan = proxy("GET", "/api/v1/nodes/n/proxy/a%20b//c%3F").plan();
    assert_eq!(
        plan,
        forward("/a%20b/c%3F", "/api/v1/nodes/n/proxy/a%20b/c%3F/a%20b/c%3F")
    );
}

#[test]
fn path_option_matches_upstream() {
    for (sub, option) in [
        ("", ""),
        ("/", "/"),
        ("//", "/"),
        ("/a", "/a"),
        ("/a/", "/a/"),
        ("/a//", "/a/"),
        ("//a", "/a"),
        ("///a", "//a"),
        ("/a//b", "/a//b"),
        ("/a/../b", "/a/../b"),
    ] {
        let uri = format!("/api/v1/nodes/n/proxy{sub}");
        assert_eq!(proxy("GET", &uri).path_option(), option.as_bytes(), "{uri}");
    }
}

#[test]
fn prefix_is_the_route_prefix() {
    let request = proxy("GET", "/api/v1/namespaces/ns/pods/p/proxy/a//b");
    assert_eq!(request.prefix(), "/api/v1/namespaces/ns/pods/p/proxy");
}

#[test]
fn attributes_follow_the_parse() {
    let attributes = proxy("PATCH", "/api/v1/namespaces/ns/pods/p%3A80/proxy").attributes();
    assert_eq!(
        attributes,
        Attributes {
            verb: "patch",
            api_group: "",
            api_version: "v1",
            resource: "pods",
            subresource: "proxy",
            namespace: Some("ns".to_owned()),
            name: "p:80".to_owned(),
            upgrade: false,
        }
    );
}

/// The general computation, with no fast path: decode-side cleaning, suffix trimming,
/// then escaping.
fn reference_plan(request: &ProxyRequest) -> Plan {
    let rest = request.sub_path();
    let mut backend = Vec::new();
    if !rest.is_empty() {
        backend.extend_from_slice(&rest);
        clean_in_place(&mut backend);
        if rest.ends_with(b"/") && !backend.ends_with(b"/") {
            backend.push(b'/');
        }
    }
    let outgoing: &[u8] = if backend.is_empty() { b"/" } else { &backend };
    let mut escaped = Vec::new();
    escape_path_bytes(outgoing, &mut escaped);
    let prepend = strip_suffix(request.prefix(), &rest, &backend);
    Plan::Forward {
        forwarded_uri: forwarded_uri(&prepend, &escaped),
        path_and_query: with_query(escaped, request.query()),
    }
}

/// What routing must observe, computed with no fast path: decode the whole path, then split.
type Observed = (ResourceKind, Option<String>, String, String, Vec<u8>);

fn reference_route(uri: &Uri) -> Option<Observed> {
    let decoded = percent_decode(uri.path().as_bytes())?;
    let grammar = parse_grammar(&decoded)?;
    let prefix = std::str::from_utf8(&decoded[..grammar.prefix_end]).ok()?;
    let part = |(start, end): (usize, usize)| prefix[start..end].to_owned();
    Some((
        grammar.kind,
        grammar.namespace.map(part),
        part(grammar.id),
        prefix.to_owned(),
        decoded[grammar.prefix_end..].to_vec(),
    ))
}

fn observe(route: Route) -> Option<Observed> {
    match route {
        Route::NotProxy => None,
        Route::Proxy(r) => Some((
            r.kind(),
            r.namespace().map(str::to_owned),
            r.raw_id().to_owned(),
            r.prefix().to_owned(),
            r.sub_path().into_owned(),
        )),
    }
}

proptest::proptest! {
    #[test]
    fn fast_route_equals_reference(
        ns in "(n|%6E|%2F|%|%zz|\\.)(s|%73|%FF)?",
        kind in "(pods|services|p%6Fds|nodes)",
        id in "(p|%70|:|%3A|%2F|%25|%FF|%C3%A9)(1|%31)?",
        word in "(proxy|prox%79|%70roxy|proxyx)",
        sub in "(/|%2F|a|%zz|%25|%E9|\\.){0,4}",
    ) {
        let uri = format!("/api/v1/namespaces/{ns}/{kind}/{id}/{word}{sub}");
        if let Ok(uri) = uri.parse::<Uri>() {
            proptest::prop_assert_eq!(
                observe(ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new())),
                reference_route(&uri),
                "{}",
                uri
            );
        }
        let uri = format!("/api/v1/{kind}/{id}/{word}{sub}");
        if let Ok(uri) = uri.parse::<Uri>() {
            proptest::prop_assert_eq!(
                observe(ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new())),
                reference_route(&uri),
                "{}",
                uri
            );
        }
    }

    #[test]
    fn fast_plan_equals_reference(
        id in "(\\.|\\.\\.|[a-z.:%]{1,4})",
        sub in "(/|\\.|\\.\\.|[a-z ]|%2F|%25|%2E){0,10}",
        query in "(\\?[a-z=&]{0,4})?",
    ) {
        let uri = format!("/api/v1/namespaces/ns/pods/{id}/proxy{sub}{query}");
        if let Ok(Route::Proxy(request)) = uri
            .parse::<Uri>()
            .map(|uri| ProxyRequest::route(&Method::POST, &uri, &HeaderMap::new()))
        {
            proptest::prop_assert_eq!(request.plan(), reference_plan(&request), "{}", uri);
        }
    }
}

#[test]
fn go_path_clean() {
    // From Go's path.Clean table.
    for (input, cleaned) in [
        ("", "."),
        ("abc", "abc"),
        ("abc/def", "abc/def"),
        (".", "."),
        ("..", ".."),
        ("../..", "../.."),
        ("../../abc", "../../abc"),
        ("/abc", "/abc"),
        ("/", "/"),
        ("abc/", "abc"),
        ("abc/def/", "abc/def"),
        ("/abc/", "/abc"),
        ("//abc", "/abc"),
        ("abc//def//ghi", "abc/def/ghi"),
        ("abc/./def", "abc/def"),
        ("/./abc/def", "/abc/def"),
        ("abc/.", "abc"),
        ("abc/def/ghi/../jkl", "abc/def/jkl"),
        ("abc/def/../ghi/../jkl", "abc/jkl"),
        ("abc/def/..", "abc"),
        ("abc/def/../..", "."),
        ("/abc/def/../..", "/"),
        ("abc/def/../../..", ".."),
        ("/abc/def/../../..", "/"),
        ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        ("abc/./../def", "def"),
        ("abc//./../def", "def"),
        ("abc/../../././../def", "../../def"),
    ] {
        let mut buf = input.as_bytes().to_vec();
        clean_in_place(&mut buf);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), cleaned, "{input:?}");
    }
}

#[test]
fn suffix_trimming() {
    let p = "/api/v1/nodes/n/proxy";
    let join = |parts: [&[u8]; 2]| [parts[0], parts[1]].concat();
    assert_eq!(join(strip_suffix(p, b"/a/b", b"/a/b")), p.as_bytes());
    assert_eq!(
        join(strip_suffix(p, b"/a//b", b"/a/b")),
        b"/api/v1/nodes/n/proxy/a//b"
    );
    assert_eq!(
        join(strip_suffix(p, b"/x", b"")),
        b"/api/v1/nodes/n/proxy/x"
    );
    assert_eq!(
        join(strip_suffix(p, b"/../x", b"/x")),
        b"/api/v1/nodes/n/proxy/.."
    );
    // The suffix may reach into the prefix.
    assert_eq!(
        join(strip_suffix(p, b"/x", b"proxy/x")),
        b"/api/v1/nodes/n/"
    );
    assert_eq!(join(strip_suffix(p, b"", b"/proxy")), b"/api/v1/nodes/n");
}

#[test]
fn clean_check_agrees_with_go_clean() {
    for path in [
        "", "/", "/a", "/a/", "/a/b", "/a/b/", "//", "/a//", "//a", "/a//b", "/.", "/./", "/a/.",
        "/a/./b", "/..", "/a/..", "/a/../", "/...", "/a..", "/.a", "/a/.b/",
    ] {
        let mut cleaned = path.as_bytes().to_vec();
        clean_in_place(&mut cleaned);
        if path.len() > 1 && path.ends_with('/') && !cleaned.ends_with(b"/") {
            cleaned.push(b'/');
        }
        let unchanged = path.is_empty() || cleaned == path.as_bytes();
        assert_eq!(is_clean(path.as_bytes()), unchanged, "{path:?}");
    }
}

#[test]
fn escaping_a_str_splits_multibyte_characters_into_bytes() {
    let mut out = String::from(">");
    push_escaped(&mut out, "/é €x(", &PATH_SAFE);
    assert_eq!(out, ">/%C3%A9%20%E2%82%ACx%28");
    let mut bytes = Vec::new();
    escape_path_bytes("/é €x(".as_bytes(), &mut bytes);
    assert_eq!(&out.as_bytes()[1..], &bytes[..]);
}
