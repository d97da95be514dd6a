//! The flags that bound what clients may hold: connections, requests in flight, and the
//! watch cache.

use std::time::Duration;

use clap::Args;

/// Limits that keep clients from exhausting the server (defaults in docs/security.md).
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitArgs {
    /// Client connections served at once; one more is closed right after it is accepted.
    /// Each open connection holds a file descriptor: keep the process's `ulimit -n` above it.
    #[arg(long = "max-connections", default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Seconds a client gets from connecting to sending its first request head (TLS
    /// handshake and HTTP/1.1-or-HTTP/2 detection included); the connection is closed after.
    #[arg(long = "connection-setup-timeout", default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) setup_timeout: u64,
    /// Close a client connection (HTTP/1.1 keep-alive or HTTP/2) after this many seconds
    /// with no request in flight; 0 never does. kube-apiserver's is 90.
    #[arg(
        long = "idle-connection-timeout",
        default_value_t = 90,
        value_name = "SECONDS"
    )]
    pub(crate) idle_timeout: u64,
    /// Seconds a kept-alive HTTP/1.1 client gets to finish a request head once its first
    /// bytes arrived; the connection is closed after (kube-apiserver's `ReadHeaderTimeout`
    /// is 32). The first request head is covered by --connection-setup-timeout.
    #[arg(long = "request-head-timeout", default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) head_timeout: u64,
    /// Concurrent streams one HTTP/2 client connection may open (kube-apiserver's flag and
    /// default).
    #[arg(long = "http2-max-streams-per-connection", default_value_t = 250, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) http2_max_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings to clients (a ping unanswered for 20 s
    /// closes the connection); 0 sends none.
    #[arg(
        long = "http2-ping-interval",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub(crate) http2_ping_interval: u64,
    /// Requests of the read-only API (get, list, discovery, /metrics) answered at once;
    /// more are answered 429 with `Retry-After: 1`. Proxy requests and watches are
    /// long-running and exempt, as in kube-apiserver, and so are /healthz, /livez and
    /// /readyz. 0: no limit.
    #[arg(
        long = "max-requests-inflight",
        default_value_t = 400,
        value_name = "N"
    )]
    pub(crate) max_requests_inflight: usize,
}

/// Flags of the watch API.
#[derive(Debug, Args)]
#[command(next_help_heading = "Watch")]
pub(crate) struct WatchArgs {
    /// Cluster changes kept for watches to resume from (kube-apiserver's watch cache): a
    /// watch from an older resourceVersion gets 410 Gone and its client relists. It is also
    /// how far a watcher may fall behind before it is closed. Memory grows with it.
    #[arg(long = "watch-cache-size", default_value_t = 4096, value_name = "EVENTS",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) watch_cache_size: u64,
    /// Seconds between the BOOKMARK events of watches that allow bookmarks (kube-apiserver
    /// sends one about every minute).
    #[arg(long = "watch-bookmark-interval", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) bookmark_interval: u64,
}

impl WatchArgs {
    /// `--watch-cache-size` as a count.
    pub(crate) fn cache_size(&self) -> usize {
        usize::try_from(self.watch_cache_size).unwrap_or(usize::MAX)
    }

    /// `--watch-bookmark-interval`.
    pub(crate) fn bookmark_interval(&self) -> Duration {
        Duration::from_secs(self.bookmark_interval)
    }
}

impl LimitArgs {
    /// The listener limits these flags describe.
    pub(crate) fn listener(&self) -> crate::serve::Limits {
        let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        crate::serve::Limits {
            max_connections: self.max_connections,
            setup_timeout: Duration::from_secs(self.setup_timeout),
            idle_timeout: seconds(self.idle_timeout),
            head_timeout: Duration::from_secs(self.head_timeout),
            http2_max_streams: self.http2_max_streams,
            http2_ping_interval: seconds(self.http2_ping_interval),
        }
    }
}
