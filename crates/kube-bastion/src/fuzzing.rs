//! Entry points for cargo-fuzz (feature `fuzzing`); not a public API.
//!
//! The parsers that read client or backend bytes live in private modules, so these functions
//! drive them through the same entry points the proxy uses: [`upgrade_exchange`] runs
//! `proxy_upgrade` against an in-memory backend (request head encoding, response head
//! parsing, verdict, framing and the relay of error bodies), [`rewrite`] runs
//! `rewrite_response` (URL, `Location`, `Set-Cookie`, `Refresh` and the streaming HTML
//! rewriter behind gzip/deflate) and [`rewrite_url_bytes`] the URL rule on raw bytes. Input
//! split points are chosen by a `split` byte so that every read or frame boundary is reached.
//! [`strip_credentials`], [`extra_key_round_trip`] and [`unescape_extra_key`] are the
//! identity-header rules of front-proxy authentication and forwarding.
//! None of them may panic, whatever the input; outcomes are returned for the targets'
//! invariants.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ResourceKind;
use crate::rewrite::{RewriteContext, RewriteOptions, UrlRules, rewrite_response};
use crate::upgrade::{UpgradeOptions, UpgradeRequest, proxy_upgrade};

/// The proxy prefix of the pod request every rewrite runs for.
pub const PREFIX: &str = "/api/v1/namespaces/ns/pods/web/proxy";
/// The backend address the rewrite context was dialed at.
pub const BACKEND: &str = "10.1.2.3:8080";
/// The `Host` header of the rewrite context.
pub const REQUEST_HOST: &str = "k8s.example:6443";

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Cuts `data` into non-empty pieces: one piece when `split` is 0, else pseudo-random sizes
/// from 1 to `split`.
pub fn pieces(data: &[u8], split: u8) -> Vec<Bytes> {
    if split == 0 {
        return if data.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::copy_from_slice(data)]
        };
    }
    let mut state = u32::from(split).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (1 + state % u32::from(split)) as usize;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(Bytes::copy_from_slice(piece));
        rest = tail;
    }
    out
}

/// Parses `name: value` lines (separated by `\n`) into headers, skipping invalid lines.
pub fn header_map(raw: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in raw.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// The proxy's credential stripping (`Authorization`, `Impersonate-*`, `X-Remote-*`, the
/// WebSocket bearer protocol, any of them spelled with `_`) with the default options.
pub fn strip_credentials(headers: &mut HeaderMap) {
    crate::headers::strip_credentials(headers, &crate::HeaderOptions::default());
}

/// A front-proxy extra-attribute key as the proxy writes it into a header name
/// (`X-Remote-Extra-<escaped key>`) and as a receiving front-proxy authenticator reads it
/// back (header names are lower case on the wire of HTTP/2 and in `http`).
pub fn extra_key_round_trip(key: &str) -> String {
    crate::authn::unescape_extra_key(&crate::headers::escape_extra_key(key).to_ascii_lowercase())
}

/// A front proxy's extra-attribute key suffix read as upstream's `unescapeExtraKey` does.
pub fn unescape_extra_key(encoded: &str) -> String {
    crate::authn::unescape_extra_key(encoded)
}

/// A backend connection in memory: reads return the given pieces one at a time, then end of
/// stream; writes are recorded.
struct MemoryBackend {
    input: VecDeque<Bytes>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for MemoryBackend {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(piece) = self.input.front_mut() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece.split_to(n));
            if piece.is_empty() {
                self.input.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemoryBackend {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the client got from one upgrade exchange.
#[derive(Debug)]
pub struct Exchange {
    /// The bytes written to the backend (the encoded request head, or nothing).
    pub written: Vec<u8>,
    /// The status the client got.
    pub status: StatusCode,
    /// The headers the client got.
    pub headers: HeaderMap,
    /// The body the client got, or the kind of the error that ended it.
    pub body: Result<Bytes, io::ErrorKind>,
}

/// Runs `proxy_upgrade` with default options for an upgrade request, against a backend
/// that answers `response` (cut into reads by `split`, see [`pieces`]) and then closes.
pub fn upgrade_exchange(
    method: Method,
    path_and_query: &str,
    authority: &str,
    headers: HeaderMap,
    response: &[u8],
    split: u8,
) -> Exchange {
    let written = Arc::new(Mutex::new(Vec::new()));
    let backend = MemoryBackend {
        input: pieces(response, split).into(),
        written: Arc::clone(&written),
    };
    let request = UpgradeRequest {
        method,
        path_and_query: path_and_query.to_owned(),
        authority: authority.to_owned(),
        headers,
    };
    let (status, headers, body) = RUNTIME.with(|rt| {
        rt.block_on(async {
            let client = hyper::upgrade::on(http::Request::new(()));
            let options = UpgradeOptions::default();
            let response = proxy_upgrade(client, request, backend, &options, ()).await;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.kind());
            // Let a tunnel task (after a 101) see that the client is gone and end.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            (parts.status, parts.headers, body)
        })
    });
    let written = std::mem::take(&mut *written.lock().unwrap_or_else(PoisonError::into_inner));
    Exchange {
        written,
        status,
        headers,
        body,
    }
}

/// How the backend's error response (status 502) delimits its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFraming {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
    /// Neither: the body runs until the backend closes.
    UntilClose,
    /// The request was `HEAD`: no body whatever follows.
    Head,
}

/// Relays a backend error response with this framing and `body` (the bytes after the head,
/// cut into reads by `split`) through `proxy_upgrade`; returns what the client got.
pub fn relay_error_body(framing: ErrorFraming, body: &[u8], split: u8) -> Exchange {
    let mut response = b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n".to_vec();
    match framing {
        ErrorFraming::Chunked => response.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ErrorFraming::Length(n) => {
            response.extend_from_slice(format!("content-length: {n}\r\n").as_bytes())
        }
        ErrorFraming::UntilClose | ErrorFraming::Head => {}
    }
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(body);
    let method = if framing == ErrorFraming::Head {
        Method::HEAD
    } else {
        Method::GET
    };
    let headers = header_map(b"upgrade: websocket\nconnection: Upgrade");
    upgrade_exchange(method, "/shell", BACKEND, headers, &response, split)
}

/// The URL rule of the rewrite module (Go's `url.Parse`, the rewrite rule, `path.Join`/`path.Clean` and
/// `(*url.URL).String()`) on raw bytes, with the error rendered as the client would see it
/// (Go's `strconv.Quote` of the URL).
pub fn rewrite_url_bytes(prefix: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
    UrlRules::new(prefix, BACKEND, REQUEST_HOST)
        .rewrite(raw)
        .map_err(|e| e.to_string())
}

/// A backend response body of fixed pieces.
struct Pieces(VecDeque<Bytes>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A response after [`rewrite`].
#[derive(Debug)]
pub struct Rewritten {
    /// Whether `rewrite::may_rewrite` said the response could change.
    pub may_rewrite: bool,
    /// The rewritten headers.
    pub headers: HeaderMap,
    /// Whether the body went through the HTML rewriter.
    pub rewriting: bool,
    /// The rewritten body, or the error that ended it.
    pub body: Result<Vec<u8>, String>,
}

/// Runs `rewrite_response` for a `pods/proxy` request (see [`PREFIX`]) on a 200 response
/// with these headers and `body` cut into frames by `split`; `Err` is the Status message.
pub fn rewrite(
    headers: HeaderMap,
    body: &[u8],
    split: u8,
    options: RewriteOptions,
    public_origin: bool,
) -> Result<Rewritten, String> {
    let mut ctx = RewriteContext::new(PREFIX, BACKEND, REQUEST_HOST)
        .with_kind(ResourceKind::Pod)
        .with_options(options);
    if public_origin {
        ctx = ctx.with_public_origin("https", "public.example");
    }
    let may_rewrite = crate::rewrite::may_rewrite(&headers);
    let mut response = Response::new(Pieces(pieces(body, split).into()));
    *response.headers_mut() = headers;
    let response = rewrite_response(&ctx, response).map_err(|s| s.message().to_owned())?;
    let rewriting = response.body().is_rewriting();
    let (parts, mut body) = response.into_parts();
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let body = loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(e))) => break Err(e.to_string()),
            Poll::Ready(None) => break Ok(out),
            Poll::Pending => break Err("body pending on an in-memory backend".to_owned()),
        }
    };
    Ok(Rewritten {
        may_rewrite,
        headers: parts.headers,
        rewriting,
        body,
    })
}
