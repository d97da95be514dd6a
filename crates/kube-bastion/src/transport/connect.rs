//! The dialer: TCP to an approved IP, then an optional rustls handshake.
//!
//! The dialer never resolves a name: it is given the socket address the destination policy
//! approved (CVE-2020-8562: resolve once, check, dial what was checked).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a backend: plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum BackendStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The ALPN protocol the server chose, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            BackendStream::Plain(_) => None,
            BackendStream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Dialing or the TLS handshake failed. The message names the backend address, never the
/// request URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConnectError {
    /// The TCP connection failed (refused, unreachable, reset).
    #[error("dial tcp {addr}: {source}")]
    Tcp {
        /// The dialed address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TCP connection did not complete within the connect timeout.
    #[error("dial tcp {addr}: i/o timeout")]
    Timeout {
        /// The dialed address.
        addr: SocketAddr,
    },
    /// The TLS handshake failed (certificate refused, protocol error, peer closed).
    #[error("tls handshake with {addr}: {source}")]
    Tls {
        /// The dialed address.
        addr: SocketAddr,
        /// What went wrong.
        source: io::Error,
    },
    /// The TLS handshake did not complete within the handshake timeout.
    #[error("tls handshake with {addr}: timeout")]
    TlsTimeout {
        /// The dialed address.
        addr: SocketAddr,
    },
    /// TLS was requested on a transport without TLS.
    #[error("TLS is not configured for this transport")]
    NoTls,
}

/// Connect and handshake timeouts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DialTimeouts {
    pub(crate) connect: Duration,
    pub(crate) handshake: Duration,
}

/// Opens a TCP connection to `addr` (TCP_NODELAY on) within the connect timeout.
pub(crate) async fn dial_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr }),
    };
    // Requests are small writes followed by waits: never let Nagle delay them.
    if let Err(source) = stream.set_nodelay(true) {
        return Err(ConnectError::Tcp { addr, source });
    }
    Ok(stream)
}

/// Runs the TLS handshake on `tcp` with `config`, sending `server_name` as SNI when it is a
/// name (an IP address sends none, as Go does).
pub(crate) async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let name = server_name.unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ConnectError::Tls { addr, source }),
        Err(_) => Err(ConnectError::TlsTimeout { addr }),
    }
}

/// Without verification the name only matters as SNI: keep DNS names, drop IPs.
pub(crate) fn sni_only(name: Option<ServerName<'static>>) -> Option<ServerName<'static>> {
    match name {
        Some(ServerName::DnsName(n)) => Some(ServerName::DnsName(n)),
        _ => None,
    }
}
