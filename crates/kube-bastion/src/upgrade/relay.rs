//! Response bodies of the upgrade path: a fixed body (Status errors, empty 101) or a
//! backend error response relayed under a deadline and a size cap.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::handshake::Framing;

/// The longest chunk-size line (with extensions) or trailer section accepted while relaying
/// a chunked error body.
const MAX_CHUNK_LINE: usize = 4096;

/// The body of a response produced by the upgrade handler.
///
/// Either a fixed body (a Status error, the empty body of a `101`) or the body of a backend
/// error response (status 400 or more) streamed to the client; the relay stops with an error
/// when the backend is slower than the deadline or sends more than the cap.
#[derive(Debug)]
pub(crate) struct UpgradeBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Relay {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        length: Option<u64>,
    },
}

impl UpgradeBody {
    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A body of exactly these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// Relays a backend body read from `io` (after the head; `buffered` are the bytes that
    /// already arrived with it). Everything is finished within `deadline`; more than `cap`
    /// bytes of body end the relay with an error. `io` (and `hold`, e.g. a balancer guard)
    /// are dropped at the end, which closes the connection.
    pub(crate) fn relay<S, G>(
        io: S,
        hold: G,
        buffered: BytesMut,
        framing: Framing,
        deadline: Duration,
        cap: u64,
    ) -> Self
    where
        S: AsyncRead + Unpin + Send + 'static,
        G: Send + 'static,
    {
        let length = match framing {
            Framing::Empty => return Self::empty(),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let _hold = hold;
            let mut reader = BodyReader {
                io,
                buf: buffered,
                tx: &tx,
                sent: 0,
                cap,
            };
            let result = match tokio::time::timeout(deadline, reader.run(framing)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "backend error response not finished in time",
                )),
            };
            if let Err(e) = result {
                // The receiver may be gone already; nothing else to do then.
                let _ = tx.send(Err(e)).await;
            }
        });
        Self {
            inner: Inner::Relay { rx, length },
        }
    }
}

impl Body for UpgradeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Relay { rx, .. } => rx
                .poll_recv(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Relay {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            Inner::Relay { length: None, .. } => SizeHint::default(),
        }
    }
}

struct BodyReader<'a, S> {
    io: S,
    buf: BytesMut,
    tx: &'a mpsc::Sender<io::Result<Bytes>>,
    sent: u64,
    cap: u64,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S: AsyncRead + Unpin> BodyReader<'_, S> {
    async fn run(&mut self, framing: Framing) -> io::Result<()> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.copy_exact(n).await,
            Framing::UntilClose => loop {
                if self.buf.is_empty() && self.fill().await? == 0 {
                    return Ok(());
                }
                let data = self.buf.split().freeze();
                self.send(data).await?;
            },
            Framing::Chunked => self.copy_chunked().await,
        }
    }

    /// Reads more bytes into the buffer; 0 means end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(8192);
        self.io.read_buf(&mut self.buf).await
    }

    async fn send(&mut self, data: Bytes) -> io::Result<()> {
        self.sent += data.len() as u64;
        if self.sent > self.cap {
            return Err(invalid("backend error response body too large"));
        }
        self.tx
            .send(Ok(data))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }

    async fn copy_exact(&mut self, mut remaining: u64) -> io::Result<()> {
        while remaining > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = self
                .buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let data = self.buf.split_to(take).freeze();
            remaining -= take as u64;
            self.send(data).await?;
        }
        Ok(())
    }

    async fn copy_chunked(&mut self) -> io::Result<()> {
        loop {
            let (skip, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        if self.fill().await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    _ => return Err(invalid("invalid chunk size line")),
                }
            };
            self.buf.advance(skip);
            if size == 0 {
                // Trailers are not relayed; the connection closes after the body anyway.
                return Ok(());
            }
            self.copy_exact(size).await?;
            while self.buf.len() < 2 {
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(invalid("missing CRLF after chunk"));
            }
            self.buf.advance(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    async fn relay_bytes(
        buffered: &[u8],
        rest: &'static [u8],
        framing: Framing,
        cap: u64,
    ) -> Result<Bytes, io::Error> {
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let _ = a.write_all(rest).await;
            // Hold the connection open a moment, then close it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        let body = UpgradeBody::relay(
            b,
            (),
            BytesMut::from(buffered),
            framing,
            Duration::from_secs(5),
            cap,
        );
        body.collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn relays_exact_length_and_ignores_what_follows() {
        let got = relay_bytes(
            b"abc",
            b"defGET /next HTTP/1.1\r\n",
            Framing::Length(6),
            1024,
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"abcdef");
    }

    #[tokio::test]
    async fn short_length_body_is_an_error() {
        let err = relay_bytes(b"abc", b"", Framing::Length(6), 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn decodes_chunked() {
        let got = relay_bytes(
            b"5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n",
            Framing::Chunked,
            1024,
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"hello world");
    }

    #[tokio::test]
    async fn bad_chunks_are_errors() {
        for raw in [&b"zz\r\nhello\r\n0\r\n\r\n"[..], b"5\r\nhelloXX0\r\n\r\n"] {
            let err = relay_bytes(raw, b"", Framing::Chunked, 1024)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{raw:?}");
        }
    }

    #[tokio::test]
    async fn until_close_reads_to_the_end() {
        let got = relay_bytes(b"", b"all of it", Framing::UntilClose, 1024)
            .await
            .unwrap();
        assert_eq!(&got[..], b"all of it");
    }

    #[tokio::test]
    async fn cap_stops_the_relay() {
        let err = relay_bytes(b"", b"0123456789", Framing::UntilClose, 4)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn deadline_stops_a_slow_backend() {
        let (_a, b) = tokio::io::duplex(1024);
        let body = UpgradeBody::relay(
            b,
            (),
            BytesMut::new(),
            Framing::Length(10),
            Duration::from_millis(50),
            1024,
        );
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn fixed_bodies() {
        let body = UpgradeBody::full("{}");
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
        let empty = UpgradeBody::empty();
        assert!(empty.is_end_stream());
        assert!(UpgradeBody::full("").is_end_stream());
    }
}
