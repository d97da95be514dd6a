//! Forwarding basics: methods, paths, queries, bodies, redirects, protocols, trailers.

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kube_bastion::{DestinationPolicy, ProxyConfig};

use crate::harness::*;

#[tokio::test]
async fn get_reaches_the_pod_with_path_and_raw_query() {
    let (backend, rec) = recording_backend(None).await;
    let proxy = web_pod_proxy().await;

    let path = pod_path("default", "web", backend.port(), "/some/dir/?b=2&a=%20x");
    let (status, headers, body) = get(proxy, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert_eq!(headers["x-backend-version"], "HTTP/1.1");
    let seen = rec.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri.path_and_query().unwrap().as_str(),
        "/some/dir/?b=2&a=%20x"
    );
    assert_eq!(seen.version, Version::HTTP_11);
}

#[tokio::test]
async fn request_bodies_pass_with_length_and_chunked() {
    let (backend, rec) = recording_backend(None).await;
    let proxy = web_pod_proxy().await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("default", "web", backend.port(), "/upload")
    );

    let (status, _, _) = send(Request::post(&uri).body(full("fixed body")).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let seen = rec.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, "fixed body");
    assert_eq!(seen.headers["content-length"], "10");

    let chunks = futures_util::stream::iter(
        ["one ", "two ", "three"]
            .map(|s| Ok::<_, BoxError>(Frame::data(Bytes::from_static(s.as_bytes())))),
    );
    let (status, _, _) = send(
        Request::put(&uri)
            .body(StreamBody::new(chunks).boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = rec.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body, "one two three");
    assert!(seen.headers.get("content-length").is_none());
}

#[tokio::test]
async fn bare_proxy_path_redirects_without_contacting_the_backend() {
    let (backend, rec) = recording_backend(None).await;
    let proxy = web_pod_proxy().await;
    let path = pod_path("default", "web", backend.port(), "");
    let (status, headers, body) = get(proxy, &format!("{path}?q=1")).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], format!("{path}/?q=1").as_str());
    assert!(body.is_empty());
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn standalone_service_answers_other_paths_with_404_status() {
    let proxy = serve_proxy(config(&[]).build().unwrap()).await;
    let (status, headers, body) = get(proxy, "/api/v1/namespaces/default/pods").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let (code, reason, _) = status_of(&body);
    assert_eq!((code, reason.as_deref()), (404, Some("NotFound")));
}

#[tokio::test]
async fn default_policy_refuses_loopback_pods() {
    let (backend, rec) = recording_backend(None).await;
    let config = ProxyConfig::builder(cluster(&[pod_yaml("default", "web", "127.0.0.1")]))
        .destination_policy(DestinationPolicy::kube_default())
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let (status, _, body) = get(proxy, &pod_path("default", "web", backend.port(), "/")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, _, message) = status_of(&body);
    assert_eq!(message, "address not allowed");
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn missing_pod_is_404_status() {
    let proxy = serve_proxy(config(&[]).build().unwrap()).await;
    let (status, _, body) = get(proxy, "/api/v1/namespaces/default/pods/nope/proxy/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&body).2, "pods \"nope\" not found");
}

#[tokio::test]
async fn http2_client_is_forwarded_as_http1_to_plain_backends() {
    let (backend, rec) = recording_backend(None).await;
    let proxy = web_pod_proxy().await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("default", "web", backend.port(), "/h2")
    );
    let res = h2_client()
        .request(Request::get(&uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    let seen = rec.last();
    assert_eq!(seen.version, Version::HTTP_11);
    // The HTTP/2 :authority is the client's Host.
    assert_eq!(seen.headers["host"], proxy.to_string().as_str());
}

#[tokio::test]
async fn h2c_app_protocol_speaks_http2_with_prior_knowledge() {
    let (backend, rec) = recording_backend(None).await;
    let docs = [
        pod_yaml("default", "web-0", "127.0.0.1"),
        service_yaml(
            "default",
            "grpc",
            80,
            Some("kubernetes.io/h2c"),
            &[("web-0", "127.0.0.1", backend.port())],
        ),
    ];
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    let (status, headers, _) = get(
        proxy,
        "/api/v1/namespaces/default/services/grpc:http/proxy/x",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    assert_eq!(headers["x-backend-version"], "HTTP/2.0");
    assert_eq!(rec.last().version, Version::HTTP_2);
    assert_eq!(rec.last().uri.path(), "/x");
}

#[tokio::test]
async fn trailers_pass_through() {
    let backend = backend_with(
        None,
        |req: hyper::Request<hyper::body::Incoming>| async move {
            assert_eq!(req.headers()["te"], "trailers");
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", "abc123".parse().unwrap());
            let frames = futures_util::stream::iter(vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"payload"))),
                Ok(Frame::trailers(trailers)),
            ]);
            http::Response::builder()
                .header("trailer", "x-checksum")
                .body(StreamBody::new(frames).boxed())
                .unwrap()
        },
    )
    .await;
    let proxy = web_pod_proxy().await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("default", "web", backend.port(), "/t")
    );
    for client in [client(), h2_client()] {
        let req = Request::get(&uri)
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers relayed");
        assert_eq!(trailers["x-checksum"], "abc123");
        assert_eq!(collected.to_bytes(), "payload");
    }
}

#[tokio::test]
async fn idle_pooled_connections_are_reused() {
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("x")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let proxy = web_pod_proxy().await;
    for _ in 0..5 {
        let (status, _, _) = get(proxy, &pod_path("default", "web", port, "/")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled backend connection"
    );
}

#[tokio::test]
async fn pooled_connections_close_after_the_idle_timeout() {
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = conns.clone();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("x")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                let _ = closed_tx.send(());
            });
        }
    });
    let pool = kube_bastion::PoolOptions {
        idle_timeout: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let proxy = serve_proxy(
        config(&[pod_yaml("default", "web", "127.0.0.1")])
            .pool(pool)
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, _) = get(proxy, &pod_path("default", "web", port, "/")).await;
    assert_eq!(status, StatusCode::OK);
    // The proxy closes its idle backend connection by itself (the backend sees EOF).
    tokio::time::timeout(std::time::Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the idle pooled connection was closed by the proxy");
    let (status, _, _) = get(proxy, &pod_path("default", "web", port, "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_replaced_without_an_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The backend answers one request per connection, keep-alive style (no
    // `Connection: close`), then closes the socket: the idle pooled connection dies.
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let proxy = web_pod_proxy().await;
    for round in 0..3 {
        let (status, _, body) = get(proxy, &pod_path("default", "web", port, "/")).await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        assert_eq!(body, "ok");
        // Let the proxy see the backend's close before the next request.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A proxy over pod `default/web` at 127.0.0.1, default configuration.
async fn web_pod_proxy() -> std::net::SocketAddr {
    serve_proxy(
        config(&[pod_yaml("default", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn h2c_requests_share_one_backend_connection() {
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    assert_eq!(req.version(), Version::HTTP_2);
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("x")))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    let docs = [
        pod_yaml("default", "web-0", "127.0.0.1"),
        service_yaml(
            "default",
            "grpc",
            80,
            Some("kubernetes.io/h2c"),
            &[("web-0", "127.0.0.1", port)],
        ),
    ];
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    for _ in 0..4 {
        let (status, _, body) = get(
            proxy,
            "/api/v1/namespaces/default/services/grpc:http/proxy/x",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "x");
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one shared HTTP/2 connection"
    );
}
