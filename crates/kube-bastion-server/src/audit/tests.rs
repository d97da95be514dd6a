use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use kube_bastion::{AuthenticateFuture, Authentication, AuthenticationLayer, Authenticator};
use tower::{ServiceBuilder, ServiceExt as _};

use super::*;

/// Says "blocked", then waits for a go-ahead.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// A writer that collects what it is given; a gated one first says it is blocked and
/// waits for a go-ahead before its first write (a stalled disk).
#[derive(Clone)]
struct Collect {
    out: Arc<Mutex<Vec<u8>>>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl Collect {
    fn new(gate: Option<Gate>) -> Self {
        Collect {
            out: Arc::default(),
            gate: Arc::new(Mutex::new(gate)),
        }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.out.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Write for Collect {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gate = self.gate.lock().unwrap().take();
        if let Some((blocked, go)) = gate {
            let _ = blocked.send(());
            let _ = go.recv();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn record(uri: &str) -> Arc<Record> {
    let request = Request::get(uri).body(()).unwrap();
    Arc::new(Record::of(&request).expect("a proxy route"))
}

fn received(r: &Arc<Record>) -> Entry {
    Entry::new(r, Stage::RequestReceived, Answer::None)
}

/// A log whose writer has taken one event of `r` and is stuck writing it: what is emitted
/// now stays queued until `go` is sent.
struct Stalled {
    log: Arc<AuditLog>,
    writer: Writer,
    out: Collect,
    go: mpsc::Sender<()>,
    dropped: Arc<AtomicU64>,
}

fn stalled(capacity: usize, max_bytes: usize, r: &Arc<Record>) -> Stalled {
    let (go, wait) = mpsc::channel();
    let (blocked_tx, blocked) = mpsc::channel();
    let out = Collect::new(Some((blocked_tx, wait)));
    let dropped = Arc::new(AtomicU64::new(0));
    let (log, writer) = sink::start(
        Box::new(out.clone()),
        capacity,
        max_bytes,
        Arc::clone(&dropped),
    )
    .unwrap();
    assert!(log.emit(received(r)));
    blocked
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer took the first event");
    Stalled {
        log,
        writer,
        out,
        go,
        dropped,
    }
}

/// A full queue drops (and counts) events instead of blocking the caller; the queued
/// ones are written once the writer moves again.
#[test]
fn full_queue_drops_without_blocking() {
    let r = record("/api/v1/namespaces/demo/pods/echo-0/proxy/");
    let s = stalled(4, sink::MAX_QUEUED_BYTES, &r);
    let started = Instant::now();
    let queued = (0..100).filter(|_| s.log.emit(received(&r))).count();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "emit blocked: {:?}",
        started.elapsed()
    );
    assert_eq!(queued, 4);
    assert_eq!(s.dropped.load(Ordering::Relaxed), 96);
    s.go.send(()).unwrap();
    s.writer.close();
    assert_eq!(s.out.lines().len(), 5);
    // After close nothing is queued any more: dropped and counted.
    assert!(!s.log.emit(received(&r)));
    assert_eq!(s.dropped.load(Ordering::Relaxed), 97);
}

/// The byte bound drops events with huge URIs while the event count is still small, and
/// written events give their bytes back.
#[test]
fn queued_bytes_are_bounded() {
    let long = format!("/api/v1/nodes/n1/proxy/{}", "a".repeat(20_000));
    let r = record(&long);
    let s = stalled(1000, 64 * 1024, &r);
    let queued = (0..10).filter(|_| s.log.emit(received(&r))).count();
    assert_eq!(queued, 3);
    assert_eq!(s.dropped.load(Ordering::Relaxed), 7);
    s.go.send(()).unwrap();
    for _ in 0..50 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.log.emit(received(&r)) {
            assert!(Instant::now() < deadline, "the queue never drained");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    s.writer.close();
    assert_eq!(s.out.lines().len(), 54);
}

#[test]
fn source_ips_follow_kube_apiserver() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    };
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let show = |ips: Vec<IpAddr>| ips.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(show(source_ips(&headers(&[]), Some(peer))), ["127.0.0.1"]);
    assert_eq!(
        show(source_ips(
            &headers(&[
                ("x-forwarded-for", "10.0.0.1, junk ,::ffff:10.0.0.2"),
                ("x-forwarded-for", "10.9.9.9"),
                ("x-real-ip", "10.0.0.1"),
            ]),
            Some(peer)
        )),
        ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    );
    assert_eq!(
        show(source_ips(
            &headers(&[("x-real-ip", "10.0.0.3"), ("x-forwarded-for", "127.0.0.1")]),
            Some(peer)
        )),
        ["127.0.0.1", "10.0.0.3", "127.0.0.1"]
    );
    let many = vec!["10.1.1.1"; 500].join(",");
    assert_eq!(
        source_ips(&headers(&[("x-forwarded-for", &many)]), Some(peer)).len(),
        MAX_FORWARDED + 1
    );
}

#[test]
fn user_agent_is_cut_like_kube_apiserver() {
    let mut headers = HeaderMap::new();
    assert_eq!(user_agent(&headers), "");
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("kubectl/v1.35"),
    );
    assert_eq!(user_agent(&headers), "kubectl/v1.35");
    let long = "x".repeat(5000);
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_str(&long).unwrap(),
    );
    let cut = user_agent(&headers);
    assert_eq!(cut.len(), MAX_USER_AGENT + "...TRUNCATED".len());
    assert!(cut.ends_with("x...TRUNCATED"));
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_bytes(b"bad \xff byte").unwrap(),
    );
    assert_eq!(user_agent(&headers), "bad \u{fffd} byte");
}

#[test]
fn audit_ids_are_v4_uuids() {
    let a = uuid_v4();
    let b = uuid_v4();
    assert_ne!(a, b);
    let groups: Vec<usize> = a.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
    assert_eq!(a.as_bytes()[14], b'4', "{a}");
    assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{a}");
    assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
}

/// Only proxy routes get a record.
#[test]
fn only_proxy_requests_are_audited() {
    for uri in [
        "/api/v1/namespaces/demo/pods",
        "/healthz",
        "/api/v1/nodes/n1",
    ] {
        assert!(
            Record::of(&Request::get(uri).body(()).unwrap()).is_none(),
            "{uri}"
        );
    }
    let r = record("/api/v1/nodes/n1:10250/proxy/stats?x=1");
    assert_eq!(r.request_uri, "/api/v1/nodes/n1:10250/proxy/stats?x=1");
    assert_eq!(
        (r.attributes.resource, r.attributes.name.as_str()),
        ("nodes", "n1:10250")
    );
}

/// `Authorization: Bearer good` is alice; anything else is invalid.
struct Tokens;

impl Authenticator for Tokens {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        AuthenticateFuture::ready(match request.headers.get("authorization") {
            None => Authentication::NoCredentials,
            Some(v) if v == "Bearer good" => Authentication::User(UserInfo::new(
                "alice",
                "1001",
                vec!["developers".to_owned()],
            )),
            Some(_) => Authentication::Invalid("bad token".to_owned()),
        })
    }
}

/// The layers around authentication: an authenticated request writes RequestReceived and
/// ResponseComplete (after the body), a refused one a single ResponseStarted with
/// `"user":{}`; other paths write nothing; no credential reaches the log.
#[tokio::test]
async fn layers_write_the_events_of_a_request() {
    let out = Collect::new(None);
    let dropped = Arc::new(AtomicU64::new(0));
    let (log, writer) =
        sink::start(Box::new(out.clone()), 100, sink::MAX_QUEUED_BYTES, dropped).unwrap();
    let (outer, inner) = layers(&log);
    let app = tower::service_fn(|request: Request<Full<Bytes>>| async move {
        // The record is visible to the authorizer.
        if let Some(handle) = request.extensions().get::<AuditHandle>() {
            handle.0.decided(&Decision::Allow);
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let service = ServiceBuilder::new()
        .layer(outer)
        .layer(AuthenticationLayer::new().authenticator(Tokens))
        .layer(inner)
        .service(app);
    let call = |uri: &str, token: Option<&str>| {
        let mut builder = Request::post(uri)
            .header("user-agent", "unit/1")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::from_static(b"secret body")))
            .unwrap();
        service.clone().oneshot(request)
    };
    let ok = call(
        "/api/v1/namespaces/demo/services/web:http/proxy/x?q=1",
        Some("good"),
    )
    .await
    .unwrap();
    let id = ok.headers()["audit-id"].to_str().unwrap().to_owned();
    let _ = ok.into_body().collect().await.unwrap();
    let refused = call("/api/v1/nodes/n1/proxy/", Some("bad-token-value"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["audit-id"].to_str().unwrap().to_owned();
    drop(refused);
    let other = call("/api/v1/namespaces/demo/pods", Some("good"))
        .await
        .unwrap();
    assert!(other.headers().get("audit-id").is_none());
    writer.close();

    let text = String::from_utf8(out.out.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains("good") && !text.contains("bad-token-value"),
        "{text}"
    );
    assert!(!text.contains("secret body"), "{text}");
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{text}");
    let (received, complete, failed) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(received["stage"], "RequestReceived");
    assert_eq!(received["auditID"], id.as_str());
    assert_eq!(received["verb"], "create");
    assert_eq!(received["user"]["username"], "alice");
    assert_eq!(
        received["user"]["groups"],
        serde_json::json!(["developers", "system:authenticated"])
    );
    assert!(received.get("responseStatus").is_none());
    assert!(received.get("annotations").is_none());
    assert_eq!(received["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(received["userAgent"], "unit/1");
    assert_eq!(
        received["objectRef"],
        serde_json::json!({"resource": "services", "namespace": "demo", "name": "web:http",
                           "apiVersion": "v1", "subresource": "proxy"})
    );
    assert_eq!(complete["stage"], "ResponseComplete");
    assert_eq!(complete["auditID"], id.as_str());
    assert_eq!(
        complete["responseStatus"],
        serde_json::json!({"metadata": {}, "code": 200})
    );
    assert_eq!(
        complete["annotations"],
        serde_json::json!({"authorization.k8s.io/decision": "allow",
                           "authorization.k8s.io/reason": ""})
    );
    assert_eq!(failed["stage"], "ResponseStarted");
    assert_eq!(failed["auditID"], refused_id.as_str());
    assert_eq!(failed["user"], serde_json::json!({}));
    assert_eq!(failed["responseStatus"]["code"], 401);
    assert_eq!(failed["responseStatus"]["reason"], "Unauthorized");
}
