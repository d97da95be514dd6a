//! One client connection from accept to close: the setup deadline (TLS handshake, protocol
//! detection and the first request head must all arrive in time), the idle timeout (no
//! request in flight for that long closes the connection, HTTP/1.1 and HTTP/2 alike), and
//! graceful shutdown.
//!
//! A request counts as in flight from the moment hyper hands it over until its response
//! body has been sent or dropped ([`TrackedBody`]), so a long download or a watch is never
//! cut by the idle timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use axum::extract::ConnectInfo;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use kube_bastion::ClientCertificates;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a connection closed for idleness gets to say goodbye (HTTP/2 `GOAWAY`) before
/// it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Connection counters, rendered by `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    /// Connections open now.
    pub(crate) open: AtomicUsize,
    /// Connections refused because `--max-connections` were open.
    pub(crate) refused: AtomicU64,
    /// Connections closed because setup did not finish in time.
    pub(crate) setup_timeouts: AtomicU64,
    /// Connections closed because no request was in flight for the idle timeout.
    pub(crate) idle_closed: AtomicU64,
}

/// Decrements [`ConnectionStats::open`] when the connection task ends.
pub(crate) struct OpenGuard(Arc<ConnectionStats>);

impl OpenGuard {
    pub(crate) fn new(stats: Arc<ConnectionStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection is doing, shared by its requests and its driver.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    seen: AtomicBool,
    /// Milliseconds after `base` of the last request start or response end.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            seen: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
        }
        self.touch();
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; dropped when its response body ends (or the request is
/// abandoned).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The server's service stack as hyper's service for one connection: inserts the peer
/// address and tracks every request until its response body ends.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionService<S> {
    app: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// The client certificate chain the TLS handshake verified, if any.
    certificates: Option<ClientCertificates>,
}

impl<S> ConnectionService<S> {
    pub(crate) fn new(app: S, peer: SocketAddr, activity: Arc<Activity>) -> Self {
        ConnectionService {
            app,
            peer,
            activity,
            certificates: None,
        }
    }

    /// Puts `certificates` into every request of the connection (for authentication).
    pub(crate) fn with_client_certificates(
        mut self,
        certificates: Option<ClientCertificates>,
    ) -> Self {
        self.certificates = certificates;
        self
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(certificates) = &self.certificates {
            request.extensions_mut().insert(certificates.clone());
        }
        let guard = self.activity.start();
        // Every service of the stack is always ready (the router, the proxy layer, the
        // authentication and metrics layers); calling a clone is what tower's `oneshot`
        // would do.
        let mut app = self.app.clone();
        TrackedFuture {
            inner: app.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ConnectionService`].
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it ends.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection limits that apply after accept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// When setup must be over: the first request head received.
    pub(crate) setup: Instant,
    /// No request in flight for this long closes the connection (`None`: never).
    pub(crate) idle: Option<Duration>,
}

enum Phase {
    Setup,
    Serving,
    Closing,
}

/// Serves one connection until it ends, the setup deadline passes without a request, it
/// stays idle for the idle timeout, or `shutdown` turns true (then in-flight requests
/// finish: graceful shutdown).
pub(crate) async fn drive<I, S, B>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: ConnectionService<S>,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
    stats: &ConnectionStats,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::clone(&service.activity);
    let peer = service.peer;
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until(deadlines.setup);
    tokio::pin!(timer);
    let mut phase = Phase::Setup;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            // A dropped sender counts as shutdown too (`changed` fails).
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut timer, if !shutting_down => match phase {
                Phase::Setup if !activity.seen.load(Ordering::Relaxed) => {
                    stats.setup_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "connection setup timed out");
                    return;
                }
                Phase::Setup | Phase::Serving => {
                    phase = Phase::Serving;
                    let Some(idle) = deadlines.idle else {
                        timer.as_mut().reset(Instant::now() + Duration::from_secs(86_400 * 365));
                        continue;
                    };
                    let quiet_until = activity.last() + idle;
                    if activity.in_flight.load(Ordering::Relaxed) > 0 {
                        timer.as_mut().reset(Instant::now() + idle);
                    } else if quiet_until > Instant::now() {
                        timer.as_mut().reset(quiet_until);
                    } else {
                        stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        phase = Phase::Closing;
                        timer.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                    }
                }
                Phase::Closing => return,
            },
        }
    }
}
