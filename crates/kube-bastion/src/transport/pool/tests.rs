//! The pool against loopback HTTP/1.1 and HTTP/2 backends.

use super::*;
use crate::transport::BoxError;
use http_body_util::{BodyExt, Empty, Full};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn dial(addr: SocketAddr, scheme: Scheme, wire: Wire) -> Dial<'static> {
    Dial {
        key: PoolKey {
            addr,
            wire,
            identity: TransportKind::Generic,
            server_name: None,
        },
        scheme,
        tls: None,
        timeouts: DialTimeouts {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
        },
    }
}

fn request(uri: &str) -> Request<RequestBody> {
    let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
    let mut req = Request::new(body);
    *req.uri_mut() = uri.parse().expect("uri");
    req
}

#[test]
fn host_header_leaves_out_the_default_port_and_brackets_ipv6() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let cases = [
        (SocketAddr::new(v4, 80), Scheme::Http, "10.0.0.1"),
        (SocketAddr::new(v4, 8080), Scheme::Http, "10.0.0.1:8080"),
        (SocketAddr::new(v4, 80), Scheme::Https, "10.0.0.1:80"),
        (SocketAddr::new(v6, 443), Scheme::Https, "[fd00::1]"),
        (SocketAddr::new(v6, 8443), Scheme::Https, "[fd00::1]:8443"),
    ];
    for (addr, scheme, expected) in cases {
        assert_eq!(host_header(addr, scheme).expect("valid"), expected);
    }
}

#[test]
fn http1_gets_origin_form_and_a_host_only_when_missing() {
    let addr = SocketAddr::from(([10, 0, 0, 1], 8080));
    let d = dial(addr, Scheme::Http, Wire::Plain);
    let mut req = request("/a/b?c=d");
    set_form(&mut req, false, &d);
    assert_eq!(req.uri(), "/a/b?c=d");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()[HOST], "10.0.0.1:8080");

    let mut req = request("http://10.0.0.1:8080/x");
    req.headers_mut()
        .insert(HOST, HeaderValue::from_static("client.example"));
    set_form(&mut req, false, &d);
    assert_eq!(req.uri(), "/x");
    assert_eq!(req.headers()[HOST], "client.example");
}

#[test]
fn http2_gets_the_absolute_form_of_the_dialed_address() {
    let addr = SocketAddr::from(([10, 0, 0, 1], 8443));
    let d = dial(addr, Scheme::Https, Wire::Tls);
    let mut req = request("/a?b");
    set_form(&mut req, true, &d);
    assert_eq!(req.uri(), "https://10.0.0.1:8443/a?b");
    assert_eq!(req.version(), Version::HTTP_2);
    assert!(!req.headers().contains_key(HOST));
    // Back to HTTP/1.1 (a pooled HTTP/2 connection closed): origin-form again.
    set_form(&mut req, false, &d);
    assert_eq!(req.uri(), "/a?b");
}

fn pool(idle_timeout: Duration, max_idle_per_endpoint: usize) -> Pool {
    Pool::new(PoolSettings {
        idle_timeout,
        max_idle_per_endpoint,
        http2_keep_alive_interval: None,
    })
}

/// A loopback HTTP/1.1 server answering `ok`; counts connections.
async fn backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

async fn roundtrip(pool: &Pool, addr: SocketAddr) -> Bytes {
    let (res, checkin) = pool
        .send(dial(addr, Scheme::Http, Wire::Plain), request("/"))
        .await
        .expect("sent");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    if let Some(checkin) = checkin {
        checkin.finish();
    }
    body
}

#[tokio::test]
async fn sequential_requests_share_one_connection_until_the_idle_timeout() {
    let (addr, conns) = backend().await;
    let pool = pool(Duration::from_millis(60), 4);
    for _ in 0..5 {
        assert_eq!(roundtrip(&pool, addr).await, "ok");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle(), 1);
    // The reaper closes it; the key is forgotten too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.idle() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.idle(), 0);
    assert!(lock(&pool.inner.slots).is_empty());
    assert_eq!(roundtrip(&pool, addr).await, "ok");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_idle_connection_is_kept_when_the_cap_is_zero() {
    let (addr, conns) = backend().await;
    let pool = pool(Duration::from_secs(90), 0);
    for _ in 0..3 {
        assert_eq!(roundtrip(&pool, addr).await, "ok");
    }
    assert_eq!(pool.idle(), 0);
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_still_sending_its_request_body_is_not_lent_to_another_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The backend answers as soon as it has the head and reads the body afterwards.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.clear();
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let pool = pool(Duration::from_secs(90), 4);
    // An upload that goes on after its response has ended.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(http_body::Frame::data(b)), rx))
    });
    let mut upload = Request::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    *upload.method_mut() = http::Method::POST;
    *upload.uri_mut() = Uri::from_static("/upload");
    tx.send(Bytes::from_static(b"first part"))
        .await
        .expect("send");
    let (res, checkin) = pool
        .send(dial(addr, Scheme::Http, Wire::Plain), upload)
        .await
        .expect("sent");
    assert_eq!(
        res.into_body().collect().await.expect("body").to_bytes(),
        "ok"
    );
    if let Some(checkin) = checkin {
        checkin.finish();
    }
    // The first connection is busy with the upload: the next request gets a new one
    // instead of waiting for the upload to end.
    let next = tokio::time::timeout(Duration::from_secs(10), roundtrip(&pool, addr))
        .await
        .expect("not held behind the unfinished upload");
    assert_eq!(next, "ok");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    drop(tx);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let pool = pool(Duration::from_secs(90), 4);
    let err = pool
        .send(dial(addr, Scheme::Http, Wire::Plain), request("/"))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, SendFailure::Connect(ConnectError::Tcp { addr: a, .. }) if a == addr),
        "{err:?}"
    );
}

/// Polls until the pool holds no key, for up to five seconds.
async fn wait_for_no_keys(pool: &Pool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if lock(&pool.inner.slots).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn the_key_of_an_endpoint_that_never_connected_is_reaped() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let pool = pool(Duration::from_millis(40), 4);
    for _ in 0..3 {
        let _ = pool
            .send(dial(addr, Scheme::Http, Wire::Plain), request("/"))
            .await
            .expect_err("refused");
    }
    assert!(wait_for_no_keys(&pool).await, "the refused key stays");
}

#[tokio::test]
async fn an_idle_shared_http2_connection_is_reaped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"h2",
                    ))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                let _ = closed.send(());
            });
        }
    });
    let pool = pool(Duration::from_millis(40), 4);
    let (res, checkin) = pool
        .send(dial(addr, Scheme::Http, Wire::H2c), request("/"))
        .await
        .expect("sent");
    assert!(checkin.is_none(), "HTTP/2 connections are shared, not lent");
    assert_eq!(
        res.into_body().collect().await.expect("body").to_bytes(),
        "h2"
    );
    assert!(wait_for_no_keys(&pool).await, "the idle HTTP/2 key stays");
    // Forgetting the sender closes the connection: the backend sees it end.
    tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
        .await
        .expect("the idle HTTP/2 connection was closed");
}
