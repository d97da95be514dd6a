//! Header rules, driven by `tests/vectors/headers.json`, plus byte-for-byte values and the
//! Host choice.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use kube_bastion::HostHeader;

use crate::harness::*;
use crate::support::data::vector_rows;

/// A recording backend that answers with the headers named in the JSON object of the
/// request's `x-respond-with` header.
async fn scripted_backend() -> (SocketAddr, Recorder) {
    recording_backend_with(None, |head| {
        let mut res = http::Response::new(full("ok"));
        if let Some(spec) = head.headers.get("x-respond-with") {
            let spec: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(spec.as_bytes()).unwrap();
            for (k, v) in spec {
                res.headers_mut().append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
                );
            }
        }
        res
    })
    .await
}

#[tokio::test]
async fn header_vectors() {
    let (backend, rec) = scripted_backend().await;
    let port = backend.port();
    let config = config(&[pod_yaml("ns", "p", "127.0.0.1")])
        // The vectors' client is 10.0.0.9: the peer hook supplies it.
        .peer_addr(|_| Some("10.0.0.9:40000".parse().unwrap()))
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let rows = vector_rows("headers.json");
    assert!(rows.len() >= 10);
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let input = &row["input"];
        let expected = &row["expected"];
        let path = format!("/api/v1/namespaces/ns/pods/p:{port}/proxy/x");
        let mut req = Request::get(format!("http://{proxy}{path}"))
            .header("host", input["client_Host"].as_str().unwrap());
        if let Some(h) = input["request_headers"].as_object() {
            for (k, v) in h {
                req = req.header(k.as_str(), v.as_str().unwrap());
            }
        }
        if let Some(h) = input.get("backend_response_headers") {
            req = req.header("x-respond-with", h.to_string());
        }
        let before = rec.count();
        let (status, headers, _) = send(req.body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(rec.count(), before + 1, "{name}");
        let seen = rec.last();
        if let Some(has) = expected.get("backend_has").and_then(|v| v.as_object()) {
            for (k, v) in has {
                let want = v.as_str().unwrap().replace("p:8080", &format!("p:{port}"));
                let got = seen
                    .headers
                    .get(k.as_str())
                    .unwrap_or_else(|| panic!("{name}: backend lacks {k}"));
                assert_eq!(got.as_bytes(), want.as_bytes(), "{name}: {k}");
                assert_eq!(
                    seen.headers.get_all(k.as_str()).iter().count(),
                    1,
                    "{name}: one {k}"
                );
            }
        }
        for k in expected
            .get("backend_lacks")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let k = k.as_str().unwrap();
            assert!(!seen.headers.contains_key(k), "{name}: backend got {k}");
        }
        for k in expected
            .get("client_has")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let k = k.as_str().unwrap();
            assert!(headers.contains_key(k), "{name}: client lacks {k}");
        }
        for k in expected
            .get("client_lacks")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let k = k.as_str().unwrap();
            assert!(!headers.contains_key(k), "{name}: client got {k}");
        }
    }
}

#[tokio::test]
async fn credential_prefixes_and_configured_names_are_stripped() {
    let (backend, rec) = scripted_backend().await;
    let config = config(&[pod_yaml("ns", "p", "127.0.0.1")])
        .strip_header(HeaderName::from_static("x-host-session"))
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let req = Request::get(format!(
        "http://{proxy}{}",
        pod_path("ns", "p", backend.port(), "/")
    ))
    .header("impersonate-user", "admin")
    .header("impersonate-group", "system:masters")
    .header("impersonate-uid", "0")
    .header("impersonate-extra-scopes", "all")
    .header("x-remote-anything", "x")
    .header("x-host-session", "secret")
    .header("x-kept", "yes")
    .body(empty())
    .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = rec.last();
    for gone in [
        "impersonate-user",
        "impersonate-group",
        "impersonate-uid",
        "impersonate-extra-scopes",
        "x-remote-anything",
        "x-host-session",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the backend"
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    // The real peer (the test client on loopback) is appended.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn non_utf8_header_values_pass_byte_for_byte_both_ways() {
    let raw: &[u8] = b"caf\xe9 \xff\x80";
    let backend = backend_with(None, move |req: Request<Incoming>| async move {
        let v = req.headers().get("x-latin1").cloned();
        let mut res = http::Response::new(full("ok"));
        if let Some(v) = v {
            res.headers_mut().insert("x-echo", v);
        }
        res.headers_mut().insert(
            "x-backend-raw",
            HeaderValue::from_bytes(b"\xfe\xfd").unwrap(),
        );
        res
    })
    .await;
    let proxy = serve_proxy(config(&[pod_yaml("ns", "p", "127.0.0.1")]).build().unwrap()).await;
    let req = Request::get(format!(
        "http://{proxy}{}",
        pod_path("ns", "p", backend.port(), "/")
    ))
    .header("x-latin1", HeaderValue::from_bytes(raw).unwrap())
    .body(empty())
    .unwrap();
    let (status, headers, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-echo"].as_bytes(), raw);
    assert_eq!(headers["x-backend-raw"].as_bytes(), b"\xfe\xfd");
}

#[tokio::test]
async fn host_header_is_the_clients_or_the_targets() {
    let (backend, rec) = scripted_backend().await;
    let docs = [pod_yaml("ns", "p", "127.0.0.1")];
    let path = pod_path("ns", "p", backend.port(), "/");

    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    let req =
        Request::get(format!("http://{proxy}{path}")).header("host", "apiserver.example:6443");
    send(req.body(empty()).unwrap()).await;
    assert_eq!(rec.last().headers["host"], "apiserver.example:6443");

    let proxy = serve_proxy(
        config(&docs)
            .host_header(HostHeader::Target)
            .build()
            .unwrap(),
    )
    .await;
    let req =
        Request::get(format!("http://{proxy}{path}")).header("host", "apiserver.example:6443");
    send(req.body(empty()).unwrap()).await;
    assert_eq!(
        rec.last().headers["host"],
        format!("127.0.0.1:{}", backend.port()).as_str()
    );
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let (backend, _) = scripted_backend().await;
    let proxy = serve_proxy(config(&[pod_yaml("ns", "p", "127.0.0.1")]).build().unwrap()).await;
    let spec = serde_json::json!({"Connection": "x-internal", "X-Internal": "1", "Keep-Alive": "timeout=5", "X-Public": "2"});
    let req = Request::get(format!(
        "http://{proxy}{}",
        pod_path("ns", "p", backend.port(), "/")
    ))
    .header("x-respond-with", spec.to_string())
    .body(empty())
    .unwrap();
    let (status, headers, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-internal"));
    assert!(!headers.contains_key("keep-alive"));
    assert_eq!(headers["x-public"], "2");
}
