//! Transport: long-lived pooled HTTP clients and the dialer behind them.
//!
//! One [`Transport`] holds one hyper-util client per TLS identity and protocol:
//!
//! * generic (pods, services, non-kubelet node ports): HTTP/1.1 on plain TCP, HTTP/2 or
//!   HTTP/1.1 chosen by ALPN on TLS;
//! * generic h2c: HTTP/2 with prior knowledge for `appProtocol: kubernetes.io/h2c`;
//! * kubelet: the kubelet client certificate and CA.
//!
//! Each client pools connections per endpoint (`scheme://ip:port`) with an idle timeout
//! driven by a tokio timer, so idle connections really close. Every connection is dialed by
//! the crate's own connector to the IP the destination policy approved; names are never
//! resolved here.
//!
//! [`Transport::connect_raw`] opens a single unpooled connection for upgrades (TLS with ALPN
//! `http/1.1` only).

mod connect;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

pub use connect::{BackendStream, ConnectError, DialedAddr};
pub use tls::{ClientIdentity, Roots, TlsError, TlsOptions};

use crate::config::{PoolOptions, Timeouts};
use crate::{AppProtocol, Scheme, Target, TransportKind};
pub(crate) use connect::SERVER_NAME;
use connect::{Connector, DialTimeouts};
use tls::TlsConfigs;

/// The boxed error type used by bodies in this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type sent to backends (the host's body, boxed once).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) type HttpClient = Client<Connector, RequestBody>;

/// Long-lived backend clients and the dialer. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    generic: HttpClient,
    generic_h2c: HttpClient,
    kubelet: HttpClient,
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
    /// Builds the clients. No connection is opened until the first request.
    pub fn new(
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
        let client = |tls: &TlsConfigs, h2_only: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(pool.idle_timeout)
                .pool_max_idle_per_host(pool.max_idle_per_endpoint)
                .http2_only(h2_only);
            if let Some(interval) = pool.http2_keep_alive_interval {
                b.http2_keep_alive_interval(interval)
                    .http2_keep_alive_while_idle(false);
            }
            b.build(Connector {
                tls: Some(tls.clone()),
                timeouts: dial,
            })
        };
        Ok(Self {
            inner: Arc::new(Inner {
                generic: client(&generic_tls, false),
                generic_h2c: client(&generic_tls, true),
                kubelet: client(&kubelet_tls, false),
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
    pub fn verifies(&self, target: &Target) -> bool {
        self.tls(target.transport).verify
    }

    /// The TLS server name used for `target`: the target's
    /// [`tls_server_name`](Target::tls_server_name) when certificates are verified or the
    /// target is a kubelet (its node address name), else none (SNI is not sent to pod and
    /// service IPs, as upstream).
    pub fn server_name(&self, target: &Target) -> Option<ServerName<'static>> {
        if !(self.verifies(target) || target.transport == TransportKind::Kubelet) {
            return None;
        }
        target
            .tls_server_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
    }

    /// The pooled client for `target`.
    pub(crate) fn client(&self, target: &Target) -> &HttpClient {
        match (target.transport, target.protocol, target.scheme) {
            (TransportKind::Kubelet, _, _) => &self.inner.kubelet,
            (TransportKind::Generic, AppProtocol::H2c, Scheme::Http) => &self.inner.generic_h2c,
            (TransportKind::Generic, _, _) => &self.inner.generic,
        }
    }

    /// Opens one unpooled connection to `addr` for `target`, for upgraded requests: TCP
    /// (TCP_NODELAY, connect timeout), then for `https` targets a TLS handshake offering
    /// only ALPN `http/1.1`, with the target's transport identity and verification.
    ///
    /// `addr` must be an address the destination policy approved (the proxy passes the
    /// addresses of its [`ProxyContext`](crate::forward::ProxyContext) endpoints); no name
    /// is resolved.
    pub async fn connect_raw(
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
