//! Header rewriting: `Location` (as kube-apiserver), plus `Content-Location`, the `Path` of
//! `Set-Cookie` and the `Refresh` header (our additions, each behind an option).

use http::header::{CONTENT_LOCATION, HeaderMap, HeaderName, HeaderValue, LOCATION, SET_COOKIE};

use super::url::join;
use super::{RewriteContext, html};
use crate::Status;

/// The non-standard `Refresh` response header (same syntax as `<meta http-equiv=refresh>`).
const REFRESH: HeaderName = HeaderName::from_static("refresh");

/// What header rewriting found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderOutcome {
    /// A non-empty `Location` was present: upstream then skips HTML rewriting.
    pub(crate) had_location: bool,
}

/// Rewrites the response headers in place.
///
/// An unparsable `Location` is kube-apiserver's 500 `InternalError`; every other header that
/// fails to parse is left as it is.
pub(crate) fn rewrite_headers(
    ctx: &RewriteContext,
    headers: &mut HeaderMap,
) -> Result<HeaderOutcome, Status> {
    let mut outcome = HeaderOutcome {
        had_location: false,
    };
    // Go's `Header.Get` reads the first value; `Header.Set` replaces them all.
    if let Some(location) = headers.get(LOCATION).filter(|v| !v.is_empty()) {
        outcome.had_location = true;
        let rewritten = ctx.rules.rewrite(location.as_bytes()).map_err(|err| {
            Status::new(
                500,
                Some("InternalError"),
                format!("Internal error occurred: error trying to parse Location header: {err}"),
            )
        })?;
        // A parsed URL never holds control bytes, so this cannot fail; keep the header if
        // it somehow does.
        if let Ok(value) = HeaderValue::from_bytes(&rewritten) {
            headers.insert(LOCATION, value);
        }
    }
    if ctx.options.content_location {
        rewrite_all(headers, CONTENT_LOCATION, |v| ctx.rules.rewrite(v).ok());
    }
    if ctx.options.srcset_and_meta_refresh {
        rewrite_all(headers, REFRESH, |v| {
            let text = std::str::from_utf8(v).ok()?;
            html::rewrite_refresh(&ctx.rules, text).map(String::into_bytes)
        });
    }
    if ctx.options.set_cookie_path {
        let prefix = ctx.rules.prefix.as_bytes();
        rewrite_all(headers, SET_COOKIE, |v| rewrite_cookie_path(prefix, v));
    }
    Ok(outcome)
}

/// Applies `rewrite` to every value of `name`, keeping order; values it returns `None` for
/// (or that would not be valid header values) stay as they are.
fn rewrite_all(
    headers: &mut HeaderMap,
    name: HeaderName,
    rewrite: impl Fn(&[u8]) -> Option<Vec<u8>>,
) {
    if !headers.contains_key(&name) {
        return;
    }
    let mut changed = false;
    let values: Vec<HeaderValue> = headers
        .get_all(&name)
        .iter()
        .map(|value| {
            match rewrite(value.as_bytes())
                .filter(|new| new.as_slice() != value.as_bytes())
                .and_then(|new| HeaderValue::from_bytes(&new).ok())
            {
                Some(new) => {
                    changed = true;
                    new
                }
                None => value.clone(),
            }
        })
        .collect();
    if changed {
        headers.remove(&name);
        for value in values {
            headers.append(&name, value);
        }
    }
}

/// Puts an absolute `Path` attribute of a `Set-Cookie` value under `prefix`, so the browser
/// sends the cookie back through the proxy. A path already under the prefix (segment-wise)
/// and values without a `Path` are unchanged (the browser's default path is the proxied
/// request's directory, which is already under the prefix).
pub(crate) fn rewrite_cookie_path(prefix: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    if prefix.is_empty() {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut start = 0;
    // The first `;`-separated item is `name=value` and never an attribute.
    let mut first = true;
    for item in value.split(|&c| c == b';') {
        let item_start = start;
        start += item.len() + 1;
        if std::mem::take(&mut first) {
            continue;
        }
        let Some(eq) = item.iter().position(|&c| c == b'=') else {
            continue;
        };
        if !item[..eq].trim_ascii().eq_ignore_ascii_case(b"path") {
            continue;
        }
        let raw_value = &item[eq + 1..];
        let leading = raw_value.len() - raw_value.trim_ascii_start().len();
        let path = raw_value.trim_ascii();
        if !path.starts_with(b"/") || is_under(prefix, path) {
            continue;
        }
        let mut new_path = join(prefix, path);
        if path.ends_with(b"/") && !new_path.ends_with(b"/") {
            new_path.push(b'/');
        }
        let path_start = item_start + eq + 1 + leading;
        let path_end = path_start + path.len();
        let buf = out.get_or_insert_with(|| value.to_vec());
        // Earlier edits shift offsets; only the last `Path` attribute counts for browsers,
        // but we rewrite each, so rebuild from the current buffer by offset delta.
        let delta = buf.len() as isize - value.len() as isize;
        let (s, e) = (
            (path_start as isize + delta) as usize,
            (path_end as isize + delta) as usize,
        );
        buf.splice(s..e, new_path);
    }
    out
}

/// `path` equals `prefix` or continues it at a segment boundary.
fn is_under(prefix: &[u8], path: &[u8]) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/' || prefix.ends_with(b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(value: &str) -> Option<String> {
        rewrite_cookie_path(
            b"/api/v1/namespaces/ns/services/svc/proxy",
            value.as_bytes(),
        )
        .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn cookie_paths() {
        assert_eq!(
            cookie("sid=1; Path=/; HttpOnly").as_deref(),
            Some("sid=1; Path=/api/v1/namespaces/ns/services/svc/proxy/; HttpOnly")
        );
        assert_eq!(
            cookie("sid=1; path = /app ;Secure").as_deref(),
            Some("sid=1; path = /api/v1/namespaces/ns/services/svc/proxy/app ;Secure")
        );
        assert_eq!(
            cookie("a=b; Path=/x; Path=/y/").as_deref(),
            Some(
                "a=b; Path=/api/v1/namespaces/ns/services/svc/proxy/x; \
                 Path=/api/v1/namespaces/ns/services/svc/proxy/y/"
            )
        );
        assert_eq!(cookie("sid=1; HttpOnly"), None);
        assert_eq!(cookie("path=/x"), None);
        assert_eq!(cookie("sid=1; Path=rel"), None);
        assert_eq!(
            cookie("sid=1; Path=/api/v1/namespaces/ns/services/svc/proxy/x"),
            None
        );
        assert_eq!(
            cookie("sid=1; Path=/api/v1/namespaces/ns/services/svc/proxyfoo").as_deref(),
            Some(
                "sid=1; Path=/api/v1/namespaces/ns/services/svc/proxy/api/v1/namespaces/ns/\
                 services/svc/proxyfoo"
            )
        );
    }
}
