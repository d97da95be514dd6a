//! Redirect safety on ordinary (non-upgrade) requests: a backend redirect is passed to the
//! client (never followed by the proxy), and with `reject_forwarding_redirects` a 3xx with a
//! `Location` becomes kube-apiserver's aggregator 502.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube_bastion::UpgradeOptions;

/// The aggregator's message for a refused redirect.
const REDIRECT_REJECTED_MESSAGE: &str =
    "the backend attempted to redirect this request, which is not permitted";

use crate::harness::*;

async fn get(proxy: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = soon(
        "the answer",
        client.request(
            Request::get(format!("http://{proxy}{path}"))
                .body(Empty::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn proxy(reject: bool) -> SocketAddr {
    let options = UpgradeOptions::default().reject_forwarding_redirects(reject);
    proxy_with(options).await
}

#[tokio::test]
async fn redirects_are_passed_to_the_client_and_never_followed() {
    let (elsewhere, accepted) = counting_listener().await;
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere}/steal\r\nContent-Length: 0\r\n\r\n"
    );
    let (backend, _log) = raw_backend(answer.into_bytes()).await;
    let proxy = proxy(false).await;
    let (status, headers, _) = get(
        proxy,
        &format!("/api/v1/namespaces/ns/pods/web:{}/proxy/x", backend.port()),
    )
    .await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    // A foreign host is left as is (rewriting only touches the backend's own URLs).
    assert_eq!(
        headers["location"],
        format!("http://{elsewhere}/steal").as_str()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *accepted.lock().unwrap(),
        0,
        "the proxy followed the redirect"
    );
}

#[tokio::test]
async fn rejecting_redirects_turns_3xx_with_location_into_502() {
    let proxy = proxy(true).await;
    for status in [301, 302, 303, 307, 308] {
        let answer =
            format!("HTTP/1.1 {status} Moved\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n");
        let (backend, _log) = raw_backend(answer.into_bytes()).await;
        let (code, headers, body) = get(
            proxy,
            &format!("/api/v1/namespaces/ns/pods/web:{}/proxy/x", backend.port()),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_GATEWAY, "{status}");
        assert!(!headers.contains_key("location"), "{status}");
        let (code, reason, message) = status_of(&body);
        assert_eq!((code, reason), (502, None));
        assert_eq!(message, REDIRECT_REJECTED_MESSAGE);
    }
}

#[tokio::test]
async fn rejecting_redirects_lets_other_answers_pass() {
    let proxy = proxy(true).await;
    for (answer, expected) in [
        (
            &b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"[..],
            StatusCode::NOT_MODIFIED,
        ),
        (
            b"HTTP/1.1 201 Created\r\nLocation: /things/1\r\nContent-Length: 2\r\n\r\nok",
            StatusCode::CREATED,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            StatusCode::OK,
        ),
    ] {
        let (backend, _log) = raw_backend(answer.to_vec()).await;
        let (code, _, _) = get(
            proxy,
            &format!("/api/v1/namespaces/ns/pods/web:{}/proxy/x", backend.port()),
        )
        .await;
        assert_eq!(code, expected);
    }
}
