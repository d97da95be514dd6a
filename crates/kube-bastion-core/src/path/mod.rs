//! The proxy route grammar.
//!
//! `/api/v1/namespaces/{ns}/pods/{id}/proxy[/{path}]`,
//! `/api/v1/namespaces/{ns}/services/{id}/proxy[/{path}]` and
//! `/api/v1/nodes/{id}/proxy[/{path}]` are proxy requests; every other path is
//! [`Route::NotProxy`] and is never an error.
//!
//! One parse ([`ProxyRequest::route`]) feeds authorization ([`ProxyRequest::attributes`]),
//! the pre-lookup checks ([`ProxyRequest::check`]), id parsing ([`ProxyRequest::target_id`]),
//! resolution ([`crate::resolve()`]) and the backend request target ([`ProxyRequest::plan`]).
//!
//! ```
//! use http::{HeaderMap, Method, Uri};
//! use kube_bastion_core::{Plan, ProxyRequest, Route};
//!
//! let uri = Uri::from_static("/api/v1/namespaces/ns/services/https:web:8443/proxy/a%20b/?x=1");
//! let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) else {
//!     panic!("a proxy route");
//! };
//! assert_eq!(request.namespace(), Some("ns"));
//! assert_eq!(request.raw_id(), "https:web:8443");
//! assert_eq!(request.prefix(), "/api/v1/namespaces/ns/services/https:web:8443/proxy");
//! assert!(request.check().is_ok());
//! assert_eq!(request.target_id().unwrap().name(), "web");
//! assert_eq!(
//!     request.plan(),
//!     Plan::Forward {
//!         path_and_query: "/a%20b/?x=1".to_owned(),
//!         forwarded_uri: "/api/v1/namespaces/ns/services/https:web:8443/proxy/a%20b/".to_owned(),
//!     }
//! );
//! ```
//!
//! # Decoding
//!
//! The path is percent-decoded as Go's `net/url` does before it is split, so `%3A` in an id
//! is a `:` and `%2F` in the sub-path is a real `/` (it reaches the backend as `/`, as
//! upstream). A path with an invalid escape (`%zz`, a truncated `%4`) is [`Route::NotProxy`]:
//! kube-apiserver's HTTP server refuses such a request line before routing, so the host's
//! own router decides. A namespace or id that does not decode to UTF-8 is also
//! [`Route::NotProxy`] (no Kubernetes object can have such a name); the sub-path is kept
//! as bytes and any byte reaches the backend, percent-encoded.

use std::borrow::Cow;

use http::{HeaderMap, Method, Uri};

use crate::go::{clean_in_place, push_quoted};
use crate::{Attributes, Status, TargetId};

mod encoding;
mod grammar;
#[cfg(test)]
mod tests;

use encoding::{
    PATH_SAFE, QUERY_SAFE, URI_SAFE, ascii_string, escape_path_bytes, has_dry_run, is_clean,
    percent_decode, push_escaped, push_uri_safe_bytes, valid_escapes,
};
pub use encoding::{escape_path, join_preserving_trailing_slash};
use grammar::*;

/// Which kind of object a proxy request targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `pods/proxy` (namespaced).
    Pod,
    /// `services/proxy` (namespaced).
    Service,
    /// `nodes/proxy` (cluster-scoped).
    Node,
}

impl ResourceKind {
    /// The plural resource name: `pods`, `services` or `nodes`.
    pub fn resource(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pods",
            ResourceKind::Service => "services",
            ResourceKind::Node => "nodes",
        }
    }

    /// The singular name used in upstream messages: `pod`, `service` or `node`.
    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pod",
            ResourceKind::Service => "service",
            ResourceKind::Node => "node",
        }
    }
}

/// The outcome of routing one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Route {
    /// Not a proxy route: the host's other handlers should see it, untouched.
    NotProxy,
    /// A proxy route (which may still be refused later: bad id, method, `dryRun`, ...).
    Proxy(ProxyRequest),
}

/// What to do with a proxy request once its target is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answer `301 Moved Permanently` with this `Location` and an empty body; the backend is
    /// not contacted (bare `.../proxy` on GET or HEAD).
    Redirect {
        /// The `Location` header value.
        location: String,
    },
    /// Send the request to the backend.
    Forward {
        /// The origin-form request target for the backend: encoded path plus `?` and the raw
        /// query when there is one.
        path_and_query: String,
        /// The value of `X-Forwarded-Uri` (not sent on upgrades).
        forwarded_uri: String,
    },
}

/// A parsed proxy request: kind, namespace, raw id, sub-path and raw query.
///
/// One parse serves routing, authorization ([`ProxyRequest::attributes`]) and resolution
/// ([`crate::resolve()`]), so the authorized name is always the resolved one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    kind: ResourceKind,
    method: Method,
    upgrade: bool,
    /// The decoded path up to and including `/proxy` (UTF-8 by construction), then the raw
    /// (still escaped) sub-path, then the raw query: one allocation for the three.
    text: String,
    /// Length of the prefix in `text`.
    prefix_len: usize,
    /// End of the raw sub-path in `text`; the query is the rest (empty: no query).
    rest_end: usize,
    /// Whether the raw sub-path holds (valid) escapes to decode.
    rest_escaped: bool,
    /// Byte range of the namespace in `text` (`None` for nodes).
    namespace: Option<(usize, usize)>,
    /// Byte range of the id in `text`.
    id: (usize, usize),
    /// Whether the namespace and id are neither `.` nor `..` (so the prefix is a clean path).
    prefix_clean: bool,
    /// Whether the prefix can be copied into a header value unchanged (see `is_uri_safe`).
    prefix_uri_safe: bool,
}

impl ProxyRequest {
    /// Routes a request from its method, URI and headers (headers decide whether it is an
    /// upgrade: any `Connection` value containing `upgrade`, case-insensitive, compared as
    /// bytes).
    ///
    /// Only `/api/v1/namespaces/{ns}/pods|services/{id}/proxy[/...]` and
    /// `/api/v1/nodes/{id}/proxy[/...]` are proxy routes, with non-empty `{ns}` and `{id}`;
    /// everything else, including a namespaced nodes path and paths with invalid
    /// percent-escapes, is [`Route::NotProxy`]. Never panics.
    pub fn route(method: &Method, uri: &Uri, headers: &HeaderMap) -> Route {
        let path = uri.path();
        let raw = path.as_bytes();
        // Fast path: the grammar matches the raw path and neither namespace nor id holds an
        // escape, so decoding cannot move a separator of the prefix: only the sub-path needs
        // decoding, and the prefix is the raw (UTF-8) path up to `/proxy`.
        if let Some(grammar) = parse_grammar(raw)
            && !grammar.escaped()
        {
            let (Some(prefix), Some(rest)) = (
                path.get(..grammar.prefix_end),
                path.get(grammar.prefix_end..),
            ) else {
                return Route::NotProxy;
            };
            return Self::new(method, uri, headers, prefix, &grammar, rest)
                .map_or(Route::NotProxy, Route::Proxy);
        }
        // Escapes in the grammar words, namespace or id (`%61pi`, `p%3A80`): decode the whole
        // path first, as Go does, then split.
        if !raw.contains(&b'%') {
            return Route::NotProxy;
        }
        let Some(decoded) = percent_decode(raw) else {
            return Route::NotProxy;
        };
        let Some(grammar) = parse_grammar(&decoded) else {
            return Route::NotProxy;
        };
        let Ok(prefix) = std::str::from_utf8(&decoded[..grammar.prefix_end]) else {
            return Route::NotProxy;
        };
        // The raw sub-path starts where the decoded prefix ends.
        let Some(rest) = path.get(raw_offset(raw, grammar.prefix_end)..) else {
            return Route::NotProxy;
        };
        Self::new(method, uri, headers, prefix, &grammar, rest)
            .map_or(Route::NotProxy, Route::Proxy)
    }

    /// Builds the request from the decoded prefix and the raw sub-path; `None` when the
    /// sub-path holds an invalid escape.
    fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        prefix: &str,
        grammar: &Grammar,
        rest: &str,
    ) -> Option<Self> {
        let rest_escaped = rest.contains('%');
        if rest_escaped && !valid_escapes(rest.as_bytes()) {
            return None;
        }
        let upgrade = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| contains_ignore_ascii_case(value.as_bytes(), b"upgrade"));
        let query = uri.query().unwrap_or_default();
        let mut text = String::with_capacity(prefix.len() + rest.len() + query.len());
        text.push_str(prefix);
        text.push_str(rest);
        text.push_str(query);
        let part = |(start, end): (usize, usize)| &prefix.as_bytes()[start..end];
        let dots = |range| matches!(part(range), b"." | b"..");
        Some(ProxyRequest {
            kind: grammar.kind,
            method: method.clone(),
            upgrade,
            text,
            prefix_len: prefix.len(),
            rest_end: prefix.len() + rest.len(),
            rest_escaped,
            namespace: grammar.namespace,
            id: grammar.id,
            prefix_clean: !dots(grammar.id) && !grammar.namespace.is_some_and(dots),
            prefix_uri_safe: grammar.uri_safe(),
        })
    }

    /// Routes from request parts.
    pub fn from_parts(parts: &http::request::Parts) -> Route {
        Self::route(&parts.method, &parts.uri, &parts.headers)
    }

    /// Pods, services or nodes.
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The namespace (`None` for nodes).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.map(|(start, end)| &self.text[start..end])
    }

    /// The decoded `{id}` segment exactly as received: the authorization name.
    pub fn raw_id(&self) -> &str {
        &self.text[self.id.0..self.id.1]
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether this is an upgrade request (WebSocket, SPDY, ...).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// The raw query string as received (`None` when absent or empty).
    pub fn query(&self) -> Option<&str> {
        Some(&self.text[self.rest_end..]).filter(|q| !q.is_empty())
    }

    /// The decoded bytes of the path after `/proxy`: empty or starting with `/` (borrowed
    /// unless the sub-path holds escapes).
    pub fn sub_path(&self) -> Cow<'_, [u8]> {
        let raw = &self.text.as_bytes()[self.prefix_len..self.rest_end];
        if self.rest_escaped {
            // The escapes were validated by `route`.
            Cow::Owned(percent_decode(raw).unwrap_or_default())
        } else {
            Cow::Borrowed(raw)
        }
    }

    /// The `path` connect option kube-apiserver computes for this request (`""` for a bare
    /// `.../proxy`, else `/` plus the sub-path segments, with a trailing `/` when the request
    /// path ends with one). Before cleaning: `/a//b` stays `/a//b`.
    pub fn path_option(&self) -> Vec<u8> {
        let rest = self.sub_path();
        let trimmed = trim_trailing_slashes(&rest);
        if trimmed.is_empty() {
            // The sub-path is empty or only slashes.
            return if rest.is_empty() {
                Vec::new()
            } else {
                b"/".to_vec()
            };
        }
        // `trimmed` starts with `/`; upstream joins the segments after it and re-adds one `/`.
        let mut option = if trimmed.get(1) == Some(&b'/') {
            trimmed[1..].to_vec()
        } else {
            trimmed.to_vec()
        };
        if rest.ends_with(b"/") {
            option.push(b'/');
        }
        option
    }

    /// The proxy prefix, e.g. `/api/v1/namespaces/ns/services/svc/proxy`, used to rewrite
    /// `Location` headers and HTML links back under the proxy.
    ///
    /// This is the decoded request path up to and including `/proxy` (decoded like upstream's
    /// prefix; escape it when writing it into a URL). kube-apiserver instead trims the
    /// backend path off the request path as a plain string suffix, which gives the same
    /// value for every path without `.`, `..` or empty segments, and odd ones otherwise
    /// (`.../proxy/a//b` yields the prefix `.../proxy/a//b`); the route prefix is what
    /// rewritten links must point under.
    pub fn prefix(&self) -> &str {
        &self.text[..self.prefix_len]
    }

    /// [`ProxyRequest::prefix`] made safe for a header value and a URL, as `X-Forwarded-Uri`
    /// writes it: the value of `X-Forwarded-Prefix`
    /// (`/api/v1/namespaces/ns/pods/web:8080/proxy`). Borrowed in the usual case, where the
    /// prefix holds nothing to escape.
    ///
    /// ```
    /// use http::{HeaderMap, Method, Uri};
    /// use kube_bastion_core::{ProxyRequest, Route};
    ///
    /// let uri = Uri::from_static("/api/v1/namespaces/ns/pods/web%20x:8080/proxy/a");
    /// let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) else {
    ///     panic!("a proxy route");
    /// };
    /// assert_eq!(request.forwarded_prefix(), "/api/v1/namespaces/ns/pods/web%20x:8080/proxy");
    /// ```
    pub fn forwarded_prefix(&self) -> Cow<'_, str> {
        if self.prefix_uri_safe {
            Cow::Borrowed(self.prefix())
        } else {
            let mut out = String::with_capacity(self.prefix_len + 8);
            self.push_prefix(&mut out);
            Cow::Owned(out)
        }
    }

    /// kube-style authorization attributes for this request.
    pub fn attributes(&self) -> Attributes {
        Attributes {
            verb: Attributes::verb_for(&self.method),
            api_group: "",
            api_version: "v1",
            resource: self.kind.resource(),
            subresource: "proxy",
            namespace: self.namespace().map(str::to_owned),
            name: self.raw_id().to_owned(),
            upgrade: self.upgrade,
        }
    }

    /// Checks what kube-apiserver checks before looking anything up, in its order:
    /// method routed (else 405), `dryRun` absent (else 400).
    ///
    /// The routed methods are GET, POST, PUT, PATCH, DELETE, HEAD and OPTIONS. `dryRun` is
    /// looked up as Go's `url.Query()` does: a `dryRun` key with any value, even empty, after
    /// query-unescaping (`dry%52un` counts); pairs Go skips (a `;` inside, a bad escape) do
    /// not count.
    pub fn check(&self) -> Result<(), Status> {
        if !matches!(
            self.method,
            Method::GET
                | Method::POST
                | Method::PUT
                | Method::PATCH
                | Method::DELETE
                | Method::HEAD
                | Method::OPTIONS
        ) {
            return Err(Status::method_not_allowed());
        }
        if self.query().is_some_and(has_dry_run) {
            return Err(Status::bad_request("dryRun is not supported"));
        }
        Ok(())
    }

    /// Parses the id: 400 `invalid {pod,service,node} request "<id>"` when it is malformed
    /// (the raw id quoted as Go's `%q`).
    pub fn target_id(&self) -> Result<TargetId, Status> {
        TargetId::parse(self.raw_id()).map_err(|_| {
            let mut message = String::with_capacity(self.raw_id().len() + 24);
            message.push_str("invalid ");
            message.push_str(self.kind.singular());
            message.push_str(" request ");
            push_quoted(self.raw_id().as_bytes(), &mut message);
            Status::bad_request(message)
        })
    }

    /// The 301 or the backend request target.
    ///
    /// * backend path: the sub-path cleaned as POSIX `path.Join` does (`//`, `.` and `..`
    ///   resolved, never above `/`), with its trailing `/` kept;
    /// * empty backend path (a bare `.../proxy`): GET and HEAD get
    ///   [`Plan::Redirect`] to the request path plus `/` (and `?query` when there is one);
    ///   other methods and upgrades are forwarded to `/`;
    /// * the path is re-encoded with Go's path escaping (all but `A-Za-z0-9-_.~` and
    ///   `$&+,/:;=@` percent-encoded) and the raw query appended byte for byte, on upgrades
    ///   too (upstream drops it there, kubernetes/kubernetes#77142);
    /// * `forwarded_uri` is upstream's `X-Forwarded-Uri`: `path.Join(p, escaped backend
    ///   path)` (+ `/` when the backend path ends with one), where `p` is the request path with
    ///   the backend path trimmed off as a plain string suffix (the whole path when it is not
    ///   a suffix).
    ///
    /// Decoded bytes copied into `location` and `forwarded_uri` that are not safe in a
    /// header value or would change the URL's meaning (controls, space, DEL, non-ASCII, `%`,
    /// `?`, `#`) are percent-encoded; for paths made of valid object names nothing changes.
    pub fn plan(&self) -> Plan {
        let query = self.query();
        let raw_rest = &self.text[self.prefix_len..self.rest_end];
        if raw_rest.is_empty()
            && !self.upgrade
            && (self.method == Method::GET || self.method == Method::HEAD)
        {
            let mut location =
                String::with_capacity(self.prefix_len + 2 + query.map_or(0, str::len));
            self.push_prefix(&mut location);
            location.push('/');
            if let Some(query) = query {
                location.push('?');
                push_escaped(&mut location, query, &QUERY_SAFE);
            }
            return Plan::Redirect { location };
        }
        if !self.rest_escaped && self.prefix_clean && is_clean(raw_rest.as_bytes()) {
            return self.plan_clean(raw_rest, query);
        }
        self.plan_general(query)
    }

    /// [`ProxyRequest::plan`] for the usual request: a sub-path without escapes that cleaning
    /// leaves alone, under a clean prefix. The backend path is the sub-path (`/` when empty),
    /// so upstream's prefix (request path minus backend path as a string suffix) is the route
    /// prefix and `X-Forwarded-Uri` is their concatenation.
    fn plan_clean(&self, rest: &str, query: Option<&str>) -> Plan {
        let outgoing = if rest.is_empty() { "/" } else { rest };
        let mut path_and_query =
            String::with_capacity(outgoing.len() + 8 + query.map_or(0, |q| q.len() + 1));
        push_escaped(&mut path_and_query, outgoing, &PATH_SAFE);
        let mut forwarded_uri = String::with_capacity(self.prefix_len + path_and_query.len());
        self.push_prefix(&mut forwarded_uri);
        forwarded_uri.push_str(&path_and_query);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Plan::Forward {
            path_and_query,
            forwarded_uri,
        }
    }

    /// [`ProxyRequest::plan`] for sub-paths with escapes or segments to clean.
    fn plan_general(&self, query: Option<&str>) -> Plan {
        let rest = self.sub_path();
        let prefix = self.prefix();
        // The backend path: the sub-path cleaned, its trailing `/` kept; empty becomes `/`.
        // Escaping commutes with cleaning (it never produces `/` and keeps `.` segments as they
        // are), so clean the escaped form in place.
        let mut target = Vec::with_capacity(rest.len() * 3 / 2 + 2 + query.map_or(0, str::len));
        if rest.is_empty() {
            target.push(b'/');
        } else {
            escape_path_bytes(&rest, &mut target);
            let escaped_len = target.len();
            clean_in_place(&mut target);
            if rest.ends_with(b"/") && !target.ends_with(b"/") {
                target.push(b'/');
            }
            // Cleaning only removes bytes: same length means the sub-path was already clean.
            if target.len() != escaped_len {
                return self.plan_unclean(&rest, target, query);
            }
        }
        // The backend path is the decoded sub-path: the suffix matches.
        let forwarded_uri = if self.prefix_clean {
            let mut forwarded = Vec::with_capacity(prefix.len() + target.len());
            if self.prefix_uri_safe {
                forwarded.extend_from_slice(prefix.as_bytes());
            } else {
                push_uri_safe_bytes(&mut forwarded, prefix.as_bytes());
            }
            forwarded.extend_from_slice(&target);
            ascii_string(forwarded)
        } else {
            forwarded_uri(&[prefix.as_bytes(), &[]], &target)
        };
        Plan::Forward {
            path_and_query: with_query(target, query),
            forwarded_uri,
        }
    }

    /// Appends the prefix made header-safe (copied as is in the usual case).
    fn push_prefix(&self, out: &mut String) {
        if self.prefix_uri_safe {
            out.push_str(self.prefix());
        } else {
            push_escaped(out, self.prefix(), &URI_SAFE);
        }
    }

    /// [`ProxyRequest::plan`] when cleaning changed the sub-path: upstream's suffix trimming
    /// then needs the decoded backend path.
    fn plan_unclean(&self, rest: &[u8], target: Vec<u8>, query: Option<&str>) -> Plan {
        let mut backend = rest.to_vec();
        clean_in_place(&mut backend);
        if rest.ends_with(b"/") && !backend.ends_with(b"/") {
            backend.push(b'/');
        }
        let prepend = strip_suffix(self.prefix(), rest, &backend);
        Plan::Forward {
            forwarded_uri: forwarded_uri(&prepend, &target),
            path_and_query: with_query(target, query),
        }
    }
}

/// Upstream's `X-Forwarded-Uri`: `path.Join(prepend, escapedPath)`, plus `/` when the backend
/// path ends with one. `prepend` is decoded: its unsafe bytes are percent-encoded first.
fn forwarded_uri(prepend: &[&[u8]; 2], escaped: &[u8]) -> String {
    let mut forwarded = Vec::with_capacity(prepend[0].len() + prepend[1].len() + escaped.len() + 2);
    for part in prepend {
        push_uri_safe_bytes(&mut forwarded, part);
    }
    forwarded.push(b'/');
    forwarded.extend_from_slice(escaped);
    clean_in_place(&mut forwarded);
    if escaped.ends_with(b"/") {
        forwarded.push(b'/');
    }
    ascii_string(forwarded)
}

/// The escaped backend path plus `?` and the raw query, byte for byte.
fn with_query(mut target: Vec<u8>, query: Option<&str>) -> String {
    if let Some(query) = query {
        target.push(b'?');
        target.extend_from_slice(query.as_bytes());
    }
    ascii_string(target)
}
