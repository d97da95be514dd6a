//! URL rewriting on arbitrary bytes: Go's `url.Parse`/`String`, `path.Clean`/`Join` and the
//! rewrite rule on raw values and arbitrary prefixes; the `Location`, `Content-Location`,
//! `Refresh` and `Set-Cookie` headers of a response; `href`, `srcset` and refresh
//! `<meta>` attributes (attribute decoding and escaping) in a page.
//!
//! Input: `flags, value...` (with flag 0x40, `prefix \n value`).
#![no_main]

use http::header::{CONTENT_LOCATION, LOCATION, REFRESH, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use kube_bastion::RewriteOptions;
use kube_bastion::fuzzing::{PREFIX, header_map, rewrite, rewrite_url_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, value @ ..] = data else {
        return;
    };
    let flags = *flags;
    if flags & 0x40 != 0 {
        // path.Join/path.Clean with an arbitrary prefix.
        let (prefix, value) = match value.iter().position(|&b| b == b'\n') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b"/a/../b/"[..]),
        };
        let _ = rewrite_url_bytes(&String::from_utf8_lossy(prefix), value);
        return;
    }
    let rewritten = rewrite_url_bytes(PREFIX, value);
    if let Ok(url) = &rewritten {
        assert!(
            !url.iter().any(|b| b.is_ascii_control()),
            "control byte in {url:?}"
        );
    }

    let mut options = RewriteOptions::default();
    options.srcset_and_meta_refresh = flags & 0x20 == 0;
    let public_origin = flags & 0x10 != 0;
    if let Ok(v) = HeaderValue::from_bytes(value) {
        let mut headers = HeaderMap::new();
        if flags & 1 != 0 {
            headers.insert(LOCATION, v.clone());
        }
        if flags & 2 != 0 {
            headers.insert(CONTENT_LOCATION, v.clone());
        }
        if flags & 4 != 0 {
            headers.insert(REFRESH, v.clone());
        }
        if flags & 8 != 0 {
            headers.append(SET_COOKIE, v.clone());
        }
        let mut cookie = b"sid=1; Path=".to_vec();
        cookie.extend_from_slice(value);
        headers.append(
            SET_COOKIE,
            HeaderValue::from_bytes(&cookie).expect("valid as value is"),
        );
        let had_location = flags & 1 != 0 && !value.is_empty();
        match rewrite(headers, b"", 0, options.clone(), public_origin) {
            Err(message) => assert!(had_location && rewritten.is_err(), "{message}"),
            Ok(out) => {
                if had_location && !public_origin {
                    let location = out.headers.get(LOCATION).map(|v| v.as_bytes());
                    assert_eq!(
                        location,
                        rewritten.as_deref().ok(),
                        "Location not rewritten"
                    );
                }
                // Our cookie keeps its name and value; a changed path without `..` is under
                // the prefix.
                let ours = out
                    .headers
                    .get_all(SET_COOKIE)
                    .iter()
                    .last()
                    .expect("a cookie");
                let ours = ours.as_bytes();
                assert!(ours.starts_with(b"sid=1; Path="), "cookie {ours:?}");
                let path = ours[b"sid=1; Path=".len()..].trim_ascii();
                let plain = !value.contains(&b';') && !value.windows(2).any(|w| w == b"..");
                if plain && path != value.trim_ascii() {
                    assert!(path.starts_with(PREFIX.as_bytes()), "cookie path {path:?}");
                }
            }
        }
    }

    // The same value in the URL attributes of a page (only `"` escaped, so references in
    // the value reach the attribute decoder).
    let mut attribute = Vec::new();
    for &b in value {
        match b {
            b'"' => attribute.extend_from_slice(b"&quot;"),
            b => attribute.push(b),
        }
    }
    let mut page = b"<img src=\"".to_vec();
    for piece in [
        &attribute[..],
        b"\" srcset=\"",
        &attribute,
        b"\"><meta http-equiv=refresh content=\"",
        &attribute,
        b"\"><a href=\"",
        &attribute,
        b"\">x</a>",
    ] {
        page.extend_from_slice(piece);
    }
    let headers = header_map(b"content-type: text/html; charset=utf-8");
    let out = rewrite(headers, &page, (flags & 0x80) >> 4, options, public_origin);
    let out = out.expect("no Location header, no Status");
    assert!(out.rewriting);
    assert!(out.body.is_ok(), "identity HTML failed: {:?}", out.body);
});
