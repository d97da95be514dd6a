//! The upgrade tests' own peers: WebSocket backends (tokio-tungstenite, plain or TLS),
//! scripted raw TCP backends that record every byte, and WebSocket and upgrade clients. The
//! loopback harness itself is `tests/support`, re-exported here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube_bastion::UpgradeOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

pub(crate) use crate::support::net::*;
pub(crate) use crate::support::objects::*;
pub(crate) use crate::support::status::*;
pub(crate) use crate::support::tls::*;

/// A generous bound on anything that should happen "soon" (a safety net against hangs, not
/// a timing assertion).
pub(crate) const SOON: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than [`SOON`].
pub(crate) async fn soon<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(SOON, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

// ----- WebSocket backend -----------------------------------------------------------------

/// What a WebSocket backend saw of one handshake.
#[derive(Clone, Debug)]
pub(crate) struct Handshake {
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) alpn: Option<Vec<u8>>,
}

/// Handshakes and events seen by a WebSocket backend.
#[derive(Clone, Debug, Default)]
pub(crate) struct WsLog {
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// Connections whose message loop ended, and how: `"close"` after a close handshake,
    /// `"eof"` or `"error"` otherwise.
    ends: Arc<Mutex<Vec<&'static str>>>,
}

impl WsLog {
    pub(crate) fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
    pub(crate) fn last(&self) -> Handshake {
        self.handshakes()
            .pop()
            .expect("the backend saw a handshake")
    }
    pub(crate) fn ends(&self) -> Vec<&'static str> {
        self.ends.lock().unwrap().clone()
    }
}

/// How a WebSocket backend behaves after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsBehaviour {
    /// Echo text as `echo:<text>` and binary unchanged; answer a close with a close.
    Echo,
    /// Read one message, then drop the TCP connection without a close frame.
    DropAfterFirst,
    /// After the handshake, send `n` bytes of binary data (64 KiB messages) and close.
    Send(usize),
}

/// A WebSocket backend on 127.0.0.1 (TLS with `tls`).
pub(crate) async fn ws_backend(
    tls: Option<&TlsIdentity>,
    behaviour: WsBehaviour,
) -> (SocketAddr, WsLog) {
    let log = WsLog::default();
    let l = log.clone();
    let addr = accept_each(tls, move |io, Accepted { alpn, .. }| {
        let log = l.clone();
        async move {
            let seen = log.clone();
            // The callback's error type is tungstenite's (an HTTP response), large by design.
            #[allow(clippy::result_large_err)]
            let callback = move |req: &WsRequest, mut res: WsResponse| {
                seen.handshakes.lock().unwrap().push(Handshake {
                    path_and_query: req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: req.headers().clone(),
                    alpn: alpn.clone(),
                });
                // Accept the first subprotocol offered, as a Kubernetes streaming server does.
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok());
                if let Some(first) = offered.and_then(|v| v.split(',').next()) {
                    res.headers_mut()
                        .insert("sec-websocket-protocol", first.trim().parse().unwrap());
                }
                Ok(res)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(io, callback).await else {
                return;
            };
            let end = run_ws(ws, behaviour).await;
            log.ends.lock().unwrap().push(end);
        }
    })
    .await;
    (addr, log)
}

async fn run_ws(mut ws: WebSocketStream<Box<dyn Io>>, behaviour: WsBehaviour) -> &'static str {
    if let WsBehaviour::Send(n) = behaviour {
        let chunk = Bytes::from(vec![0x5a; 64 * 1024]);
        let mut left = n;
        while left > 0 {
            let take = left.min(chunk.len());
            if ws.send(Message::Binary(chunk.slice(..take))).await.is_err() {
                return "error";
            }
            left -= take;
        }
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
        return "close";
    }
    loop {
        match ws.next().await {
            None => return "eof",
            Some(Err(_)) => return "error",
            Some(Ok(msg)) => {
                if behaviour == WsBehaviour::DropAfterFirst {
                    // Dropping the stream closes TCP without a close frame.
                    return "dropped";
                }
                let reply = match msg {
                    Message::Text(t) => Message::text(format!("echo:{}", t.as_str())),
                    Message::Binary(b) => Message::Binary(b),
                    Message::Close(_) => {
                        // tungstenite queued the close reply; flush it and finish.
                        let _ = ws.flush().await;
                        while let Some(Ok(_)) = ws.next().await {}
                        return "close";
                    }
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    return "error";
                }
            }
        }
    }
}

// ----- raw scripted backend --------------------------------------------------------------

/// Everything a raw backend received, per connection, and whether each connection was closed
/// by the peer (end of stream seen).
#[derive(Clone, Debug, Default)]
pub(crate) struct RawLog {
    conns: Arc<Mutex<Vec<RawConn>>>,
}

/// One connection of a raw backend.
#[derive(Debug, Default)]
struct RawConn {
    received: Vec<u8>,
    closed: bool,
}

impl RawLog {
    pub(crate) fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
    /// The bytes received on connection `i`.
    pub(crate) fn received(&self, i: usize) -> Vec<u8> {
        self.conns.lock().unwrap()[i].received.clone()
    }
    /// Whether connection `i` saw end of stream (the proxy closed it).
    pub(crate) fn closed(&self, i: usize) -> bool {
        self.conns.lock().unwrap()[i].closed
    }
}

/// A raw TCP backend on 127.0.0.1: on each connection, reads until the end of the first
/// request head, writes `answer`, then keeps the connection open reading (and recording)
/// whatever else arrives, ready to treat it as further requests, until the peer closes.
pub(crate) async fn raw_backend(answer: Vec<u8>) -> (SocketAddr, RawLog) {
    let log = RawLog::default();
    let l = log.clone();
    let answer = Arc::new(answer);
    let addr = accept_each(None, move |mut io, _| {
        let log = l.clone();
        let answer = answer.clone();
        async move {
            let index = {
                let mut conns = log.conns.lock().unwrap();
                conns.push(RawConn::default());
                conns.len() - 1
            };
            let mut buf = [0u8; 4096];
            let mut answered = false;
            loop {
                let n = match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let head_done = {
                    let mut conns = log.conns.lock().unwrap();
                    conns[index].received.extend_from_slice(&buf[..n]);
                    conns[index].received.windows(4).any(|w| w == b"\r\n\r\n")
                };
                if head_done && !answered {
                    answered = true;
                    if io.write_all(&answer).await.is_err() {
                        break;
                    }
                }
            }
            log.conns.lock().unwrap()[index].closed = true;
        }
    })
    .await;
    (addr, log)
}

/// A listener that only counts the connections it accepts (and keeps them open).
pub(crate) async fn counting_listener() -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            *c.lock().unwrap() += 1;
            open.push(tcp);
        }
    });
    (addr, count)
}

// ----- the proxy -------------------------------------------------------------------------

/// The proxy over pod `ns/web` at 127.0.0.1, with these upgrade options.
pub(crate) async fn proxy_with(options: UpgradeOptions) -> SocketAddr {
    serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .upgrade_options(options)
            .build()
            .unwrap(),
    )
    .await
}

/// Pod `ns/web` at 127.0.0.1 behind Service `ns/svc` (port 80, named `http`), whose one
/// endpoint is the pod on `port`.
pub(crate) fn service_docs(port: u16) -> [String; 2] {
    [
        pod_yaml("ns", "web", "127.0.0.1"),
        service_yaml("ns", "svc", 80, None, &[("web", "127.0.0.1", port)]),
    ]
}

// ----- clients ---------------------------------------------------------------------------

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket through the proxy at `path`, with an `Authorization` header the
/// backend must never see and a subprotocol it must.
pub(crate) async fn ws_connect(
    proxy: SocketAddr,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{proxy}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer client-secret".parse().unwrap());
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    soon(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .map(|(ws, _)| ws)
}

/// Sends an upgrade request over a fresh HTTP/1.1 connection and returns the answer, for
/// answers that are not a 101.
pub(crate) async fn upgrade_attempt(
    proxy: SocketAddr,
    path: &str,
    protocol: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = Request::get(path)
        .header("host", proxy.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", protocol)
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res: Response<Incoming> = soon("the proxy's answer", sender.send_request(req))
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = soon("the body", body.collect())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (parts.status, parts.headers, body)
}

/// Reads from a raw connection until the peer closes it (or [`SOON`] passes).
pub(crate) async fn read_to_close<S: AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = soon("the connection to close", io.read_to_end(&mut out)).await;
    out
}
