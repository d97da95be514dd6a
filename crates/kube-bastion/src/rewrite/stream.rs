//! [`RewrittenBody`]: the response body after [`rewrite_response`](super::rewrite_response),
//! either the backend body untouched or the streaming decode → rewrite → encode pipeline.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::compression::{Coding, Decoder, Encoder};
use super::html::{self, Rewriter, SharedOutput};
use super::{RewriteOptions, UrlRules};

use tower::BoxError;

/// An error while streaming a response body.
///
/// Either the backend body failed ([`is_backend`](Self::is_backend)) or a compressed body
/// could not be decoded or rewritten ([`is_rewrite`](Self::is_rewrite)); in both cases the
/// response ends there and the client sees an incomplete body.
#[derive(Debug)]
pub struct RewriteBodyError {
    kind: ErrorKind,
    source: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Backend,
    Rewrite,
}

impl RewriteBodyError {
    /// The backend's body failed.
    pub fn is_backend(&self) -> bool {
        self.kind == ErrorKind::Backend
    }

    /// The body could not be decoded, rewritten or re-encoded (for example corrupt gzip).
    pub fn is_rewrite(&self) -> bool {
        self.kind == ErrorKind::Rewrite
    }
}

impl fmt::Display for RewriteBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Backend => write!(f, "error reading the backend response body"),
            ErrorKind::Rewrite => write!(f, "error rewriting the response body: {}", self.source),
        }
    }
}

impl StdError for RewriteBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

pin_project! {
    /// The body of a rewritten response: a pass-through of the backend body, or a streaming
    /// rewrite of it with bounded memory.
    ///
    /// It is `Send` (and `Sync` when `B` is) and yields data as soon as the backend does:
    /// every backend frame is rewritten and, for compressed bodies, sync-flushed before the
    /// next one is read. Trailers are relayed after the body.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
    pub struct RewrittenBody<B> {
        #[pin]
        inner: B,
        pipeline: Option<Box<Mutex<Pipeline>>>,
        failed: bool,
        // The first frame, read ahead by `first_frame` before the response head is sent.
        primed: Option<Frame<Bytes>>,
    }
}

impl<B: fmt::Debug> fmt::Debug for RewrittenBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewrittenBody")
            .field("inner", &self.inner)
            .field("rewriting", &self.pipeline.is_some())
            .finish()
    }
}

#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
impl<B> RewrittenBody<B> {
    /// The backend body, unchanged.
    pub fn passthrough(inner: B) -> Self {
        Self {
            inner,
            pipeline: None,
            failed: false,
            primed: None,
        }
    }

    /// The backend body, decoded, rewritten and re-encoded.
    pub(crate) fn html(
        inner: B,
        coding: Coding,
        rules: &Arc<UrlRules>,
        options: &RewriteOptions,
    ) -> Self {
        let output = SharedOutput::default();
        let rewriter = html::rewriter(
            rules,
            options.srcset_and_meta_refresh,
            options.max_html_buffer,
            output.clone(),
        );
        let pipeline = Pipeline {
            decoder: Decoder::new(coding),
            rewriter: Some(rewriter),
            output,
            encoder: Encoder::new(coding),
            pending: Bytes::new(),
            decoded: Vec::new(),
            trailers: None,
            input_done: false,
            finished: false,
            saw_input: false,
            unflushed: false,
        };
        Self {
            inner,
            pipeline: Some(Box::new(Mutex::new(pipeline))),
            failed: false,
            primed: None,
        }
    }

    /// Reads the body's first frame ahead and keeps it for the first poll, so that a body
    /// that cannot be rewritten at all (a `gzip` label on something that is not gzip) is
    /// known before the response head goes out and can be answered with a Status instead.
    /// Errors come back here and the body is finished; data and trailers are delivered by
    /// the body as usual.
    pub(crate) async fn first_frame(&mut self) -> Result<(), RewriteBodyError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.primed = Some(frame);
                Ok(())
            }
            Some(Err(err)) => Err(err),
            None => Ok(()),
        }
    }

    /// Whether the body is being rewritten (as opposed to passed through).
    pub fn is_rewriting(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The backend body. For a pass-through body this is the whole body, so a caller can
    /// avoid the wrapper when [`is_rewriting`](Self::is_rewriting) is `false`; for a
    /// rewritten body the pipeline state is dropped.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Bytes currently held in the pipeline's own buffers (pending input, decoded and
    /// rewritten bytes, unsent compressed output); lol_html's internal buffer is capped
    /// separately by [`RewriteOptions::max_html_buffer`].
    #[cfg(test)]
    pub(crate) fn buffered(&mut self) -> usize {
        match &mut self.pipeline {
            None => 0,
            Some(p) => {
                let p = p.get_mut().unwrap_or_else(PoisonError::into_inner);
                p.pending.len() + p.decoded.capacity() + p.output.len() + p.encoder.buffered()
            }
        }
    }
}

/// The decode → rewrite → encode state of one response.
struct Pipeline {
    decoder: Decoder,
    /// `None` once finished, or after lol_html gave up on a pathological page (then the rest
    /// passes through unchanged).
    rewriter: Option<Rewriter>,
    output: SharedOutput,
    encoder: Encoder,
    /// Backend bytes not yet decoded.
    pending: Bytes,
    /// Scratch buffer for decoded bytes (reused; holds at most one step).
    decoded: Vec<u8>,
    trailers: Option<HeaderMap>,
    input_done: bool,
    finished: bool,
    saw_input: bool,
    /// Bytes went into the encoder since its last flush.
    unflushed: bool,
}

impl Pipeline {
    /// Runs decoded bytes through the HTML rewriter into the encoder.
    fn rewrite(&mut self, decoded: &[u8]) -> Result<(), BoxError> {
        if let Some(rewriter) = &mut self.rewriter {
            if let Err(err) = rewriter.write(decoded) {
                self.rewriter = None;
                if html::is_memory_bail_out(&err) {
                    // lol_html flushed what it held, unchanged; the rest of the page passes
                    // through unchanged.
                    tracing::debug!(
                        "HTML rewriting stopped: the rewriter's memory cap was reached"
                    );
                } else {
                    return Err(err.into());
                }
            }
            let html = self.output.take();
            self.unflushed |= !html.is_empty();
            self.encoder.write(&html)?;
        } else {
            self.unflushed |= !decoded.is_empty();
            self.encoder.write(decoded)?;
        }
        Ok(())
    }

    /// Processes one bounded step of pending input; returns the bytes ready to send.
    fn step(&mut self) -> Result<Bytes, BoxError> {
        self.saw_input = true;
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        let consumed = self.decoder.step(&self.pending, &mut decoded)?;
        let _ = self.pending.split_to(consumed);
        let result = self.rewrite(&decoded);
        self.decoded = decoded;
        result?;
        if self.pending.is_empty() && self.unflushed {
            // End of a backend frame: make what we have decodable by the client now.
            self.encoder.flush()?;
            self.unflushed = false;
        }
        Ok(Bytes::from(self.encoder.take()))
    }

    /// The backend body ended.
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        self.finished = true;
        if !self.saw_input {
            // An empty body stays empty (no gzip header for nothing).
            self.rewriter = None;
            return Ok(Bytes::new());
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        self.decoder.finish(&mut decoded)?;
        self.rewrite(&decoded)?;
        if let Some(rewriter) = self.rewriter.take()
            && let Err(err) = rewriter.end()
            && !html::is_memory_bail_out(&err)
        {
            return Err(err.into());
        }
        let html = self.output.take();
        self.encoder.write(&html)?;
        self.encoder.finish()?;
        Ok(Bytes::from(self.encoder.take()))
    }
}

impl<B> Body for RewrittenBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = RewriteBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(frame) = this.primed.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if *this.failed {
            return Poll::Ready(None);
        }
        let Some(pipeline) = this.pipeline.as_mut() else {
            return match ready!(this.inner.poll_frame(cx)) {
                Some(Err(err)) => {
                    *this.failed = true;
                    Poll::Ready(Some(Err(RewriteBodyError {
                        kind: ErrorKind::Backend,
                        source: err.into(),
                    })))
                }
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                None => Poll::Ready(None),
            };
        };
        let pipeline = pipeline.get_mut().unwrap_or_else(PoisonError::into_inner);
        loop {
            if pipeline.finished {
                return Poll::Ready(pipeline.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let produced = if !pipeline.pending.is_empty() {
                Some(pipeline.step())
            } else if pipeline.input_done {
                Some(pipeline.finish())
            } else {
                None
            };
            match produced {
                Some(Ok(bytes)) if !bytes.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    *this.failed = true;
                    tracing::warn!(error = %err, "ending a rewritten response body early: the body could not be rewritten");
                    return Poll::Ready(Some(Err(RewriteBodyError {
                        kind: ErrorKind::Rewrite,
                        source: err,
                    })));
                }
                None => {}
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                None => pipeline.input_done = true,
                Some(Err(err)) => {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(RewriteBodyError {
                        kind: ErrorKind::Backend,
                        source: err.into(),
                    })));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => pipeline.pending = data,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            match &mut pipeline.trailers {
                                Some(existing) => existing.extend(trailers),
                                None => pipeline.trailers = Some(trailers),
                            }
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.primed.is_some() {
            return false;
        }
        match &self.pipeline {
            None => self.failed || self.inner.is_end_stream(),
            Some(_) => self.failed,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.pipeline {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::io::Write;
    use std::task::Waker;

    use super::*;

    /// A body of fixed chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    /// Drives the body to its end, returning the output size and the peak of
    /// [`RewrittenBody::buffered`] observed between frames.
    fn drain(mut body: RewrittenBody<Chunks>) -> (usize, usize) {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut out, mut peak) = (0, 0);
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    out += frame.into_data().map_or(0, |d| d.len());
                    peak = peak.max(body.buffered());
                }
                Poll::Ready(Some(Err(err))) => panic!("body error: {err}"),
                Poll::Ready(None) => return (out, peak),
                Poll::Pending => panic!("fixed chunks never wait"),
            }
        }
    }

    fn rules() -> Arc<UrlRules> {
        Arc::new(UrlRules::new(
            "/api/v1/namespaces/ns/pods/p/proxy",
            "10.0.0.1:80",
            "h",
        ))
    }

    fn page(len: usize) -> Vec<u8> {
        let unit = "<a href=\"/x\">x</a><img src=\"/i.png\"><p>some text here</p>\n";
        unit.repeat(len / unit.len() + 1).into_bytes()
    }

    #[test]
    fn internal_buffers_stay_bounded_with_large_frames() {
        // 8 MiB of dense HTML arriving as 1 MiB frames, identity and gzip.
        let html = page(8 << 20);
        let frames =
            |data: &[u8]| Chunks(data.chunks(1 << 20).map(Bytes::copy_from_slice).collect());
        let body = RewrittenBody::html(
            frames(&html),
            Coding::Identity,
            &rules(),
            &RewriteOptions::default(),
        );
        let (out, peak) = drain(body);
        assert!(out > html.len());
        // One frame in, its rewritten form out: bounded by the frame, not the body.
        assert!(peak < 4 << 20, "identity peak {peak}");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&html).unwrap();
        let wire = gz.finish().unwrap();
        let body = RewrittenBody::html(
            frames(&wire),
            Coding::Gzip,
            &rules(),
            &RewriteOptions::default(),
        );
        let (_, peak) = drain(body);
        assert!(peak < 1 << 20, "gzip peak {peak}");
    }

    #[test]
    fn a_compression_bomb_is_decoded_in_bounded_steps() {
        // 256 MiB of one byte compresses to ~250 KiB; it arrives as one frame.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![b'a'; 1 << 20];
        for _ in 0..256 {
            gz.write_all(&block).unwrap();
        }
        let wire = gz.finish().unwrap();
        let body = RewrittenBody::html(
            Chunks(VecDeque::from([Bytes::from(wire)])),
            Coding::Gzip,
            &rules(),
            &RewriteOptions::default(),
        );
        let (out, peak) = drain(body);
        assert!(out > 0);
        assert!(peak < 2 << 20, "peak {peak}");
    }

    #[test]
    fn an_oversized_tag_stops_rewriting_instead_of_buffering() {
        // A single 4 MiB link split across frames (lol_html must buffer a tag it may
        // rewrite), then another link.
        let mut html = b"<a href=\"/before\">b</a><a title=\"".to_vec();
        html.extend(std::iter::repeat_n(b'x', 4 << 20));
        html.extend_from_slice(b"\" href=\"/big\">t</a><a href=\"/after\">a</a>");
        let options = RewriteOptions {
            max_html_buffer: 256 << 10,
            ..RewriteOptions::default()
        };
        let frames = Chunks(html.chunks(64 << 10).map(Bytes::copy_from_slice).collect());
        let mut body = RewrittenBody::html(frames, Coding::Identity, &rules(), &options);
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("<a href=\"/api/v1/namespaces/ns/pods/p/proxy/before\">"));
        // Past the cap the page passes through unchanged, byte for byte.
        assert!(text.ends_with("\" href=\"/big\">t</a><a href=\"/after\">a</a>"));
        assert_eq!(
            text.len(),
            html.len() + "/api/v1/namespaces/ns/pods/p/proxy".len()
        );
    }
}
