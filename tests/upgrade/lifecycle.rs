//! The life of a tunnel: idle timeout, per-direction rate limit, the backend closing
//! mid-stream, and graceful shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kube_bastion::{Shutdown, UpgradeOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

fn path(backend: SocketAddr) -> String {
    format!("/api/v1/namespaces/ns/pods/web:{}/proxy/ws", backend.port())
}

async fn wait_for_end(log: &WsLog) -> &'static str {
    soon("the backend connection to end", async {
        loop {
            if let Some(end) = log.ends().first() {
                return *end;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Whether the client's stream ended (close frame, end of stream or error) rather than
/// delivering a message.
async fn client_ends(ws: &mut Ws) -> bool {
    loop {
        match soon("the client stream to end", ws.next()).await {
            None | Some(Err(_)) => return true,
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(_)) => return false,
        }
    }
}

#[tokio::test]
async fn idle_tunnels_are_closed_and_busy_ones_are_not() {
    let idle = Duration::from_millis(800);
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    let proxy = proxy_with(UpgradeOptions::default().idle_timeout(Some(idle))).await;
    let mut ws = ws_connect(proxy, &path(backend)).await.unwrap();

    // Traffic every 150 ms keeps the tunnel open across two idle periods.
    let busy_until = Instant::now() + idle * 2;
    let mut echoed = 0;
    while Instant::now() < busy_until {
        ws.send(Message::text("tick")).await.unwrap();
        assert_eq!(
            soon("an echo", ws.next()).await.unwrap().unwrap(),
            Message::text("echo:tick")
        );
        echoed += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(echoed >= 2, "{echoed}");

    // Silence: the proxy closes both sides.
    assert!(
        client_ends(&mut ws).await,
        "a message arrived on an idle tunnel"
    );
    let end = wait_for_end(&log).await;
    assert!(end == "eof" || end == "error", "{end}");
}

/// Moves `total` bytes one way through a tunnel limited to `rate` bytes per second and
/// returns the measured rate, from the first byte received to the last (handshake and the
/// first message excluded).
async fn measure(rate: u64, total: usize, upload: bool) -> f64 {
    let behaviour = if upload {
        WsBehaviour::Echo
    } else {
        WsBehaviour::Send(total)
    };
    let (backend, _log) = ws_backend(None, behaviour).await;
    let proxy = proxy_with(UpgradeOptions::default().max_bytes_per_sec(rate)).await;
    let ws = ws_connect(proxy, &path(backend)).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    if upload {
        // The backend echoes: sending is paced by the client-to-backend limit and the
        // echo by the backend-to-client one; receive the echoes to time them.
        tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len());
                if tx.send(Message::binary(chunk[..n].to_vec())).await.is_err() {
                    return;
                }
                left -= n;
            }
            // Keep the sending half open until the echoes are read.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
    }
    let mut first: Option<(Instant, usize)> = None;
    let mut received = 0usize;
    let mut last = Instant::now();
    while received < total {
        match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                received += b.len();
                last = Instant::now();
                if first.is_none() {
                    first = Some((last, received));
                }
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("stream ended after {received} bytes: {other:?}"),
        }
    }
    let (start, before) = first.unwrap();
    (received - before) as f64 / last.duration_since(start).as_secs_f64()
}

#[tokio::test]
async fn rate_limit_holds_each_direction_within_20_percent() {
    let rate = 1 << 20;
    let total = 5 << 19; // 2.5 MiB: about two seconds of measured transfer at 1 MiB/s
    let download = measure(rate, total, false).await;
    let within = |r: f64| (r - rate as f64).abs() / rate as f64 <= 0.20;
    assert!(
        within(download),
        "backend to client: {:.0} B/s for a limit of {rate}",
        download
    );
    // Upload: the echo crosses both directions, each limited to the rate.
    let upload = measure(rate, total, true).await;
    assert!(
        within(upload),
        "client to backend and back: {:.0} B/s for a limit of {rate}",
        upload
    );
}

#[tokio::test]
async fn backend_closing_mid_stream_ends_the_client_side_and_the_tunnel() {
    let shutdown = Shutdown::new();
    let (backend, log) = ws_backend(None, WsBehaviour::DropAfterFirst).await;
    let proxy = proxy_with(UpgradeOptions::default().shutdown(shutdown.clone())).await;
    let mut ws = ws_connect(proxy, &path(backend)).await.unwrap();
    assert_eq!(shutdown.open_tunnels(), 1);
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(wait_for_end(&log).await, "dropped");
    // The client sees its stream end (no close frame came: an error or end of stream).
    assert!(client_ends(&mut ws).await);
    drop(ws);
    soon("the tunnel to be released", shutdown.drained()).await;
    assert_eq!(shutdown.open_tunnels(), 0);
}

#[tokio::test]
async fn shutdown_refuses_new_upgrades_and_drains_open_tunnels_after_the_grace_period() {
    let shutdown = Shutdown::new();
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    let proxy = proxy_with(UpgradeOptions::default().shutdown(shutdown.clone())).await;
    let mut ws = ws_connect(proxy, &path(backend)).await.unwrap();
    assert_eq!(shutdown.open_tunnels(), 1);

    shutdown.trigger(Duration::from_millis(500));
    // New upgrades are refused...
    let (status, _, body) = upgrade_attempt(proxy, &path(backend), "websocket").await;
    assert_eq!(status, 503);
    assert_eq!(status_of(&body).2, "the server is shutting down");
    // ...the open tunnel still works during the grace period...
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        soon("an echo", ws.next()).await.unwrap().unwrap(),
        Message::text("echo:still here")
    );
    // ...and is closed when it ends.
    soon("open tunnels to drain", shutdown.drained()).await;
    assert!(client_ends(&mut ws).await);
    wait_for_end(&log).await;
    assert_eq!(log.handshakes().len(), 1);
}

#[tokio::test]
async fn an_open_tunnel_counts_in_flight_on_its_service_endpoint() {
    use kube_bastion::{Balancer, BalancerConfig, ServiceKey};
    let (backend, log) = ws_backend(None, WsBehaviour::Echo).await;
    let docs = service_docs(backend.port());
    let balancer = Balancer::new(BalancerConfig::default());
    let proxy = serve_proxy(config(&docs).balancer(balancer.clone()).build().unwrap()).await;
    let key = ServiceKey::new("ns", "svc", "http");
    let in_flight = || balancer.endpoint(&key, backend).map_or(0, |e| e.in_flight);

    let mut ws = ws_connect(proxy, "/api/v1/namespaces/ns/services/svc:http/proxy/ws")
        .await
        .unwrap();
    ws.send(Message::text("a")).await.unwrap();
    assert_eq!(
        soon("an echo", ws.next()).await.unwrap().unwrap(),
        Message::text("echo:a")
    );
    assert_eq!(in_flight(), 1, "the tunnel is in flight while open");

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = soon("the close", ws.next()).await {}
    wait_for_end(&log).await;
    // Half-close: the tunnel lives until the client closes its side too.
    drop(ws);
    soon("the tunnel to leave the balancer", async {
        while in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
