//! Process lifecycle: graceful shutdown drains in-flight requests; HTTPS with HTTP/2 by ALPN;
//! /metrics.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::support::{Server, TempDir, get, run_ok};

/// A backend that answers after `delay`, and says on `arrived` when a request came in.
async fn slow_backend(delay: Duration, arrived: Arc<Notify>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move {
        arrived.notify_one();
        tokio::time::sleep(delay).await;
        "finished"
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    drains_in_flight_requests(&[]).await;
}

/// The same with per-core workers: each stops accepting and drains its own connections.
#[tokio::test]
async fn sigterm_drains_in_flight_requests_of_per_core_workers() {
    drains_in_flight_requests(&["--runtime", "per-core", "--worker-threads", "2"]).await;
}

/// SIGTERM while a request is at a slow backend: the request finishes, the server exits 0
/// and refuses new connections.
async fn drains_in_flight_requests(extra: &[&str]) {
    let arrived = Arc::new(Notify::new());
    let backend = slow_backend(Duration::from_millis(1000), arrived.clone()).await;
    let dir = TempDir::new("shutdown");
    let file = dir.join("cluster.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: slow, namespace: ops}}\nspec:\n  containers: [{{name: c, ports: [{{containerPort: {}}}]}}]\nstatus:\n  podIPs: [{{ip: 127.0.0.1}}]\n",
            backend.port()
        ),
    )
    .unwrap();
    let mut args = vec![
        "--cluster",
        file.to_str().unwrap(),
        "--destination-allow",
        "127.0.0.1/32",
    ];
    args.extend_from_slice(extra);
    let mut server = Server::start(&args);
    let url = format!("{}/api/v1/namespaces/ops/pods/slow/proxy/slow", server.url);
    let in_flight =
        tokio::spawn(async move { crate::support::request("GET", &url, &[], "").await });
    // Once the request is at the backend, ask the server to stop.
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the request reaches the backend");
    server.signal("TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "finished"));
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("server exits after draining");
    assert!(status.success(), "{status}");
    assert!(server.stderr().contains("draining in-flight requests"));
    // New connections are refused once it stopped.
    let addr = server.url.trim_start_matches("http://").to_owned();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// SIGTERM as soon as the address is printed is a graceful shutdown too: the handlers are
/// installed before the banner, in either runtime shape.
#[test]
fn sigterm_right_after_startup_exits_zero() {
    for shape in [&[][..], &["--runtime", "per-core", "--worker-threads", "2"]] {
        let mut server = Server::demo(shape);
        server.signal("TERM");
        let status = server
            .wait_exit(Duration::from_secs(20))
            .expect("server exits");
        assert!(status.success(), "{shape:?}: {status}");
    }
}

#[tokio::test]
async fn https_serves_http2_by_alpn() {
    let dir = TempDir::new("tls");
    let (cert_path, key_path) = crate::support::serving_cert(&dir);
    let server = Server::demo(&[
        "--tls-cert-file",
        cert_path.to_str().unwrap(),
        "--tls-private-key-file",
        key_path.to_str().unwrap(),
    ]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "--http2",
        "--cacert",
        cert_path.to_str().unwrap(),
        "-w",
        "\\n%{http_version}",
        &format!(
            "{}/api/v1/namespaces/demo/pods/echo-1:8080/proxy/tls-check",
            server.url
        ),
    ]));
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    let echoed: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["pod"], "echo-1");
    assert_eq!(echoed["path"], "/tls-check");
    let h1 = run_ok(Command::new("curl").args([
        "-sS",
        "--http1.1",
        "--cacert",
        cert_path.to_str().unwrap(),
        "-w",
        "%{http_version}",
        "-o",
        "/dev/null",
        &format!("{}/healthz", server.url),
    ]));
    assert_eq!(h1, "1.1");
    let kubectl_out = run_ok(
        crate::support::kubectl(&server.url, dir.path())
            // Over TLS kubectl wants some credential (it prompts otherwise); the server
            // without --token-auth-file accepts any.
            .args([
                "--certificate-authority",
                cert_path.to_str().unwrap(),
                "--token",
                "unused",
            ])
            .args(["get", "--raw", "/api/v1/nodes/node-1/proxy/healthz"]),
    );
    assert_eq!(kubectl_out, "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_resource_verb_and_code() {
    let server = Server::demo(&[]);
    assert_eq!(
        get(&server, "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/m")
            .await
            .status,
        200
    );
    assert_eq!(
        get(&server, "/api/v1/namespaces/demo/pods/nope/proxy/m")
            .await
            .status,
        404
    );
    assert_eq!(
        get(&server, "/api/v1/namespaces/demo/pods").await.status,
        200
    );
    for _ in 0..3 {
        let reply = get(
            &server,
            "/api/v1/namespaces/demo/services/echo:http/proxy/whoami",
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    let metrics = get(&server, "/metrics").await;
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.body;
    for line in [
        "kube_bastion_requests_total{verb=\"get\",resource=\"pods\",subresource=\"proxy\",code=\"200\"} 1",
        "kube_bastion_requests_total{verb=\"get\",resource=\"pods\",subresource=\"proxy\",code=\"404\"} 1",
        "kube_bastion_requests_total{verb=\"list\",resource=\"pods\",subresource=\"\",code=\"200\"} 1",
        "kube_bastion_proxy_upstream_duration_seconds_count{resource=\"pods\"} 2",
        "# TYPE kube_bastion_proxy_upstream_duration_seconds histogram",
        "kube_bastion_requests_total{verb=\"get\",resource=\"services\",subresource=\"proxy\",code=\"200\"} 3",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // Endpoint health from the balancer: the three echo endpoints (round-robin), healthy.
    let prefix = "{namespace=\"demo\",service=\"echo\",port=\"http\"";
    let ejected: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("kube_bastion_endpoint_ejected{prefix}")))
        .collect();
    assert_eq!(ejected.len(), 3, "{text}");
    assert!(ejected.iter().all(|l| l.ends_with(" 0")), "{ejected:?}");
    let in_flight: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("kube_bastion_endpoint_in_flight_requests{prefix}")))
        .collect();
    // (Their values are not asserted: the last response may still be finishing on the
    // server side when this client has read it.)
    assert_eq!(in_flight.len(), 3, "{text}");
}

#[tokio::test]
async fn sigterm_closes_open_tunnels_after_the_grace_period() {
    use futures_util::StreamExt;
    let mut server = Server::demo(&["--shutdown-grace-period", "1"]);
    let (mut ws, greeting) = crate::support::web_socket(&server).await;
    assert!(greeting.starts_with("connected to web-0"), "{greeting}");
    server.signal("TERM");
    // The tunnel is closed by the server once the grace period is over.
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the tunnel stayed open after shutdown");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("server exits");
    assert!(status.success(), "{status}");
}
