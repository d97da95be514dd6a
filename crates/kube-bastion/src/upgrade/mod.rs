//! Upgraded connections (WebSocket, SPDY, anything with `Connection: Upgrade`).
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
//! [`Shutdown`] grace period ends. Backend redirects on ordinary requests are a forwarding
//! rule (`forward::redirect`).

mod error;
mod handshake;
mod options;
mod ratelimit;
mod relay;
mod shutdown;
mod tunnel;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub(crate) use error::UpgradeError;
pub use options::UpgradeOptions;
pub(crate) use relay::UpgradeBody;
pub use shutdown::Shutdown;

use options::{protocol_allowed, upgrade_tokens};

use handshake::{Verdict, framing, read_response_head, verdict};

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
    use std::time::Duration;

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
