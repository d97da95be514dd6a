//! Failures: every one is a Status, none hangs the client or panics the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::*;

/// A raw TCP backend: reads a request head, writes `answer`, then closes (or lingers).
async fn raw_backend(answer: &'static [u8], linger: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp.write_all(answer).await;
                if linger {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn connection_refused_is_503_without_the_request_url() {
    let port = closed_port().await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, body) = get(
        proxy,
        &pod_path("ns", "web", port, "/secret/path?token=abc"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Wire-exact as kube-apiserver's encoder: Go field order, one trailing newline.
    assert!(
        body.starts_with(b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},")
            && body.ends_with(b",\"code\":503}\n"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, reason, message) = status_of(&body);
    assert_eq!((code, reason.as_deref()), (503, Some("ServiceUnavailable")));
    assert!(
        message.starts_with(&format!(
            "error trying to reach service: dial tcp 127.0.0.1:{port}: "
        )),
        "{message}"
    );
    assert!(
        !message.contains("secret") && !message.contains("token"),
        "{message}"
    );
}

#[tokio::test]
async fn silent_backend_is_504_after_the_response_header_timeout() {
    let port = raw_backend(b"", true).await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .response_header_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let (status, _, body) = get(proxy, &pod_path("ns", "web", port, "/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (code, reason, message) = status_of(&body);
    assert_eq!((code, reason.as_deref()), (504, Some("Timeout")));
    assert!(
        message.starts_with("error trying to reach service: "),
        "{message}"
    );
}

#[tokio::test]
async fn garbage_response_is_502() {
    let port = raw_backend(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", false).await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, body) = get(proxy, &pod_path("ns", "web", port, "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (code, _, message) = status_of(&body);
    assert_eq!(code, 502);
    assert!(
        message.contains("invalid response from backend"),
        "{message}"
    );
}

#[tokio::test]
async fn backend_closing_before_answering_is_503() {
    let port = raw_backend(b"", false).await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, body) = get(proxy, &pod_path("ns", "web", port, "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        status_of(&body)
            .2
            .starts_with("error trying to reach service: ")
    );
}

#[tokio::test]
async fn backend_closing_mid_body_truncates_the_response() {
    let port = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b",
        false,
    )
    .await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let uri = format!("http://{proxy}{}", pod_path("ns", "web", port, "/"));
    for client in [client(), h2_client()] {
        let res = client
            .request(Request::get(&uri).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], "1000");
        let body = res.into_body().collect().await;
        assert!(body.is_err(), "a truncated body must not look complete");
    }
    // The proxy is still healthy afterwards.
    let (backend, _) = recording_backend(None).await;
    let (status, _, _) = get(proxy, &pod_path("ns", "web", backend.port(), "/")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn stalled_body_is_aborted_by_the_idle_timeout() {
    let backend = backend_with(None, |_req: Request<Incoming>| async {
        let frames = futures_util::stream::unfold(0u8, |n| async move {
            if n == 0 {
                Some((
                    Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"first"))),
                    1,
                ))
            } else {
                // Never sends again, never ends.
                std::future::pending::<()>().await;
                None
            }
        });
        http::Response::new(StreamBody::new(frames).boxed())
    })
    .await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .body_idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "web", backend.port(), "/")
    );
    let res = client()
        .request(Request::get(&uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    let end = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("the proxy ends the stalled body");
    assert!(
        matches!(end, Some(Err(_))),
        "a stalled body ends in an error, not a clean end"
    );
}

#[tokio::test]
async fn connect_failure_fails_over_to_the_next_endpoint() {
    let dead = closed_port().await;
    let (live, rec) = recording_backend(None).await;
    let docs = [
        pod_yaml("ns", "a", "127.0.0.1"),
        pod_yaml("ns", "b", "127.0.0.1"),
        service_yaml(
            "ns",
            "svc",
            80,
            None,
            &[("a", "127.0.0.1", dead), ("b", "127.0.0.1", live.port())],
        ),
    ];
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    for _ in 0..3 {
        let req = Request::post(format!(
            "http://{proxy}/api/v1/namespaces/ns/services/svc:http/proxy/p"
        ))
        .body(full("payload"))
        .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(rec.count(), 3);
    assert!(rec.all().iter().all(|s| s.body == "payload"));
}
