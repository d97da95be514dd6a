//! Routing, target ids, path mapping, authorization attributes and Status format, checked
//! against the upstream vectors in `tests/vectors/` and with property tests.

#[path = "../support/mod.rs"]
mod support;

mod authz;
mod errors;
mod ids;
mod joins;
mod mapping;
mod props;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use kube_bastion_core::{ProxyRequest, Route};

/// Percent-encodes every byte but ASCII letters, digits, `-`, `.` and `_` (and `/` when
/// `keep_slash`), so any string survives a trip through a request path.
fn pct(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Routes `method path?query` with the given headers.
fn route(method: &str, path: &str, query: &str, headers: &[(&str, &str)]) -> Route {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let uri: Uri = if query.is_empty() {
        path.parse()
    } else {
        format!("{path}?{query}").parse()
    }
    .expect("uri");
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    ProxyRequest::route(&method, &uri, &map)
}

/// Like [`route`], for a path that must be a proxy route.
fn proxy(method: &str, path: &str, query: &str) -> ProxyRequest {
    match route(method, path, query, &[]) {
        Route::Proxy(request) => request,
        Route::NotProxy => panic!("{method} {path} should be a proxy route"),
    }
}

/// A JSON string field, panicking with context when absent.
fn s<'a>(row: &'a serde_json::Value, field: &str) -> &'a str {
    row[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {row}"))
}
