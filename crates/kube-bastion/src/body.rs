//! [`ProxyBody`], the body of every response the proxy writes.
//!
//! A backend body is streamed frame by frame (data and trailers) without buffering; hyper's
//! flow control gives backpressure in both directions. An idle timeout between frames
//! aborts a body whose backend went silent, so a backend can never hold a client forever.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::transport::{BoxError, Checkin};

/// How a response body ended, reported to a completion callback
/// ([`ProxyBody::on_completion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Completion {
    /// The body reached its end (after trailers, if any).
    Finished,
    /// The body failed (backend reset, idle timeout, rewrite error).
    Failed,
    /// The body was dropped before its end (client went away).
    Dropped,
}

type CompletionFn = Box<dyn FnOnce(Completion) + Send>;

/// The response body of the proxy: a fixed buffer (Status JSON, redirects), a streamed
/// backend body, or any other body (rewritten responses).
pub struct ProxyBody {
    kind: Kind,
    on_completion: Option<CompletionFn>,
}

enum Kind {
    Full(Option<Bytes>),
    Backend(BackendBody),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

struct BackendBody {
    body: Incoming,
    /// The pooled connection the body arrives on, given back at the body's end.
    checkin: Option<Checkin>,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
    /// A data frame held back for one turn of the scheduler ([`BackendBody::poll_frame`]).
    held: Option<Frame<Bytes>>,
}

/// The response body stalled longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("backend response body idle for more than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(b) => format!("Full({} bytes)", b.as_ref().map_or(0, |b| b.len())),
            Kind::Backend(_) => "Backend".to_owned(),
            Kind::Boxed(_) => "Boxed".to_owned(),
        };
        f.debug_struct("ProxyBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            on_completion: None,
        }
    }

    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        Self {
            kind: Kind::Full(if b.is_empty() { None } else { Some(b) }),
            on_completion: None,
        }
    }

    /// Any other body (boxed once). Used for rewritten responses.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()),
            on_completion: None,
        }
    }

    /// [`backend`](Self::backend), giving `checkin`'s connection back to its pool when the
    /// body reaches its end.
    pub(crate) fn pooled(body: Incoming, checkin: Option<Checkin>, idle: Option<Duration>) -> Self {
        Self {
            kind: Kind::Backend(BackendBody {
                body,
                checkin,
                idle,
                sleep: None,
                progressed: true,
                held: None,
            }),
            on_completion: None,
        }
    }

    /// Calls `f` once, when the body ends, fails or is dropped (for balancer load and
    /// latency accounting that must cover the whole response, not just its head). Callbacks
    /// chain: each one set is called, in the order set, with the same outcome.
    pub(crate) fn on_completion(mut self, f: impl FnOnce(Completion) + Send + 'static) -> Self {
        self.on_completion = Some(match self.on_completion.take() {
            None => Box::new(f),
            Some(prev) => Box::new(move |c| {
                prev(c);
                f(c);
            }),
        });
        self
    }

    fn complete(&mut self, how: Completion) {
        if let Some(f) = self.on_completion.take() {
            f(how);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body known to be at its end may never be polled (hyper skips empty bodies).
        let how = if self.is_end_stream() {
            if let Kind::Backend(b) = &mut self.kind {
                b.finish();
            }
            Completion::Finished
        } else {
            Completion::Dropped
        };
        self.complete(how);
    }
}

impl BackendBody {
    /// The body is at its end: its connection may carry another request.
    fn finish(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.finish();
        }
    }

    /// The next frame. A data frame after which the body may go on is held back for one
    /// turn of the scheduler: the backend connection's task decodes what follows it (often
    /// the end of a chunked body, already in its buffer) only when it runs again, and
    /// without that turn the client connection would write the frame, find nothing more,
    /// and write the end separately: two writes and two segments for one small response.
    /// The task wakes itself, so the frame goes out on the very next poll whatever the
    /// backend does.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.held.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.progressed = true;
                if frame.is_data() && !self.body.is_end_stream() {
                    self.held = Some(frame);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection broke: it is not given back.
                self.checkin = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(idle) = self.idle else {
                    return Poll::Pending;
                };
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if self.progressed {
                    sleep.as_mut().reset(Instant::now() + idle);
                    self.progressed = false;
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

use std::future::Future as _;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Backend(b) => b.poll_frame(cx),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => this.complete(Completion::Finished),
            Poll::Ready(Some(Err(_))) => this.complete(Completion::Failed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Backend(b) => b.held.is_none() && b.body.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Backend(b) => {
                let mut hint = b.body.size_hint();
                if let Some(held) = b.held.as_ref().and_then(Frame::data_ref) {
                    // Upper first: `set_lower` must not pass the upper bound.
                    let held = held.len() as u64;
                    if let Some(upper) = hint.upper() {
                        hint.set_upper(upper.saturating_add(held));
                    }
                    hint.set_lower(hint.lower().saturating_add(held));
                }
                hint
            }
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A backend response whose bytes arrive in one piece, read through a real hyper
    /// client connection (its task decodes the body).
    async fn response_of(raw: &'static [u8]) -> ProxyBody {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (mut sender, conn) =
            http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut server, &mut request).await;
            server.write_all(raw).await.unwrap();
            // Keep the connection open: the end must come from the chunked encoding.
            std::future::pending::<()>().await;
        });
        let response = sender
            .send_request(http::Request::new(http_body_util::Empty::new()))
            .await
            .unwrap();
        ProxyBody::pooled(response.into_body(), None, None)
    }

    #[tokio::test]
    async fn a_data_frame_waits_one_turn_and_then_goes_out_with_the_end() {
        let mut body = response_of(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        // The frame may take a few polls to arrive; once it has, it is held for one turn.
        loop {
            let before = counter.0.load(Ordering::SeqCst);
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending if counter.0.load(Ordering::SeqCst) > before => break,
                Poll::Pending => tokio::task::yield_now().await,
                Poll::Ready(other) => panic!("the data frame went out at once: {other:?}"),
            }
        }
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().lower(), 5, "the held bytes still count");
        // The turn: the backend connection's task decodes the terminating chunk.
        tokio::task::yield_now().await;
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => assert_eq!(frame.into_data().unwrap(), "hello"),
            other => panic!("expected the held frame, got {other:?}"),
        }
        // The end is there at once: the client connection writes frame and end together.
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[tokio::test]
    async fn the_last_frame_of_a_known_length_goes_out_at_once() {
        let mut body = response_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
    }
}
