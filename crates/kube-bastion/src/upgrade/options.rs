//! [`UpgradeOptions`]: which protocols may be tunnelled and how tunnels are bounded.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::UPGRADE;

use super::shutdown::Shutdown;
use super::tunnel::TunnelSettings;

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
    pub(super) protocols: Arc<[String]>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_bytes_per_sec: Option<NonZeroU64>,
    pub(super) handshake_timeout: Duration,
    pub(super) error_deadline: Duration,
    pub(super) max_error_body: u64,
    pub(super) max_response_head: usize,
    pub(super) reject_forwarding_redirects: bool,
    pub(super) shutdown: Shutdown,
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

    pub(super) fn tunnel_settings(&self) -> TunnelSettings {
        TunnelSettings {
            idle_timeout: self.idle_timeout,
            max_bytes_per_sec: self.max_bytes_per_sec,
            shutdown: self.shutdown.clone(),
        }
    }
}

pub(super) fn protocol_allowed(allowed: &[String], token: &[u8]) -> bool {
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
pub(super) fn upgrade_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}
