//! The backend half of an upgrade: the HTTP/1.1 request head written onto the raw
//! connection, the response head read back (bounded), and the decision it leads to.

use std::fmt;
use std::io;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most header lines a backend response head may have.
pub(crate) const MAX_HEADERS: usize = 128;

/// Serializes an HTTP/1.1 request head: request line, every header (values as bytes, one line
/// per value) and the blank line. `Host` is written first, as clients do; `host` is used
/// when `headers` has none.
///
/// `path_and_query` must be an origin-form target: `/` followed by visible ASCII or bytes of
/// 0x80 and above (a raw UTF-8 query, which the ordinary forwarding path passes on as it
/// came, as Go does); a space, a control character or DEL would let a crafted path inject
/// into the request line and is refused.
pub(crate) fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    host: &str,
    headers: &HeaderMap,
) -> Result<Vec<u8>, InvalidTarget> {
    let target_byte = |b: u8| b.is_ascii_graphic() || b >= 0x80;
    if !path_and_query.starts_with('/') || !path_and_query.bytes().all(target_byte) {
        return Err(InvalidTarget);
    }
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidTarget);
    }
    let mut out = Vec::with_capacity(256 + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match headers.get(HOST) {
        Some(value) => push_header(&mut out, HOST.as_str(), value),
        None if !host.is_empty() => {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => {}
    }
    for (name, value) in headers {
        if name == HOST {
            continue;
        }
        push_header(&mut out, name.as_str(), value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    // `HeaderValue` never holds CR, LF or NUL, so a value cannot end the line early.
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The request target or host contained bytes that cannot appear on an HTTP/1.1 request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidTarget;

/// A parsed backend response head.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    /// The status code.
    pub(crate) status: StatusCode,
    /// The headers, in order, values byte for byte.
    pub(crate) headers: HeaderMap,
}

/// Why a backend response head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The head did not end within the size limit.
    TooLarge(usize),
    /// The bytes are not an HTTP/1.x response head.
    Malformed(String),
    /// The backend closed the connection before the head was complete.
    Closed,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge(max) => write!(f, "response head larger than {max} bytes"),
            HeadError::Malformed(why) => write!(f, "malformed HTTP response: {why}"),
            HeadError::Closed => f.write_str("backend closed the connection before responding"),
            HeadError::Io(e) => write!(f, "error reading response: {e}"),
        }
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the head and its length in bytes.
pub(crate) fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let code = response
        .code
        .ok_or_else(|| HeadError::Malformed("no status code".into()))?;
    let status = StatusCode::from_u16(code)
        .map_err(|_| HeadError::Malformed(format!("invalid status code {code}")))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name".into()))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| HeadError::Malformed(format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(Some((ResponseHead { status, headers }, len)))
}

/// Reads from `io` until a complete response head is buffered (at most `max` bytes of head),
/// and returns it with the bytes that followed it (the start of the tunnel or of the body).
pub(crate) async fn read_response_head<S>(
    io: &mut S,
    max: usize,
) -> Result<(ResponseHead, BytesMut), HeadError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096.min(max.max(1)));
    loop {
        if let Some((head, len)) = parse_response_head(&buf)? {
            let rest = buf.split_off(len);
            return Ok((head, rest));
        }
        if buf.len() >= max {
            return Err(HeadError::TooLarge(max));
        }
        // Never read past the limit: the head must fit in `max` bytes.
        let room = max - buf.len();
        buf.reserve(room.min(8192));
        let n = (&mut *io)
            .take(room as u64)
            .read_buf(&mut buf)
            .await
            .map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
    }
}

/// What an upgrade becomes, given the backend's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `101 Switching Protocols`: the only answer that becomes a tunnel.
    Switch,
    /// Below 400 but not 101 (1xx, 2xx, 3xx including every redirect): never relayed, never
    /// followed; the client gets `invalid upgrade response` (CVE-2020-8559).
    Invalid,
    /// 400 or more: relayed to the client, then both connections close (CVE-2018-1002105).
    Relay,
}

/// The decision for a backend status on an upgrade request.
pub(crate) fn verdict(status: StatusCode) -> Verdict {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        Verdict::Switch
    } else if status.as_u16() < 400 {
        Verdict::Invalid
    } else {
        Verdict::Relay
    }
}

/// How the body of a relayed error response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD request, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the backend closes.
    UntilClose,
}

/// The body framing of a response to `method` (RFC 9112 section 6.3).
pub(crate) fn framing(method: &Method, head: &ResponseHead) -> Result<Framing, HeadError> {
    if method == Method::HEAD
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if head.headers.contains_key(TRANSFER_ENCODING) {
        let last = head
            .headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in head.headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| HeadError::Malformed("invalid Content-Length".into()))?;
            match length {
                Some(prev) if prev != n => {
                    return Err(HeadError::Malformed("conflicting Content-Length".into()));
                }
                _ => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> ResponseHead {
        parse_response_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn request_head_has_request_line_host_first_and_byte_values() {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("connection", HeaderValue::from_static("Upgrade"));
        headers.insert(HOST, HeaderValue::from_static("apiserver:6443"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-odd", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let out = encode_request_head(&Method::GET, "/shell?tty=1&x=%20", "10.1.2.3:80", &headers)
            .unwrap();
        let mut expected = b"GET /shell?tty=1&x=%20 HTTP/1.1\r\nhost: apiserver:6443\r\n\
            upgrade: websocket\r\nconnection: Upgrade\r\nx-forwarded-for: 10.0.0.1\r\nx-odd: caf"
            .to_vec();
        expected.extend_from_slice(b"\xe9\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn request_head_falls_back_to_the_given_host() {
        let out =
            encode_request_head(&Method::POST, "/", "10.1.2.3:80", &HeaderMap::new()).unwrap();
        assert_eq!(out, b"POST / HTTP/1.1\r\nhost: 10.1.2.3:80\r\n\r\n");
    }

    #[test]
    fn request_head_refuses_injection_in_the_target() {
        for target in [
            "/a b",
            "/a\r\nX-Evil: 1",
            "a",
            "",
            "/a\tb",
            "/a\u{7f}",
            "/\u{0}",
        ] {
            assert_eq!(
                encode_request_head(&Method::GET, target, "h", &HeaderMap::new()),
                Err(InvalidTarget),
                "{target:?}"
            );
        }
        assert_eq!(
            encode_request_head(&Method::GET, "/", "h\r\nx: y", &HeaderMap::new()),
            Err(InvalidTarget)
        );
    }

    #[test]
    fn request_head_passes_a_raw_utf8_query_byte_for_byte() {
        let out = encode_request_head(
            &Method::GET,
            "/ws?room=\u{e9}t\u{e9}",
            "h",
            &HeaderMap::new(),
        )
        .unwrap();
        assert!(out.starts_with("GET /ws?room=\u{e9}t\u{e9} HTTP/1.1\r\n".as_bytes()));
    }

    #[test]
    fn parses_a_101_and_keeps_what_follows() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n\x81\x02hi";
        let (head, len) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers["sec-websocket-accept"], "abc=");
        assert_eq!(&raw[len..], b"\x81\x02hi");
    }

    #[test]
    fn partial_heads_need_more() {
        assert!(
            parse_response_head(b"HTTP/1.1 101 Switching")
                .unwrap()
                .is_none()
        );
        assert!(parse_response_head(b"").unwrap().is_none());
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nA: b\r\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response_head(raw), Err(HeadError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn non_utf8_header_values_survive() {
        let h = head("HTTP/1.1 403 Forbidden\r\nX-Why: \u{e9}t\u{e9}\r\n\r\n");
        assert_eq!(h.headers["x-why"].as_bytes(), "\u{e9}t\u{e9}".as_bytes());
    }

    #[test]
    fn too_many_headers_is_malformed() {
        let mut raw = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert!(matches!(
            parse_response_head(raw.as_bytes()),
            Err(HeadError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn reads_a_head_split_over_many_reads() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [
                &b"HTTP/1.1 10"[..],
                b"1 Switching Protocols\r\nUpg",
                b"rade: x\r\n\r",
                b"\nrest",
            ] {
                a.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            a
        });
        let (head, rest) = read_response_head(&mut b, 1024).await.unwrap();
        assert_eq!(head.status, 101);
        let _a = writer.await.unwrap();
        // `rest` holds whatever arrived with the end of the head (possibly nothing yet).
        assert!(b"rest".starts_with(&rest));
    }

    #[tokio::test]
    async fn head_size_is_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        use tokio::io::AsyncWriteExt;
        let mut raw = b"HTTP/1.1 101 Switching Protocols\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 10_000));
        a.write_all(&raw).await.unwrap();
        let err = read_response_head(&mut b, 4096).await.unwrap_err();
        assert!(matches!(err, HeadError::TooLarge(4096)), "{err}");
    }

    #[tokio::test]
    async fn early_close_is_reported() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        a.write_all(b"HTTP/1.1 101 Swi").await.unwrap();
        drop(a);
        assert!(matches!(
            read_response_head(&mut b, 4096).await,
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(StatusCode::SWITCHING_PROTOCOLS), Verdict::Switch);
        for code in [
            100, 102, 200, 204, 206, 300, 301, 302, 303, 304, 307, 308, 399,
        ] {
            assert_eq!(
                verdict(StatusCode::from_u16(code).unwrap()),
                Verdict::Invalid,
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 426, 500, 502, 503, 599, 999] {
            assert_eq!(
                verdict(StatusCode::from_u16(code).unwrap()),
                Verdict::Relay,
                "{code}"
            );
        }
    }

    #[test]
    fn framing_rules() {
        let get = Method::GET;
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\n")
            )
            .unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 403 F\r\nContent-Length: 7, 7\r\n\r\n")
            )
            .unwrap(),
            Framing::Length(7)
        );
        assert_eq!(
            framing(&get, &head("HTTP/1.1 403 F\r\nContent-Length: 0\r\n\r\n")).unwrap(),
            Framing::Empty
        );
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 500 E\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n")
            )
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 500 E\r\nTransfer-Encoding: gzip\r\n\r\n")
            )
            .unwrap(),
            Framing::UntilClose
        );
        assert_eq!(
            framing(&get, &head("HTTP/1.1 500 E\r\n\r\n")).unwrap(),
            Framing::UntilClose
        );
        assert_eq!(
            framing(
                &Method::HEAD,
                &head("HTTP/1.1 500 E\r\nContent-Length: 5\r\n\r\n")
            )
            .unwrap(),
            Framing::Empty
        );
        assert_eq!(
            framing(&get, &head("HTTP/1.1 304 N\r\nContent-Length: 5\r\n\r\n")).unwrap(),
            Framing::Empty
        );
        for bad in [
            "Content-Length: 5, 6",
            "Content-Length: -1",
            "Content-Length: 0x10",
            "Content-Length: ",
        ] {
            let raw = format!("HTTP/1.1 500 E\r\n{bad}\r\n\r\n");
            assert!(framing(&get, &head(&raw)).is_err(), "{bad}");
        }
    }
}
