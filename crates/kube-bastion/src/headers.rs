//! Header rules for forwarded requests and relayed responses (spec sections 3.2 and 6).
//!
//! Every function here works on header values as bytes: a value that is not valid UTF-8 is
//! forwarded byte for byte, never dropped or re-encoded.
//!
//! Requests (in [`prepare_request`]'s order):
//!
//! 1. hop-by-hop headers and every header named in `Connection` are removed
//!    ([`remove_hop_by_hop`]); `Te` survives only as `Te: trailers`;
//! 2. credentials are removed: `Authorization`, `Impersonate-*`, `X-Remote-*`, the bearer
//!    token kubectl and browsers put in `Sec-WebSocket-Protocol`
//!    (`base64url.bearer.authorization.k8s.io.<token>`, the other protocols are kept) and
//!    the configured names and prefixes ([`strip_credentials`]);
//! 3. the peer IP is appended to `X-Forwarded-For` ([`append_forwarded_for`]);
//! 4. `X-Forwarded-Uri` is set from the plan (always overwriting the client's value);
//! 5. `X-Forwarded-Prefix` is set to the proxy prefix (overwriting the client's value),
//!    unless [`HeaderOptions::forwarded_prefix`] is off;
//! 6. for a Service annotated with
//!    [`FORWARD_IDENTITY_ANNOTATION`](crate::FORWARD_IDENTITY_ANNOTATION), the
//!    authenticated user is named in `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group` and
//!    `X-Remote-Extra-*` ([`set_identity`]);
//! 7. `Host` is the client's (or the target authority, see [`HostHeader`]).
//!
//! Responses ([`prepare_response`]): hop-by-hop headers and `Connection`-named headers are
//! removed (a `Trailer` announcement is kept, as Go's reverse proxy re-announces it), and
//! `Access-Control-Allow-{Origin,Methods,Headers,Credentials}` are removed.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::UserInfo;

/// The address of the client connection, inserted by the host into the request extensions
/// (`request.extensions_mut().insert(PeerAddr(addr))`) so the proxy can append it to
/// `X-Forwarded-For`.
///
/// Hosts that already record the peer in another extension (axum's `ConnectInfo`, for
/// example) can instead tell the proxy where to look with
/// [`ProxyConfigBuilder::peer_addr`](crate::config::ProxyConfigBuilder::peer_addr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// Which `Host` header the backend receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostHeader {
    /// The `Host` the client sent to the apiserver (or the HTTP/2 `:authority`), as
    /// kube-apiserver does. The default.
    #[default]
    Client,
    /// The target's authority (`10.1.2.3:8080`, or the node address name), as
    /// `kubectl proxy` and the aggregator do.
    Target,
}

/// Header handling options (part of [`ProxyConfig`](crate::ProxyConfig)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOptions {
    /// Extra request header names removed before forwarding (for example the host's own
    /// `--requestheader-username-headers`). Added to the built-in credential list.
    pub strip: Vec<HeaderName>,
    /// Extra request header name prefixes removed before forwarding (lowercase, e.g.
    /// `x-my-auth-`).
    pub strip_prefixes: Vec<String>,
    /// The `Host` header sent to the backend.
    pub host: HostHeader,
    /// Send `X-Forwarded-Prefix` with the proxy prefix
    /// (`/api/v1/namespaces/ns/pods/web:8080/proxy`), replacing any value the client sent,
    /// so a backend can build links that stay under the proxy. Default on;
    /// kube-apiserver does not send it (kubernetes/kubernetes#48503). When off, a client's
    /// `X-Forwarded-Prefix` passes as any other header does.
    pub forwarded_prefix: bool,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        HeaderOptions {
            strip: Vec::new(),
            strip_prefixes: Vec::new(),
            host: HostHeader::default(),
            forwarded_prefix: true,
        }
    }
}

impl HeaderOptions {
    /// Whether `name` is a credential header that must not reach a backend. A name with
    /// `_` is also judged with `-` in its place: CGI-style servers (PHP, Rack, WSGI) read
    /// `X_Remote_User` and `X-Remote-User` as the same variable.
    pub fn is_credential(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        self.is_credential_name(name)
            || (name.contains('_') && self.is_credential_name(&name.replace('_', "-")))
    }

    /// [`is_credential`](Self::is_credential) for a lowercase name as written.
    fn is_credential_name(&self, name: &str) -> bool {
        is_builtin_credential(name)
            || self.strip.iter().any(|s| s.as_str() == name)
            || self
                .strip_prefixes
                .iter()
                .any(|p| starts_with_ignore_case(name, p))
    }
}

/// Hop-by-hop headers removed in both directions (besides those named in `Connection`).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Response CORS headers kube-apiserver deletes (`Expose-Headers` and `Max-Age` are kept).
const CORS: [HeaderName; 4] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
];

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Uri`.
pub(crate) const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// `X-Forwarded-Prefix`.
pub(crate) const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `X-Remote-Uid` (the aggregator's front-proxy header for the user's uid).
const X_REMOTE_UID: HeaderName = HeaderName::from_static("x-remote-uid");

/// The `Sec-WebSocket-Protocol` entry prefix under which kube-apiserver accepts a bearer
/// token from WebSocket clients that cannot set `Authorization`
/// (`base64url.bearer.authorization.k8s.io.<unpadded base64url token>`). Such an entry is
/// a credential: it never reaches a backend.
pub(crate) const WEBSOCKET_TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Removes the bearer-token entries ([`WEBSOCKET_TOKEN_PROTOCOL_PREFIX`]) from every
/// `Sec-WebSocket-Protocol` value, keeping the other protocols in order; the header goes
/// when nothing else is left. kube-apiserver matches the prefix case-sensitively after
/// trimming spaces, and so does this.
pub(crate) fn strip_websocket_token(headers: &mut HeaderMap) {
    let prefix = WEBSOCKET_TOKEN_PROTOCOL_PREFIX.as_bytes();
    let is_token = |t: &[u8]| t.starts_with(prefix);
    let carries_token = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| is_token(t.trim_ascii()))
        });
    if !carries_token {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| {
            let rest: Vec<&[u8]> = tokens(value).filter(|t| !is_token(t)).collect();
            if rest.is_empty() {
                return None;
            }
            // Tokens of a valid value joined by ", " are still a valid value.
            HeaderValue::from_bytes(&rest.join(&b", "[..])).ok()
        })
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    for value in kept {
        headers.append(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn is_builtin_credential(n: &str) -> bool {
    // Header names are stored lowercase by `http`.
    n == "authorization" || n.starts_with("impersonate-") || n.starts_with("x-remote-")
}

/// Splits a comma-separated header value into trimmed, non-empty tokens (as bytes).
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Appends the decimal digits of `n` (`core::fmt` is several times slower for this).
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `ip` as its `Display` form does (dotted quad; IPv6 through `core::fmt`).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u16::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as its `Display` form does (`1.2.3.4:80`, `[fd00::1]:80`, scope ids
/// included).
pub(crate) fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            push_decimal(out, v4.port());
        }
        SocketAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Which of the fixed hop-by-hop names ([`HOP_BY_HOP`] by index, then `Te`) and, with
/// `cors`, the [`CORS`] names (bits 8 to 11) are present: one pass over the names instead
/// of a hash lookup per name (most requests and responses carry none of them).
fn present_names(headers: &HeaderMap, cors: bool) -> u16 {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if name == header::TE {
            present |= TE_BIT;
        } else if cors && let Some(i) = CORS.iter().position(|h| h == name) {
            present |= 1 << (8 + i);
        }
    }
    present
}

/// [`present_names`]' bit for `Te`.
const TE_BIT: u16 = 1 << 7;

/// Removes hop-by-hop headers and every header named in a `Connection` value.
///
/// `Te` is removed unless one of its tokens is `trailers`, in which case it becomes exactly
/// `Te: trailers` (Go's reverse proxy does the same). `Trailer` is left alone: on requests
/// and responses it announces trailers that are relayed.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let present = present_names(headers, false);
    remove_present_hop_by_hop(headers, present);
}

/// [`remove_hop_by_hop`] given [`present_names`].
fn remove_present_hop_by_hop(headers: &mut HeaderMap, present: u16) {
    if present & 1 != 0 {
        // `HOP_BY_HOP[0]` is `Connection`: take its values out (usually one: no allocation
        // for the rest), then remove what they name.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        headers.remove(header::CONNECTION);
        for token in first.iter().chain(&rest).flat_map(tokens) {
            // Fixed hop-by-hop names (`keep-alive`, `upgrade`, ...) are removed below when
            // present, so only other names need a lookup.
            if HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
            {
                continue;
            }
            // A token that is not a valid header name names nothing (`remove` by `&str`
            // finds nothing for it, without allocating a name).
            if let Ok(name) = std::str::from_utf8(token) {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & TE_BIT != 0 && headers.contains_key(header::TE) {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"trailers")));
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Removes credential headers: `Authorization`, `Impersonate-*`, `X-Remote-*`, the names
/// and prefixes configured in `options`, and the bearer-token entries of
/// `Sec-WebSocket-Protocol` ([`strip_websocket_token`]).
pub(crate) fn strip_credentials(headers: &mut HeaderMap, options: &HeaderOptions) {
    // Fast path: nothing to do for the common request without credentials.
    let mut websocket = false;
    let mut credential = false;
    for name in headers.keys() {
        if name == header::SEC_WEBSOCKET_PROTOCOL {
            websocket = true;
        } else if options.is_credential(name) {
            credential = true;
        }
    }
    if websocket {
        strip_websocket_token(headers);
    }
    if !credential {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| options.is_credential(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// Appends `peer` to `X-Forwarded-For` as Go's reverse proxy does: all previous values
/// joined with `", "`, then `", <peer>"`; a single `<peer>` when there was none.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut buf = Vec::with_capacity(64);
    for (i, prior) in headers.get_all(&X_FORWARDED_FOR).iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(prior.as_bytes());
    }
    if !buf.is_empty() {
        buf.extend_from_slice(b", ");
    }
    push_ip(&mut buf, peer);
    match HeaderValue::from_maybe_shared(Bytes::from(buf)) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR, value);
        }
        Err(_) => {
            // Prior values were valid header bytes and an IP is ASCII: unreachable in
            // practice; fall back to the peer alone rather than forward a broken header.
            if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
    }
}

/// Sets the front-proxy identity headers from `user`, as kube-apiserver's aggregator does
/// (`SetAuthProxyHeaders`): `X-Remote-User`, `X-Remote-Uid` when the uid is not empty, one
/// `X-Remote-Group` per group and one `X-Remote-Extra-<escaped key>` per extra value.
/// Whatever was there is replaced. When one of the values cannot be a header value (a
/// control character), none is sent: a partial identity would be a different one.
pub(crate) fn set_identity(headers: &mut HeaderMap, user: &UserInfo) {
    headers.remove(crate::REMOTE_USER_HEADER);
    headers.remove(X_REMOTE_UID);
    headers.remove(crate::REMOTE_GROUP_HEADER);
    let extra_prefix = crate::REMOTE_EXTRA_PREFIX.to_ascii_lowercase();
    let old: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(&extra_prefix))
        .cloned()
        .collect();
    for name in old {
        headers.remove(name);
    }
    let build = || -> Option<Vec<(HeaderName, HeaderValue)>> {
        let value = |v: &str| HeaderValue::from_str(v).ok();
        let mut out = vec![(crate::REMOTE_USER_HEADER, value(&user.name)?)];
        if !user.uid.is_empty() {
            out.push((X_REMOTE_UID, value(&user.uid)?));
        }
        for group in &user.groups {
            out.push((crate::REMOTE_GROUP_HEADER, value(group)?));
        }
        for (key, values) in &user.extra {
            let name = format!("{extra_prefix}{}", escape_extra_key(key));
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            for v in values {
                out.push((name.clone(), value(v)?));
            }
        }
        Some(out)
    };
    match build() {
        Some(identity) => {
            for (name, value) in identity {
                headers.append(name, value);
            }
        }
        None => tracing::warn!(
            user = %user.name,
            "the user's identity cannot be written as headers; none sent"
        ),
    }
}

/// Upstream's `headerKeyEscape` (the aggregator's): an extra key made a header name
/// suffix, every byte that is not a header token character, and `%`, written `%XX`.
pub(crate) fn escape_extra_key(key: &str) -> String {
    fn legal(b: u8) -> bool {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if legal(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// What the proxy adds to a forwarded request besides the client's headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forwarded<'a> {
    /// The client address, appended to `X-Forwarded-For`.
    pub(crate) peer: Option<IpAddr>,
    /// The plan's `X-Forwarded-Uri`.
    pub(crate) uri: &'a str,
    /// The proxy prefix for `X-Forwarded-Prefix` (sent when the option is on).
    pub(crate) prefix: &'a str,
    /// The user to name in the front-proxy identity headers (a Service that asked for it).
    pub(crate) identity: Option<&'a UserInfo>,
}

/// Applies every request rule for a forwarded request (the upgrade path adds its own
/// upgrade headers afterwards).
///
/// `host` is the `Host` value to send (see [`HostHeader`]).
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    options: &HeaderOptions,
    forwarded: Forwarded<'_>,
    host: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    strip_credentials(headers, options);
    if let Some(peer) = forwarded.peer {
        append_forwarded_for(headers, peer);
    }
    match HeaderValue::from_str(forwarded.uri) {
        Ok(v) => {
            headers.insert(X_FORWARDED_URI, v);
        }
        Err(_) => {
            headers.remove(X_FORWARDED_URI);
        }
    }
    if options.forwarded_prefix {
        match HeaderValue::from_str(forwarded.prefix) {
            Ok(v) => {
                headers.insert(X_FORWARDED_PREFIX, v);
            }
            Err(_) => {
                headers.remove(X_FORWARDED_PREFIX);
            }
        }
    }
    if let Some(user) = forwarded.identity {
        set_identity(headers, user);
    }
    match host {
        Some(host) => {
            headers.insert(header::HOST, host);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
}

/// Applies every response rule for a relayed (non-upgrade) response: hop-by-hop headers and
/// the four `Access-Control-Allow-*` headers removed.
pub(crate) fn prepare_response(headers: &mut HeaderMap) {
    let present = present_names(headers, true);
    if present == 0 {
        return;
    }
    remove_present_hop_by_hop(headers, present);
    // Responses carry no `Te`; `remove_hop_by_hop` may have re-inserted `Te: trailers`.
    if present & TE_BIT != 0 {
        headers.remove(header::TE);
    }
    for (i, name) in CORS.iter().enumerate() {
        if present & (1 << (8 + i)) != 0 {
            headers.remove(name);
        }
    }
}

/// The `Host` value the client addressed: its `Host` header, else the URI authority
/// (HTTP/2 `:authority`, absolute-form requests).
pub(crate) fn client_host(headers: &HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    if let Some(h) = headers.get(header::HOST) {
        return Some(h.clone());
    }
    uri.authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn connection_tokens_and_hop_by_hop_removed() {
        let mut h = map(&[
            ("connection", b"keep-alive, X-Secret"),
            ("connection", b"x-other"),
            ("x-secret", b"1"),
            ("x-other", b"2"),
            ("keep-alive", b"timeout=5"),
            ("proxy-authorization", b"Basic x"),
            ("te", b"gzip"),
            ("upgrade", b"h2c"),
            ("x-keep", b"3"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "3");
    }

    #[test]
    fn te_trailers_survives_as_trailers() {
        let mut h = map(&[("te", b"gzip, Trailers")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn credentials_removed_others_kept() {
        let opts = HeaderOptions {
            strip: vec![HeaderName::from_static("x-my-user")],
            strip_prefixes: vec!["x-my-extra-".into()],
            ..Default::default()
        };
        let mut h = map(&[
            ("authorization", b"Bearer a"),
            ("impersonate-user", b"u"),
            ("impersonate-extra-scopes", b"s"),
            ("x-remote-user", b"u"),
            ("x-remote-extra-a", b"a"),
            ("x-my-user", b"u"),
            ("x-my-extra-foo", b"f"),
            // CGI-style servers read `_` as `-`.
            ("x_remote_user", b"u"),
            ("x_remote-group", b"g"),
            ("impersonate_user", b"u"),
            ("x_my_user", b"u"),
            ("x_my_extra_bar", b"b"),
            ("cookie", b"session=1"),
            ("x_request_id", b"r"),
        ]);
        strip_credentials(&mut h, &opts);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["cookie"], "session=1");
        assert_eq!(h["x_request_id"], "r");
    }

    #[test]
    fn websocket_bearer_token_protocol_is_a_credential() {
        let opts = HeaderOptions::default();
        let mut h = map(&[
            (
                "sec-websocket-protocol",
                b"base64url.bearer.authorization.k8s.io.czNjcmV0, v5.channel.k8s.io",
            ),
            ("sec-websocket-protocol", b"v4.channel.k8s.io"),
            ("authorization", b"Bearer other"),
        ]);
        strip_credentials(&mut h, &opts);
        let left: Vec<_> = h.get_all("sec-websocket-protocol").iter().collect();
        assert_eq!(left, ["v5.channel.k8s.io", "v4.channel.k8s.io"]);
        assert!(!h.contains_key("authorization"));

        let mut only = map(&[(
            "sec-websocket-protocol",
            b" base64url.bearer.authorization.k8s.io.czNjcmV0 ",
        )]);
        strip_credentials(&mut only, &opts);
        assert!(only.is_empty(), "{only:?}");

        // The prefix is matched as kube-apiserver matches it: case-sensitively.
        let mut other = map(&[(
            "sec-websocket-protocol",
            b"Base64url.Bearer.authorization.k8s.io.x, chat",
        )]);
        strip_credentials(&mut other, &opts);
        assert_eq!(
            other["sec-websocket-protocol"],
            "Base64url.Bearer.authorization.k8s.io.x, chat"
        );
    }

    fn forwarded<'a>(identity: Option<&'a UserInfo>) -> Forwarded<'a> {
        Forwarded {
            peer: None,
            uri: "/api/v1/namespaces/ns/services/web:80/proxy/x",
            prefix: "/api/v1/namespaces/ns/services/web:80/proxy",
            identity,
        }
    }

    #[test]
    fn forwarded_prefix_replaces_the_clients_unless_off() {
        let mut h = map(&[
            ("x-forwarded-prefix", b"/evil"),
            ("x-forwarded-prefix", b"/x"),
        ]);
        prepare_request(&mut h, &HeaderOptions::default(), forwarded(None), None);
        let prefixes: Vec<_> = h.get_all("x-forwarded-prefix").iter().collect();
        assert_eq!(prefixes, ["/api/v1/namespaces/ns/services/web:80/proxy"]);

        let off = HeaderOptions {
            forwarded_prefix: false,
            ..Default::default()
        };
        let mut h = map(&[("x-forwarded-prefix", b"/client")]);
        prepare_request(&mut h, &off, forwarded(None), None);
        assert_eq!(h["x-forwarded-prefix"], "/client");
        let mut h = HeaderMap::new();
        prepare_request(&mut h, &off, forwarded(None), None);
        assert!(!h.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn identity_is_the_users_never_the_clients() {
        let spoofed: &[(&str, &[u8])] = &[
            ("x-remote-user", b"mallory"),
            ("x-remote-uid", b"0"),
            ("x-remote-group", b"system:masters"),
            ("x-remote-extra-scopes", b"all"),
        ];
        // Without an identity to send, the client's headers are gone.
        let mut h = map(spoofed);
        prepare_request(&mut h, &HeaderOptions::default(), forwarded(None), None);
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("x-remote-")),
            "{h:?}"
        );

        let mut alice = UserInfo::new("alice", "1001", vec!["dev".into(), "ops".into()]);
        alice
            .extra
            .insert("example.com/project".into(), vec!["p1".into(), "p2".into()]);
        alice.extra.insert("Scopes".into(), vec!["read".into()]);
        let mut h = map(spoofed);
        prepare_request(
            &mut h,
            &HeaderOptions::default(),
            forwarded(Some(&alice)),
            None,
        );
        let all = |name: &str| -> Vec<&[u8]> {
            h.get_all(name).iter().map(HeaderValue::as_bytes).collect()
        };
        assert_eq!(all("x-remote-user"), [b"alice"]);
        assert_eq!(all("x-remote-uid"), [b"1001"]);
        assert_eq!(all("x-remote-group"), [&b"dev"[..], b"ops"]);
        assert_eq!(all("x-remote-extra-example.com%2fproject"), [b"p1", b"p2"]);
        assert_eq!(all("x-remote-extra-scopes"), [b"read"]);
        assert_eq!(
            h.keys()
                .filter(|k| k.as_str().starts_with("x-remote-"))
                .count(),
            5,
            "{h:?}"
        );

        // A value that cannot be a header: no identity at all rather than part of one.
        let bad = UserInfo::new("alice", "", vec!["dev\nx".to_owned()]);
        let mut h = map(spoofed);
        prepare_request(
            &mut h,
            &HeaderOptions::default(),
            forwarded(Some(&bad)),
            None,
        );
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("x-remote-")),
            "{h:?}"
        );
    }

    #[test]
    fn forwarded_for_joins_priors_bytewise() {
        let mut h = map(&[
            ("x-forwarded-for", b"1.1.1.1"),
            ("x-forwarded-for", b"\xff2.2.2.2"),
        ]);
        append_forwarded_for(&mut h, "10.0.0.9".parse().unwrap());
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-for"].as_bytes(),
            b"1.1.1.1, \xff2.2.2.2, 10.0.0.9"
        );
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "fd00::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "fd00::1");
    }

    #[test]
    fn addresses_print_as_display_does() {
        for text in [
            "0.0.0.0:0",
            "10.1.2.3:8080",
            "255.255.255.255:65535",
            "127.0.0.1:9",
            "[fd00::1]:443",
            "[::ffff:10.0.0.1]:80",
            "[fe80::1%2]:10250",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(out, addr.to_string().into_bytes());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(out, addr.ip().to_string().into_bytes());
        }
    }

    #[test]
    fn clean_headers_are_left_alone() {
        let mut h = map(&[("accept", b"*/*"), ("x-keep", b"3"), ("trailer", b"x")]);
        let before = h.clone();
        remove_hop_by_hop(&mut h);
        prepare_response(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn response_cors_removed() {
        let mut h = map(&[
            ("access-control-allow-origin", b"*"),
            ("access-control-allow-credentials", b"true"),
            ("access-control-allow-methods", b"GET"),
            ("access-control-allow-headers", b"X"),
            ("access-control-expose-headers", b"Y"),
            ("access-control-max-age", b"5"),
            ("trailer", b"grpc-status"),
        ]);
        prepare_response(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(h.contains_key("access-control-expose-headers"));
        assert!(h.contains_key("access-control-max-age"));
        assert!(h.contains_key("trailer"));
    }
}
