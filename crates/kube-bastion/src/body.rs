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

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.progressed = true;
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
            Kind::Backend(b) => b.body.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Backend(b) => b.body.size_hint(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}
