//! The body of a backend error response to an upgrade (`UpgradeBody::relay`: chunked,
//! Content-Length, until close, HEAD), with the backend's bytes cut into reads at
//! fuzz-chosen points. The result must not depend on the cuts; a length-delimited body is
//! exactly its length; an until-close body is everything; a well-formed chunked encoding
//! decodes to its data.
//!
//! Input: `kind, split, n0, n1, body bytes...` (`n0 n1`: big-endian length for kind 1, chunk
//! size seed for kind 4).
#![no_main]

use kube_bastion::fuzzing::{ErrorFraming, pieces, relay_error_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, split, n0, n1, body @ ..] = data else {
        return;
    };
    let (framing, wire) = match kind % 5 {
        0 => (ErrorFraming::Chunked, body.to_vec()),
        1 => (
            ErrorFraming::Length(u64::from(u16::from_be_bytes([*n0, *n1]))),
            body.to_vec(),
        ),
        2 => (ErrorFraming::UntilClose, body.to_vec()),
        3 => (ErrorFraming::Head, body.to_vec()),
        _ => {
            // A well-formed chunked encoding of `body`, chunk sizes from `n0`.
            let mut wire = Vec::new();
            for chunk in pieces(body, *n0) {
                wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                wire.extend_from_slice(&chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            (ErrorFraming::Chunked, wire)
        }
    };
    let whole = relay_error_body(framing, &wire, 0);
    let cut = relay_error_body(framing, &wire, (*split).max(1));
    assert_eq!(whole.status, 502);
    assert_eq!(cut.status, 502);
    match (&whole.body, &cut.body) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "body depends on read boundaries"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("result depends on read boundaries: {a:?} vs {b:?}"),
    }
    let got = whole.body.as_deref();
    match framing {
        ErrorFraming::Length(n) if (body.len() as u64) >= n => {
            assert_eq!(got, Ok(&body[..n as usize]));
        }
        ErrorFraming::Length(_) => assert!(got.is_err(), "short body accepted"),
        ErrorFraming::UntilClose => assert_eq!(got, Ok(body)),
        ErrorFraming::Head => assert_eq!(got, Ok(&b""[..])),
        ErrorFraming::Chunked if kind % 5 == 4 => assert_eq!(got, Ok(body)),
        ErrorFraming::Chunked => {
            if let Ok(decoded) = got {
                assert!(decoded.len() <= body.len());
            }
        }
    }
});
