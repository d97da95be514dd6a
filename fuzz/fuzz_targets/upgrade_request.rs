//! The upgrade request head written to the backend (`encode_request_head` through
//! `proxy_upgrade`): whatever the method, target, authority and headers, the request is either
//! refused before a byte is written or written as exactly one request line, one line per
//! header value and one blank line, so nothing can be smuggled to the backend.
//!
//! Input: `method \0 path-and-query \0 authority \0 header lines (name: value\n...)`.
#![no_main]

use http::header::HOST;
use http::{Method, StatusCode};
use kube_bastion::fuzzing::{header_map, upgrade_exchange};
use libfuzzer_sys::fuzz_target;

const ANSWER: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno";

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(4, |&b| b == 0);
    let mut field = || fields.next().unwrap_or_default();
    let (method, target, authority, raw_headers) = (field(), field(), field(), field());
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let authority = String::from_utf8_lossy(authority);
    let headers = header_map(raw_headers);
    let ex = upgrade_exchange(
        method.clone(),
        &target,
        &authority,
        headers.clone(),
        ANSWER,
        0,
    );

    let valid_target =
        target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
    let valid_host = authority.bytes().all(|b| b.is_ascii_graphic());
    if !(valid_target && valid_host) {
        assert!(
            ex.written.is_empty(),
            "refused request wrote {:?}",
            ex.written
        );
        assert_eq!(ex.status, StatusCode::INTERNAL_SERVER_ERROR);
        return;
    }
    let head = &ex.written;
    let line = format!("{method} {target} HTTP/1.1\r\n");
    assert!(
        head.starts_with(line.as_bytes()),
        "request line of {head:?}"
    );
    // The first blank line is the end of what was written.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n");
    assert_eq!(end.map(|e| e + 4), Some(head.len()), "head {head:?}");
    // No bare CR or LF anywhere: every line break is a CRLF.
    let crlf = head.windows(2).filter(|w| *w == b"\r\n").count();
    let cr = head.iter().filter(|&&b| b == b'\r').count();
    let lf = head.iter().filter(|&&b| b == b'\n').count();
    assert!(cr == crlf && lf == crlf, "bare CR/LF in {head:?}");
    // One line per header value; Host once (the client's first, else the authority).
    let hosts = headers.get_all(HOST).iter().count();
    let expected = headers.len() - hosts + usize::from(hosts > 0 || !authority.is_empty());
    assert_eq!(crlf - 2, expected, "header lines of {head:?}");

    assert_eq!(ex.status, StatusCode::FORBIDDEN);
    if method != Method::HEAD {
        assert_eq!(ex.body.as_deref(), Ok(&b"no"[..]));
    }
});
