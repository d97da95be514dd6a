//! The proxy route grammar.
//!
//! `/api/v1/namespaces/{ns}/pods/{id}/proxy[/{path}]`,
//! `/api/v1/namespaces/{ns}/services/{id}/proxy[/{path}]` and
//! `/api/v1/nodes/{id}/proxy[/{path}]` are proxy requests; every other path is
//! [`Route::NotProxy`] and is never an error.
//!
//! One parse ([`ProxyRequest::route`]) feeds authorization ([`ProxyRequest::attributes`]),
//! the pre-lookup checks ([`ProxyRequest::check`]), id parsing ([`ProxyRequest::target_id`]),
//! resolution ([`crate::resolve`]) and the backend request target ([`ProxyRequest::plan`]).
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

use crate::status::push_go_quoted;
use crate::{Attributes, Status, TargetId};

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
/// ([`crate::resolve`]), so the authorized name is always the resolved one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    kind: ResourceKind,
    method: Method,
    upgrade: bool,
    /// The decoded path up to and including `/proxy` (UTF-8 by construction), followed by
    /// the raw query (one allocation for both).
    text: String,
    /// Length of the prefix in `text`; the query is the rest of `text` (empty: no query).
    prefix_len: usize,
    /// Byte range of the namespace in `text` (`None` for nodes).
    namespace: Option<(usize, usize)>,
    /// Byte range of the id in `text`.
    id: (usize, usize),
    /// Whether the namespace and id are neither `.` nor `..` (so the prefix is a clean path).
    prefix_clean: bool,
    /// The decoded bytes after `/proxy`: empty or starting with `/`.
    rest: Vec<u8>,
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
        let raw = uri.path().as_bytes();
        let escaped = raw.contains(&b'%');
        // Cheap rejection of the host's other routes before any decoding or allocation.
        if !escaped && !raw.starts_with(API_V1) {
            return Route::NotProxy;
        }
        let decoded: Cow<'_, [u8]> = if escaped {
            match percent_decode(raw) {
                Some(bytes) => Cow::Owned(bytes),
                None => return Route::NotProxy,
            }
        } else {
            Cow::Borrowed(raw)
        };
        let Some(grammar) = parse_grammar(&decoded) else {
            return Route::NotProxy;
        };
        let Ok(prefix) = std::str::from_utf8(&decoded[..grammar.prefix_end]) else {
            return Route::NotProxy;
        };
        let upgrade = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| contains_ignore_ascii_case(value.as_bytes(), b"upgrade"));
        let query = uri.query().unwrap_or_default();
        let mut text = String::with_capacity(prefix.len() + query.len());
        text.push_str(prefix);
        text.push_str(query);
        let dots = |(start, end): (usize, usize)| matches!(&prefix[start..end], "." | "..");
        Route::Proxy(ProxyRequest {
            kind: grammar.kind,
            method: method.clone(),
            upgrade,
            text,
            prefix_len: prefix.len(),
            namespace: grammar.namespace,
            id: grammar.id,
            prefix_clean: !dots(grammar.id) && !grammar.namespace.is_some_and(dots),
            rest: decoded[grammar.prefix_end..].to_vec(),
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
        Some(&self.text[self.prefix_len..]).filter(|q| !q.is_empty())
    }

    /// The decoded bytes of the path after `/proxy`: empty or starting with `/`.
    pub fn sub_path(&self) -> &[u8] {
        &self.rest
    }

    /// The `path` connect option kube-apiserver computes for this request (`""` for a bare
    /// `.../proxy`, else `/` plus the sub-path segments, with a trailing `/` when the request
    /// path ends with one). Before cleaning: `/a//b` stays `/a//b`.
    pub fn path_option(&self) -> Vec<u8> {
        let trimmed = trim_trailing_slashes(&self.rest);
        if trimmed.is_empty() {
            // The sub-path is empty or only slashes.
            return if self.rest.is_empty() {
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
        if self.rest.ends_with(b"/") {
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
            push_go_quoted(self.raw_id(), &mut message);
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
        let prefix = self.prefix();
        if self.rest.is_empty()
            && !self.upgrade
            && (self.method == Method::GET || self.method == Method::HEAD)
        {
            let mut location = Vec::with_capacity(prefix.len() + 2 + query.map_or(0, str::len));
            push_uri_safe_bytes(&mut location, prefix.as_bytes());
            location.push(b'/');
            if let Some(query) = query {
                location.push(b'?');
                push_query_safe(&mut location, query.as_bytes());
            }
            return Plan::Redirect {
                location: ascii_string(location),
            };
        }

        // The backend path: the sub-path cleaned, its trailing `/` kept; empty becomes `/`.
        // Escaping commutes with cleaning (it never produces `/` and keeps `.` segments as they
        // are), so clean the escaped form in place.
        let mut target =
            Vec::with_capacity(self.rest.len() * 3 / 2 + 2 + query.map_or(0, str::len));
        if self.rest.is_empty() {
            target.push(b'/');
        } else {
            escape_path_bytes(&self.rest, &mut target);
            let escaped_len = target.len();
            clean_in_place(&mut target);
            if self.rest.ends_with(b"/") && !target.ends_with(b"/") {
                target.push(b'/');
            }
            // Cleaning only removes bytes: same length means the sub-path was already clean.
            if target.len() != escaped_len {
                return self.plan_unclean(target, query);
            }
        }
        // Fast path: the backend path is the request's sub-path, so upstream's prefix (request
        // path minus backend path as a string suffix) is the route prefix, and joining it with
        // the clean backend path is a concatenation.
        let forwarded_uri = if self.prefix_clean {
            let mut forwarded = Vec::with_capacity(prefix.len() + target.len());
            push_uri_safe_bytes(&mut forwarded, prefix.as_bytes());
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

    /// [`ProxyRequest::plan`] when cleaning changed the sub-path: upstream's suffix trimming
    /// then needs the decoded backend path.
    fn plan_unclean(&self, target: Vec<u8>, query: Option<&str>) -> Plan {
        let mut backend = self.rest.clone();
        clean_in_place(&mut backend);
        if self.rest.ends_with(b"/") && !backend.ends_with(b"/") {
            backend.push(b'/');
        }
        let prepend = strip_suffix(self.prefix(), &self.rest, &backend);
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

const API_V1: &[u8] = b"/api/v1/";

/// Where the parts of a proxy route are in the decoded path.
struct Grammar {
    kind: ResourceKind,
    namespace: Option<(usize, usize)>,
    id: (usize, usize),
    prefix_end: usize,
}

/// Matches the decoded path against the three proxy route forms.
fn parse_grammar(path: &[u8]) -> Option<Grammar> {
    let after = path.strip_prefix(API_V1)?;
    let mut cursor = Segments {
        path,
        pos: API_V1.len(),
    };
    let _ = after;
    let first = cursor.next()?;
    let (kind, namespace) = match first {
        (start, end) if &path[start..end] == b"nodes" => (ResourceKind::Node, None),
        (start, end) if &path[start..end] == b"namespaces" => {
            let namespace = cursor.next().filter(|(s, e)| e > s)?;
            let (start, end) = cursor.next()?;
            let kind = match &path[start..end] {
                b"pods" => ResourceKind::Pod,
                b"services" => ResourceKind::Service,
                _ => return None,
            };
            (kind, Some(namespace))
        }
        _ => return None,
    };
    let id = cursor.next().filter(|(s, e)| e > s)?;
    let (start, end) = cursor.next()?;
    if &path[start..end] != b"proxy" {
        return None;
    }
    Some(Grammar {
        kind,
        namespace,
        id,
        prefix_end: end,
    })
}

/// Yields the byte ranges of successive `/`-separated segments, starting at `pos` (the start
/// of a segment). A segment ends at the next `/` or at the end of the path.
struct Segments<'a> {
    path: &'a [u8],
    pos: usize,
}

impl Segments<'_> {
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos > self.path.len() {
            return None;
        }
        let start = self.pos;
        let end = self.path[start..]
            .iter()
            .position(|b| *b == b'/')
            .map_or(self.path.len(), |i| start + i);
        // Past the separator; past the end when the path ended.
        self.pos = end + 1;
        Some((start, end))
    }
}

/// Go's `unescape(s, encodePath)`: `%XX` becomes the byte; any other `%` is an error.
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = hex_value(*raw.get(i + 1)?)?;
            let lo = hex_value(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `QueryUnescape` (`+` is a space), or `None` on a bad escape.
fn query_unescape(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.iter().any(|b| *b == b'%' || *b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hi = hex_value(*raw.get(i + 1)?)?;
                let lo = hex_value(*raw.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

/// Whether Go's `url.Query()` of this raw query has a `dryRun` key.
fn has_dry_run(query: &str) -> bool {
    // Fast path: no pair can unescape to `dryRun` without an `r`/`R` or escapes.
    if !query.contains("dryRun") && !query.contains('%') {
        return false;
    }
    query.split('&').any(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return false;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Go drops a pair whose key or value fails to unescape.
        matches!(query_unescape(key.as_bytes()), Some(k) if &*k == b"dryRun")
            && query_unescape(value.as_bytes()).is_some()
    })
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

fn trim_trailing_slashes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Upstream's `strings.TrimSuffix(requestPath, backendPath)` over the request path
/// `prefix + rest`, returned as up to two pieces to avoid a copy.
fn strip_suffix<'a>(prefix: &'a str, rest: &'a [u8], suffix: &[u8]) -> [&'a [u8]; 2] {
    let prefix = prefix.as_bytes();
    let total = prefix.len() + rest.len();
    if suffix.is_empty() || suffix.len() > total {
        return [prefix, rest];
    }
    let keep = total - suffix.len();
    let matches = if keep >= prefix.len() {
        &rest[keep - prefix.len()..] == suffix
    } else {
        let split = prefix.len() - keep;
        prefix[keep..] == suffix[..split] && rest == &suffix[split..]
    };
    match (matches, keep >= prefix.len()) {
        (false, _) => [prefix, rest],
        (true, true) => [prefix, &rest[..keep - prefix.len()]],
        (true, false) => [&prefix[..keep], &[]],
    }
}

/// Go's `path.Clean` over a byte buffer, in place (the write index never passes the read
/// index). An empty result becomes `.`, as in Go.
fn clean_in_place(buf: &mut Vec<u8>) {
    let n = buf.len();
    if n == 0 {
        buf.push(b'.');
        return;
    }
    let rooted = buf[0] == b'/';
    let (mut r, mut w, mut dotdot) = (0, 0, 0);
    if rooted {
        // buf[0] is already '/'.
        (r, w, dotdot) = (1, 1, 1);
    }
    while r < n {
        if buf[r] == b'/' || (buf[r] == b'.' && (r + 1 == n || buf[r + 1] == b'/')) {
            // An empty or `.` segment.
            r += 1;
        } else if buf[r] == b'.'
            && buf.get(r + 1) == Some(&b'.')
            && (r + 2 == n || buf[r + 2] == b'/')
        {
            r += 2;
            if w > dotdot {
                w -= 1;
                while w > dotdot && buf[w] != b'/' {
                    w -= 1;
                }
            } else if !rooted {
                if w > 0 {
                    buf[w] = b'/';
                    w += 1;
                }
                buf[w] = b'.';
                buf[w + 1] = b'.';
                w += 2;
                dotdot = w;
            }
        } else {
            if (rooted && w != 1) || (!rooted && w != 0) {
                buf[w] = b'/';
                w += 1;
            }
            while r < n && buf[r] != b'/' {
                buf[w] = buf[r];
                w += 1;
                r += 1;
            }
        }
    }
    if w == 0 {
        buf.clear();
        buf.push(b'.');
    } else {
        buf.truncate(w);
    }
}

/// kube-apiserver's `JoinPreservingTrailingSlash(a, b)`: Go's `path.Join` (join the
/// non-empty elements with `/` and clean; `""` when both are empty), plus a trailing `/` when
/// the last non-empty element ends with one.
///
/// ```
/// use kube_bastion_core::path::join_preserving_trailing_slash as join;
///
/// assert_eq!(join("", ""), "");
/// assert_eq!(join("/foo/", "/foo/"), "/foo/foo/");
/// assert_eq!(join("", "/a/../b/"), "/b/");
/// assert_eq!(join("", "/../../etc/passwd"), "/etc/passwd");
/// ```
pub fn join_preserving_trailing_slash(a: &str, b: &str) -> String {
    let mut joined = Vec::with_capacity(a.len() + b.len() + 2);
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return String::new(),
        (false, true) => joined.extend_from_slice(a.as_bytes()),
        (true, false) => joined.extend_from_slice(b.as_bytes()),
        (false, false) => {
            joined.extend_from_slice(a.as_bytes());
            joined.push(b'/');
            joined.extend_from_slice(b.as_bytes());
        }
    }
    clean_in_place(&mut joined);
    let last = if b.is_empty() { a } else { b };
    if last.ends_with('/') && !joined.ends_with(b"/") {
        joined.push(b'/');
    }
    // Cleaning removes whole segments and ASCII separators only, so UTF-8 is preserved.
    String::from_utf8(joined).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes Go's `url.PathEscape`-style path encoding (`escape(s, encodePath)`) keeps:
/// `A-Za-z0-9-_.~` and `$&+,/:;=@`.
const fn path_safe_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        i += 1;
    }
    t
}

static PATH_SAFE: [bool; 256] = path_safe_table();
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends a decoded path encoded as Go encodes `URL.Path` for the wire (`EscapedPath`):
/// every byte but `A-Za-z0-9-_.~` and `$&+,/:;=@` becomes `%XX` (upper-case hex). So `(`
/// is `%28`, a space `%20`, `%` itself `%25`.
///
/// ```
/// let mut out = String::new();
/// kube_bastion_core::path::escape_path(b"/a b(c)/%2F", &mut out);
/// assert_eq!(out, "/a%20b%28c%29/%252F");
/// ```
pub fn escape_path(decoded: &[u8], out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    escape_path_bytes(decoded, &mut bytes);
    *out = ascii_string(bytes);
}

/// [`escape_path`] into bytes.
fn escape_path_bytes(decoded: &[u8], out: &mut Vec<u8>) {
    encode_runs(out, decoded, |b| PATH_SAFE[usize::from(b)]);
}

/// Appends `bytes`, percent-encoding (upper-case hex) every byte `keep` refuses; runs of kept
/// bytes are copied at once.
fn encode_runs(out: &mut Vec<u8>, bytes: &[u8], keep: impl Fn(u8) -> bool) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !keep(b) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0xF)],
            ]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether a decoded byte may be copied as is into a `Location` or `X-Forwarded-Uri` value.
fn uri_safe(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'%' | b'?' | b'#')
}

/// Decoded bytes into a `Location` or `X-Forwarded-Uri` value (see [`uri_safe`]).
fn push_uri_safe_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_runs(out, bytes, uri_safe);
}

/// The raw query into a header value: kept byte for byte except bytes a header value
/// cannot carry portably (controls, space, DEL, non-ASCII), which are percent-encoded.
fn push_query_safe(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_runs(out, bytes, |b| (0x21..0x7f).contains(&b));
}

/// Bytes built only from ASCII (or UTF-8 pieces) into a String.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn route_with(method: &str, uri: &str, connection: Option<&[u8]>) -> Route {
        let mut headers = HeaderMap::new();
        if let Some(value) = connection {
            headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        ProxyRequest::route(&method, &uri.parse().expect("uri"), &headers)
    }

    fn proxy(method: &str, uri: &str) -> ProxyRequest {
        match route_with(method, uri, None) {
            Route::Proxy(request) => request,
            Route::NotProxy => panic!("{uri} should be a proxy route"),
        }
    }

    fn forward(path_and_query: &str, forwarded_uri: &str) -> Plan {
        Plan::Forward {
            path_and_query: path_and_query.to_owned(),
            forwarded_uri: forwarded_uri.to_owned(),
        }
    }

    #[test]
    fn not_proxy_routes() {
        for uri in [
            "/",
            "/api",
            "/api/v1",
            "/api/v1/",
            "/api/v1/pods",
            "/api/v1/namespaces/ns/pods/p",
            "/api/v1/namespaces/ns/pods/p/log",
            "/api/v1/namespaces/ns/pods/p/proxyx",
            "/api/v1/namespaces/ns/nodes/n/proxy",
            "/api/v1/namespaces/ns/secrets/s/proxy",
            "/api/v1/namespaces//pods/p/proxy",
            "/api/v1/namespaces/ns/pods//proxy",
            "/api/v1/nodes//proxy",
            "/api/v1//nodes/n/proxy",
            "//api/v1/nodes/n/proxy",
            "/api/v2/nodes/n/proxy",
            "/apis/apps/v1/namespaces/ns/pods/p/proxy",
            "/api/v1/proxy/namespaces/ns/services/s/",
            // A %2F in the id splits it.
            "/api/v1/namespaces/ns/pods/a%2Fb/proxy",
            // Invalid escapes anywhere.
            "/api/v1/nodes/n/proxy/%zz",
            "/api/v1/nodes/n/proxy/%4",
            "/api/v1/nodes/n%/proxy",
            // Ids and namespaces that are not UTF-8.
            "/api/v1/nodes/%FF/proxy",
            "/api/v1/namespaces/%C3/pods/p/proxy",
        ] {
            assert_eq!(route_with("GET", uri, None), Route::NotProxy, "{uri}");
        }
    }

    #[test]
    fn escaped_grammar_words_are_decoded_first() {
        let request = proxy("GET", "/%61pi/v1/nodes/n/prox%79/x");
        assert_eq!(request.kind(), ResourceKind::Node);
        assert_eq!(request.prefix(), "/api/v1/nodes/n/proxy");
    }

    #[test]
    fn parts() {
        let request = proxy(
            "POST",
            "/api/v1/namespaces/ns/services/https:svc%3A443/proxy/a?b=c",
        );
        assert_eq!(request.kind(), ResourceKind::Service);
        assert_eq!(request.namespace(), Some("ns"));
        assert_eq!(request.raw_id(), "https:svc:443");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.query(), Some("b=c"));
        assert_eq!(request.sub_path(), b"/a");
        assert!(!request.is_upgrade());
        let request = proxy("GET", "/api/v1/nodes/n1/proxy?");
        assert_eq!((request.namespace(), request.query()), (None, None));
    }

    #[test]
    fn non_utf8_sub_path_is_forwarded_escaped() {
        let request = proxy("GET", "/api/v1/nodes/n/proxy/caf%E9");
        assert_eq!(request.sub_path(), b"/caf\xE9");
        assert_eq!(
            request.plan(),
            forward("/caf%E9", "/api/v1/nodes/n/proxy/caf%E9")
        );
    }

    #[test]
    fn upgrade_detection() {
        let uri = "/api/v1/nodes/n/proxy/x";
        let upgrade = |value: &[u8]| match route_with("GET", uri, Some(value)) {
            Route::Proxy(r) => r.is_upgrade(),
            Route::NotProxy => panic!("proxy route"),
        };
        assert!(upgrade(b"Upgrade"));
        assert!(upgrade(b"keep-alive, UPGRADE"));
        assert!(upgrade(b"xupgradex"));
        assert!(upgrade(b"\xE9 upGrade"));
        assert!(!upgrade(b"keep-alive"));
        assert!(!upgrade(b"upgrad"));
        // Any of several Connection values.
        let mut headers = HeaderMap::new();
        headers.append(http::header::CONNECTION, HeaderValue::from_static("close"));
        headers.append(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        let Route::Proxy(r) = ProxyRequest::route(&Method::GET, &uri.parse().unwrap(), &headers)
        else {
            panic!("proxy route")
        };
        assert!(r.is_upgrade());
        assert!(r.attributes().upgrade);
    }

    #[test]
    fn check_order_and_dry_run() {
        let status = proxy("PROPFIND", "/api/v1/nodes/n/proxy?dryRun")
            .check()
            .unwrap_err();
        assert_eq!(
            (status.code(), status.reason()),
            (405, Some("MethodNotAllowed"))
        );
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            assert_eq!(proxy(method, "/api/v1/nodes/n/proxy/x?a=1").check(), Ok(()));
            let status = proxy(method, "/api/v1/nodes/n/proxy/x?a=1&dryRun=")
                .check()
                .unwrap_err();
            assert_eq!(status.message(), "dryRun is not supported");
            assert_eq!(status.code(), 400);
        }
        for (query, present) in [
            ("dryRun", true),
            ("dryRun=All", true),
            ("a=1&dryRun=x&b", true),
            ("dry%52un=1", true),
            ("dry%52un", true),
            ("dryrun=All", false),
            ("xdryRun=1", false),
            ("dryRun=%zz", false),
            ("dryRun=1;a=2", false),
            ("dryRun+=1", false),
            ("a=dryRun", false),
            ("%zz&dryRun", true),
        ] {
            assert_eq!(has_dry_run(query), present, "{query}");
        }
    }

    #[test]
    fn target_id_errors_quote_like_go() {
        let status = proxy("GET", "/api/v1/namespaces/ns/pods/a:b:c:d/proxy")
            .target_id()
            .unwrap_err();
        assert_eq!(status.message(), r#"invalid pod request "a:b:c:d""#);
        let status = proxy("GET", "/api/v1/namespaces/ns/services/ftp:%22x%0A:1/proxy")
            .target_id()
            .unwrap_err();
        assert_eq!(status.message(), r#"invalid service request "ftp:\"x\n:1""#);
        let status = proxy("GET", "/api/v1/nodes/%C2%A0:%E2%80%8B:%F0%9F%98%80:/proxy")
            .target_id()
            .unwrap_err();
        assert_eq!(
            status.message(),
            "invalid node request \"\\u00a0:\\u200b:😀:\""
        );
        assert_eq!(status.reason(), Some("BadRequest"));
    }

    #[test]
    fn redirect_for_bare_proxy_on_get_and_head() {
        for method in ["GET", "HEAD"] {
            assert_eq!(
                proxy(method, "/api/v1/nodes/n:1/proxy?a=1&b").plan(),
                Plan::Redirect {
                    location: "/api/v1/nodes/n:1/proxy/?a=1&b".to_owned()
                }
            );
        }
        // An empty query adds no `?`.
        assert_eq!(
            proxy("GET", "/api/v1/nodes/n/proxy?").plan(),
            Plan::Redirect {
                location: "/api/v1/nodes/n/proxy/".to_owned()
            }
        );
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert_eq!(
                proxy(method, "/api/v1/nodes/n/proxy?q").plan(),
                forward("/?q", "/api/v1/nodes/n/proxy/"),
                "{method}"
            );
        }
    }

    #[test]
    fn redirect_location_is_header_safe() {
        let Plan::Redirect { location } = proxy(
            "GET",
            "/api/v1/namespaces/n%20s/pods/a%25b%3F%23%0D%0A%C3%A9/proxy?x=%C3%A9",
        )
        .plan() else {
            panic!("redirect")
        };
        assert_eq!(
            location,
            "/api/v1/namespaces/n%20s/pods/a%25b%3F%23%0D%0A%C3%A9/proxy/?x=%C3%A9"
        );
        assert!(HeaderValue::from_str(&location).is_ok());
        // Raw non-ASCII in the query is encoded too.
        let Plan::Redirect { location } = proxy("GET", "/api/v1/nodes/n/proxy?x=é").plan() else {
            panic!("redirect")
        };
        assert_eq!(location, "/api/v1/nodes/n/proxy/?x=%C3%A9");
    }

    #[test]
    fn upgrades_keep_the_query_and_never_redirect() {
        let Route::Proxy(request) =
            route_with("GET", "/api/v1/nodes/n/proxy?tty=1", Some(b"Upgrade"))
        else {
            panic!("proxy route")
        };
        assert_eq!(request.plan(), forward("/?tty=1", "/api/v1/nodes/n/proxy/"));
        let Route::Proxy(request) = route_with(
            "GET",
            "/api/v1/nodes/n/proxy/exec/ns/p/c?command=ls&stdout=1",
            Some(b"Upgrade"),
        ) else {
            panic!("proxy route")
        };
        assert_eq!(
            request.plan(),
            forward(
                "/exec/ns/p/c?command=ls&stdout=1",
                "/api/v1/nodes/n/proxy/exec/ns/p/c"
            )
        );
    }

    #[test]
    fn backend_path_cleaning_and_escaping() {
        let cases = [
            ("/x/", "/x/", "/api/v1/nodes/n/proxy/x/"),
            ("/", "/", "/api/v1/nodes/n/proxy/"),
            ("///", "/", "/api/v1/nodes/n/proxy/"),
            (
                "/a%20b(c)",
                "/a%20b%28c%29",
                "/api/v1/nodes/n/proxy/a%20b%28c%29",
            ),
            ("/a%2Fb", "/a/b", "/api/v1/nodes/n/proxy/a/b"),
            ("/a%252Fb", "/a%252Fb", "/api/v1/nodes/n/proxy/a%252Fb"),
            (
                "/$&+,:;=@~-_.!*'",
                "/$&+,:;=@~-_.%21%2A%27",
                "/api/v1/nodes/n/proxy/$&+,:;=@~-_.%21%2A%27",
            ),
            ("/./a/./b/.", "/a/b", "/api/v1/nodes/n/proxy/a/b/a/b"),
            ("/a/b/..", "/a", "/api/v1/nodes/n/proxy/a/a"),
            ("/a/b/../", "/a/", "/api/v1/nodes/n/proxy/a/a/"),
            ("/a//b//", "/a/b/", "/api/v1/nodes/n/proxy/a/b/a/b/"),
            ("/%2E%2E/x", "/x", "/api/v1/nodes/n/x"),
        ];
        for (sub, backend, forwarded) in cases {
            let uri = format!("/api/v1/nodes/n/proxy{sub}");
            assert_eq!(
                proxy("GET", &uri).plan(),
                forward(backend, forwarded),
                "{uri}"
            );
        }
    }

    #[test]
    fn forwarded_uri_prefix_is_made_uri_safe() {
        // The suffix does not match, so the whole decoded request path is the prefix.
        let plan = proxy("GET", "/api/v1/nodes/n/proxy/a%20b//c%3F").plan();
        assert_eq!(
            plan,
            forward("/a%20b/c%3F", "/api/v1/nodes/n/proxy/a%20b/c%3F/a%20b/c%3F")
        );
    }

    #[test]
    fn path_option_matches_upstream() {
        for (sub, option) in [
            ("", ""),
            ("/", "/"),
            ("//", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("//a", "/a"),
            ("///a", "//a"),
            ("/a//b", "/a//b"),
            ("/a/../b", "/a/../b"),
        ] {
            let uri = format!("/api/v1/nodes/n/proxy{sub}");
            assert_eq!(proxy("GET", &uri).path_option(), option.as_bytes(), "{uri}");
        }
    }

    #[test]
    fn prefix_is_the_route_prefix() {
        let request = proxy("GET", "/api/v1/namespaces/ns/pods/p/proxy/a//b");
        assert_eq!(request.prefix(), "/api/v1/namespaces/ns/pods/p/proxy");
    }

    #[test]
    fn attributes_follow_the_parse() {
        let attributes = proxy("PATCH", "/api/v1/namespaces/ns/pods/p%3A80/proxy").attributes();
        assert_eq!(
            attributes,
            Attributes {
                verb: "patch",
                api_group: "",
                api_version: "v1",
                resource: "pods",
                subresource: "proxy",
                namespace: Some("ns".to_owned()),
                name: "p:80".to_owned(),
                upgrade: false,
            }
        );
    }

    /// The general computation, with no fast path: decode-side cleaning, suffix trimming,
    /// then escaping.
    fn reference_plan(request: &ProxyRequest) -> Plan {
        let mut backend = Vec::new();
        if !request.rest.is_empty() {
            backend.extend_from_slice(&request.rest);
            clean_in_place(&mut backend);
            if request.rest.ends_with(b"/") && !backend.ends_with(b"/") {
                backend.push(b'/');
            }
        }
        let outgoing: &[u8] = if backend.is_empty() { b"/" } else { &backend };
        let mut escaped = Vec::new();
        escape_path_bytes(outgoing, &mut escaped);
        let prepend = strip_suffix(request.prefix(), &request.rest, &backend);
        Plan::Forward {
            forwarded_uri: forwarded_uri(&prepend, &escaped),
            path_and_query: with_query(escaped, request.query()),
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_plan_equals_reference(
            id in "(\\.|\\.\\.|[a-z.:%]{1,4})",
            sub in "(/|\\.|\\.\\.|[a-z ]|%2F|%25|%2E){0,10}",
            query in "(\\?[a-z=&]{0,4})?",
        ) {
            let uri = format!("/api/v1/namespaces/ns/pods/{id}/proxy{sub}{query}");
            if let Ok(Route::Proxy(request)) = uri
                .parse::<Uri>()
                .map(|uri| ProxyRequest::route(&Method::POST, &uri, &HeaderMap::new()))
            {
                proptest::prop_assert_eq!(request.plan(), reference_plan(&request), "{}", uri);
            }
        }
    }

    #[test]
    fn go_path_clean() {
        // From Go's path.Clean table.
        for (input, cleaned) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("/abc/", "/abc"),
            ("//abc", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ] {
            let mut buf = input.as_bytes().to_vec();
            clean_in_place(&mut buf);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), cleaned, "{input:?}");
        }
    }

    #[test]
    fn suffix_trimming() {
        let p = "/api/v1/nodes/n/proxy";
        let join = |parts: [&[u8]; 2]| [parts[0], parts[1]].concat();
        assert_eq!(join(strip_suffix(p, b"/a/b", b"/a/b")), p.as_bytes());
        assert_eq!(
            join(strip_suffix(p, b"/a//b", b"/a/b")),
            b"/api/v1/nodes/n/proxy/a//b"
        );
        assert_eq!(
            join(strip_suffix(p, b"/x", b"")),
            b"/api/v1/nodes/n/proxy/x"
        );
        assert_eq!(
            join(strip_suffix(p, b"/../x", b"/x")),
            b"/api/v1/nodes/n/proxy/.."
        );
        // The suffix may reach into the prefix.
        assert_eq!(
            join(strip_suffix(p, b"/x", b"proxy/x")),
            b"/api/v1/nodes/n/"
        );
        assert_eq!(join(strip_suffix(p, b"", b"/proxy")), b"/api/v1/nodes/n");
    }
}
