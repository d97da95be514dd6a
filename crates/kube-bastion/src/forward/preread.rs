//! Small request bodies are read whole before the request goes to the backend.
//!
//! Streamed, a request body that arrived with its head still reaches the backend connection
//! only after a round of wake-ups (the backend connection asks the client connection for
//! the body, which then reads it from its buffer), so the head goes out alone and the body
//! follows in a second write: two segments for the backend to read, one more system call
//! here. Read first, the body is there when the head is written, and both leave in one
//! write. nginx buffers request bodies the same way by default.
//!
//! Only bodies whose length the head announced (`Content-Length`) and which are at most
//! [`LIMIT`] bytes are read first; longer, chunked and empty bodies stream as before. The
//! frames are replayed exactly as read, trailers and a read error included, so the backend
//! sees what it would have seen streamed, only later: a client that stalls in the middle
//! of such a body holds its request back here instead of at the backend (the response
//! head timeout bounds both).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::transport::{BoxError, RequestBody};

/// The largest body read whole before forwarding, in bytes.
pub(super) const LIMIT: u64 = 64 * 1024;

/// Whether `body` is read whole before forwarding: its exact length is known, non-zero and
/// at most [`LIMIT`].
pub(super) fn wanted(body: &RequestBody) -> bool {
    body.size_hint()
        .exact()
        .is_some_and(|len| len > 0 && len <= LIMIT)
}

/// Reads `body` to its end (or its first error) and returns a body that replays what was
/// read, with the same size hint.
pub(super) async fn read(mut body: RequestBody) -> RequestBody {
    let hint = body.size_hint();
    let mut frames = VecDeque::new();
    while let Some(frame) = body.frame().await {
        let failed = frame.is_err();
        frames.push_back(frame);
        if failed {
            break;
        }
    }
    Replay { frames, hint }.boxed_unsync()
}

/// Frames read ahead, given out in order.
struct Replay {
    frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
    hint: SizeHint,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = this.frames.pop_front();
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let left = this.hint.exact().unwrap_or(0);
            this.hint = SizeHint::with_exact(left.saturating_sub(data.len() as u64));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;
    use http_body_util::{Full, StreamBody};

    use super::*;

    /// A body of `frames` announcing `len` bytes, as a client's `Content-Length` body.
    struct Announced {
        frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
        len: u64,
        /// Pending after the frames instead of ending (a client that stalls).
        stall: bool,
    }

    impl Body for Announced {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let this = self.get_mut();
            match this.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(frame)),
                None if this.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.len)
        }
    }

    fn announced(parts: &[&'static str], len: u64) -> RequestBody {
        Announced {
            frames: parts
                .iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
                .collect(),
            len,
            stall: false,
        }
        .boxed_unsync()
    }

    async fn frames(body: RequestBody) -> Vec<Result<Frame<Bytes>, String>> {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.map_err(|e| e.to_string()));
        }
        out
    }

    fn data(frame: &Result<Frame<Bytes>, String>) -> Option<&[u8]> {
        frame.as_ref().ok()?.data_ref().map(|d| &d[..])
    }

    #[tokio::test]
    async fn frames_replay_in_order_with_their_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", "7".parse().unwrap());
        let mut source = Announced {
            frames: VecDeque::from([
                Ok(Frame::data(Bytes::from_static(b"one "))),
                Ok(Frame::data(Bytes::from_static(b"two"))),
                Ok(Frame::trailers(trailers)),
            ]),
            len: 7,
            stall: false,
        }
        .boxed_unsync();
        assert!(wanted(&source));
        source = read(source).await;
        assert_eq!(source.size_hint().exact(), Some(7));
        assert!(!source.is_end_stream());
        let got = frames(source).await;
        assert_eq!(got.len(), 3);
        assert_eq!(data(&got[0]), Some(&b"one "[..]));
        assert_eq!(data(&got[1]), Some(&b"two"[..]));
        let trailers = got[2].as_ref().unwrap().trailers_ref().unwrap();
        assert_eq!(trailers["x-sum"], "7");
    }

    #[tokio::test]
    async fn the_size_hint_counts_down_and_the_end_is_reported() {
        let mut body = read(announced(&["ab", "cde"], 5)).await;
        assert_eq!(body.size_hint().exact(), Some(5));
        body.frame().await.unwrap().unwrap();
        assert_eq!(body.size_hint().exact(), Some(3));
        body.frame().await.unwrap().unwrap();
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_read_error_is_replayed_after_the_data_before_it() {
        let source = Announced {
            frames: VecDeque::from([
                Ok(Frame::data(Bytes::from_static(b"partial"))),
                Err("client went away".into()),
                Ok(Frame::data(Bytes::from_static(b"never read"))),
            ]),
            len: 100,
            stall: false,
        }
        .boxed_unsync();
        let got = frames(read(source).await).await;
        assert_eq!(got.len(), 2, "nothing is read past the error");
        assert_eq!(data(&got[0]), Some(&b"partial"[..]));
        assert_eq!(got[1].as_ref().unwrap_err(), "client went away");
    }

    #[test]
    fn only_short_bodies_of_announced_length_are_read_first() {
        assert!(wanted(&announced(&["x"], 1)));
        assert!(wanted(&announced(&[], LIMIT)));
        assert!(!wanted(&announced(&[], LIMIT + 1)));
        assert!(!wanted(&announced(&[], 0)));
        let empty = Full::new(Bytes::new())
            .map_err(|e| match e {})
            .boxed_unsync();
        assert!(!wanted(&empty));
        // Chunked: no length in the head.
        let chunked = StreamBody::new(futures_util::stream::iter([Ok::<_, BoxError>(
            Frame::data(Bytes::from_static(b"x")),
        )]))
        .boxed_unsync();
        assert!(!wanted(&chunked));
    }

    #[test]
    fn a_stalled_body_keeps_the_read_waiting() {
        let source = Announced {
            frames: VecDeque::from([Ok(Frame::data(Bytes::from_static(b"half")))]),
            len: 8,
            stall: true,
        }
        .boxed_unsync();
        assert!(read(source).now_or_never().is_none());
    }
}
