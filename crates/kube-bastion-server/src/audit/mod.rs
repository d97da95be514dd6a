//! The audit log of `--audit-log-path`: one `audit.k8s.io/v1` `Event` per line, at level
//! `Metadata`, for every proxy request (`pods/proxy`, `services/proxy`, `nodes/proxy`).
//!
//! Which lines a request writes, all with the same `auditID` (also sent back in the
//! response's `Audit-Id` header unless the backend set one):
//!
//! * authenticated (or no authentication configured): `RequestReceived` once
//!   authentication is done, then `ResponseComplete` when the response body has been sent,
//!   or when the client went away (code `499` if it left before the response head); a `101`
//!   upgrade writes `ResponseStarted` instead of `ResponseComplete` (the tunnel's end is not
//!   reported);
//! * refused by authentication: a single `ResponseStarted` with `"user":{}` and the 401
//!   Status, as kube-apiserver's failed-authentication audit writes it.
//!
//! Events carry the user, the verb, the object reference (subresource `proxy`, the whole id
//! as name), the source addresses, the user agent, the response code and the authorization
//! decision (`authorization.k8s.io/decision` and `.../reason` annotations). Never a request
//! or response body, and no header but `User-Agent` (nor the credentials that arrived in
//! `Authorization` or the WebSocket bearer subprotocol). `requestURI` is the path and query
//! as received, like kube-apiserver's.
//!
//! Pieces: [`AuditLayer`] wraps the authentication layer (it sees the 401s and the final
//! response), [`AuditUserLayer`] sits inside it (it sees the authenticated
//! [`UserInfo`]), [`authorizer`] records the decision, and `sink` queues events for the
//! writer thread without ever blocking a request. With `--audit-log-path` unset the server
//! leaves the layers out of its stack: requests pay nothing for auditing.

mod event;
mod sink;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use kube_bastion::{
    Attributes, AuthorizeFuture, Authorizer, Decision, ProxyRequest, Route, UserInfo,
};
use tower::{Layer, Service};

pub(crate) use event::Stage;
use event::{Annotations, Event, ObjectRef, ResponseStatus, User};
pub(crate) use sink::{AuditLog, Writer};

use crate::cli::AuditArgs;

/// The response header that carries the audit ID (kube-apiserver's `Audit-Id`).
const AUDIT_ID_HEADER: HeaderName = HeaderName::from_static("audit-id");

/// The most bytes of a `User-Agent` an event keeps (kube-apiserver's limit), before
/// `...TRUNCATED`.
const MAX_USER_AGENT: usize = 1024;

/// The most `X-Forwarded-For` addresses an event keeps (kube-apiserver keeps all of them; a
/// bound keeps a line's size independent of what a client sends).
const MAX_FORWARDED: usize = 30;

/// Starts the audit log the flags describe (`None` without `--audit-log-path`). `dropped`
/// counts the events a full queue refused.
pub(crate) fn start(
    args: &AuditArgs,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Option<(Arc<AuditLog>, Writer)>, String> {
    let Some(path) = &args.path else {
        return Ok(None);
    };
    let capacity = usize::try_from(args.buffer_size).unwrap_or(usize::MAX);
    let started =
        sink::open(path, capacity, dropped).map_err(|e| format!("--audit-log-path {e}"))?;
    tracing::info!(path = %path.display(), buffer = capacity, "audit log on");
    Ok(Some(started))
}

/// What the audit log knows of one proxy request, shared by its events.
#[derive(Debug)]
pub(crate) struct Record {
    audit_id: String,
    received: SystemTime,
    request_uri: String,
    attributes: Attributes,
    source_ips: Vec<IpAddr>,
    user_agent: String,
    /// Set once the request passed authentication (empty without a user: authentication
    /// off); unset when authentication refused it.
    user: OnceLock<UserInfo>,
    /// The last authorization decision: allowed, and the reason.
    decision: Mutex<Option<(bool, String)>>,
}

impl Record {
    /// The record of a proxy request, or `None` for any other request.
    fn of<B>(request: &Request<B>) -> Option<Self> {
        let Route::Proxy(proxy) =
            ProxyRequest::route(request.method(), request.uri(), request.headers())
        else {
            return None;
        };
        let uri = request.uri();
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Some(Record {
            audit_id: uuid_v4(),
            received: SystemTime::now(),
            request_uri: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            attributes: proxy.attributes(),
            source_ips: source_ips(request.headers(), peer),
            user_agent: user_agent(request.headers()),
            user: OnceLock::new(),
            decision: Mutex::new(None),
        })
    }

    fn decided(&self, decision: &Decision) {
        let (allowed, reason) = match decision {
            Decision::Allow => (true, String::new()),
            Decision::Deny { reason, .. } | Decision::NoOpinion { reason } => {
                (false, reason.clone())
            }
            _ => (false, String::new()),
        };
        *self
            .decision
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((allowed, reason));
    }
}

/// The record of a proxy request, in its extensions while the audit log is on.
#[derive(Clone, Debug)]
pub(crate) struct AuditHandle(Arc<Record>);

/// What the response said, for an event after `RequestReceived`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    None,
    Code(u16),
    Unauthorized,
}

/// One event on its way to the writer: the shared record, the stage and when it happened.
#[derive(Debug)]
pub(crate) struct Entry {
    record: Arc<Record>,
    stage: Stage,
    answer: Answer,
    at: SystemTime,
}

impl Entry {
    fn new(record: &Arc<Record>, stage: Stage, answer: Answer) -> Self {
        Entry {
            record: Arc::clone(record),
            stage,
            answer,
            at: SystemTime::now(),
        }
    }

    /// The bytes the queue accounts for this event: the request's text, the user (groups
    /// and extra come from authenticators, a webhook's up to megabytes) and the decision's
    /// reason.
    fn cost(&self) -> usize {
        let r = &self.record;
        let user = r.user.get().map_or(0, |u| {
            u.name.len()
                + u.uid.len()
                + u.groups.iter().map(|g| g.len() + 8).sum::<usize>()
                + u.extra
                    .iter()
                    .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 8).sum::<usize>())
                    .sum::<usize>()
        });
        let reason = r
            .decision
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(0, |(_, reason)| reason.len());
        512 + r.request_uri.len() + r.user_agent.len() + 40 * r.source_ips.len() + user + reason
    }

    /// Writes the event as one JSON object (no newline).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let r = &self.record;
        let user = r.user.get().map_or_else(User::default, |u| User {
            username: &u.name,
            uid: &u.uid,
            groups: &u.groups,
            extra: (!u.extra.is_empty()).then_some(&u.extra),
        });
        let decision = match self.stage {
            // Authorization comes after the request is received.
            Stage::RequestReceived => None,
            _ => r
                .decision
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        };
        let a = &r.attributes;
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: &r.audit_id,
            stage: self.stage,
            request_uri: &r.request_uri,
            verb: a.verb,
            user,
            source_ips: &r.source_ips,
            user_agent: &r.user_agent,
            object_ref: Some(ObjectRef {
                resource: a.resource,
                namespace: a.namespace.as_deref(),
                name: &a.name,
                api_version: a.api_version,
                subresource: a.subresource,
            }),
            response_status: match self.answer {
                Answer::None => None,
                Answer::Code(code) => Some(ResponseStatus::code(code)),
                Answer::Unauthorized => Some(ResponseStatus::unauthorized()),
            },
            request_received_timestamp: event::micro_time(r.received),
            stage_timestamp: event::micro_time(self.at),
            annotations: decision.as_ref().map(|(allowed, reason)| Annotations {
                decision: if *allowed { "allow" } else { "forbid" },
                reason,
            }),
        };
        serde_json::to_writer(out, &event)
    }
}

/// A random (version 4) UUID, as kube-apiserver's audit IDs.
fn uuid_v4() -> String {
    use rand::{RngCore as _, SeedableRng as _};
    use std::cell::RefCell;
    thread_local! {
        static RNG: RefCell<rand::rngs::StdRng> = RefCell::new(rand::rngs::StdRng::from_os_rng());
    }
    let mut b = [0u8; 16];
    RNG.with(|rng| rng.borrow_mut().fill_bytes(&mut b));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// kube-apiserver's `SourceIPs`: the addresses of the first `X-Forwarded-For` header (the
/// ones that parse), then `X-Real-Ip` unless already listed, then the peer unless it is
/// already the last one.
fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<IpAddr> {
    let parse = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
    };
    let mut ips = Vec::new();
    if let Some(value) = headers.get("x-forwarded-for") {
        ips.extend(
            value
                .as_bytes()
                .split(|b| *b == b',')
                .filter_map(parse)
                .take(MAX_FORWARDED),
        );
    }
    if let Some(ip) = headers.get("x-real-ip").and_then(|v| parse(v.as_bytes()))
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    if let Some(ip) = peer.map(|ip| ip.to_canonical())
        && ips.last() != Some(&ip)
    {
        ips.push(ip);
    }
    ips
}

/// The `User-Agent`, cut at [`MAX_USER_AGENT`] bytes as kube-apiserver does (invalid UTF-8
/// replaced, as Go's JSON encoder does).
fn user_agent(headers: &HeaderMap) -> String {
    let Some(value) = headers.get(http::header::USER_AGENT) else {
        return String::new();
    };
    let bytes = value.as_bytes();
    if bytes.len() <= MAX_USER_AGENT {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut text = String::from_utf8_lossy(&bytes[..MAX_USER_AGENT]).into_owned();
    text.push_str("...TRUNCATED");
    text
}

/// Wraps the server's authorizer so the decision lands in the request's audit record (for
/// the `authorization.k8s.io/*` annotations). Only used while the audit log is on.
pub(crate) fn authorizer(inner: Arc<dyn Authorizer>) -> Arc<dyn Authorizer> {
    Arc::new(AuditedAuthorizer { inner })
}

struct AuditedAuthorizer {
    inner: Arc<dyn Authorizer>,
}

impl Authorizer for AuditedAuthorizer {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a http::request::Parts,
    ) -> AuthorizeFuture<'a> {
        let Some(handle) = parts.extensions.get::<AuditHandle>() else {
            return self.inner.authorize(attributes, parts);
        };
        AuthorizeFuture::boxed(async move {
            let decision = self.inner.authorize(attributes, parts).await;
            handle.0.decided(&decision);
            decision
        })
    }
}

/// The audit layers for the server's stack: [`AuditLayer`] goes outside authentication,
/// [`AuditUserLayer`] inside it. Without an audit log the server leaves both out of its
/// stack.
pub(crate) fn layers(log: &Arc<AuditLog>) -> (AuditLayer, AuditUserLayer) {
    (
        AuditLayer {
            log: Arc::clone(log),
        },
        AuditUserLayer {
            log: Arc::clone(log),
        },
    )
}

/// Tower layer that opens an audit record for every proxy request and writes its final
/// event when the response (body included) is done. Put it outside authentication.
#[derive(Clone, Debug)]
pub(crate) struct AuditLayer {
    log: Arc<AuditLog>,
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Audit<S> {
        Audit {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Audit<S> {
    inner: S,
    log: Arc<AuditLog>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<AuditBody<ResBody>>;
    type Error = S::Error;
    type Future = AuditFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let pending = Record::of(&request).map(|record| {
            let record = Arc::new(record);
            request
                .extensions_mut()
                .insert(AuditHandle(Arc::clone(&record)));
            Pending {
                log: Arc::clone(&self.log),
                record,
            }
        });
        AuditFuture {
            inner: self.inner.call(request),
            pending,
        }
    }
}

/// A proxy request whose response head has not come yet.
#[derive(Debug)]
struct Pending {
    log: Arc<AuditLog>,
    record: Arc<Record>,
}

impl Pending {
    fn emit(&self, stage: Stage, answer: Answer) {
        self.log.emit(Entry::new(&self.record, stage, answer));
    }

    /// The response head: the failed-authentication or upgrade event now, else the body
    /// writes `ResponseComplete` when it ends.
    fn respond<B>(self, mut response: Response<B>) -> Response<AuditBody<B>> {
        if let Ok(id) = HeaderValue::from_str(&self.record.audit_id) {
            response.headers_mut().entry(AUDIT_ID_HEADER).or_insert(id);
        }
        let code = response.status().as_u16();
        if self.record.user.get().is_none() {
            // Authentication answered: kube-apiserver's one failed-authentication event.
            let answer = if code == 401 {
                Answer::Unauthorized
            } else {
                Answer::Code(code)
            };
            self.emit(Stage::ResponseStarted, answer);
            return response.map(AuditBody::untracked);
        }
        if code == 101 {
            self.emit(Stage::ResponseStarted, Answer::Code(code));
            return response.map(AuditBody::untracked);
        }
        response.map(|inner| AuditBody {
            inner,
            complete: Some(Complete {
                pending: self,
                code,
            }),
        })
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Audit`].
    #[derive(Debug)]
    pub(crate) struct AuditFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for AuditFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the response head: the client went away (499, as the metrics
            // count it). Nothing is written for a request still in authentication.
            if let Some(pending) = this.project().pending.take()
                && pending.record.user.get().is_some()
            {
                pending.emit(Stage::ResponseComplete, Answer::Code(499));
            }
        }
    }
}

impl<F, B, E> Future for AuditFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuditBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let pending = this.pending.take();
        Poll::Ready(match (result, pending) {
            (Ok(response), None) => Ok(response.map(AuditBody::untracked)),
            (Ok(response), Some(pending)) => Ok(pending.respond(response)),
            (Err(err), pending) => {
                if let Some(pending) = pending {
                    pending.emit(Stage::ResponseComplete, Answer::Code(500));
                }
                Err(err)
            }
        })
    }
}

/// What a tracked body writes when it ends.
#[derive(Debug)]
struct Complete {
    pending: Pending,
    code: u16,
}

impl Complete {
    fn emit(self) {
        self.pending
            .emit(Stage::ResponseComplete, Answer::Code(self.code));
    }
}

pin_project_lite::pin_project! {
    /// Response body of [`Audit`]: the inner body, which writes the `ResponseComplete`
    /// event when it ends, fails, or is dropped (the client went away).
    #[derive(Debug)]
    pub(crate) struct AuditBody<B> {
        #[pin]
        inner: B,
        complete: Option<Complete>,
    }

    impl<B> PinnedDrop for AuditBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(complete) = this.project().complete.take() {
                complete.emit();
            }
        }
    }
}

impl<B> AuditBody<B> {
    fn untracked(inner: B) -> Self {
        AuditBody {
            inner,
            complete: None,
        }
    }
}

impl<B: Body> Body for AuditBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if matches!(frame, None | Some(Err(_)))
            && let Some(complete) = this.complete.take()
        {
            complete.emit();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer inside authentication: records the user of an audited request and writes
/// its `RequestReceived` event.
#[derive(Clone, Debug)]
pub(crate) struct AuditUserLayer {
    log: Arc<AuditLog>,
}

impl<S> Layer<S> for AuditUserLayer {
    type Service = AuditUser<S>;

    fn layer(&self, inner: S) -> AuditUser<S> {
        AuditUser {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`AuditUserLayer`]; its future is the inner service's.
#[derive(Clone, Debug)]
pub(crate) struct AuditUser<S> {
    inner: S,
    log: Arc<AuditLog>,
}

impl<S, B> Service<Request<B>> for AuditUser<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(AuditHandle(record)) = request.extensions().get::<AuditHandle>() {
            let user = request
                .extensions()
                .get::<UserInfo>()
                .cloned()
                .unwrap_or_default();
            if record.user.set(user).is_ok() {
                self.log
                    .emit(Entry::new(record, Stage::RequestReceived, Answer::None));
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests;
