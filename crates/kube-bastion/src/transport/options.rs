//! The options of the backend transport: timeouts and the connection pool.

use std::time::Duration;

/// Timeouts applied to every backend exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (default 30 s, Go's dialer default that kube-apiserver uses).
    pub connect: Duration,
    /// TLS handshake (default 10 s, as upstream).
    pub tls_handshake: Duration,
    /// From the request being sent until the response head arrives (default 120 s;
    /// upstream has none, which lets a silent backend hold a client forever). `None`
    /// disables it. Exceeding it answers 504.
    pub response_header: Option<Duration>,
    /// Longest silence between two response body frames (default 300 s). `None` disables
    /// it. Exceeding it aborts the response body (the client sees a truncated response).
    pub body_idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
            response_header: Some(Duration::from_secs(120)),
            body_idle: Some(Duration::from_secs(300)),
        }
    }
}

/// Connection pool options (per client, per endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// How long an idle connection stays pooled (default 90 s, Go's `IdleConnTimeout`).
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint (default 128, as many as the client connections
    /// a busy endpoint sees at once: with fewer, the pool closes the surplus after every
    /// burst and dials it again, each close leaving a socket in `TIME_WAIT`).
    pub max_idle_per_endpoint: usize,
    /// HTTP/2 keep-alive ping interval (default `None`: no pings).
    pub http2_keep_alive_interval: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 128,
            http2_keep_alive_interval: None,
        }
    }
}
