//! One client connection from accept to close: the setup deadline (TLS handshake, protocol
//! detection and the first request head must all arrive in time), the idle timeout (no
//! request in flight for that long closes the connection, HTTP/1.1 and HTTP/2 alike), the
//! request-head timeout of kept-alive HTTP/1.1 connections, and graceful shutdown.
//!
//! A request counts as in flight from the moment hyper hands it over until its response
//! body has been sent or dropped ([`TrackedBody`]), so a long download or a watch is never
//! cut by the idle timeout.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use std::convert::Infallible;

use axum::extract::ConnectInfo;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use kube_bastion::ClientCertificates;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    /// Connections closed because a request head did not complete in time.
    pub(crate) head_timeouts: AtomicU64,
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

/// What a connection is doing, shared by its requests, its I/O and its driver. Plain
/// counters and flags: nothing here reads the clock or touches a timer per request; the
/// driver samples them on its periodic check ([`drive`]).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Requests whose head hyper handed over, since the connection opened.
    started: AtomicU64,
    /// Bytes have arrived with no request in flight since the last request started: an
    /// HTTP/1.1 request head is on its way.
    reading_head: AtomicBool,
    /// The client's first bytes were the HTTP/2 preface (no head rule applies).
    http2: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity::default())
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        if self.reading_head.load(Ordering::Relaxed) {
            self.reading_head.store(false, Ordering::Relaxed);
        }
        InFlight(Arc::clone(self))
    }

    /// Notes `bytes` just read from the client; `preface_matched` is how much of the
    /// HTTP/2 preface the connection's first bytes matched so far.
    fn read(&self, bytes: &[u8], preface_matched: &mut usize) {
        if *preface_matched < PREFACE_PROBE.len() {
            let want = &PREFACE_PROBE[*preface_matched..];
            let n = want.len().min(bytes.len());
            if bytes[..n] == want[..n] {
                *preface_matched += n;
                if *preface_matched == PREFACE_PROBE.len() {
                    self.http2.store(true, Ordering::Relaxed);
                }
            } else {
                // Not HTTP/2; never probed again.
                *preface_matched = usize::MAX;
            }
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.reading_head.load(Ordering::Relaxed)
        {
            self.reading_head.store(true, Ordering::Relaxed);
        }
    }
}

/// The start of the HTTP/2 client preface (`PRI * HTTP/2.0`): no HTTP/1.1 method is `PRI`.
const PREFACE_PROBE: &[u8] = b"PRI * HTTP/2.0";

/// One request in flight; dropped when its response body ends (or the request is
/// abandoned).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The client connection's byte stream, reporting what it reads to [`Activity`] (for
    /// the request-head timeout).
    pub(crate) struct Watched<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
        preface_matched: usize,
    }
}

impl<I> Watched<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>) -> Self {
        Watched {
            io,
            activity,
            preface_matched: 0,
        }
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        std::task::ready!(this.io.poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.activity.read(read, this.preface_matched);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The server's service stack as hyper's service for one connection: inserts the peer
/// address and tracks every request until its response body ends.
///
/// The connection owns its copy of the stack and calls it in place (hyper calls a
/// connection's service from that connection's task only): no clone of the stack, and so
/// no reference-count traffic, per request.
#[derive(Debug)]
pub(crate) struct ConnectionService<S> {
    app: RefCell<S>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// The client certificate chain the TLS handshake verified, if any.
    certificates: Option<ClientCertificates>,
}

impl<S> ConnectionService<S> {
    pub(crate) fn new(app: S, peer: SocketAddr, activity: Arc<Activity>) -> Self {
        ConnectionService {
            app: RefCell::new(app),
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
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
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
        // authentication and metrics layers), so it is called without `poll_ready`. The
        // borrow ends before this returns, and hyper never calls `call` re-entrantly, so
        // it cannot be taken twice.
        let inner = self.app.borrow_mut().call(request);
        TrackedFuture {
            inner,
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
    /// An HTTP/1.1 request head must be complete this long after its first bytes arrived.
    pub(crate) head: Duration,
}

impl Deadlines {
    /// How often a serving connection samples its [`Activity`]: a third of the shortest
    /// limit, so a limit is enforced at most a third late (idle 90 s: closed between 90 and
    /// 100 s; a head started 30 s ago: closed by 40 s), with no timer work per request.
    fn check_every(&self) -> Duration {
        let shortest = self.idle.map_or(self.head, |idle| idle.min(self.head));
        (shortest / 3).max(Duration::from_millis(100))
    }
}

enum Phase {
    Setup,
    Serving,
    Closing,
}

/// Wakes the connection task for its shutdown signal or its timer, and remembers that one
/// of them fired, so the driver polls them only then, not on every I/O wake-up.
#[derive(Debug, Default)]
struct SideWake {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What the periodic check decided.
enum Check {
    /// Keep serving; check again at this instant.
    Again(Instant),
    /// Close: the connection stayed idle for the idle timeout.
    Idle,
    /// Close: a request head did not complete in time.
    Head,
}

/// The periodic check's memory between two samples.
struct Sampler {
    /// `Activity::started` at the previous sample.
    started: u64,
    /// Since when nothing has been in flight and no request started.
    quiet_since: Instant,
    /// Since when a request head has been arriving, and the request count then.
    head_since: Option<(Instant, u64)>,
}

impl Sampler {
    fn check(&mut self, activity: &Activity, deadlines: &Deadlines, now: Instant) -> Check {
        let started = activity.started.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        if busy || started != self.started {
            self.quiet_since = now;
        }
        self.started = started;
        let heading = !busy
            && !activity.http2.load(Ordering::Relaxed)
            && activity.reading_head.load(Ordering::Relaxed);
        self.head_since = match self.head_since {
            Some((since, at)) if heading && at == started => {
                if now.duration_since(since) >= deadlines.head {
                    return Check::Head;
                }
                Some((since, at))
            }
            _ if heading => Some((now, started)),
            _ => None,
        };
        if let Some(idle) = deadlines.idle
            && !busy
            && now.duration_since(self.quiet_since) >= idle
        {
            return Check::Idle;
        }
        Check::Again(now + deadlines.check_every())
    }
}

/// Serves one connection until it ends, the setup deadline passes without a request, it
/// stays idle for the idle timeout, a request head takes longer than its timeout, or
/// `shutdown` turns true (then in-flight requests finish: graceful shutdown).
///
/// The shutdown signal and the timer are polled only when they woke the task, not on each
/// of the two or three I/O wake-ups of every request.
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
    let io = Watched::new(io, Arc::clone(&activity));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until(deadlines.setup);
    tokio::pin!(timer);
    let changed = shutdown.changed();
    tokio::pin!(changed);
    let side = Arc::new(SideWake::default());
    // Fired: the side futures get their first poll (and register) on the first wake.
    side.fired.store(true, Ordering::Relaxed);
    let side_waker = Waker::from(Arc::clone(&side));
    let mut phase = Phase::Setup;
    let mut sampler: Option<Sampler> = None;
    let mut shutting_down = false;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return Poll::Ready(());
            }
            side.task.register(cx.waker());
            if !side.fired.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let mut side_cx = Context::from_waker(&side_waker);
            // A dropped sender counts as shutdown too (`changed` fails).
            if !shutting_down && changed.as_mut().poll(&mut side_cx).is_ready() {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
                side.fired.store(true, Ordering::Relaxed);
                continue;
            }
            if shutting_down || timer.as_mut().poll(&mut side_cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match phase {
                Phase::Setup if activity.started.load(Ordering::Relaxed) == 0 => {
                    stats.setup_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "connection setup timed out");
                    return Poll::Ready(());
                }
                Phase::Setup | Phase::Serving => {
                    phase = Phase::Serving;
                    let sampler = sampler.get_or_insert(Sampler {
                        started: 0,
                        quiet_since: now,
                        head_since: None,
                    });
                    match sampler.check(&activity, &deadlines, now) {
                        Check::Again(at) => timer.as_mut().reset(at),
                        Check::Head => {
                            stats.head_timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "request head timed out");
                            return Poll::Ready(());
                        }
                        Check::Idle => {
                            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "closing an idle connection");
                            conn.as_mut().graceful_shutdown();
                            phase = Phase::Closing;
                            timer.as_mut().reset(now + IDLE_CLOSE_GRACE);
                        }
                    }
                }
                Phase::Closing => return Poll::Ready(()),
            }
            // The timer was reset: poll it again so it registers.
            side.fired.store(true, Ordering::Relaxed);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines(idle: Option<u64>, head: u64) -> Deadlines {
        Deadlines {
            setup: Instant::now(),
            idle: idle.map(Duration::from_secs),
            head: Duration::from_secs(head),
        }
    }

    fn sampler(now: Instant) -> Sampler {
        Sampler {
            started: 0,
            quiet_since: now,
            head_since: None,
        }
    }

    fn read(activity: &Activity, bytes: &[u8], probe: &mut usize) {
        activity.read(bytes, probe);
    }

    #[test]
    fn checks_run_at_a_third_of_the_shortest_limit() {
        assert_eq!(
            deadlines(Some(90), 30).check_every(),
            Duration::from_secs(10)
        );
        assert_eq!(deadlines(Some(3), 30).check_every(), Duration::from_secs(1));
        assert_eq!(deadlines(None, 30).check_every(), Duration::from_secs(10));
        assert_eq!(
            deadlines(Some(0), 30).check_every(),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn idle_counts_from_the_last_sample_that_saw_work() {
        let t0 = Instant::now();
        let d = deadlines(Some(90), 30);
        let activity = Activity::new();
        let mut s = sampler(t0);
        let s10 = Duration::from_secs(10);
        assert!(matches!(s.check(&activity, &d, t0 + s10), Check::Again(_)));
        // A request in flight at a sample keeps the connection busy however long it runs.
        let guard = activity.start();
        assert!(matches!(
            s.check(&activity, &d, t0 + 20 * s10),
            Check::Again(_)
        ));
        drop(guard);
        // Quiet from the sample at 200 s on: idle at 290 s, not before.
        assert!(matches!(
            s.check(&activity, &d, t0 + 28 * s10),
            Check::Again(_)
        ));
        assert!(matches!(s.check(&activity, &d, t0 + 29 * s10), Check::Idle));
        // A request that started and ended between two samples counts as work.
        let mut s = sampler(t0);
        drop(activity.start());
        assert!(matches!(
            s.check(&activity, &d, t0 + 9 * s10),
            Check::Again(_)
        ));
        assert!(matches!(s.check(&activity, &d, t0 + 18 * s10), Check::Idle));
        // No idle timeout: never idle.
        let mut s = sampler(t0);
        assert!(matches!(
            s.check(&activity, &deadlines(None, 30), t0 + 1000 * s10),
            Check::Again(_)
        ));
    }

    #[test]
    fn a_slow_request_head_is_cut_and_a_finished_one_is_not() {
        let t0 = Instant::now();
        let d = deadlines(None, 30);
        let s10 = Duration::from_secs(10);
        let activity = Activity::new();
        let mut probe = 0;
        let mut s = sampler(t0);
        read(&activity, b"GET / HT", &mut probe);
        assert!(matches!(s.check(&activity, &d, t0 + s10), Check::Again(_)));
        assert!(matches!(
            s.check(&activity, &d, t0 + 3 * s10),
            Check::Again(_)
        ));
        assert!(matches!(s.check(&activity, &d, t0 + 4 * s10), Check::Head));

        // The head completes (hyper hands the request over): the clock stops; a later
        // partial head starts a new one.
        let mut s = sampler(t0);
        assert!(matches!(s.check(&activity, &d, t0 + s10), Check::Again(_)));
        drop(activity.start());
        assert!(!activity.reading_head.load(Ordering::Relaxed));
        assert!(matches!(
            s.check(&activity, &d, t0 + 5 * s10),
            Check::Again(_)
        ));
        read(&activity, b"GET", &mut probe);
        assert!(matches!(
            s.check(&activity, &d, t0 + 6 * s10),
            Check::Again(_)
        ));
        assert!(matches!(
            s.check(&activity, &d, t0 + 8 * s10),
            Check::Again(_)
        ));
        assert!(matches!(s.check(&activity, &d, t0 + 9 * s10), Check::Head));

        // Bytes read while a request is in flight (its body) are not a head.
        let activity = Activity::new();
        let guard = activity.start();
        read(&activity, b"body bytes", &mut 0);
        assert!(!activity.reading_head.load(Ordering::Relaxed));
        drop(guard);
    }

    #[test]
    fn http2_connections_have_no_head_rule() {
        let t0 = Instant::now();
        let d = deadlines(None, 30);
        let activity = Activity::new();
        let mut probe = 0;
        // The preface split over reads, then frames (a ping answer) while idle.
        read(&activity, b"PRI * HT", &mut probe);
        read(&activity, b"TP/2.0\r\n\r\nSM\r\n\r\n", &mut probe);
        assert!(activity.http2.load(Ordering::Relaxed));
        read(&activity, b"\0\0\x08\x06\x01", &mut probe);
        let mut s = sampler(t0);
        for minutes in 1..10 {
            assert!(matches!(
                s.check(&activity, &d, t0 + Duration::from_secs(60 * minutes)),
                Check::Again(_)
            ));
        }
        // `PRIX` or `PROPFIND` is HTTP/1.1.
        for first in [&b"PRIX / HTTP/1.1"[..], b"PROPFIND / HTTP/1.1"] {
            let activity = Activity::new();
            read(&activity, first, &mut 0);
            assert!(!activity.http2.load(Ordering::Relaxed));
        }
    }
}
