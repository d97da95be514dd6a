//! WebSocket through the proxy to pods, services and nodes, over plain HTTP and TLS:
//! text and binary both ways, 1 MiB messages, the close handshake, the query string, and
//! the headers the backend receives.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use kube_bastion::{Roots, UpgradeOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// One full WebSocket conversation through `proxy` at `path` (which ends in `?tty=1&x=%2F`),
/// checked against what the backend logged.
async fn converse(proxy: SocketAddr, path: &str, log: &WsLog, expect_tls: bool) {
    let mut ws = ws_connect(proxy, path).await.expect("the upgrade succeeds");

    // Text both ways.
    ws.send(Message::text("hello")).await.unwrap();
    let reply = soon("a text reply", ws.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text("echo:hello"));

    // Binary frames with every byte value.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let reply = soon("a binary reply", ws.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::binary(binary));

    // 1 MiB messages, text and binary.
    let big_text = "k".repeat(1 << 20);
    ws.send(Message::text(big_text.clone())).await.unwrap();
    match soon("a 1 MiB text reply", ws.next())
        .await
        .unwrap()
        .unwrap()
    {
        Message::Text(t) => {
            assert_eq!(t.len(), (1 << 20) + 5);
            assert!(t.as_str().starts_with("echo:kkk") && t.as_str().ends_with("kkk"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let big_binary: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big_binary.clone())).await.unwrap();
    let reply = soon("a 1 MiB binary reply", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::binary(big_binary));

    // The close handshake completes end to end.
    ws.close(None).await.unwrap();
    loop {
        match soon("the close reply", ws.next()).await {
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(other)) => panic!("unexpected {other:?} after close"),
            None => break,
            Some(Err(e)) => panic!("close handshake failed: {e}"),
        }
    }
    soon("the backend to finish", async {
        while log.ends().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(log.ends(), vec!["close"]);

    // What the backend received.
    let seen = log.last();
    assert_eq!(log.handshakes().len(), 1);
    assert!(
        seen.path_and_query.ends_with("?tty=1&x=%2F"),
        "query lost: {}",
        seen.path_and_query
    );
    assert_eq!(
        seen.headers["host"],
        proxy.to_string(),
        "the client's Host passes through"
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(
        !seen.headers.contains_key("authorization"),
        "credentials must be stripped"
    );
    assert_eq!(seen.headers["sec-websocket-protocol"], "v4.channel.k8s.io");
    assert_eq!(seen.headers["sec-websocket-version"], "13");
    assert!(seen.headers.contains_key("sec-websocket-key"));
    assert!(
        seen.headers["upgrade"]
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
    );
    assert!(
        seen.headers["connection"]
            .as_bytes()
            .eq_ignore_ascii_case(b"upgrade")
    );
    // Set from the plan as on every other request (upstream passes the client's value on,
    // or none): a client cannot choose what the backend believes the proxy path was.
    assert_eq!(
        seen.headers["x-forwarded-uri"],
        path.split('?').next().unwrap_or(path),
        "X-Forwarded-Uri is the proxy path"
    );
    if expect_tls {
        assert_eq!(
            seen.alpn.as_deref(),
            Some(&b"http/1.1"[..]),
            "upgrades offer ALPN http/1.1 only"
        );
    } else {
        assert_eq!(seen.alpn, None);
    }
}

#[tokio::test]
async fn pod_over_http() {
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    let proxy = proxy_with(UpgradeOptions::default()).await;
    let path = format!(
        "/api/v1/namespaces/ns/pods/web:{}/proxy/shell?tty=1&x=%2F",
        backend.port()
    );
    converse(proxy, &path, &log, false).await;
    assert_eq!(log.last().path_and_query, "/shell?tty=1&x=%2F");
}

#[tokio::test]
async fn pod_over_https() {
    let id = TlsIdentity::new(&["web.example"]);
    let (backend, log) = ws_backend(Some(&id), WsBehaviour::Echo).await;
    let proxy = proxy_with(UpgradeOptions::default()).await;
    let path = format!(
        "/api/v1/namespaces/ns/pods/https:web:{}/proxy/a/b/?tty=1&x=%2F",
        backend.port()
    );
    converse(proxy, &path, &log, true).await;
    assert_eq!(log.last().path_and_query, "/a/b/?tty=1&x=%2F");
}

#[tokio::test]
async fn service_over_http() {
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    let docs = service_docs(backend.port());
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    converse(
        proxy,
        "/api/v1/namespaces/ns/services/svc:http/proxy/ws?tty=1&x=%2F",
        &log,
        false,
    )
    .await;
    assert_eq!(log.last().path_and_query, "/ws?tty=1&x=%2F");
}

#[tokio::test]
async fn service_over_https() {
    let id = TlsIdentity::new(&["svc.ns.svc"]);
    let (backend, log) = ws_backend(Some(&id), WsBehaviour::Echo).await;
    let docs = service_docs(backend.port());
    // Verification on, anchored on the backend's certificate: the service name is checked.
    let roots = Roots::from_pem(id.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).verify_backends(roots).build().unwrap()).await;
    converse(
        proxy,
        "/api/v1/namespaces/ns/services/https:svc:http/proxy/ws?tty=1&x=%2F",
        &log,
        true,
    )
    .await;
}

#[tokio::test]
async fn node_port_over_http() {
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    // The kubelet port is elsewhere: this port is reached with the generic transport.
    let docs = [node_yaml(
        "n1",
        "InternalIP",
        "127.0.0.1",
        closed_port().await,
    )];
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    let path = format!("/api/v1/nodes/n1:{}/proxy/ws?tty=1&x=%2F", backend.port());
    converse(proxy, &path, &log, false).await;
}

#[tokio::test]
async fn node_kubelet_port_over_tls() {
    let kubelet = TlsIdentity::new(&["127.0.0.1"]);
    let (backend, log) = ws_backend(Some(&kubelet), WsBehaviour::Echo).await;
    let docs = [node_yaml("n1", "InternalIP", "127.0.0.1", backend.port())];
    let ca = Roots::from_pem(kubelet.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).kubelet_ca(ca).build().unwrap()).await;
    converse(
        proxy,
        "/api/v1/nodes/n1/proxy/exec/ns/pod/c?tty=1&x=%2F",
        &log,
        true,
    )
    .await;
    assert_eq!(log.last().path_and_query, "/exec/ns/pod/c?tty=1&x=%2F");
}

#[tokio::test]
async fn kubelet_with_another_ca_is_a_dial_error() {
    let kubelet = TlsIdentity::new(&["127.0.0.1"]);
    let (backend, log) = ws_backend(Some(&kubelet), WsBehaviour::Echo).await;
    let docs = [node_yaml("n1", "InternalIP", "127.0.0.1", backend.port())];
    let other = TlsIdentity::new(&["127.0.0.1"]);
    let ca = Roots::from_pem(other.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).kubelet_ca(ca).build().unwrap()).await;
    let (status, _, body) =
        upgrade_attempt(proxy, "/api/v1/nodes/n1/proxy/exec", "websocket").await;
    assert_eq!(status, 500);
    let (code, reason, message) = status_of(&body);
    assert_eq!((code, reason), (500, None));
    assert!(message.starts_with("error dialing backend: "), "{message}");
    assert!(log.handshakes().is_empty());
}
