//! A backend's answer to an upgrade request (`read_response_head`, `parse_response_head`,
//! `verdict`, `framing` and the relay, through `proxy_upgrade`), cut into reads at
//! fuzz-chosen points: the client gets a `101`, a relayed error (400 or more) or the proxy's
//! own error, never a 1xx, 2xx or 3xx (CVE-2020-8559); an error always closes the connection
//! (CVE-2018-1002105), carries no hop-by-hop header and a body matching its Content-Length.
//!
//! Input: `flags, split, response bytes...`.
#![no_main]

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, StatusCode};
use kube_bastion::fuzzing::{BACKEND, header_map, upgrade_exchange};
use libfuzzer_sys::fuzz_target;

/// The Content-Length a client reads (all comma-separated values equal), if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let [flags, split, response @ ..] = data else {
        return;
    };
    let method = match flags % 3 {
        0 => Method::GET,
        1 => Method::POST,
        _ => Method::HEAD,
    };
    let protocol = if flags & 4 == 0 {
        "websocket"
    } else {
        "SPDY/3.1"
    };
    let headers = header_map(format!("upgrade: {protocol}\nconnection: Upgrade").as_bytes());
    let ex = upgrade_exchange(
        method.clone(),
        "/exec?command=sh",
        BACKEND,
        headers,
        response,
        *split,
    );

    let code = ex.status.as_u16();
    assert!(code == 101 || code >= 400, "client got {code}");
    if ex.status == StatusCode::SWITCHING_PROTOCOLS {
        assert_eq!(ex.body.as_deref(), Ok(&b""[..]));
        return;
    }
    assert_eq!(
        ex.headers.get(CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert!(!ex.headers.contains_key(TRANSFER_ENCODING));
    assert!(!ex.headers.contains_key(UPGRADE));
    if let Ok(body) = &ex.body {
        assert!(body.len() <= 1 << 20, "relayed {} bytes", body.len());
        if method != Method::HEAD
            && let Some(n) = content_length(&ex.headers)
        {
            assert_eq!(body.len() as u64, n, "body against Content-Length");
        }
    }
});
