//! Upgraded connections (WebSocket, SPDY, anything with `Connection: Upgrade`) and redirect
//! safety.
//!
//! An upgrade request is checked ([`prepare`]: HTTP/1.1 client connection, allowed
//! protocol, no body, not shutting down), sent as HTTP/1.1 on a fresh raw connection to the
//! chosen endpoint, and the backend's answer decides ([`proxy_upgrade`]):
//!
//! | backend answer | client gets | backend connection |
//! |---|---|---|
//! | `101` | `101` with the backend's headers, then a tunnel both ways | tunnelled |
//! | below 400, not 101 (2xx, every 3xx) | 500 `invalid upgrade response: status code N` | closed, never followed (CVE-2020-8559) |
//! | 400 or more | that response, then `Connection: close` | closed after the body (CVE-2018-1002105) |
//!
//! The tunnel propagates half-close, ends after an idle timeout, can be rate limited per
//! direction (kube-apiserver's `--max-connection-bytes-per-sec`) and closes when a
//! [`Shutdown`] grace period ends.
//!
//! For ordinary requests, [`check_forwarding_redirect`] implements the optional rejection of
//! backend redirects (kube-apiserver's aggregator behaviour).

mod handshake;
mod ratelimit;
mod relay;
mod shutdown;
mod tunnel;

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::Status;

pub(crate) use relay::UpgradeBody;
pub use shutdown::Shutdown;

use handshake::{Verdict, framing, read_response_head, verdict};
use tunnel::TunnelSettings;

/// How upgraded connections are handled.
///
/// Defaults: protocols `websocket` and `SPDY/3.1`; idle timeout 4 hours (the kubelet's
/// default for streaming connections); no rate limit (kube-apiserver's default); 30 s for the
/// backend to answer the upgrade; 10 s and 1 MiB for relaying a backend error response;
/// 64 KiB for the backend's response head; forwarding redirects on ordinary requests passed
/// to the client (kube-apiserver's choice for pods, services and nodes).
///
/// ```
/// use std::time::Duration;
/// use kube_bastion::UpgradeOptions;
///
/// let options = UpgradeOptions::default()
///     .allow_protocol("kubernetes.io/portforward")
///     .idle_timeout(Some(Duration::from_secs(600)))
///     .max_bytes_per_sec(1 << 20);
/// assert!(options.allows_protocol("WebSocket"));
/// assert!(options.allows_protocol("spdy/3.1"));
/// assert!(!options.allows_protocol("h2c"));
/// ```
#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    protocols: Arc<[String]>,
    idle_timeout: Option<Duration>,
    max_bytes_per_sec: Option<NonZeroU64>,
    handshake_timeout: Duration,
    error_deadline: Duration,
    max_error_body: u64,
    max_response_head: usize,
    reject_forwarding_redirects: bool,
    shutdown: Shutdown,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        Self {
            protocols: Arc::from(vec!["websocket".to_owned(), "SPDY/3.1".to_owned()]),
            idle_timeout: Some(Duration::from_secs(4 * 3600)),
            max_bytes_per_sec: None,
            handshake_timeout: Duration::from_secs(30),
            error_deadline: Duration::from_secs(10),
            max_error_body: 1 << 20,
            max_response_head: 64 * 1024,
            reject_forwarding_redirects: false,
            shutdown: Shutdown::new(),
        }
    }
}

impl UpgradeOptions {
    /// Adds an allowed upgrade protocol. A name without a version (`websocket`) allows every
    /// version of it; a name with one (`SPDY/3.1`) allows exactly that version. Matching
    /// ignores ASCII case.
    pub fn allow_protocol(mut self, protocol: impl Into<String>) -> Self {
        let mut protocols = self.protocols.to_vec();
        protocols.push(protocol.into());
        self.protocols = Arc::from(protocols);
        self
    }

    /// Replaces the allowed upgrade protocols.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Closes a tunnel after this long without a byte in either direction (`None`: never).
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Caps each direction of each tunnel to this many bytes per second; 0 means unlimited,
    /// as for kube-apiserver's `--max-connection-bytes-per-sec`.
    pub fn max_bytes_per_sec(mut self, rate: u64) -> Self {
        self.max_bytes_per_sec = NonZeroU64::new(rate);
        self
    }

    /// How long the backend has to answer the upgrade request (and the client connection to
    /// be handed over after the `101`).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long relaying a backend error response (status 400 or more) may take.
    pub fn error_deadline(mut self, deadline: Duration) -> Self {
        self.error_deadline = deadline;
        self
    }

    /// Rejects backend redirects (3xx with a `Location`) on ordinary requests with a 502
    /// instead of passing them to the client, as kube-apiserver's aggregator does.
    pub fn reject_forwarding_redirects(mut self, reject: bool) -> Self {
        self.reject_forwarding_redirects = reject;
        self
    }

    /// The shutdown switch tunnels obey.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Whether an `Upgrade` token (`websocket`, `SPDY/3.1`, ...) is allowed.
    pub fn allows_protocol(&self, token: &str) -> bool {
        protocol_allowed(&self.protocols, token.as_bytes())
    }

    /// Whether forwarding redirects on ordinary requests are rejected.
    pub fn rejects_forwarding_redirects(&self) -> bool {
        self.reject_forwarding_redirects
    }

    /// The configured per-direction rate limit, if any.
    pub fn rate_limit(&self) -> Option<NonZeroU64> {
        self.max_bytes_per_sec
    }

    /// The shutdown switch.
    pub fn shutdown_switch(&self) -> &Shutdown {
        &self.shutdown
    }

    fn tunnel_settings(&self) -> TunnelSettings {
        TunnelSettings {
            idle_timeout: self.idle_timeout,
            max_bytes_per_sec: self.max_bytes_per_sec,
            shutdown: self.shutdown.clone(),
        }
    }
}

fn protocol_allowed(allowed: &[String], token: &[u8]) -> bool {
    let name = token.split(|b| *b == b'/').next().unwrap_or(token);
    allowed.iter().any(|entry| {
        let entry = entry.as_bytes();
        if entry.contains(&b'/') {
            entry.eq_ignore_ascii_case(token)
        } else {
            entry.eq_ignore_ascii_case(name)
        }
    })
}

/// The tokens of every `Upgrade` header value, trimmed, empty ones skipped.
fn upgrade_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Why an upgrade was not tunnelled. Each maps to the Status the client gets
/// ([`UpgradeError::to_status`]).
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum UpgradeError {
    /// The `Upgrade` header names a protocol that is not allowed (400).
    ProtocolNotAllowed(String),
    /// `Connection: Upgrade` without any `Upgrade` protocol (400).
    NoProtocol,
    /// The client connection is not HTTP/1.1 (HTTP/2 extended CONNECT, HTTP/1.0): there is
    /// no connection to take over (400).
    UnsupportedVersion(Version),
    /// The upgrade request carries a body (400).
    RequestBody,
    /// The request did not come from a server that can hand its connection over (500, as
    /// kube-apiserver's `request connection cannot be hijacked`).
    NotHijackable,
    /// The host is shutting down (503).
    ShuttingDown,
    /// Connecting to the backend failed (500 `error dialing backend: ...`).
    Dial(String),
    /// The request target could not be written on a request line (500).
    InvalidTarget,
    /// Writing the request or reading the backend's response head failed (500).
    Handshake(String),
    /// The backend did not answer within the handshake timeout (504).
    Timeout,
    /// The backend answered below 400 but not 101 (500 `invalid upgrade response: status
    /// code N`).
    InvalidStatus(u16),
    /// The backend switched to a protocol that is not allowed (500).
    ResponseProtocolNotAllowed(String),
    /// The backend's `101` names no protocol in `Upgrade`, or one the client did not ask
    /// for (500): no tunnel is opened, as Go's `httputil.ReverseProxy` refuses it.
    ResponseProtocolMismatch {
        /// The client's `Upgrade` protocols, comma-separated.
        requested: String,
        /// The backend's `Upgrade` value (empty when it sent none).
        answered: String,
    },
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::ProtocolNotAllowed(p) => {
                write!(f, "upgrade protocol {p:?} is not allowed")
            }
            UpgradeError::NoProtocol => f.write_str("upgrade request without an Upgrade protocol"),
            UpgradeError::UnsupportedVersion(v) => write!(
                f,
                "upgrade requests need an HTTP/1.1 connection and cannot be tunnelled over {v:?}"
            ),
            UpgradeError::RequestBody => f.write_str("upgrade requests must not have a body"),
            UpgradeError::NotHijackable => {
                f.write_str("request connection cannot be hijacked: no upgradable connection")
            }
            UpgradeError::ShuttingDown => f.write_str("the server is shutting down"),
            UpgradeError::Dial(e) => write!(f, "error dialing backend: {e}"),
            UpgradeError::InvalidTarget => f.write_str("invalid upgrade request target"),
            UpgradeError::Handshake(e) => f.write_str(e),
            UpgradeError::Timeout => f.write_str("timeout awaiting the upgrade response"),
            UpgradeError::InvalidStatus(code) => {
                write!(f, "invalid upgrade response: status code {code}")
            }
            UpgradeError::ResponseProtocolNotAllowed(p) => {
                write!(f, "invalid upgrade response: protocol {p:?} is not allowed")
            }
            UpgradeError::ResponseProtocolMismatch {
                requested,
                answered,
            } => write!(
                f,
                "invalid upgrade response: backend tried to switch protocol {answered:?} when \
                 {requested:?} was requested"
            ),
        }
    }
}

impl std::error::Error for UpgradeError {}

impl UpgradeError {
    /// The HTTP status code the client gets.
    pub(crate) fn code(&self) -> StatusCode {
        match self {
            UpgradeError::ProtocolNotAllowed(_)
            | UpgradeError::NoProtocol
            | UpgradeError::UnsupportedVersion(_)
            | UpgradeError::RequestBody => StatusCode::BAD_REQUEST,
            UpgradeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpgradeError::NotHijackable
            | UpgradeError::Dial(_)
            | UpgradeError::InvalidTarget
            | UpgradeError::Handshake(_)
            | UpgradeError::InvalidStatus(_)
            | UpgradeError::ResponseProtocolNotAllowed(_)
            | UpgradeError::ResponseProtocolMismatch { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Status reason (`None` for untyped 500s, as kube-apiserver writes them).
    pub(crate) fn reason(&self) -> Option<&'static str> {
        match self.code() {
            StatusCode::BAD_REQUEST => Some("BadRequest"),
            StatusCode::SERVICE_UNAVAILABLE => Some("ServiceUnavailable"),
            StatusCode::GATEWAY_TIMEOUT => Some("Timeout"),
            _ => None,
        }
    }

    /// The Status the client gets.
    pub(crate) fn to_status(&self) -> Status {
        Status::new(self.code().as_u16(), self.reason(), self.to_string())
    }

    /// The response the client gets: the Status as JSON, with `Connection: close` (the
    /// client connection is never reused after a failed upgrade).
    pub(crate) fn into_response(self) -> Response<UpgradeBody> {
        let mut response = self.to_status().to_response().map(UpgradeBody::full);
        *response.status_mut() = self.code();
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Checks an upgrade request from the client and takes its connection handle.
///
/// Call it for requests the core classifies as upgrades, before authorization work is
/// wasted on a request that cannot be served. It refuses non-HTTP/1.1 connections,
/// protocols outside the allow-list, request bodies and upgrades during shutdown, and
/// removes hyper's [`OnUpgrade`] handle from the request extensions (present only when the
/// request was read by a hyper server with upgrades enabled).
pub(crate) fn prepare(
    parts: &mut http::request::Parts,
    options: &UpgradeOptions,
) -> Result<OnUpgrade, UpgradeError> {
    if parts.version != Version::HTTP_11 {
        return Err(UpgradeError::UnsupportedVersion(parts.version));
    }
    if options.shutdown.is_triggered() {
        return Err(UpgradeError::ShuttingDown);
    }
    let mut any = false;
    for token in upgrade_tokens(&parts.headers) {
        any = true;
        if !protocol_allowed(&options.protocols, token) {
            return Err(UpgradeError::ProtocolNotAllowed(
                String::from_utf8_lossy(token).into_owned(),
            ));
        }
    }
    if !any {
        return Err(UpgradeError::NoProtocol);
    }
    let has_body = parts.headers.contains_key(TRANSFER_ENCODING)
        || parts
            .headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0");
    if has_body {
        return Err(UpgradeError::RequestBody);
    }
    parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(UpgradeError::NotHijackable)
}

/// Headers that must reach the backend on an upgrade even though ordinary forwarding drops
/// hop-by-hop headers.
///
/// Given the client's headers and the headers prepared for the backend by ordinary
/// forwarding (credentials stripped, `X-Forwarded-For` appended, hop-by-hop removed), this
/// puts back `Connection: Upgrade`, every `Upgrade` value, and any `Sec-WebSocket-*` or
/// `X-Stream-Protocol-Version` header the client sent, except the bearer-token entries of
/// `Sec-WebSocket-Protocol` ([`headers::strip_websocket_token`](crate::headers::strip_websocket_token)),
/// which are credentials.
pub(crate) fn restore_upgrade_headers(client: &HeaderMap, forwarded: &mut HeaderMap) {
    forwarded.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    forwarded.remove(UPGRADE);
    for value in client.get_all(UPGRADE) {
        forwarded.append(UPGRADE, value.clone());
    }
    let names = client.keys().filter(|name| {
        name.as_str().starts_with("sec-websocket-") || name.as_str() == "x-stream-protocol-version"
    });
    for name in names {
        if !forwarded.contains_key(name) {
            for value in client.get_all(name) {
                forwarded.append(name.clone(), value.clone());
            }
        }
    }
    crate::headers::strip_websocket_token(forwarded);
}

/// Something held for as long as a backend connection of an upgrade is in use (the whole
/// tunnel after a `101`), told how the exchange went: the balancer's in-flight handle, say.
pub(crate) trait ConnectionGuard: Send + 'static {
    /// The backend's response head arrived with `status`.
    fn response_head(&mut self, status: StatusCode) {
        let _ = status;
    }

    /// The exchange failed before a response head (write error, garbage, timeout).
    fn failed(self)
    where
        Self: Sized,
    {
    }
}

impl ConnectionGuard for () {}

impl ConnectionGuard for crate::balance::RequestHandle {
    fn response_head(&mut self, status: StatusCode) {
        crate::balance::RequestHandle::response_head(self, status);
    }

    fn failed(self) {
        self.failure();
    }
}

/// The request written to the backend.
#[derive(Clone, Debug)]
pub(crate) struct UpgradeRequest {
    /// The method (usually `GET`; SPDY exec uses `POST`).
    pub method: Method,
    /// The origin-form target: backend path plus `?` and the client's raw query (kept, unlike
    /// kube-apiserver, which drops it: kubernetes#77142).
    pub path_and_query: String,
    /// `host[:port]` of the endpoint, written as `Host` only when `headers` has none.
    pub authority: String,
    /// The headers to send, prepared as for any request and completed with
    /// [`restore_upgrade_headers`].
    pub headers: HeaderMap,
}

/// Sends an upgrade request over a connected `backend` and answers the client.
///
/// `client` is the handle from [`prepare`]; `backend` is a fresh raw connection to the chosen
/// endpoint (TLS with ALPN `http/1.1` for https); `guard` is told the backend's status and
/// held for as long as the backend connection is in use (the whole tunnel on a `101`), e.g.
/// the balancer's in-flight handle. A `101` response is returned right away and the tunnel runs in a spawned task once
/// hyper has handed over the client connection; it counts as open in the options'
/// [`Shutdown`] until it ends.
pub(crate) async fn proxy_upgrade<S, G>(
    client: OnUpgrade,
    request: UpgradeRequest,
    mut backend: S,
    options: &UpgradeOptions,
    guard: G,
) -> Response<UpgradeBody>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: ConnectionGuard,
{
    let mut guard = guard;
    let head = match handshake::encode_request_head(
        &request.method,
        &request.path_and_query,
        &request.authority,
        &request.headers,
    ) {
        Ok(head) => head,
        Err(handshake::InvalidTarget) => return UpgradeError::InvalidTarget.into_response(),
    };
    let exchange = async {
        backend
            .write_all(&head)
            .await
            .and(backend.flush().await)
            .map_err(|e| UpgradeError::Handshake(format!("error sending upgrade request: {e}")))?;
        read_response_head(&mut backend, options.max_response_head)
            .await
            .map_err(|e| UpgradeError::Handshake(format!("invalid upgrade response: {e}")))
    };
    let (response_head, rest) =
        match tokio::time::timeout(options.handshake_timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                guard.failed();
                return e.into_response();
            }
            Err(_) => {
                guard.failed();
                return UpgradeError::Timeout.into_response();
            }
        };
    guard.response_head(response_head.status);
    match verdict(response_head.status) {
        Verdict::Invalid => {
            // Dropping `backend` closes it: the redirect (or whatever it was) goes nowhere.
            tracing::debug!(
                status = response_head.status.as_u16(),
                "refused non-101 upgrade answer"
            );
            UpgradeError::InvalidStatus(response_head.status.as_u16()).into_response()
        }
        Verdict::Relay => {
            let framing = match framing(&request.method, &response_head) {
                Ok(framing) => framing,
                Err(e) => {
                    return UpgradeError::Handshake(format!("invalid upgrade response: {e}"))
                        .into_response();
                }
            };
            let mut headers = response_head.headers;
            strip_hop_by_hop(&mut headers);
            if !matches!(
                framing,
                handshake::Framing::Length(_) | handshake::Framing::Empty
            ) {
                headers.remove(CONTENT_LENGTH);
            }
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            let body = UpgradeBody::relay(
                backend,
                guard,
                rest,
                framing,
                options.error_deadline,
                options.max_error_body,
            );
            let mut response = Response::new(body);
            *response.status_mut() = response_head.status;
            *response.headers_mut() = headers;
            response
        }
        Verdict::Switch => {
            if let Some(token) = upgrade_tokens(&response_head.headers)
                .find(|t| !protocol_allowed(&options.protocols, t))
            {
                return UpgradeError::ResponseProtocolNotAllowed(
                    String::from_utf8_lossy(token).into_owned(),
                )
                .into_response();
            }
            // The 101 must name a protocol, and only ones the client asked for: a backend
            // that switches to anything else (or says nothing) gets no tunnel.
            let matches = {
                let mut answered = upgrade_tokens(&response_head.headers).peekable();
                answered.peek().is_some()
                    && answered.all(|t| {
                        upgrade_tokens(&request.headers).any(|r| r.eq_ignore_ascii_case(t))
                    })
            };
            if !matches {
                let join = |headers: &HeaderMap| {
                    let tokens: Vec<_> = upgrade_tokens(headers)
                        .map(String::from_utf8_lossy)
                        .collect();
                    tokens.join(", ")
                };
                tracing::debug!("refused a 101 for a protocol the client did not ask for");
                return UpgradeError::ResponseProtocolMismatch {
                    requested: join(&request.headers),
                    answered: join(&response_head.headers),
                }
                .into_response();
            }
            let open = options.shutdown.track();
            let settings = options.tunnel_settings();
            let handover = options.handshake_timeout;
            tokio::spawn(async move {
                let _open = open;
                let _guard = guard;
                let upgraded = match tokio::time::timeout(handover, client).await {
                    Ok(Ok(upgraded)) => upgraded,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "client connection was not handed over");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("client connection was not handed over in time");
                        return;
                    }
                };
                let mut client = TokioIo::new(upgraded);
                // Bytes the backend sent right behind its head go first.
                if !rest.is_empty() && client.write_all(&rest).await.is_err() {
                    return;
                }
                let report = tunnel::splice(client, backend, &settings).await;
                tracing::debug!(
                    client_to_backend = report.client_to_backend,
                    backend_to_client = report.backend_to_client,
                    end = ?report.end,
                    "tunnel closed"
                );
            });
            let mut response = Response::new(UpgradeBody::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *response.headers_mut() = response_head.headers;
            response
        }
    }
}

/// Removes hop-by-hop headers and every header named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The rule set of every relayed response, then what a re-framed error body without
    // trailers must not announce.
    crate::headers::remove_hop_by_hop(headers);
    headers.remove(http::header::TE);
    headers.remove(http::header::TRAILER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri("/x").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn protocol_allow_list() {
        let options = UpgradeOptions::default();
        for ok in [
            "websocket",
            "WebSocket",
            "websocket/13",
            "SPDY/3.1",
            "spdy/3.1",
        ] {
            assert!(options.allows_protocol(ok), "{ok}");
        }
        for refused in ["SPDY/3", "spdy", "h2c", "tls/1.0", "", "websockets"] {
            assert!(!options.allows_protocol(refused), "{refused}");
        }
        let more = options.clone().allow_protocol("h2c");
        assert!(more.allows_protocol("H2C") && more.allows_protocol("websocket"));
        let only = options.protocols(["SPDY/3.1"]);
        assert!(!only.allows_protocol("websocket") && only.allows_protocol("SPDY/3.1"));
    }

    #[test]
    fn prepare_refuses_what_cannot_be_tunnelled() {
        let options = UpgradeOptions::default();
        let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];

        let mut h2 = parts(Version::HTTP_2, &upgrade);
        let err = prepare(&mut h2, &options).unwrap_err();
        assert!(matches!(
            err,
            UpgradeError::UnsupportedVersion(Version::HTTP_2)
        ));
        assert_eq!(err.code(), 400);
        assert!(err.to_string().contains("HTTP/1.1"), "{err}");

        let mut other = parts(
            Version::HTTP_11,
            &[("connection", "Upgrade"), ("upgrade", "h2c")],
        );
        let err = prepare(&mut other, &options).unwrap_err();
        assert_eq!(err.to_string(), "upgrade protocol \"h2c\" is not allowed");
        assert_eq!(
            (err.code(), err.reason()),
            (StatusCode::BAD_REQUEST, Some("BadRequest"))
        );

        // One refused protocol among allowed ones is refused.
        let mut mixed = parts(
            Version::HTTP_11,
            &[("connection", "Upgrade"), ("upgrade", "websocket, h2c")],
        );
        assert!(
            matches!(prepare(&mut mixed, &options), Err(UpgradeError::ProtocolNotAllowed(p)) if p == "h2c")
        );

        let mut none = parts(Version::HTTP_11, &[("connection", "Upgrade")]);
        assert!(matches!(
            prepare(&mut none, &options),
            Err(UpgradeError::NoProtocol)
        ));

        let mut body = parts(
            Version::HTTP_11,
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("content-length", "3"),
            ],
        );
        assert!(matches!(
            prepare(&mut body, &options),
            Err(UpgradeError::RequestBody)
        ));

        // Allowed, but not read by a hyper server: nothing to take over.
        let mut plain = parts(Version::HTTP_11, &upgrade);
        let err = prepare(&mut plain, &options).unwrap_err();
        assert!(matches!(err, UpgradeError::NotHijackable));
        assert_eq!(err.code(), 500);

        let shutdown = Shutdown::new();
        shutdown.trigger(Duration::from_secs(1));
        let mut late = parts(Version::HTTP_11, &upgrade);
        let err = prepare(&mut late, &options.clone().shutdown(shutdown)).unwrap_err();
        assert!(matches!(err, UpgradeError::ShuttingDown));
        assert_eq!(err.code(), 503);
    }

    #[test]
    fn error_messages_match_kube_apiserver() {
        assert_eq!(
            UpgradeError::InvalidStatus(302).to_string(),
            "invalid upgrade response: status code 302"
        );
        assert_eq!(UpgradeError::InvalidStatus(302).code(), 500);
        assert_eq!(UpgradeError::InvalidStatus(302).reason(), None);
        let dial = UpgradeError::Dial("dial tcp 10.0.0.1:80: connection refused".into());
        assert_eq!(
            dial.to_string(),
            "error dialing backend: dial tcp 10.0.0.1:80: connection refused"
        );
        assert_eq!(dial.code(), 500);
    }

    #[test]
    fn upgrade_headers_are_restored_without_credentials() {
        let mut client = HeaderMap::new();
        client.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        client.insert(UPGRADE, HeaderValue::from_static("websocket"));
        client.insert("sec-websocket-key", HeaderValue::from_static("k=="));
        client.insert("sec-websocket-version", HeaderValue::from_static("13"));
        client.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        client.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("base64.channel.k8s.io"),
        );
        client.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        client.insert("authorization", HeaderValue::from_static("Bearer secret"));
        // What ordinary forwarding produced: hop-by-hop and credentials gone, XFF added, one
        // Sec-WebSocket header already there.
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        forwarded.insert("sec-websocket-version", HeaderValue::from_static("13"));
        restore_upgrade_headers(&client, &mut forwarded);
        assert_eq!(forwarded[CONNECTION], "Upgrade");
        assert_eq!(forwarded[UPGRADE], "websocket");
        assert_eq!(forwarded["sec-websocket-key"], "k==");
        assert_eq!(forwarded.get_all("sec-websocket-version").iter().count(), 1);
        assert_eq!(
            forwarded.get_all("sec-websocket-protocol").iter().count(),
            2
        );
        assert_eq!(forwarded["x-stream-protocol-version"], "v4.channel.k8s.io");
        assert_eq!(forwarded["x-forwarded-for"], "10.0.0.9");
        assert!(!forwarded.contains_key("authorization"));
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_from_relayed_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[http::header::CONTENT_TYPE], "text/plain");
    }
}
