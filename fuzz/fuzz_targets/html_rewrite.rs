//! The streaming HTML rewriter behind `rewrite_response`, on arbitrary bytes: any charset
//! label, `Content-Encoding` identity, gzip, deflate, br or unknown, the body compressed by
//! the harness or raw (corrupt streams), cut into frames at fuzz-chosen points, small and
//! default rewriter memory caps. Errors are fine, panics are not; a well-formed compressed
//! page must come out decodable and equal to the same page rewritten uncompressed in one
//! frame.
//!
//! Input: `flags, split, page bytes...` (split 128 and above: 1 KiB rewriter cap).
#![no_main]

use http::header::CONTENT_LENGTH;
use std::io::{self, Read, Write};

use flate2::Compression;
use kube_bastion::RewriteOptions;
use kube_bastion::fuzzing::{header_map, rewrite};
use libfuzzer_sys::fuzz_target;

const CODINGS: [&str; 5] = ["", "identity", "gzip", "deflate", "br"];
const CHARSETS: [&str; 6] = [
    "",
    "; charset=utf-8",
    "; charset=ISO-8859-1",
    ";charset=\"windows-1252\"",
    "; charset=utf-16le",
    "; charset=shift_jis",
];

/// Compresses `data` with a `Content-Encoding` (`gzip`, `deflate`; anything else is returned
/// as is), as a backend would.
fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    let result = match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(data).and_then(|()| e.finish())
        }
        "deflate" => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
            e.write_all(data).and_then(|()| e.finish())
        }
        _ => Ok(data.to_vec()),
    };
    result.expect("compressing into memory")
}

/// Decompresses a body as a client would (multi-member gzip, raw deflate).
fn decompress(coding: &str, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?,
        "deflate" => flate2::read::DeflateDecoder::new(data).read_to_end(&mut out)?,
        _ => return Ok(data.to_vec()),
    };
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let [flags, split, page @ ..] = data else {
        return;
    };
    let coding = CODINGS[usize::from(flags & 7) % CODINGS.len()];
    let charset = CHARSETS[usize::from(flags >> 3 & 7) % CHARSETS.len()];
    let raw = flags & 0x40 != 0; // the body is sent as is, whatever the coding says
    let mut options = RewriteOptions::default();
    options.srcset_and_meta_refresh = flags & 0x80 == 0;
    let small = split & 0x80 != 0; // a 1 KiB cap: lol_html may give up on a tag
    if small {
        options.max_html_buffer = 1024;
    }
    let body = if raw {
        page.to_vec()
    } else {
        compress(coding, page)
    };
    let mut head = format!(
        "content-type: text/html{charset}\ncontent-length: {}",
        body.len()
    );
    if !coding.is_empty() {
        head.push_str("\ncontent-encoding: ");
        head.push_str(coding);
    }
    let out = rewrite(
        header_map(head.as_bytes()),
        &body,
        *split,
        options.clone(),
        false,
    )
    .expect("no Location header, no Status");
    assert!(out.may_rewrite);
    if coding == "br" {
        assert!(!out.rewriting && out.headers.contains_key(CONTENT_LENGTH));
        assert_eq!(out.body.as_deref(), Ok(&body[..]));
        return;
    }
    assert!(out.rewriting || body.is_empty());
    assert!(!out.rewriting || !out.headers.contains_key(CONTENT_LENGTH));
    match &out.body {
        Ok(bytes) if raw || small => {
            if !bytes.is_empty() {
                assert!(
                    decompress(coding, bytes).is_ok(),
                    "our {coding} output does not decode"
                );
            }
        }
        Ok(bytes) => {
            let decoded = decompress(coding, bytes).expect("our output decodes");
            let reference = rewrite(
                header_map(b"content-type: text/html"),
                page,
                0,
                options,
                false,
            )
            .expect("no Status")
            .body
            .expect("identity page in one frame");
            assert_eq!(
                decoded, reference,
                "output depends on coding or frame boundaries"
            );
        }
        Err(e) => assert!(raw || small, "well-formed {coding} page failed: {e}"),
    }
});
