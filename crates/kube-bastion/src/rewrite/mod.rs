//! Response rewriting: `Location` headers and `text/html` links back under the proxy prefix,
//! streaming.
//!
//! Web UIs reached through `.../services/svc/proxy/` write absolute links (`/static/app.js`)
//! and redirect to `/login`; without rewriting, the browser would leave the proxy. kube-apiserver
//! rewrites the `Location` header and 25 URL attributes of `text/html` bodies; so do we, with
//! the same URL rule, but streaming: memory per response is
//! bounded whatever the body size, and bytes reach the client as the backend sends them.
//!
//! The engine calls `rewrite_response` once, when the backend response head arrives.
//!
//! What is rewritten, and how it differs from upstream, is listed in the "Response
//! rewriting" section of `docs/compatibility.md`.

mod compression;
mod html;
mod location;
mod stream;
mod url;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

pub use stream::RewriteBodyError;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub use stream::RewrittenBody;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub use url::UrlParseError;

use crate::{ProxyRequest, ResourceKind, Status};
use compression::Coding;
use kube_bastion_core::go::{EscapeMode, should_escape};
use url::{GoUrl, join};

/// What to rewrite. The default is kube-apiserver's behaviour plus our compatible additions
/// (each can be turned off).
///
/// ```
/// use kube_bastion::ResourceKind;
/// use kube_bastion::RewriteOptions;
///
/// let mut options = RewriteOptions::default();
/// options.srcset_and_meta_refresh = false; // strictly upstream's attribute set
/// options.set_kind(ResourceKind::Node, false); // never rewrite nodes/proxy responses
/// assert!(options.is_enabled_for(ResourceKind::Pod));
/// assert!(!options.is_enabled_for(ResourceKind::Node));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewriteOptions {
    /// Master switch (default `true`, as upstream). `false` passes responses through
    /// untouched: no header and no body rewriting.
    pub enabled: bool,
    /// Rewrite links in `text/html` bodies (default `true`, as upstream).
    pub html: bool,
    /// Our addition (default `true`): also rewrite `srcset` candidates of `<img>`/`<source>`,
    /// the URL of `<meta http-equiv="refresh" content="N; url=/x">` and of the `Refresh`
    /// response header. Upstream rewrites none of them.
    pub srcset_and_meta_refresh: bool,
    /// Our addition (default `true`): rewrite `Content-Location` with the `Location` rule.
    pub content_location: bool,
    /// Our addition (default `true`): put an absolute `Path` attribute of `Set-Cookie` under
    /// the proxy prefix, so cookies set by the app come back through the proxy.
    pub set_cookie_path: bool,
    /// Rewrite `pods/proxy` responses (default `true`).
    pub pods: bool,
    /// Rewrite `services/proxy` responses (default `true`).
    pub services: bool,
    /// Rewrite `nodes/proxy` responses (default `true`).
    pub nodes: bool,
    /// Cap on the HTML rewriter's internal buffer, in bytes (default 1 MiB). The rewriter
    /// buffers only a tag that spans input chunks, so this is reached only by a single tag
    /// larger than the cap (or absurd nesting); the rest of that page then passes through
    /// unchanged instead of growing memory.
    pub max_html_buffer: usize,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            html: true,
            srcset_and_meta_refresh: true,
            content_location: true,
            set_cookie_path: true,
            pods: true,
            services: true,
            nodes: true,
            max_html_buffer: 1 << 20,
        }
    }
}

impl RewriteOptions {
    /// Options that rewrite nothing.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Exactly kube-apiserver's rewriting: `Location` and the 25 HTML attributes, none of
    /// our additions.
    pub fn upstream() -> Self {
        Self {
            srcset_and_meta_refresh: false,
            content_location: false,
            set_cookie_path: false,
            ..Self::default()
        }
    }

    /// Turns rewriting on or off for one request kind.
    pub fn set_kind(&mut self, kind: ResourceKind, enabled: bool) {
        match kind {
            ResourceKind::Pod => self.pods = enabled,
            ResourceKind::Service => self.services = enabled,
            ResourceKind::Node => self.nodes = enabled,
        }
    }

    /// Whether responses to requests of this kind are rewritten at all.
    pub fn is_enabled_for(&self, kind: ResourceKind) -> bool {
        self.enabled
            && match kind {
                ResourceKind::Pod => self.pods,
                ResourceKind::Service => self.services,
                ResourceKind::Node => self.nodes,
            }
    }
}

/// The URL rule's inputs (upstream's transport `scheme`, `host`, `pathPrepend`, plus the
/// backend address and request `Host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlRules {
    prefix: String,
    /// `prefix` is a clean absolute path without a trailing `/` (`/api/v1/.../proxy`), so
    /// joining a clean path to it is a concatenation.
    clean_prefix: bool,
    backend_authority: String,
    request_host: String,
    public_scheme: String,
    public_host: String,
}

impl UrlRules {
    pub(crate) fn new(prefix: &str, backend_authority: &str, request_host: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            clean_prefix: prefix.len() > 1
                && !prefix.ends_with('/')
                && is_clean_path(prefix.as_bytes())
                && prefix.bytes().all(keeps_in_path),
            backend_authority: backend_authority.to_owned(),
            request_host: request_host.to_owned(),
            public_scheme: String::new(),
            public_host: String::new(),
        }
    }

    /// kube-apiserver's `rewriteURL`, on a raw value.
    pub(crate) fn rewrite(&self, raw: &[u8]) -> Result<Vec<u8>, UrlParseError> {
        let mut url = GoUrl::parse(raw)?;
        let different_host = !url.host.is_empty()
            && url.host != self.backend_authority.as_bytes()
            && url.host != self.request_host.as_bytes();
        let relative = !url.path.starts_with(b"/");
        if different_host || relative {
            return Ok(url.to_bytes());
        }
        if !(url.host == self.request_host.as_bytes()
            && self.public_scheme.is_empty()
            && self.public_host.is_empty())
        {
            url.set_origin(self.public_scheme.as_bytes(), self.public_host.as_bytes());
        }
        if url.path.starts_with(self.prefix.as_bytes()) {
            return Ok(url.to_bytes());
        }
        let trailing_slash = url.path.ends_with(b"/");
        let mut path = join(self.prefix.as_bytes(), &url.path);
        if trailing_slash {
            path.push(b'/');
        }
        url.replace_path(path);
        Ok(url.to_bytes())
    }

    /// [`rewrite`](Self::rewrite) for text (HTML attribute values); `None` when the value is
    /// not a URL Go can parse (upstream then leaves it as is).
    ///
    /// The common shapes (an absolute path, a relative reference, a link to another host,
    /// written with characters Go's serializer keeps as they are) are answered by
    /// [`rewrite_quick`](Self::rewrite_quick) without building a [`GoUrl`]; the result is
    /// the same (`quick_path_agrees_with_go_parse_and_serialize` checks it), and the value
    /// is borrowed when it does not change.
    pub(crate) fn rewrite_str<'v>(&self, value: &'v str) -> Option<Cow<'v, str>> {
        match self.rewrite_quick(value) {
            Quick::Unchanged => return Some(Cow::Borrowed(value)),
            Quick::Rewritten(new) => return Some(Cow::Owned(new)),
            Quick::Undecided => {}
        }
        self.rewrite_str_full(value).map(Cow::Owned)
    }

    /// [`rewrite_str`](Self::rewrite_str) always through [`GoUrl`].
    fn rewrite_str_full(&self, value: &str) -> Option<String> {
        let bytes = self.rewrite(value.as_bytes()).ok()?;
        Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    /// What [`rewrite`](Self::rewrite) makes of a value, decided from its bytes alone when
    /// every part is written with characters that Go's parse and serialization leave as
    /// they are (no `%`, no character Go would escape): then parsing and serializing gives
    /// back the same bytes, and only the prefix join remains to be done.
    ///
    /// `Undecided` for everything else (escapes, user info, IPv6 hosts, links to the backend
    /// by host, `http:/x`, a public origin, anything not ASCII, ...).
    fn rewrite_quick(&self, value: &str) -> Quick {
        let raw = value.as_bytes();
        let (before, fragment) = match raw.iter().position(|&c| c == b'#') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        // An empty fragment is dropped by Go (`/a#` becomes `/a`).
        if let Some(f) = fragment
            && (f.is_empty() || !f.iter().all(|&c| keeps_in_fragment(c)))
        {
            return Quick::Undecided;
        }
        // The query is kept raw; `x?` keeps its `?` (ForceQuery).
        let (path, query) = match before.iter().position(|&c| c == b'?') {
            Some(i) => (&before[..i], Some(&before[i + 1..])),
            None => (before, None),
        };
        if let Some(q) = query
            && !q.iter().all(|&c| c.is_ascii_graphic())
        {
            return Quick::Undecided;
        }
        if path.starts_with(b"/") && !path.starts_with(b"//") {
            // An absolute path: moved under the prefix unless already there.
            if !path.iter().all(|&c| keeps_in_path(c))
                || !self.public_scheme.is_empty()
                || !self.public_host.is_empty()
            {
                return Quick::Undecided;
            }
            if path.starts_with(self.prefix.as_bytes()) {
                return Quick::Unchanged;
            }
            if self.clean_prefix && is_clean_path(path) {
                // `path.Join` of two clean paths is their concatenation (and the trailing
                // `/` it drops is put back).
                let mut out = String::with_capacity(self.prefix.len() + value.len());
                out.push_str(&self.prefix);
                out.push_str(value);
                return Quick::Rewritten(out);
            }
            let mut joined = join(self.prefix.as_bytes(), path);
            if path.ends_with(b"/") {
                joined.push(b'/');
            }
            if !joined.starts_with(b"/") || !joined.iter().all(|&c| keeps_in_path(c)) {
                return Quick::Undecided;
            }
            // `joined` is ASCII (checked above) and the rest of `value` starts on a char
            // boundary (the path is ASCII).
            let Ok(mut out) = String::from_utf8(joined) else {
                return Quick::Undecided;
            };
            out.push_str(&value[path.len()..]);
            return Quick::Rewritten(out);
        }
        let segment_end = path.iter().position(|&c| c == b'/').unwrap_or(path.len());
        if !path[..segment_end].contains(&b':') {
            if path.starts_with(b"//") {
                // Scheme-relative: `//host/path`.
                return self.quick_authority(&path[2..]);
            }
            // A relative reference: only re-serialized.
            return if path.iter().all(|&c| keeps_in_path(c)) {
                Quick::Unchanged
            } else {
                Quick::Undecided
            };
        }
        // A scheme: lowercase (Go lowercases it), then `//authority/path` or opaque data.
        let colon = path.iter().position(|&c| c == b':').unwrap_or(path.len());
        let scheme = &path[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_lowercase)
            && scheme.iter().all(|&c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.')
            });
        if !scheme_ok {
            return Quick::Undecided;
        }
        let rest = &path[colon + 1..];
        if let Some(authority_and_path) = rest.strip_prefix(b"//") {
            self.quick_authority(authority_and_path)
        } else if rest.is_empty() || rest.starts_with(b"/") {
            // `http:/x` is rewritten; `http:` is left to the full parser.
            Quick::Undecided
        } else if rest.iter().all(|&c| c.is_ascii_graphic()) {
            // Opaque (`mailto:a@b`, `javascript:void(0)`): kept raw.
            Quick::Unchanged
        } else {
            Quick::Undecided
        }
    }

    /// The `authority[/path]` after `//`: a plain `host[:port]` other than the backend's
    /// and the request's is only re-serialized.
    fn quick_authority(&self, authority_and_path: &[u8]) -> Quick {
        let (authority, path) = match authority_and_path.iter().position(|&c| c == b'/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, &[][..]),
        };
        let (host, port) = match authority.iter().position(|&c| c == b':') {
            Some(i) => (&authority[..i], &authority[i + 1..]),
            None => (authority, &[][..]),
        };
        let plain_host = !host.is_empty()
            && host
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            && port.iter().all(u8::is_ascii_digit);
        if !plain_host
            || authority == self.backend_authority.as_bytes()
            || authority == self.request_host.as_bytes()
            || !path.iter().all(|&c| keeps_in_path(c))
        {
            return Quick::Undecided;
        }
        Quick::Unchanged
    }
}

/// The answer of [`UrlRules::rewrite_quick`].
#[derive(Debug, PartialEq, Eq)]
enum Quick {
    /// Go parses and serializes the value to the same bytes, and it is not moved.
    Unchanged,
    /// The value moved under the prefix.
    Rewritten(String),
    /// Needs the full parser.
    Undecided,
}

/// Bytes that a path keeps through Go's unescape and escape (`shouldEscape(c, encodePath)`
/// is false; it is true for `%`).
fn keeps_in_path(c: u8) -> bool {
    !should_escape(c, EscapeMode::Path)
}

/// An absolute path that Go's `path.Clean` leaves alone, but for a trailing `/`: no empty
/// segment (`//`) before the last one, no `.` or `..` segment.
fn is_clean_path(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let mut segments = rest.split(|&c| c == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return false;
        }
    }
    true
}

/// Bytes that a fragment keeps through Go's unescape and escape (`encodeFragment`).
fn keeps_in_fragment(c: u8) -> bool {
    !should_escape(c, EscapeMode::Fragment)
}

/// Everything [`rewrite_response`] needs to know about one proxied request.
///
/// Cheap to clone (the URL rule is shared).
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub struct RewriteContext {
    rules: Arc<UrlRules>,
    kind: Option<ResourceKind>,
    options: RewriteOptions,
}

#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
impl RewriteContext {
    /// A context for one response.
    ///
    /// * `prefix`: the proxy prefix, e.g. `/api/v1/namespaces/ns/services/svc/proxy`
    ///   ([`ProxyRequest::prefix`]);
    /// * `backend_authority`: the `host[:port]` the proxy dialed, written as upstream writes
    ///   the location host (`10.1.2.3:8080`, `[fd00::1]:80`); links naming it are rewritten;
    /// * `request_host`: the `Host` header sent to the backend (the client's); links naming
    ///   it are rewritten too but keep their scheme and host.
    pub fn new(
        prefix: impl Into<String>,
        backend_authority: impl Into<String>,
        request_host: impl Into<String>,
    ) -> Self {
        Self {
            rules: Arc::new(UrlRules::new(
                &prefix.into(),
                &backend_authority.into(),
                &request_host.into(),
            )),
            kind: None,
            options: RewriteOptions::default(),
        }
    }

    /// A context for a parsed proxy request: its prefix and kind.
    pub fn for_request(
        request: &ProxyRequest,
        backend_authority: impl Into<String>,
        request_host: impl Into<String>,
        options: RewriteOptions,
    ) -> Self {
        Self::new(request.prefix(), backend_authority, request_host)
            .with_kind(request.kind())
            .with_options(options)
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RewriteOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the request kind, so the per-kind switches of [`RewriteOptions`] apply.
    pub fn with_kind(mut self, kind: ResourceKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the scheme and host rewritten links get (upstream's transport scheme/host, which
    /// kube-apiserver takes from an absolute-form request line and is empty for normal
    /// requests, giving host-relative links). Empty by default.
    #[cfg(any(feature = "test-util", feature = "fuzzing"))]
    pub fn with_public_origin(mut self, scheme: &str, host: &str) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.public_scheme = scheme.to_owned();
        rules.public_host = host.to_owned();
        self
    }

    /// The options in force.
    #[cfg(feature = "test-util")]
    pub fn options(&self) -> &RewriteOptions {
        &self.options
    }

    /// The proxy prefix.
    #[cfg(feature = "test-util")]
    pub fn prefix(&self) -> &str {
        &self.rules.prefix
    }

    /// Whether this context rewrites anything (master switch and per-kind switch).
    pub fn is_active(&self) -> bool {
        match self.kind {
            Some(kind) => self.options.is_enabled_for(kind),
            None => self.options.enabled,
        }
    }

    /// kube-apiserver's `rewriteURL` applied to one URL reference, as Go would parse and
    /// print it: links to the backend or to the request host with an absolute path move
    /// under the prefix (path-cleaned, trailing `/` kept); foreign hosts and relative
    /// references are only re-serialized.
    ///
    #[cfg(any(test, feature = "test-util"))]
    pub fn rewrite_url(&self, url: &str) -> Result<String, UrlParseError> {
        let bytes = self.rules.rewrite(url.as_bytes())?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// How kube-apiserver derives the prefix when it has no route grammar (its
    /// `defaultProxyTransport`): the incoming path with the backend path (plus `/` when the
    /// incoming path ends in one) cut off its end as a plain string suffix.
    ///
    #[cfg(any(test, feature = "test-util"))]
    pub fn derive_prefix(incoming_path: &str, backend_path: &str) -> String {
        let mut suffix = backend_path.to_owned();
        if incoming_path.ends_with('/') && !suffix.ends_with('/') {
            suffix.push('/');
        }
        incoming_path
            .strip_suffix(suffix.as_str())
            .unwrap_or(incoming_path)
            .to_owned()
    }
}

/// Rewrites a backend response for the client.
///
/// Call it once per non-upgrade response, right after the backend response head arrives
/// (never for upgrades: upstream rewrites nothing there). It:
///
/// 1. rewrites `Location` when non-empty (any status) with [`RewriteContext::rewrite_url`];
///    an unparsable one is kube-apiserver's 500 `InternalError`
///    (`Internal error occurred: error trying to parse Location header: parse "...": ...`),
///    returned as `Err` for the engine to answer with;
/// 2. rewrites `Content-Location`, `Refresh` and `Set-Cookie` paths (our additions, per
///    [`RewriteOptions`]);
/// 3. when there was no `Location`, the media type is exactly `text/html` and the
///    `Content-Encoding` is none, `gzip` or `deflate`, wraps the body in the streaming HTML
///    rewriter and removes `Content-Length`. Anything else keeps its body untouched.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub fn rewrite_response<B>(
    ctx: &RewriteContext,
    response: Response<B>,
) -> Result<Response<RewrittenBody<B>>, Status>
where
    B: http_body::Body<Data = Bytes>,
{
    if !ctx.is_active() {
        return Ok(response.map(RewrittenBody::passthrough));
    }
    let (mut parts, body) = response.into_parts();
    let outcome = location::rewrite_headers(ctx, &mut parts.headers)?;
    let rewrite_body = ctx.options.html
        && !outcome.had_location
        && has_body(parts.status)
        && !body.is_end_stream()
        && is_html(&parts.headers);
    let coding = if rewrite_body {
        Coding::of(&parts.headers)
    } else {
        None
    };
    let body = match coding {
        Some(coding) => {
            parts.headers.remove(CONTENT_LENGTH);
            RewrittenBody::html(body, coding, &ctx.rules, &ctx.options)
        }
        None => {
            if rewrite_body {
                tracing::debug!("not rewriting an HTML body with an unsupported content coding");
            }
            RewrittenBody::passthrough(body)
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// Whether [`rewrite_response`] could change a response with these headers: it touches
/// only `Location`, `Content-Location`, `Refresh`, `Set-Cookie` and `text/html` bodies, so a
/// response carrying none of them passes through unchanged and the caller may skip building
/// a [`RewriteContext`]. Keep in step with `location::rewrite_headers` and the body rule.
pub(crate) fn may_rewrite(headers: &http::HeaderMap) -> bool {
    use http::header::{CONTENT_LOCATION, LOCATION, REFRESH, SET_COOKIE};
    headers.keys().any(|name| {
        name == LOCATION || name == CONTENT_LOCATION || name == REFRESH || name == SET_COOKIE
    }) || is_html(headers)
}

fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Go: `strings.TrimSpace(strings.SplitN(Header.Get("Content-Type"), ";", 2)[0]) == "text/html"`.
fn is_html(headers: &http::HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let media_type = value
            .as_bytes()
            .split(|&c| c == b';')
            .next()
            .unwrap_or_default();
        media_type.trim_ascii() == b"text/html"
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;

    #[test]
    fn location_is_rewritten_under_the_prefix() {
        let ctx = RewriteContext::new(
            "/api/v1/namespaces/ns/services/web/proxy", // ProxyRequest::prefix()
            "10.1.2.3:8080",                            // the address the proxy dialed
            "apiserver.example:6443",                   // the Host header sent to the backend
        )
        .with_options(RewriteOptions::default());
        let backend = http::Response::builder()
            .status(302)
            .header("location", "/login?next=%2F")
            .body(Full::new(Bytes::new()))
            .expect("response");
        let response = rewrite_response(&ctx, backend).expect("rewritten");
        assert_eq!(
            response.headers()["location"],
            "/api/v1/namespaces/ns/services/web/proxy/login?next=%2F"
        );
    }

    #[test]
    fn urls_move_under_the_prefix_as_kube_apiserver_moves_them() {
        let ctx = RewriteContext::new(
            "/api/v1/namespaces/ns/pods/web/proxy",
            "10.1.2.3:8080",
            "k8s:6443",
        );
        let url = |u: &str| ctx.rewrite_url(u).expect("parses");
        assert_eq!(url("/a/../b/"), "/api/v1/namespaces/ns/pods/web/proxy/b/");
        assert_eq!(
            url("http://10.1.2.3:8080/x"),
            "/api/v1/namespaces/ns/pods/web/proxy/x"
        );
        assert_eq!(url("https://example.com/x"), "https://example.com/x");
        assert_eq!(url("style.css"), "style.css");
        assert!(ctx.rewrite_url("http://[bad").is_err());
    }

    /// Every value `rewrite_quick` decides gets the answer of the full Go parse and
    /// serialization: all values of up to three pieces from a list of URL fragments chosen
    /// to hit every branch, and pseudo-random ones of up to six pieces.
    #[test]
    fn quick_path_agrees_with_go_parse_and_serialize() {
        const PIECES: [&str; 34] = [
            "/",
            "//",
            "///",
            "a",
            "B",
            "p",
            ".",
            "..",
            ":",
            "?",
            "#",
            "%",
            "%2F",
            "%zz",
            "@",
            "~",
            "(",
            "*",
            " ",
            "\u{e9}",
            "\t",
            "http:",
            "HTTP:",
            "mailto:",
            "10.1.2.3:8080",
            "k8s:6443",
            "/p",
            "/px",
            "[::1]",
            ":80",
            "&",
            "'",
            "=",
            "x:y",
        ];
        let all_rules = [
            UrlRules::new("/p", "10.1.2.3:8080", "k8s:6443"),
            UrlRules::new("/p/", "10.1.2.3:8080", "k8s:6443"),
            UrlRules::new("/a b", "10.1.2.3:8080", "k8s:6443"),
            UrlRules::new("/a/./b", "10.1.2.3:8080", "k8s:6443"),
            UrlRules::new(
                "/api/v1/namespaces/ns/services/web:http/proxy",
                "h:1",
                "k8s",
            ),
            UrlRules::new("", "10.1.2.3:8080", ""),
            UrlRules {
                public_scheme: "https".to_owned(),
                public_host: "k8s:6443".to_owned(),
                ..UrlRules::new("/p", "10.1.2.3:8080", "k8s:6443")
            },
        ];
        let mut decided = 0usize;
        let mut check = |value: &str| {
            for rules in &all_rules {
                let quick = match rules.rewrite_quick(value) {
                    Quick::Unchanged => Some(value.to_owned()),
                    Quick::Rewritten(new) => Some(new),
                    Quick::Undecided => continue,
                };
                decided += 1;
                assert_eq!(quick, rules.rewrite_str_full(value), "value {value:?}");
            }
        };
        let mut value = String::new();
        for a in PIECES {
            for b in PIECES {
                for c in PIECES {
                    value.clear();
                    value.extend([a, b, c]);
                    check(&value);
                }
                value.clear();
                value.extend([a, b]);
                check(&value);
            }
            check(a);
        }
        check("");
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100_000 {
            value.clear();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bits = state;
            for _ in 0..1 + bits % 6 {
                bits /= 6;
                value.push_str(PIECES[(bits % PIECES.len() as u64) as usize]);
                bits /= PIECES.len() as u64;
            }
            check(&value);
        }
        assert!(
            decided > 50_000,
            "the quick path decided only {decided} values"
        );
    }

    #[test]
    fn quick_path_takes_the_common_links() {
        let rules = UrlRules::new("/p", "10.1.2.3:8080", "k8s:6443");
        let quick = |v: &str| rules.rewrite_quick(v);
        assert_eq!(
            quick("/docs/a.html#top"),
            Quick::Rewritten("/p/docs/a.html#top".into())
        );
        assert_eq!(
            quick("/g?x=1&y=%2F"),
            Quick::Rewritten("/p/g?x=1&y=%2F".into())
        );
        assert_eq!(quick("/"), Quick::Rewritten("/p/".into()));
        assert_eq!(quick("/p/x"), Quick::Unchanged);
        assert_eq!(quick("logs?pod=web-0"), Quick::Unchanged);
        assert_eq!(quick("#top"), Quick::Unchanged);
        assert_eq!(quick("https://example.com/docs"), Quick::Unchanged);
        assert_eq!(quick("//cdn.example.com:443/x.js"), Quick::Unchanged);
        assert_eq!(quick("mailto:a@b.c"), Quick::Unchanged);
        assert_eq!(quick("http://10.1.2.3:8080/x"), Quick::Undecided);
        assert_eq!(quick("/a%20b"), Quick::Undecided);
    }

    #[test]
    fn prefix_derivation_cuts_the_backend_path() {
        assert_eq!(
            RewriteContext::derive_prefix("/a/test/location", "/location"),
            "/a/test"
        );
        assert_eq!(RewriteContext::derive_prefix("/a/test/", ""), "/a/test");
    }
}
