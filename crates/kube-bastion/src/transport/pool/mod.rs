//! The backend connection pool.
//!
//! Connections are pooled per [`PoolKey`]: the approved socket address, how HTTP is spoken
//! on it (plain HTTP/1.1, h2c, TLS), the TLS identity (generic or kubelet) and the exact
//! TLS server name the connection was verified or sent SNI for. Two requests share a
//! connection only when all of these agree, so a connection verified for one Service name
//! is never reused for another name on the same pod address.
//!
//! HTTP/1.1 connections are handed out one request at a time: a connection goes back to the
//! pool as soon as hyper reports it ready for the next request (often right after the
//! response head, when the whole small body was read with it), else when the response body
//! has been read to its end; one still sending its request body then (the backend answered
//! early) joins the idle list only once hyper reports it ready, so no request ever waits
//! behind another one's upload. A body dropped before its end takes its connection with it.
//! HTTP/2 connections (ALPN `h2`, or h2c) are shared by every request to the key.
//!
//! A request sent on a pooled connection that turns out to be closed before any byte of
//! the request was written is sent again on another connection (the body was never
//! polled), as Go's transport and hyper-util's client do; a fresh connection is never
//! retried here (the balancer decides about other endpoints).
//!
//! Idle connections are closed after [`PoolOptions::idle_timeout`](crate::PoolOptions) by a
//! reaper task that runs while the pool lives, waking every quarter of the timeout (at
//! least every 5 ms, at most every 5 s). It starts with the pool's first key, so shared
//! HTTP/2 connections and the keys of endpoints that never connected are reaped too.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::fast::RandomState;
use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::RequestBody;
use super::connect::{self, BackendStream, ConnectError, DialTimeouts};
use crate::{Scheme, TransportKind};

/// How HTTP is spoken on a pooled connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Wire {
    /// HTTP/1.1 over TCP.
    Plain,
    /// HTTP/2 with prior knowledge over TCP (`appProtocol: kubernetes.io/h2c`).
    H2c,
    /// TLS over TCP, HTTP/2 or HTTP/1.1 by ALPN.
    Tls,
}

/// Which connections are interchangeable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: SocketAddr,
    pub(crate) wire: Wire,
    pub(crate) identity: TransportKind,
    /// The name the TLS handshake sent (and verified, when verification is on).
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// How to open a new connection for a key.
pub(crate) struct Dial<'a> {
    pub(crate) key: PoolKey,
    pub(crate) scheme: Scheme,
    /// The rustls configuration (ALPN `h2`, `http/1.1`) for [`Wire::Tls`].
    pub(crate) tls: Option<&'a Arc<ClientConfig>>,
    pub(crate) timeouts: DialTimeouts,
}

/// Why sending to a backend failed.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// The connection (TCP or TLS) could not be made: nothing was sent.
    Connect(ConnectError),
    /// The HTTP/2 handshake failed on a new connection: nothing was sent.
    Handshake(hyper::Error),
    /// The exchange failed after the request was handed to a connection.
    Exchange(hyper::Error),
    /// A new connection closed before the request could be written.
    Closed,
}

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolSettings {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) http2_keep_alive_interval: Option<Duration>,
}

/// Idle backend connections by key; see the [module documentation](self).
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    slots: Mutex<HashMap<PoolKey, Arc<Slot>, RandomState>>,
    settings: PoolSettings,
    reaping: AtomicBool,
}

/// The connections of one key.
struct Slot {
    /// The pool it belongs to (for the settings and the reaper).
    pool: Weak<PoolInner>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Idle HTTP/1.1 connections, most recently used last.
    http1: Vec<Idle>,
    /// The shared HTTP/2 connection.
    http2: Option<Shared>,
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

struct Shared {
    sender: http2::SendRequest<RequestBody>,
    last_used: Instant,
}

enum Conn {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

/// An HTTP/1.1 connection lent to one response, returned to its slot when the response
/// body ends ([`Checkin::finish`]); dropping it closes the connection.
pub(crate) struct Checkin {
    slot: Arc<Slot>,
    sender: http1::SendRequest<RequestBody>,
}

impl fmt::Debug for Checkin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkin").finish_non_exhaustive()
    }
}

impl Checkin {
    /// The response body ended: the connection may carry the next request.
    pub(crate) fn finish(self) {
        if let Some(pool) = self.slot.pool.upgrade() {
            pool.checkin(&self.slot, self.sender);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                slots: Mutex::new(HashMap::default()),
                settings,
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (origin-form URI) to the key's endpoint on a pooled connection, or on a
    /// new one. The [`Checkin`], when there is one, must be finished when the response body
    /// ends.
    pub(crate) async fn send(
        &self,
        dial: Dial<'_>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendFailure> {
        let slot = self.inner.slot(&dial.key);
        // Pooled connections first; one found closed before the request left gives the
        // request back, and the next one (or a new connection) is tried.
        // Each pooled connection is tried at most once (a failed HTTP/1.1 one is not given
        // back, a failed HTTP/2 one is forgotten), so this ends; the bound is a backstop.
        let mut tries = self.inner.settings.max_idle_per_endpoint.saturating_add(2);
        while tries > 0
            && let Some(conn) = slot.checkout()
        {
            tries -= 1;
            match self.exchange(conn, &slot, &dial, req).await {
                Exchange::Done(res, checkin) => return Ok((res, checkin)),
                Exchange::Failed(e) => return Err(SendFailure::Exchange(e)),
                Exchange::Unsent(back) => req = back,
            }
        }
        // Boxed: dialing (TCP, TLS, HTTP/2 handshakes) is a large future that most
        // requests never run; inline it would be copied with every request's future.
        let conn = Box::pin(self.connect(&dial, &slot)).await?;
        match self.exchange(conn, &slot, &dial, req).await {
            Exchange::Done(res, checkin) => Ok((res, checkin)),
            Exchange::Failed(e) => Err(SendFailure::Exchange(e)),
            Exchange::Unsent(_) => Err(SendFailure::Closed),
        }
    }

    async fn exchange(
        &self,
        conn: Conn,
        slot: &Arc<Slot>,
        dial: &Dial<'_>,
        mut req: Request<RequestBody>,
    ) -> Exchange {
        match conn {
            Conn::Http2(mut sender) => {
                set_form(&mut req, true, dial);
                match sender.try_send_request(req).await {
                    Ok(res) => Exchange::Done(res, None),
                    Err(mut e) => match e.take_message() {
                        Some(back) => {
                            // Going away: later requests get a new connection.
                            slot.forget_http2();
                            Exchange::Unsent(back)
                        }
                        None => Exchange::Failed(e.into_error()),
                    },
                }
            }
            Conn::Http1(mut sender) => {
                if sender.ready().await.is_err() {
                    return Exchange::Unsent(req);
                }
                set_form(&mut req, false, dial);
                match sender.try_send_request(req).await {
                    Ok(res) => {
                        // Ready again already (the whole body came with the head, or there
                        // is none): back to the pool now; otherwise at the body's end.
                        if sender.is_ready() {
                            self.inner.checkin(slot, sender);
                            Exchange::Done(res, None)
                        } else {
                            let checkin = Checkin {
                                slot: Arc::clone(slot),
                                sender,
                            };
                            Exchange::Done(res, Some(checkin))
                        }
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) => Exchange::Unsent(back),
                        None => Exchange::Failed(e.into_error()),
                    },
                }
            }
        }
    }

    /// Dials the key's endpoint and runs the HTTP handshake; the connection task is
    /// spawned on the current runtime.
    async fn connect(&self, dial: &Dial<'_>, slot: &Arc<Slot>) -> Result<Conn, SendFailure> {
        let key = &dial.key;
        let tcp = connect::dial_tcp(key.addr, dial.timeouts.connect)
            .await
            .map_err(SendFailure::Connect)?;
        let (stream, http2) = match key.wire {
            Wire::Plain => (BackendStream::Plain(tcp), false),
            Wire::H2c => (BackendStream::Plain(tcp), true),
            Wire::Tls => {
                let Some(config) = dial.tls else {
                    return Err(SendFailure::Connect(ConnectError::NoTls));
                };
                let tls = connect::handshake(
                    tcp,
                    key.addr,
                    Arc::clone(config),
                    key.server_name.clone(),
                    dial.timeouts.handshake,
                )
                .await
                .map_err(SendFailure::Connect)?;
                let stream = BackendStream::Tls(Box::new(tls));
                let h2 = stream.alpn_protocol() == Some(b"h2");
                (stream, h2)
            }
        };
        let io = TokioIo::new(stream);
        if http2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some(interval) = self.inner.settings.http2_keep_alive_interval {
                builder
                    .keep_alive_interval(interval)
                    .keep_alive_while_idle(false);
            }
            let (sender, conn) = builder
                .handshake(io)
                .await
                .map_err(SendFailure::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "backend HTTP/2 connection ended");
                }
            });
            slot.share_http2(&sender);
            Ok(Conn::Http2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(SendFailure::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "backend HTTP/1.1 connection ended");
                }
            });
            Ok(Conn::Http1(sender))
        }
    }

    /// Idle HTTP/1.1 connections and live HTTP/2 connections, over all keys.
    #[cfg(test)]
    fn idle(&self) -> usize {
        let slots = lock(&self.inner.slots);
        slots
            .values()
            .map(|s| {
                let state = lock(&s.state);
                state.http1.len() + usize::from(state.http2.is_some())
            })
            .sum()
    }
}

enum Exchange {
    Done(Response<Incoming>, Option<Checkin>),
    /// The connection closed before the request left; here it is back.
    Unsent(Request<RequestBody>),
    Failed(hyper::Error),
}

impl PoolInner {
    fn slot(self: &Arc<Self>, key: &PoolKey) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        match slots.get(key) {
            Some(slot) => Arc::clone(slot),
            None => {
                let slot = Arc::new(Slot {
                    pool: Arc::downgrade(self),
                    state: Mutex::default(),
                });
                slots.insert(key.clone(), Arc::clone(&slot));
                drop(slots);
                // Every key gets reaped, whatever comes of it: a shared HTTP/2 connection
                // never passes through `checkin`, and a key whose dials all fail holds no
                // connection at all.
                self.ensure_reaper();
                slot
            }
        }
    }

    fn checkin(self: &Arc<Self>, slot: &Arc<Slot>, mut sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() || self.settings.max_idle_per_endpoint == 0 {
            return;
        }
        if !sender.is_ready() {
            // Still busy (the request body is still being sent after an early response):
            // it joins the idle list only once ready, so no request ever waits behind it.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let (pool, slot) = (Arc::downgrade(self), Arc::clone(slot));
            runtime.spawn(async move {
                if sender.ready().await.is_ok()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.checkin(&slot, sender);
                }
            });
            return;
        }
        {
            let mut state = lock(&slot.state);
            if state.http1.len() >= self.settings.max_idle_per_endpoint {
                return;
            }
            state.http1.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        self.ensure_reaper();
    }

    /// Starts the reaper on the current runtime unless one runs.
    fn ensure_reaper(self: &Arc<Self>) {
        if self.reaping.load(Ordering::Acquire) || self.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Release);
            return;
        };
        let tick = (self.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(5), Duration::from_secs(5));
        let guard = ReaperGuard(Arc::downgrade(self));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(pool) = guard.0.upgrade() else {
                    return;
                };
                pool.reap(Instant::now());
            }
        });
    }

    /// Closes connections idle for the timeout (and forgets closed ones and unused keys).
    fn reap(&self, now: Instant) {
        let timeout = self.settings.idle_timeout;
        let mut slots = lock(&self.slots);
        slots.retain(|_, slot| {
            let mut state = lock(&slot.state);
            state
                .http1
                .retain(|c| now.duration_since(c.since) < timeout && !c.sender.is_closed());
            if state
                .http2
                .as_ref()
                .is_some_and(|s| now.duration_since(s.last_used) >= timeout || s.sender.is_closed())
            {
                state.http2 = None;
            }
            let empty = state.http1.is_empty() && state.http2.is_none();
            drop(state);
            // A slot also held by a request in flight stays: its connection comes back.
            !(empty && Arc::strong_count(slot) == 1)
        });
    }
}

/// Lets a new reaper start when the runtime running this one shuts down.
struct ReaperGuard(Weak<PoolInner>);

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.reaping.store(false, Ordering::Release);
        }
    }
}

impl Slot {
    /// A live pooled connection: the shared HTTP/2 one, else the most recently used idle
    /// HTTP/1.1 one.
    fn checkout(&self) -> Option<Conn> {
        let mut state = lock(&self.state);
        if let Some(shared) = &mut state.http2 {
            if !shared.sender.is_closed() {
                shared.last_used = Instant::now();
                return Some(Conn::Http2(shared.sender.clone()));
            }
            state.http2 = None;
        }
        while let Some(idle) = state.http1.pop() {
            if !idle.sender.is_closed() {
                return Some(Conn::Http1(idle.sender));
            }
        }
        None
    }

    fn share_http2(&self, sender: &http2::SendRequest<RequestBody>) {
        let mut state = lock(&self.state);
        if state.http2.as_ref().is_none_or(|s| s.sender.is_closed()) {
            state.http2 = Some(Shared {
                sender: sender.clone(),
                last_used: Instant::now(),
            });
        }
    }

    fn forget_http2(&self) {
        lock(&self.state).http2 = None;
    }
}

/// Puts the request target in the form the connection needs: origin-form for HTTP/1.1
/// (with a `Host` header when the request has none, as Go and hyper-util add one), absolute
/// for HTTP/2 (hyper takes `:scheme` and `:authority` from it).
fn set_form(req: &mut Request<RequestBody>, http2: bool, dial: &Dial<'_>) {
    // Only a change of form needs the path; the usual HTTP/1.1 request keeps its URI.
    let path = |req: &Request<RequestBody>| {
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    if http2 {
        *req.version_mut() = Version::HTTP_2;
        if req.uri().scheme().is_none() {
            let path = path(req);
            let mut uri = Vec::with_capacity(64 + path.as_str().len());
            uri.extend_from_slice(dial.scheme.as_str().as_bytes());
            uri.extend_from_slice(b"://");
            crate::headers::push_socket_addr(&mut uri, dial.key.addr);
            uri.extend_from_slice(path.as_str().as_bytes());
            if let Ok(uri) = Uri::from_maybe_shared(Bytes::from(uri)) {
                *req.uri_mut() = uri;
            }
        }
    } else {
        *req.version_mut() = Version::HTTP_11;
        if req.uri().scheme().is_some() {
            *req.uri_mut() = Uri::from(path(req));
        }
        if !req.headers().contains_key(HOST)
            && let Some(host) = host_header(dial.key.addr, dial.scheme)
        {
            req.headers_mut().insert(HOST, host);
        }
    }
}

/// `ip[:port]` (brackets for IPv6), the port left out when it is the scheme's default.
fn host_header(addr: SocketAddr, scheme: Scheme) -> Option<HeaderValue> {
    let mut host = Vec::with_capacity(47);
    if addr.port() == scheme.default_port() {
        let v6 = addr.is_ipv6();
        if v6 {
            host.push(b'[');
        }
        crate::headers::push_ip(&mut host, addr.ip());
        if v6 {
            host.push(b']');
        }
    } else {
        crate::headers::push_socket_addr(&mut host, addr);
    }
    HeaderValue::from_maybe_shared(Bytes::from(host)).ok()
}

#[cfg(test)]
mod tests;
