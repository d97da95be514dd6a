//! Backend faults under concurrent load: a backend that resets mid-body, one that stalls,
//! one that answers garbage, and a Service whose endpoints all vanish and come back.
//!
//! Every test sends a bounded load (200 requests from 16 concurrent clients) through the
//! proxy served on 127.0.0.1 and classifies each answer: a complete response, a clean
//! head followed by a body error, or a connection closed before any head. No request may
//! hang (each is bounded well above the proxy's own timeouts), nothing may panic on the
//! test's thread (the runtime is current-thread, so the proxy's tasks run there too), and
//! the proxy must still answer a healthy request afterwards.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use kube_bastion::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::harness::*;

/// Requests per load.
pub(crate) const REQUESTS: usize = 200;
/// Concurrent clients per load.
pub(crate) const CLIENTS: usize = 16;
/// Longest any single request may take, head and body: far above every proxy timeout
/// configured here (300 ms response-header timeout, 5 s connect timeout).
pub(crate) const HANG: Duration = Duration::from_secs(15);
/// Size the resetting backend announces.
pub(crate) const ANNOUNCED: usize = 100_000;
/// Bytes the resetting backend sends before the reset.
pub(crate) const SENT_BEFORE_RESET: usize = 10_000;

thread_local! {
    /// Panics on this thread since the hook was installed.
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Installs (once per process) a panic hook that counts panics per thread, then defers to
/// the previous hook. Each test runs on its own current-thread runtime, so every task of
/// its proxy, backends and clients runs on its thread: a panic there, even one tokio
/// catches in a spawned task, shows up in [`panics`].
pub(crate) fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

pub(crate) fn panics() -> usize {
    PANICS.with(Cell::get)
}

/// What a client got for one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A head and the whole body.
    Complete(StatusCode, HeaderMap, Bytes),
    /// A head, then the body failed after `received` bytes.
    BodyError {
        status: StatusCode,
        headers: HeaderMap,
        received: Bytes,
    },
    /// No head: the connection closed before one arrived.
    Closed(String),
}

/// Sends `GET uri` and reads the answer to its end; panics if that takes longer than
/// [`HANG`] or if the proxy could not even be reached.
pub(crate) async fn exchange(client: &Client<HttpConnector, TestBody>, uri: &str) -> Outcome {
    let attempt = async {
        let res = match client
            .request(Request::get(uri).body(empty()).unwrap())
            .await
        {
            Ok(res) => res,
            Err(e) => {
                assert!(!e.is_connect(), "the proxy refused a connection: {e:?}");
                return Outcome::Closed(format!("{e:?}"));
            }
        };
        let (parts, mut body) = res.into_parts();
        let mut received = Vec::new();
        loop {
            match body.frame().await {
                None => return Outcome::Complete(parts.status, parts.headers, received.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => {
                    return Outcome::BodyError {
                        status: parts.status,
                        headers: parts.headers,
                        received: received.into(),
                    };
                }
            }
        }
    };
    match tokio::time::timeout(HANG, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => panic!("GET {uri} hung for more than {HANG:?}"),
    }
}

/// [`REQUESTS`] `GET uri` from [`CLIENTS`] concurrent workers sharing `client` (its pool
/// opens one connection per concurrent HTTP/1.1 request, or multiplexes HTTP/2 streams).
pub(crate) async fn load(client: Client<HttpConnector, TestBody>, uri: &str) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, next, uri) = (client.clone(), next.clone(), uri.to_owned());
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                outcomes.push(exchange(&client, &uri).await);
            }
            outcomes
        });
    }
    let mut all = Vec::with_capacity(REQUESTS);
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("a client worker panicked"));
    }
    assert_eq!(all.len(), REQUESTS);
    all
}

/// A one-line tally of outcomes for the test output (`--nocapture`).
pub(crate) fn tally(outcomes: &[Outcome]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for o in outcomes {
        let key = match o {
            Outcome::Complete(s, ..) => format!("complete {}", s.as_u16()),
            Outcome::BodyError { status, .. } => format!("body error after {}", status.as_u16()),
            Outcome::Closed(reason) => {
                format!(
                    "closed before a head: {}",
                    reason.chars().take(80).collect::<String>()
                )
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    format!("{counts:?}")
}

/// Asserts that `outcome` is a complete Status answer with `code` and `reason` and returns
/// its message.
pub(crate) fn status_answer(outcome: &Outcome, code: u16, reason: Option<&str>) -> String {
    let Outcome::Complete(status, headers, body) = outcome else {
        panic!("expected a complete {code} Status, got {outcome:?}");
    };
    assert_eq!(status.as_u16(), code, "{}", String::from_utf8_lossy(body));
    assert_eq!(headers["content-type"], "application/json");
    let (body_code, body_reason, message) = status_of(body);
    assert_eq!(
        (body_code, body_reason.as_deref()),
        (u64::from(code), reason),
        "{message}"
    );
    message
}

/// The proxy still serves a healthy backend, and nothing panicked on this thread.
pub(crate) async fn assert_still_healthy(proxy: SocketAddr) {
    let (backend, rec) = recording_backend(None).await;
    let (status, _, body) = get(proxy, &pod_path("ns", "ok", backend.port(), "/after")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, "ok");
    assert_eq!(rec.count(), 1);
    assert_eq!(panics(), 0, "something panicked while serving the faults");
}

/// What a raw backend does after reading a request head.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// Answers a head announcing [`ANNOUNCED`] bytes and [`SENT_BEFORE_RESET`] of them,
    /// waits a moment, then resets the connection (SO_LINGER 0, then close: an RST).
    ResetMidBody,
    /// Never answers; keeps reading until the proxy closes.
    Stall,
    /// Answers random bytes (not HTTP); then closes on even connections and holds odd ones
    /// open until the proxy closes.
    Garbage,
}

/// A raw TCP backend on 127.0.0.1 applying `fault` to every connection. The counter is the
/// number of its connections still open.
pub(crate) async fn faulty_backend(fault: Fault) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let open_count = open.clone();
    tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            seq += 1;
            open_count.fetch_add(1, Ordering::SeqCst);
            let open_count = open_count.clone();
            tokio::spawn(async move {
                serve_fault(tcp, fault, seq).await;
                open_count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Reads one request head; false when the peer closed first.
pub(crate) async fn read_head(tcp: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Reads and discards until the peer closes (or the connection fails).
pub(crate) async fn drain_until_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// `len` bytes of xorshift noise seeded by `seed`, never starting like an HTTP/1 status
/// line.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    if out[0] == b'H' {
        out[0] = 0x16;
    }
    out
}

pub(crate) async fn serve_fault(mut tcp: TcpStream, fault: Fault, seq: u64) {
    // A backend may see several requests on one connection only if the proxy reuses it,
    // which none of these faults allows: one request per connection.
    if !read_head(&mut tcp).await {
        return;
    }
    match fault {
        Fault::ResetMidBody => {
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {ANNOUNCED}\r\n\r\n"
            )
            .into_bytes();
            answer.extend(std::iter::repeat_n(b'x', SENT_BEFORE_RESET));
            if tcp.write_all(&answer).await.is_err() {
                return;
            }
            let _ = tcp.flush().await;
            // Let the head and the first bytes reach the client before the reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            tcp.set_zero_linger().expect("SO_LINGER 0");
            drop(tcp);
        }
        Fault::Stall => drain_until_closed(&mut tcp).await,
        Fault::Garbage => {
            let len = 1 + (seq as usize * 977) % 4096;
            if tcp.write_all(&noise(seq, len)).await.is_err() {
                return;
            }
            if seq % 2 == 1 {
                drain_until_closed(&mut tcp).await;
            }
        }
    }
}

/// Polls `open` until it reaches zero; false after `within`.
pub(crate) async fn all_closed(open: &AtomicUsize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if open.load(Ordering::SeqCst) == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.load(Ordering::SeqCst) == 0
}

/// A proxy admitting loopback, with a 300 ms response-header timeout.
pub(crate) async fn proxy_for(docs: &[String]) -> (SocketAddr, ProxyConfig) {
    let config = config(docs)
        .response_header_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    (serve_proxy(config.clone()).await, config)
}

pub(crate) fn pods() -> Vec<String> {
    ["faulty", "ok", "a", "b", "c"]
        .iter()
        .map(|name| pod_yaml("ns", name, "127.0.0.1"))
        .collect()
}

#[tokio::test]
async fn a_backend_resetting_mid_body_truncates_every_response_and_never_completes_one() {
    count_panics();
    let (backend, open) = faulty_backend(Fault::ResetMidBody).await;
    let (proxy, _) = proxy_for(&pods()).await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "faulty", backend.port(), "/big")
    );
    for (name, client) in [("HTTP/1.1", client()), ("HTTP/2", h2_client())] {
        let outcomes = load(client, &uri).await;
        println!("reset mid-body over {name}: {}", tally(&outcomes));
        let mut truncated = 0;
        for outcome in &outcomes {
            match outcome {
                // The head passed through as the backend sent it; the body stops short and
                // ends in an error, never in a clean end that would pass for complete.
                Outcome::BodyError {
                    status,
                    headers,
                    received,
                } => {
                    assert_eq!(*status, StatusCode::OK);
                    assert_eq!(headers["content-length"], ANNOUNCED.to_string());
                    assert!(received.len() <= SENT_BEFORE_RESET, "{}", received.len());
                    assert!(received.iter().all(|&b| b == b'x'));
                    truncated += 1;
                }
                // The reset overtook the head: the engine's 503 for a broken exchange.
                Outcome::Complete(status, ..) if *status != StatusCode::OK => {
                    let message = status_answer(outcome, 503, Some("ServiceUnavailable"));
                    assert!(
                        message.starts_with("error trying to reach service: "),
                        "{message}"
                    );
                }
                Outcome::Complete(..) => panic!("a truncated body passed for complete"),
                Outcome::Closed(_) => {}
            }
        }
        assert!(
            truncated >= REQUESTS / 2,
            "most answers should be a 200 head and a truncated body: {}",
            tally(&outcomes)
        );
    }
    assert!(
        all_closed(&open, Duration::from_secs(2)).await,
        "{} backend connections left open",
        open.load(Ordering::SeqCst)
    );
    assert_still_healthy(proxy).await;
}

#[tokio::test]
async fn a_stalled_backend_is_504_for_every_request_and_its_connections_are_released() {
    count_panics();
    let (backend, open) = faulty_backend(Fault::Stall).await;
    let (proxy, _) = proxy_for(&pods()).await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "faulty", backend.port(), "/slow")
    );
    let started = Instant::now();
    let outcomes = load(client(), &uri).await;
    let elapsed = started.elapsed();
    println!("stalled backend: {} in {elapsed:?}", tally(&outcomes));
    for outcome in &outcomes {
        let message = status_answer(outcome, 504, Some("Timeout"));
        assert_eq!(
            message,
            "error trying to reach service: timeout awaiting response headers"
        );
    }
    // 200 requests, 16 at a time, 300 ms each: about 3.75 s; a timeout that fired late
    // (or requests serialized behind each other) would take far longer.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // The proxy gives up on a timed-out exchange entirely: no backend connection is left
    // behind for each one (200 of them would be a leak).
    assert!(
        all_closed(&open, Duration::from_secs(2)).await,
        "{} of the stalled backend's connections still open 2 s after the load",
        open.load(Ordering::SeqCst)
    );
    assert_still_healthy(proxy).await;
}

#[tokio::test]
async fn garbage_from_a_backend_is_502_for_every_request() {
    count_panics();
    let (backend, open) = faulty_backend(Fault::Garbage).await;
    let (proxy, _) = proxy_for(&pods()).await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "faulty", backend.port(), "/")
    );
    let outcomes = load(client(), &uri).await;
    println!("garbage backend: {}", tally(&outcomes));
    for outcome in &outcomes {
        let Outcome::Complete(_, _, body) = outcome else {
            panic!("expected a complete 502 Status, got {outcome:?}");
        };
        // Status::new(502, None, ..): kube-apiserver's 502 has no reason.
        let message = status_answer(outcome, 502, None);
        assert!(
            message.starts_with("error trying to reach service: invalid response from backend: "),
            "{message}"
        );
        // The backend's bytes never reach the client.
        assert!(body.is_ascii(), "{body:?}");
    }
    // Connections that sent garbage and stayed open are closed by the proxy.
    assert!(
        all_closed(&open, Duration::from_secs(2)).await,
        "{} of the garbage backend's connections still open 2 s after the load",
        open.load(Ordering::SeqCst)
    );
    assert_still_healthy(proxy).await;
}
