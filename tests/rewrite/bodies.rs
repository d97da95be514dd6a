//! Backend bodies for the tests: fixed chunks, a channel fed by the test, and a lazily
//! generated page of any size.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// A body made of these chunks, then optional trailers.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

pub(crate) fn chunks<I, C>(chunks: I) -> Chunks
where
    I: IntoIterator<Item = C>,
    C: Into<Bytes>,
{
    Chunks {
        chunks: chunks.into_iter().map(Into::into).collect(),
        trailers: None,
    }
}

/// An empty body.
pub(crate) fn empty() -> Chunks {
    Chunks::default()
}

impl Chunks {
    pub(crate) fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// Splits `data` into chunks of `size` bytes.
pub(crate) fn split(data: &[u8], size: usize) -> Chunks {
    chunks(data.chunks(size).map(<[u8]>::to_vec))
}

/// A body whose chunks the test sends one by one; `Err` items end it with an error.
#[derive(Debug)]
pub(crate) struct Channel {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

pub(crate) fn channel() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Channel) {
    let (tx, rx) = mpsc::channel(4);
    (tx, Channel { rx })
}

impl Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// One repetition of a text-heavy page (a log or a report): a link per ~2 KiB.
pub(crate) fn text_unit() -> String {
    format!(
        "<p>{}</p><a href=\"/item/1\">next</a>\n",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(36)
    )
}

/// A page of `total` bytes (rounded up to whole units) generated as it is read, in chunks
/// of about `chunk` bytes: the whole page never exists in memory.
#[derive(Debug)]
pub(crate) struct Generated {
    remaining: usize,
    chunk: Bytes,
    head_sent: bool,
}

pub(crate) fn generated(total: usize, chunk: usize, unit: &str) -> Generated {
    let units = chunk.div_ceil(unit.len()).max(1);
    let chunk = Bytes::from(unit.repeat(units));
    Generated {
        remaining: total,
        chunk,
        head_sent: false,
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.head_sent {
            self.head_sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b"<!DOCTYPE html><html><head><title>big</title></head><body>",
            )))));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let chunk = self.chunk.clone();
        self.remaining = self.remaining.saturating_sub(chunk.len());
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}
