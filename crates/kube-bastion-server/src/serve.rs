//! The listener: plain HTTP (HTTP/1.1 and h2c) or HTTPS (HTTP/2 and HTTP/1.1 by ALPN),
//! connection upgrades, the peer address for `X-Forwarded-For`, connection limits
//! ([`Limits`]: a cap on open connections, setup, idle and request-head timeouts, HTTP/2 stream and ping
//! settings) and graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use kube_bastion::ClientCertificates;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::connection::{
    Activity, ConnectionService, ConnectionStats, Deadlines, OpenGuard, drive,
};

/// The crypto provider every rustls config of this server uses.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A TLS server config serving `certs`/`key` with ALPN `h2` and `http/1.1`. With
/// `client_cas`, clients may present a certificate, which must then chain to one of them
/// (client authentication is optional, so token users still connect; an untrusted
/// certificate fails the handshake).
pub(crate) fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_cas: Option<Vec<CertificateDer<'static>>>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("--client-ca-file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crypto_provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("--client-ca-file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Loads `--tls-cert-file`, `--tls-private-key-file`, `--client-ca-file` and
/// `--requestheader-client-ca-file` (client certificates of either CA are accepted; each
/// authenticator checks its own).
pub(crate) fn load_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    requestheader_ca: Option<&Path>,
) -> Result<TlsAcceptor, String> {
    let mut client_cas = client_ca.map(load_certs).transpose()?;
    if let Some(path) = requestheader_ca {
        let front_proxy =
            load_certs(path).map_err(|e| format!("--requestheader-client-ca-file {e}"))?;
        client_cas.get_or_insert_with(Vec::new).extend(front_proxy);
    }
    let config = tls_config(load_certs(cert)?, load_key(key)?, client_cas)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connection limits of a listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once; the next one is closed right after accept.
    pub(crate) max_connections: u32,
    /// Time from accept to the first request head (TLS handshake and protocol detection
    /// included).
    pub(crate) setup_timeout: Duration,
    /// No request in flight for this long closes a connection (`None`: never).
    pub(crate) idle_timeout: Option<Duration>,
    /// Time a kept-alive HTTP/1.1 client gets to finish a request head once its first bytes
    /// arrived (kube-apiserver's `ReadHeaderTimeout` is 32 s).
    pub(crate) head_timeout: Duration,
    /// Concurrent streams an HTTP/2 client may open on one connection.
    pub(crate) http2_max_streams: u32,
    /// Interval of HTTP/2 keep-alive pings (`None`: none); a ping unanswered for
    /// [`HTTP2_PING_TIMEOUT`] closes the connection.
    pub(crate) http2_ping_interval: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(90)),
            head_timeout: Duration::from_secs(30),
            http2_max_streams: 250,
            http2_ping_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// How long an HTTP/2 keep-alive ping may go unanswered.
pub(crate) const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection cap of `limits`: one permit per connection served at once, shared by
/// every listener of the process.
pub(crate) fn permits(limits: &Limits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_connections as usize))
}

/// The server's service stack as its listeners serve it: a cloneable tower service of
/// hyper requests that never fails, whose future and response body may move between
/// threads. Every stack `main.rs` builds is one.
pub(crate) trait Stack:
    tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<Self::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The response body.
    type Body: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> Stack for S
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and gives
/// open connections up to `grace` to finish their in-flight requests.
///
/// Every connection holds one of `permits` ([`permits`]) while it is open: one accepted
/// when none is left is closed at once (and counted in `stats`). Listeners sharing the
/// permits share the cap, and each waits at shutdown until all permits are back, so all
/// of them return once every connection of every listener has ended (or `grace` passed).
/// Each connection must finish its TLS handshake, protocol detection and first request
/// head within the setup timeout, and is closed once no request has been in flight for the
/// idle timeout.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S: Stack>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
    permits: Arc<Semaphore>,
    stats: Arc<ConnectionStats>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // The request-head timeout is the connection driver's (`connection::drive`), which
    // samples the connection periodically: hyper's own arms and drops a timer per request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.http2_ping_interval)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, max = limits.max_connections, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let setup = tokio::time::Instant::now() + limits.setup_timeout;
        let _ = stream.set_nodelay(true);
        let service = ConnectionService::new(app.clone(), peer, Activity::new());
        let deadlines = Deadlines {
            setup,
            idle: limits.idle_timeout,
            head: limits.head_timeout,
        };
        let builder = Arc::clone(&builder);
        let stopped = stopped.clone();
        let tls = tls.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenGuard::new(Arc::clone(&stats));
            match tls {
                None => drive(&builder, stream, service, deadlines, stopped, &stats).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout_at(setup, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            stats.setup_timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let certificates = stream.get_ref().1.peer_certificates().map(|chain| {
                        ClientCertificates(chain.iter().map(|c| c.clone().into_owned()).collect())
                    });
                    let service = service.with_client_certificates(certificates);
                    drive(&builder, stream, service, deadlines, stopped, &stats).await;
                }
            }
        });
    }
    drop(listener);
    let open = stats.open.load(Ordering::Relaxed);
    tracing::info!(
        connections = open,
        grace_seconds = grace.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop.send(true);
    // Every connection holds a permit until it ends: all of them back means all closed
    // (those of the other listeners sharing them too; they stop at the same time).
    let all = permits.acquire_many(limits.max_connections);
    match tokio::time::timeout(grace, all).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: until then a signal still has its default action
/// (ending the process at once), so call it before the server announces its address.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        let (ctrl_c, terminate) = (received(interrupt), received(terminate));
        #[cfg(not(unix))]
        let (ctrl_c, terminate) = (
            async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
            std::future::pending::<()>(),
        );
        tokio::select! {
            () = ctrl_c => tracing::info!("received Ctrl-C"),
            () = terminate => tracing::info!("received SIGTERM"),
        }
    }
}

/// Completes when `signal` arrives (never without a handler).
#[cfg(unix)]
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The address clients should use to reach a listener bound to `addr` (an unspecified
/// address becomes loopback).
pub(crate) fn client_address(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}
