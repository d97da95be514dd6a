//! The engine tests' own pieces: a backend that records what it saw, pod proxy paths and
//! resident memory; the loopback harness itself is `tests/support`, re-exported here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub(crate) use crate::support::net::*;
pub(crate) use crate::support::objects::*;
pub(crate) use crate::support::status::*;
pub(crate) use crate::support::tls::*;

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Requests seen by a backend, in arrival order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    pub(crate) fn last(&self) -> Seen {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend saw a request")
    }
    pub(crate) fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Records a request from its head and its (collected) body.
    pub(crate) fn record(&self, parts: Parts, body: Bytes) {
        self.0.lock().unwrap().push(Seen {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
        });
    }
}

/// A backend (TLS with `tls`) that records every request, body collected, and answers with
/// `answer(head)`.
pub(crate) async fn recording_backend_with(
    tls: Option<&TlsIdentity>,
    answer: fn(&Parts) -> Response<TestBody>,
) -> (SocketAddr, Recorder) {
    let rec = Recorder::default();
    let r = rec.clone();
    let addr = backend_with(tls, move |req: Request<Incoming>| {
        let r = r.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let res = answer(&parts);
            r.record(parts, body);
            res
        }
    })
    .await;
    (addr, rec)
}

/// A recording backend that answers `200 ok` with `X-Backend-Version` set to the HTTP
/// version it saw.
pub(crate) async fn recording_backend(tls: Option<&TlsIdentity>) -> (SocketAddr, Recorder) {
    recording_backend_with(tls, |head| {
        let mut res = Response::new(full("ok"));
        let version = format!("{:?}", head.version);
        res.headers_mut()
            .insert("x-backend-version", version.parse().unwrap());
        res
    })
    .await
}

/// The proxy path of pod `ns/name` on `port` plus `rest`.
pub(crate) fn pod_path(ns: &str, name: &str, port: u16, rest: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy{rest}")
}

/// Resident memory of this process in KiB (`VmRSS` in `/proc/self/status`).
pub(crate) fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
