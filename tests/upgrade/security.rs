//! Regressions for the upgrade CVEs and the refusals: CVE-2018-1002105 (an error answer never
//! becomes a tunnel), CVE-2020-8559 (a redirect answer is never relayed or followed),
//! refused protocols, dial failures, and error answers relayed with their body.

use std::time::Duration;

use kube_bastion::UpgradeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::support::data::vector_rows;

fn pod_proxy(port: u16, rest: &str) -> String {
    format!("/api/v1/namespaces/ns/pods/web:{port}/proxy{rest}")
}

async fn pod_proxy_server() -> std::net::SocketAddr {
    proxy_with(UpgradeOptions::default()).await
}

/// CVE-2018-1002105: the backend refuses the upgrade with 403 and would then serve further
/// requests on the same connection. The client gets the 403 and `Connection: close`; what it
/// sends afterwards on its connection never reaches the backend, and the proxy closes the
/// backend connection.
#[tokio::test]
async fn cve_2018_1002105_error_answer_is_never_a_tunnel() {
    let (backend, log) = raw_backend(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nforbidden"
            .to_vec(),
    )
    .await;
    let proxy = pod_proxy_server().await;

    let mut client = TcpStream::connect(proxy).await.unwrap();
    let upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: {proxy}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        pod_proxy(backend.port(), "/exec/ns/pod/c?command=id")
    );
    client.write_all(upgrade.as_bytes()).await.unwrap();

    // Read the whole answer: status line, headers, the 9-byte body.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !(answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"forbidden")) {
        let n = soon("the 403", client.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 403 forbidden\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");

    // The attacker's follow-up on the same connection: a request for the backend.
    let _ = client
        .write_all(b"GET /runningpods/ HTTP/1.1\r\nHost: kubelet\r\n\r\n")
        .await;
    let rest = read_to_close(&mut client).await;
    assert!(
        rest.is_empty(),
        "the proxy answered the follow-up: {}",
        String::from_utf8_lossy(&rest)
    );

    // The backend saw exactly the upgrade request, once, and its connection was closed.
    soon("the proxy to close the backend connection", async {
        while log.connections() == 0 || !log.closed(0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(log.connections(), 1);
    let received = String::from_utf8_lossy(&log.received(0)).into_owned();
    assert!(
        received.starts_with("GET /exec/ns/pod/c?command=id HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(received.ends_with("\r\n\r\n"), "{received}");
    assert_eq!(received.matches("HTTP/1.1").count(), 1, "{received}");
    assert!(
        !received.contains("runningpods"),
        "the follow-up reached the backend: {received}"
    );
}

/// The same with the follow-up pipelined right behind the upgrade request.
#[tokio::test]
async fn cve_2018_1002105_pipelined_follow_up_never_reaches_the_backend() {
    let (backend, log) =
        raw_backend(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let proxy = pod_proxy_server().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let both = format!(
        "GET {} HTTP/1.1\r\nHost: {proxy}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /pods HTTP/1.1\r\nHost: kubelet\r\n\r\n",
        pod_proxy(backend.port(), "/attach")
    );
    client.write_all(both.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut client).await).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 401 unauthorized\r\n"),
        "{answer}"
    );
    assert_eq!(
        answer.matches("http/1.1 ").count(),
        1,
        "one answer only: {answer}"
    );
    soon("the backend connection to close", async {
        while log.connections() == 0 || !log.closed(0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let received = String::from_utf8_lossy(&log.received(0)).into_owned();
    // The follow-up request line (the upgrade's own X-Forwarded-Uri names `/pods/` too).
    assert!(!received.contains("GET /pods"), "{received}");
    assert_eq!(received.matches(" HTTP/1.1\r\n").count(), 1, "{received}");
    assert_eq!(log.connections(), 1);
}

/// CVE-2020-8559: a backend answering the upgrade with a redirect (every 3xx of the
/// upstream vectors, plus 2xx) gets nothing relayed and nothing followed: the client gets
/// kube-apiserver's 500 Status and the redirect target never hears from the proxy.
#[tokio::test]
async fn cve_2020_8559_redirect_answer_is_never_relayed_or_followed() {
    let mut statuses: Vec<u16> = vector_rows("upgradeaware_handler.json")
        .iter()
        .filter_map(|row| row["input"]["backend_status"].as_u64())
        .map(|s| s as u16)
        .collect();
    assert!(
        statuses.contains(&302),
        "the vectors name the redirect statuses"
    );
    statuses.extend([301, 303, 308, 200, 204]);

    let (elsewhere, accepted) = counting_listener().await;
    let proxy = pod_proxy_server().await;
    for status in statuses {
        let answer = format!(
            "HTTP/1.1 {status} Moved\r\nLocation: http://{elsewhere}/steal\r\nSet-Cookie: s=1\r\nContent-Length: 0\r\n\r\n"
        );
        let (backend, log) = raw_backend(answer.into_bytes()).await;
        let (code, headers, body) =
            upgrade_attempt(proxy, &pod_proxy(backend.port(), "/exec"), "websocket").await;
        assert_eq!(code, 500, "backend {status}");
        assert!(
            !headers.contains_key("location"),
            "backend {status}: Location relayed"
        );
        assert!(
            !headers.contains_key("set-cookie"),
            "backend {status}: headers relayed"
        );
        let (code, reason, message) = status_of(&body);
        assert_eq!((code, reason.as_deref()), (500, None));
        assert_eq!(
            message,
            format!("invalid upgrade response: status code {status}")
        );
        soon("the backend connection to close", async {
            while log.connections() == 0 || !log.closed(0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // Give a follower every chance to show up before asserting it never did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *accepted.lock().unwrap(),
        0,
        "the redirect target was contacted"
    );
}

#[tokio::test]
async fn refused_protocol_is_400_and_the_backend_sees_nothing() {
    let (backend, log) =
        raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n".to_vec()).await;
    let proxy = pod_proxy_server().await;
    for protocol in ["h2c", "websocket, h2c", "TLS/1.0"] {
        let (status, _, body) =
            upgrade_attempt(proxy, &pod_proxy(backend.port(), "/"), protocol).await;
        assert_eq!(status, 400, "{protocol}");
        let (_, reason, message) = status_of(&body);
        assert_eq!(reason.as_deref(), Some("BadRequest"));
        assert!(
            message.starts_with("upgrade protocol \"") && message.ends_with("\" is not allowed"),
            "{message}"
        );
    }
    assert_eq!(log.connections(), 0);
}

#[tokio::test]
async fn host_added_protocols_are_allowed() {
    let (backend, log) = raw_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: Custom/2\r\nConnection: Upgrade\r\n\r\nhello from the backend".to_vec(),
    )
    .await;
    let options = UpgradeOptions::default().allow_protocol("custom");
    let proxy = proxy_with(options).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {proxy}\r\nConnection: Upgrade\r\nUpgrade: custom/2\r\n\r\n",
        pod_proxy(backend.port(), "/c")
    );
    client.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello from the backend") {
        let n = soon("the 101 and the first tunnel bytes", client.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 101 switching protocols\r\n"),
        "{text}"
    );
    // Tunnel bytes the backend sent right behind its head arrive after the 101 head.
    assert!(text.contains("\r\n\r\nhello from the backend"), "{text}");
    // And the tunnel carries bytes the other way.
    client.write_all(b"ping").await.unwrap();
    soon("the backend to get tunnel bytes", async {
        while !log.received(0).ends_with(b"ping") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn backend_switching_to_an_unrequested_protocol_is_refused() {
    let (backend, _log) =
        raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n".to_vec()).await;
    let proxy = pod_proxy_server().await;
    let (status, _, body) =
        upgrade_attempt(proxy, &pod_proxy(backend.port(), "/"), "websocket").await;
    assert_eq!(status, 500);
    assert_eq!(
        status_of(&body).2,
        "invalid upgrade response: protocol \"h2c\" is not allowed"
    );
}

#[tokio::test]
async fn dial_failure_is_kube_apiservers_500() {
    let port = closed_port().await;
    let proxy = pod_proxy_server().await;
    let (status, _, body) = upgrade_attempt(proxy, &pod_proxy(port, "/exec"), "SPDY/3.1").await;
    assert_eq!(status, 500);
    let (code, reason, message) = status_of(&body);
    assert_eq!((code, reason), (500, None));
    assert!(message.starts_with("error dialing backend: "), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("/exec"),
        "no request URL in errors: {message}"
    );
}

#[tokio::test]
async fn error_answers_are_relayed_with_their_body_then_closed() {
    let (backend, log) = raw_backend(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-Why: gone\r\n\r\n5\r\nno su\r\n9\r\nch stream\r\n0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let proxy = pod_proxy_server().await;
    let (status, headers, body) =
        upgrade_attempt(proxy, &pod_proxy(backend.port(), "/attach"), "websocket").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-why"], "gone");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["connection"], "close");
    assert_eq!(&body[..], b"no such stream");
    soon("the backend connection to close", async {
        while log.connections() == 0 || !log.closed(0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn garbage_answer_is_a_500_with_the_parse_error() {
    let (backend, _log) = raw_backend(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()).await;
    let proxy = pod_proxy_server().await;
    let (status, _, body) =
        upgrade_attempt(proxy, &pod_proxy(backend.port(), "/"), "websocket").await;
    assert_eq!(status, 500);
    let message = status_of(&body).2;
    assert!(
        message.starts_with("invalid upgrade response: malformed HTTP response"),
        "{message}"
    );
}

/// Sends a raw upgrade request with `extra` header lines to the pod `web` at `port` and
/// returns everything the proxy answered before closing (or until the head when it is a
/// 101).
async fn raw_upgrade(proxy: std::net::SocketAddr, port: u16, extra: &str) -> String {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {proxy}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
        pod_proxy(port, "/ws?x=1")
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = soon("the answer head", client.read(&mut buf))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

const SWITCH_TO_WEBSOCKET: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// kubectl and client-go carry the bearer token in a WebSocket subprotocol entry; it is a
/// credential like `Authorization` and never reaches the backend, whatever else the
/// request carries. The other subprotocols do.
#[tokio::test]
async fn websocket_bearer_token_subprotocol_never_reaches_the_backend() {
    let (backend, log) = raw_backend(SWITCH_TO_WEBSOCKET.to_vec()).await;
    let proxy = pod_proxy_server().await;
    let answer = raw_upgrade(
        proxy,
        backend.port(),
        "Authorization: Bearer other-secret\r\nSec-WebSocket-Protocol: \
         base64url.bearer.authorization.k8s.io.czNjcmV0LXRva2Vu, v4.channel.k8s.io\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let received = String::from_utf8_lossy(&log.received(0)).to_ascii_lowercase();
    assert!(!received.contains("base64url.bearer"), "{received}");
    assert!(!received.contains("czNjcmV0LXRva2Vu".to_ascii_lowercase().as_str()));
    assert!(!received.contains("other-secret"), "{received}");
    assert!(
        received.contains("\r\nsec-websocket-protocol: v4.channel.k8s.io\r\n"),
        "{received}"
    );

    // The token as the only subprotocol: the header goes entirely.
    let (backend, log) = raw_backend(SWITCH_TO_WEBSOCKET.to_vec()).await;
    let answer = raw_upgrade(
        proxy,
        backend.port(),
        "Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.czNjcmV0LXRva2Vu\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let received = String::from_utf8_lossy(&log.received(0)).to_ascii_lowercase();
    assert!(!received.contains("sec-websocket-protocol"), "{received}");
}

/// A `101` that names no protocol, or one the client did not ask for, opens no tunnel:
/// the client gets a 500 Status and the backend connection is closed.
#[tokio::test]
async fn a_101_not_matching_the_request_opens_no_tunnel() {
    let proxy = pod_proxy_server().await;
    let cases: [(&[u8], &str); 3] = [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
            "invalid upgrade response: backend tried to switch protocol \"\" when \
             \"websocket\" was requested",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: \r\n\r\n",
            "invalid upgrade response: backend tried to switch protocol \"\" when \
             \"websocket\" was requested",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n",
            "invalid upgrade response: backend tried to switch protocol \"SPDY/3.1\" when \
             \"websocket\" was requested",
        ),
    ];
    for (answer, message) in cases {
        let (backend, log) = raw_backend(answer.to_vec()).await;
        let (status, headers, body) =
            upgrade_attempt(proxy, &pod_proxy(backend.port(), "/"), "websocket").await;
        assert_eq!(status, 500, "{}", String::from_utf8_lossy(answer));
        assert_eq!(status_of(&body).2, message);
        assert!(!headers.contains_key("upgrade"));
        soon("the backend connection to close", async {
            while log.connections() == 0 || !log.closed(0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // A protocol the client named, in another case, is the same protocol.
    let (backend, _log) = raw_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec(),
    )
    .await;
    let answer = raw_upgrade(proxy, backend.port(), "").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
}

/// The client's `X-Forwarded-Uri` is replaced on upgrades as on every other request.
#[tokio::test]
async fn client_forwarded_uri_is_replaced_on_upgrades() {
    let (backend, log) = raw_backend(SWITCH_TO_WEBSOCKET.to_vec()).await;
    let proxy = pod_proxy_server().await;
    let answer = raw_upgrade(
        proxy,
        backend.port(),
        "X-Forwarded-Uri: /api/v1/namespaces/kube-system/pods/evil/proxy/\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let received = String::from_utf8_lossy(&log.received(0)).to_ascii_lowercase();
    let expected = format!(
        "\r\nx-forwarded-uri: {}\r\n",
        pod_proxy(backend.port(), "/ws")
    );
    assert!(received.contains(&expected), "{received}");
    assert_eq!(received.matches("x-forwarded-uri").count(), 1, "{received}");
}
