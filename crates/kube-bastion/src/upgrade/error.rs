//! [`UpgradeError`]: why an upgrade was not tunnelled, and the Status each reason gives.

use std::fmt;

use http::header::CONNECTION;
use http::{HeaderValue, Response, StatusCode, Version};

use super::relay::UpgradeBody;
use crate::Status;

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
