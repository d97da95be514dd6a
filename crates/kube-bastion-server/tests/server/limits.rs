//! What keeps clients from exhausting the server: the connection cap, the setup and idle
//! timeouts, bounded metrics labels, and the demo's reach.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Server, get, request};

/// The `host:port` of a server URL.
fn authority(server: &Server) -> String {
    server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Reads until the peer closes (EOF or reset), within `limit` (a liveness bound). Returns
/// whether it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

/// The value of one metric line (`name{labels} value`), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// 500 connections that send nothing, one that stops inside the HTTP/2 preface, and one
/// that sends half a request head are all closed once the setup timeout has passed.
#[tokio::test]
async fn silent_and_partial_connections_are_closed_after_the_setup_timeout() {
    let server = Server::demo(&["--connection-setup-timeout", "1"]);
    let addr = authority(&server);
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut preface = TcpStream::connect(&addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for stream in silent.iter_mut().chain([&mut preface, &mut half]) {
        assert!(
            closed_within(stream, Duration::from_secs(20)).await,
            "a connection stayed open past the setup timeout"
        );
    }
    let text = get(&server, "/metrics").await.body;
    let timeouts = metric(
        &text,
        "kube_bastion_closed_connections_total{reason=\"setup-timeout\"}",
    )
    .expect("setup-timeout counter");
    assert!(timeouts >= 502.0, "{timeouts}");
    // A prompt client is served as ever.
    assert_eq!(get(&server, "/api/v1/namespaces").await.status, 200);
}

/// `--max-connections N`: with N open, connection N+1 is closed at once; when one of the N
/// goes, a new connection is served again.
#[tokio::test]
async fn max_connections_refuses_connection_n_plus_one() {
    max_connections_cap(&[]).await;
}

/// The same with per-core workers: the cap counts the connections of every worker.
#[tokio::test]
async fn max_connections_is_one_cap_across_per_core_workers() {
    max_connections_cap(&["--runtime", "per-core", "--worker-threads", "2"]).await;
}

async fn max_connections_cap(extra: &[&str]) {
    let mut args = vec!["--max-connections", "5"];
    args.extend_from_slice(extra);
    let server = Server::demo(&args);
    let addr = authority(&server);
    // Five keep-alive connections, each with a request answered.
    let mut open = Vec::new();
    for _ in 0..5 {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let req = http::Request::get("/version")
            .header("host", &addr)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.into_body().collect().await.unwrap();
        open.push((sender, task));
    }
    let mut sixth = TcpStream::connect(&addr).await.unwrap();
    let _ = sixth
        .write_all(format!("GET /version HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sixth.read_to_end(&mut answer))
        .await
        .expect("the sixth connection is closed, not left waiting");
    assert!(
        read.is_err() || answer.is_empty(),
        "the sixth connection was served: {}",
        String::from_utf8_lossy(&answer)
    );
    // One goes away: there is room again.
    let (sender, task) = open.pop().unwrap();
    drop(sender);
    let _ = task.await;
    let served = crate::support::eventually(Duration::from_secs(10), || async {
        let mut tcp = TcpStream::connect(&addr).await.ok()?;
        tcp.write_all(
            format!("GET /version HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(served.is_some(), "no room after a connection closed");
    // Free every slot; the server releases them as each connection task ends.
    drop(open);
    let text = crate::support::eventually(Duration::from_secs(10), || async {
        let mut tcp = TcpStream::connect(&addr).await.ok()?;
        tcp.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await
    .expect("the metrics once the connections are gone");
    assert!(
        metric(
            &text,
            "kube_bastion_closed_connections_total{reason=\"limit\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// An HTTP/2 connection (h2c) and an HTTP/1.1 keep-alive connection with nothing in
/// flight are closed after the idle timeout; one with a request in flight is not.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::demo(&["--idle-connection-timeout", "1"]);
    let addr = authority(&server);

    let tcp = TcpStream::connect(&addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let h2_conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/version"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = h2.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let _ = res.into_body().collect().await.unwrap();

    let mut http1 = TcpStream::connect(&addr).await.unwrap();
    http1
        .write_all(format!("GET /version HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();

    // The HTTP/2 connection ends (GOAWAY, then close) within a liveness bound.
    tokio::time::timeout(Duration::from_secs(20), h2_conn)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .ok();
    assert!(
        closed_within(&mut http1, Duration::from_secs(20)).await,
        "the idle HTTP/1.1 connection stayed open"
    );
    let text = get(&server, "/metrics").await.body;
    assert!(
        metric(
            &text,
            "kube_bastion_closed_connections_total{reason=\"idle\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );

    // A WebSocket-free long request: a slow body keeps its connection. The echo app reads
    // the whole body before answering; the client sends it over three seconds.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /api/v1/namespaces/demo/pods/echo-0:8080/proxy/upload HTTP/1.1\r\nHost: \
             {addr}\r\nContent-Length: 3\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for byte in [b"a", b"b", b"c"] {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        slow.write_all(byte).await.unwrap();
    }
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), slow.read_exact(&mut answer))
        .await
        .expect("the answer")
        .expect("the request in flight kept its connection");
    assert_eq!(&answer, b"HTTP/1.1 200");
}

/// The cardinality attack of the security review: 2,000 unauthenticated requests with
/// fresh resource names and methods leave the request counter with a handful of series.
#[tokio::test]
async fn client_chosen_names_do_not_grow_the_metrics() {
    let dir = crate::support::TempDir::new("cardinality");
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "t,alice,1\n").unwrap();
    let server = Server::demo(&["--token-auth-file", tokens.to_str().unwrap()]);
    let before = get(&server, "/metrics").await.body.len();
    let long = "A".repeat(1024);
    for i in 0..2_000 {
        let method = if i % 2 == 0 { "GET" } else { "FOOBARBAZ" };
        let url = format!("{}/api/v1/x{i}{long}/n/proxy", server.url);
        let reply = request(method, &url, &[("Authorization", "Bearer t")], "").await;
        assert!(reply.status >= 400, "{}", reply.status);
        let url = format!("{}/api/v1/y{i}", server.url);
        assert_eq!(request(method, &url, &[], "").await.status, 401);
    }
    let text = get(&server, "/metrics").await.body;
    let series = text
        .lines()
        .filter(|l| l.starts_with("kube_bastion_requests_total{"))
        .count();
    assert!(series <= 12, "{series} series:\n{text}");
    assert!(!text.contains("x1AAAA") && !text.contains("foobarbaz"));
    assert!(
        text.len() < before + 4 * 1024,
        "/metrics grew from {before} to {} bytes",
        text.len()
    );
}

/// The demo admits exactly its own backends: another port of a demo address is refused as
/// kube-apiserver refuses loopback, and the demo will not listen beyond loopback unless
/// told to.
#[tokio::test]
async fn demo_reaches_only_its_backends() {
    let server = Server::demo(&[]);
    for path in [
        "/api/v1/nodes/node-1:22/proxy/",
        "/api/v1/nodes/https:node-1:8080/proxy/",
        "/api/v1/namespaces/demo/pods/echo-0:9999/proxy/",
        "/api/v1/namespaces/demo/pods/echo-0:10250/proxy/",
    ] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.json()["message"], "address not allowed", "{path}");
    }
    assert_eq!(
        get(&server, "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/x")
            .await
            .status,
        200
    );
    assert_eq!(
        get(&server, "/api/v1/nodes/node-1/proxy/healthz")
            .await
            .status,
        200
    );
}

#[test]
fn demo_refuses_a_non_loopback_listen_address() {
    let output = std::process::Command::new(crate::support::BIN)
        // Outside a pod even when the tests run in one: no in-cluster configuration.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["--listen", "0.0.0.0:0", "--demo-network"])
        .arg(crate::support::demo_network())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--demo-allow-remote"), "{stderr}");
    let server = Server::start_with_listen(
        &[
            "--demo-allow-remote",
            "--demo-network",
            &crate::support::demo_network(),
        ],
        "0.0.0.0:0",
    );
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `stream`; its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("an answer within the liveness bound")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if buf.len() >= head_end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// On a kept-alive HTTP/1.1 connection, a request head that stops half-way is cut after
/// `--request-head-timeout`; a connection that merely waits between requests is not (that
/// is the idle timeout's job), and answers its next request.
#[tokio::test]
async fn a_stalled_request_head_is_cut_and_an_idle_connection_is_not() {
    let server = Server::demo(&["--request-head-timeout", "1"]);
    let addr = authority(&server);
    let request = format!("GET /version HTTP/1.1\r\nHost: {addr}\r\n\r\n");

    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut stalled).await.contains(" 200 "));
    let mut waiting = TcpStream::connect(&addr).await.unwrap();
    waiting.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut waiting).await.contains(" 200 "));

    stalled
        .write_all(format!("GET /version HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)).await,
        "the stalled request head was not cut"
    );

    // Several head timeouts later, the waiting connection still answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    waiting.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut waiting).await.contains(" 200 "));

    let text = get(&server, "/metrics").await.body;
    assert_eq!(
        metric(
            &text,
            "kube_bastion_closed_connections_total{reason=\"head-timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );
}
