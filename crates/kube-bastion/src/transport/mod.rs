//! Transport: long-lived pooled HTTP clients and the dialer behind them.
//!
//! One [`Transport`] holds the rustls configuration of each TLS identity and one connection
//! pool (`pool`):
//!
//! * generic identity (pods, services, non-kubelet node ports): HTTP/1.1 on plain TCP,
//!   HTTP/2 or HTTP/1.1 chosen by ALPN on TLS, HTTP/2 with prior knowledge (h2c) for
//!   `appProtocol: kubernetes.io/h2c`;
//! * kubelet identity: the kubelet client certificate and CA.
//!
//! Connections are pooled per approved socket address, wire protocol, identity and TLS
//! server name, with an idle timeout that really closes them. Every connection is dialed to
//! the IP the destination policy approved; names are never resolved here.
//!
//! [`Transport::connect_raw`] opens a single unpooled connection for upgrades (TLS with ALPN
//! `http/1.1` only).

mod connect;
mod options;
mod pool;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

pub(crate) use connect::{BackendStream, ConnectError};
pub use options::{PoolOptions, Timeouts};
pub use tls::{ClientIdentity, Roots, TlsError, TlsOptions};

use crate::{AppProtocol, Scheme, Target, TransportKind};
use connect::DialTimeouts;
pub(crate) use pool::{Checkin, SendFailure};
use pool::{Dial, Pool, PoolKey, PoolSettings, Wire};
use tls::TlsConfigs;

/// The boxed error type used by bodies in this crate.
pub(crate) use tower::BoxError;

/// The request body type sent to backends (the host's body, boxed once).
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Long-lived backend clients and the dialer. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    generic_tls: TlsConfigs,
    kubelet_tls: TlsConfigs,
    dial: DialTimeouts,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("verify_generic", &self.inner.generic_tls.verify)
            .field("verify_kubelet", &self.inner.kubelet_tls.verify)
            .field("dial", &self.inner.dial)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Builds the TLS configurations and the pool. No connection is opened until the first request.
    pub(crate) fn new(
        tls: &TlsOptions,
        timeouts: &Timeouts,
        pool: &PoolOptions,
    ) -> Result<Self, TlsError> {
        let generic_tls = TlsConfigs::generic(tls)?;
        let kubelet_tls = TlsConfigs::kubelet(tls)?;
        let dial = DialTimeouts {
            connect: timeouts.connect,
            handshake: timeouts.tls_handshake,
        };
        let pool = Pool::new(PoolSettings {
            idle_timeout: pool.idle_timeout,
            max_idle_per_endpoint: pool.max_idle_per_endpoint,
            http2_keep_alive_interval: pool.http2_keep_alive_interval,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                generic_tls,
                kubelet_tls,
                dial,
            }),
        })
    }

    fn tls(&self, kind: TransportKind) -> &TlsConfigs {
        match kind {
            TransportKind::Generic => &self.inner.generic_tls,
            TransportKind::Kubelet => &self.inner.kubelet_tls,
        }
    }

    /// Whether backends of `target` have their certificates verified.
    pub(crate) fn verifies(&self, target: &Target) -> bool {
        self.tls(target.transport).verify
    }

    /// The TLS server name used for `target`: the target's
    /// [`tls_server_name`](Target::tls_server_name) when certificates are verified or the
    /// target is a kubelet (its node address name), else none (SNI is not sent to pod and
    /// service IPs, as upstream).
    pub(crate) fn server_name(&self, target: &Target) -> Option<ServerName<'static>> {
        if !(self.verifies(target) || target.transport == TransportKind::Kubelet) {
            return None;
        }
        target
            .tls_server_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
    }

    /// Sends `req` (origin-form target) to `addr`, an address the destination policy
    /// approved for `target`, on a pooled connection or a new one. The [`Checkin`], when
    /// returned, gives the connection back when finished at the response body's end.
    pub(crate) async fn send(
        &self,
        target: &Target,
        addr: SocketAddr,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendFailure> {
        let tls = self.tls(target.transport);
        let (wire, server_name) = match (target.scheme, target.protocol) {
            (Scheme::Https, _) => {
                let name = self.server_name(target);
                let name = if tls.verify {
                    name
                } else {
                    connect::sni_only(name)
                };
                (Wire::Tls, name)
            }
            (Scheme::Http, AppProtocol::H2c) => (Wire::H2c, None),
            (Scheme::Http, AppProtocol::Http) => (Wire::Plain, None),
        };
        let dial = Dial {
            key: PoolKey {
                addr,
                wire,
                identity: target.transport,
                server_name,
            },
            scheme: target.scheme,
            tls: Some(&tls.http),
            timeouts: self.inner.dial,
        };
        self.inner.pool.send(dial, req).await
    }

    /// Opens one unpooled connection to `addr` for `target`, for upgraded requests: TCP
    /// (TCP_NODELAY, connect timeout), then for `https` targets a TLS handshake offering
    /// only ALPN `http/1.1`, with the target's transport identity and verification.
    ///
    /// `addr` must be an address the destination policy approved (the proxy passes the
    /// addresses of its [`ProxyContext`](crate::forward::ProxyContext) endpoints); no name
    /// is resolved.
    pub(crate) async fn connect_raw(
        &self,
        target: &Target,
        addr: SocketAddr,
    ) -> Result<BackendStream, ConnectError> {
        let tcp = connect::dial_tcp(addr, self.inner.dial.connect).await?;
        match target.scheme {
            Scheme::Http => Ok(BackendStream::Plain(tcp)),
            Scheme::Https => {
                let tls = self.tls(target.transport);
                let name = self.server_name(target);
                let s = connect::handshake(
                    tcp,
                    addr,
                    tls.http1_only.clone(),
                    name,
                    self.inner.dial.handshake,
                )
                .await?;
                Ok(BackendStream::Tls(Box::new(s)))
            }
        }
    }
}
