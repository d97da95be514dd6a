//! [`ProxyConfig`] and its builder: everything the proxy needs, with documented defaults.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kube_bastion::{DestinationPolicy, MemoryCluster, ProxyConfig};
//!
//! let cluster = Arc::new(MemoryCluster::new());
//! let config = ProxyConfig::builder(cluster)
//!     .destination_policy(DestinationPolicy::kube_default())
//!     .response_header_timeout(Some(Duration::from_secs(30)))
//!     .build()
//!     .expect("valid TLS options");
//! # let _ = config;
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::header::HeaderName;
use http::request::Parts;

use crate::authorizer::{AllowAll, Authorizer};
use crate::headers::{HeaderOptions, HostHeader, PeerAddr};
use crate::rewrite::RewriteOptions;
use crate::transport::{
    ClientIdentity, PoolOptions, Roots, Timeouts, TlsError, TlsOptions, Transport,
};
use crate::{ClusterSource, DestinationPolicy, KubeletOptions, ResolveOptions};

type OriginalUriFn = dyn Fn(&Parts) -> Option<Uri> + Send + Sync;
type PeerAddrFn = dyn Fn(&Parts) -> Option<SocketAddr> + Send + Sync;

/// The proxy configuration. Cheap to clone (one `Arc`); build it with
/// [`ProxyConfig::builder`].
#[derive(Clone)]
pub struct ProxyConfig {
    pub(crate) inner: Arc<ConfigInner>,
}

pub(crate) struct ConfigInner {
    pub(crate) cluster: Arc<dyn ClusterSource>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// [`Authorizer::allows_everything`], asked once.
    pub(crate) allows_everything: bool,
    pub(crate) resolve: ResolveOptions,
    pub(crate) timeouts: Timeouts,
    pub(crate) pool: PoolOptions,
    pub(crate) headers: HeaderOptions,
    pub(crate) upgrades_as_create: bool,
    pub(crate) upgrade: crate::upgrade::UpgradeOptions,
    pub(crate) rewrite: RewriteOptions,
    pub(crate) original_uri: Option<Box<OriginalUriFn>>,
    pub(crate) peer_addr: Option<Box<PeerAddrFn>>,
    pub(crate) transport: Transport,
    pub(crate) balancer: crate::balance::Balancer,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("ProxyConfig")
            .field("resolve", &i.resolve)
            .field("timeouts", &i.timeouts)
            .field("pool", &i.pool)
            .field("headers", &i.headers)
            .field("upgrades_as_create", &i.upgrades_as_create)
            .field("rewrite", &i.rewrite)
            .field("original_uri", &i.original_uri.is_some())
            .field("peer_addr", &i.peer_addr.is_some())
            .field("transport", &i.transport)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// Starts a builder over `cluster`, the source of cluster views.
    pub fn builder(cluster: Arc<dyn ClusterSource>) -> ProxyConfigBuilder {
        ProxyConfigBuilder {
            cluster,
            authorizer: Arc::new(AllowAll),
            resolve: ResolveOptions::default(),
            tls: TlsOptions::default(),
            timeouts: Timeouts::default(),
            pool: PoolOptions::default(),
            headers: HeaderOptions::default(),
            upgrades_as_create: false,
            upgrade: crate::upgrade::UpgradeOptions::default(),
            rewrite: RewriteOptions::default(),
            original_uri: None,
            peer_addr: None,
            balancer: None,
        }
    }

    /// The balancer: per-endpoint load and health state shared by every request made with
    /// this configuration.
    pub fn balancer(&self) -> &crate::balance::Balancer {
        &self.inner.balancer
    }

    /// The cluster source.
    pub fn cluster(&self) -> &Arc<dyn ClusterSource> {
        &self.inner.cluster
    }

    /// Resolution options (destination policy and kubelet addressing).
    pub fn resolve_options(&self) -> &ResolveOptions {
        &self.inner.resolve
    }

    /// The destination policy.
    pub fn destination_policy(&self) -> &DestinationPolicy {
        &self.inner.resolve.policy
    }

    /// Timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.inner.timeouts
    }

    /// Header options.
    pub fn headers(&self) -> &HeaderOptions {
        &self.inner.headers
    }

    /// Whether upgrades also need verb `create`.
    pub fn upgrades_as_create(&self) -> bool {
        self.inner.upgrades_as_create
    }

    /// Upgraded connections and redirect safety ([`crate::upgrade::UpgradeOptions`]).
    pub fn upgrade_options(&self) -> &crate::upgrade::UpgradeOptions {
        &self.inner.upgrade
    }

    /// Whether responses are rewritten (`Location` and HTML links; see `crate::rewrite`).
    pub fn rewrite_enabled(&self) -> bool {
        self.inner.rewrite.enabled
    }

    /// The response rewriting options ([`RewriteOptions`]).
    pub fn rewrite_options(&self) -> &RewriteOptions {
        &self.inner.rewrite
    }

    /// The backend transport (connection pool and dialer).
    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The URI the proxy routes on: the original-URI hook's answer, else the request URI.
    pub(crate) fn routing_uri<'a>(&self, parts: &'a Parts) -> std::borrow::Cow<'a, Uri> {
        match self.inner.original_uri.as_ref().and_then(|f| f(parts)) {
            Some(uri) => std::borrow::Cow::Owned(uri),
            None => std::borrow::Cow::Borrowed(&parts.uri),
        }
    }

    /// The client address: the peer-address hook's answer, else the [`PeerAddr`] extension.
    pub(crate) fn peer_addr(&self, parts: &Parts) -> Option<SocketAddr> {
        if let Some(f) = &self.inner.peer_addr
            && let Some(addr) = f(parts)
        {
            return Some(addr);
        }
        parts.extensions.get::<PeerAddr>().map(|p| p.0)
    }
}

/// Builds a [`ProxyConfig`]. Every setting has a default; see each method.
pub struct ProxyConfigBuilder {
    cluster: Arc<dyn ClusterSource>,
    authorizer: Arc<dyn Authorizer>,
    resolve: ResolveOptions,
    tls: TlsOptions,
    timeouts: Timeouts,
    pool: PoolOptions,
    headers: HeaderOptions,
    upgrades_as_create: bool,
    upgrade: crate::upgrade::UpgradeOptions,
    rewrite: RewriteOptions,
    original_uri: Option<Box<OriginalUriFn>>,
    peer_addr: Option<Box<PeerAddrFn>>,
    balancer: Option<crate::balance::Balancer>,
}

impl fmt::Debug for ProxyConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfigBuilder")
            .field("resolve", &self.resolve)
            .field("tls", &self.tls)
            .field("timeouts", &self.timeouts)
            .field("pool", &self.pool)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl ProxyConfigBuilder {
    /// The authorization hook (default [`AllowAll`]: the host authorizes elsewhere).
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Arc::new(authorizer);
        self
    }

    /// The destination policy (default [`DestinationPolicy::kube_default`]: global unicast
    /// only, so loopback backends are refused).
    pub fn destination_policy(mut self, policy: DestinationPolicy) -> Self {
        self.resolve.policy = policy;
        self
    }

    /// How kubelets are addressed (default [`KubeletOptions::default`]).
    pub fn kubelet(mut self, kubelet: KubeletOptions) -> Self {
        self.resolve.kubelet = kubelet;
        self
    }

    /// All resolution options at once.
    pub fn resolve_options(mut self, options: ResolveOptions) -> Self {
        self.resolve = options;
        self
    }

    /// TLS options (default: upstream's, see [`TlsOptions`]).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Verify pod and service backends against `roots` (default: not verified, as upstream).
    pub fn verify_backends(mut self, roots: Roots) -> Self {
        self.tls.verify_backends = true;
        self.tls.roots = roots;
        self
    }

    /// Verify kubelets against this CA (default: not verified, as upstream without
    /// `--kubelet-certificate-authority`).
    pub fn kubelet_ca(mut self, roots: Roots) -> Self {
        self.tls.kubelet_ca = Some(roots);
        self
    }

    /// Present this client certificate to kubelets (default: none).
    pub fn kubelet_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.tls.kubelet_client = Some(identity);
        self
    }

    /// All timeouts at once (default [`Timeouts::default`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// TCP connect timeout (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// Response-header timeout (default 120 s; `None` waits forever as upstream).
    pub fn response_header_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.response_header = timeout;
        self
    }

    /// Idle timeout between response body frames (default 300 s; `None` disables it).
    pub fn body_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.body_idle = timeout;
        self
    }

    /// Pool options (default [`PoolOptions::default`]).
    pub fn pool(mut self, pool: PoolOptions) -> Self {
        self.pool = pool;
        self
    }

    /// Header options (default [`HeaderOptions::default`]).
    pub fn headers(mut self, headers: HeaderOptions) -> Self {
        self.headers = headers;
        self
    }

    /// Also strip this request header before forwarding (credential headers of the host).
    pub fn strip_header(mut self, name: HeaderName) -> Self {
        self.headers.strip.push(name);
        self
    }

    /// Also strip every request header whose name starts with `prefix` (case-insensitive)
    /// before forwarding, e.g. a host's own `--requestheader-extra-headers-prefix`.
    pub fn strip_header_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into().to_ascii_lowercase();
        if !prefix.is_empty() {
            self.headers.strip_prefixes.push(prefix);
        }
        self
    }

    /// Send `X-Forwarded-Prefix` with the proxy prefix
    /// (`/api/v1/namespaces/ns/pods/web:8080/proxy`), replacing the client's value (default
    /// on; kube-apiserver does not send it, see [`HeaderOptions::forwarded_prefix`]).
    pub fn forwarded_prefix(mut self, on: bool) -> Self {
        self.headers.forwarded_prefix = on;
        self
    }

    /// Which `Host` the backend sees (default [`HostHeader::Client`], as upstream).
    pub fn host_header(mut self, host: HostHeader) -> Self {
        self.headers.host = host;
        self
    }

    /// When on, an upgrade request (WebSocket, SPDY) must also be allowed with verb `create`
    /// (a second authorizer call). Default off: upstream authorizes proxy upgrades as `get`
    /// only, which makes `get nodes/proxy` enough to open a kubelet exec stream.
    pub fn authorize_upgrades_as_create(mut self, on: bool) -> Self {
        self.upgrades_as_create = on;
        self
    }

    /// How upgraded connections (WebSocket, SPDY) are handled: allowed protocols, idle
    /// timeout, rate limit, shutdown; and whether redirects on ordinary requests are
    /// rejected (default [`UpgradeOptions::default`](crate::upgrade::UpgradeOptions)).
    pub fn upgrade_options(mut self, options: crate::upgrade::UpgradeOptions) -> Self {
        self.upgrade = options;
        self
    }

    /// Rewrite `Location` headers and HTML links back under the proxy prefix (default on, as
    /// upstream). Read by `crate::rewrite`.
    pub fn rewrite(mut self, on: bool) -> Self {
        self.rewrite.enabled = on;
        self
    }

    /// All response rewriting options: per request kind, HTML, our additions (`srcset`,
    /// meta refresh, `Content-Location`, `Set-Cookie` paths) and the rewriter's memory cap.
    /// Default: [`RewriteOptions::default`].
    pub fn rewrite_options(mut self, options: RewriteOptions) -> Self {
        self.rewrite = options;
        self
    }

    /// Where the proxy finds the URI the client sent, when the router hands it a different
    /// one. axum's `nest_service` strips the nesting prefix from the request URI and keeps
    /// the original in its `OriginalUri` extension; mount the proxy there with
    /// `.original_uri(|p| p.extensions.get::<axum::extract::OriginalUri>().map(|o| o.0.clone()))`.
    /// Default: the request URI as received.
    pub fn original_uri(
        mut self,
        f: impl Fn(&Parts) -> Option<Uri> + Send + Sync + 'static,
    ) -> Self {
        self.original_uri = Some(Box::new(f));
        self
    }

    /// Where the proxy finds the client address for `X-Forwarded-For`, when the host does
    /// not insert [`PeerAddr`]; for axum's `ConnectInfo`:
    /// `.peer_addr(|p| p.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))`.
    /// The [`PeerAddr`] extension is always consulted when the hook answers `None`.
    pub fn peer_addr(
        mut self,
        f: impl Fn(&Parts) -> Option<SocketAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer_addr = Some(Box::new(f));
        self
    }

    /// How Service endpoints are chosen, failed over and health-checked (default
    /// [`BalancerConfig::default`](crate::balance::BalancerConfig): Peak EWMA, 3 attempts).
    /// Pass a clone of one [`Balancer`](crate::balance::Balancer) to several configurations
    /// to share endpoint state between them.
    pub fn balancer(mut self, balancer: crate::balance::Balancer) -> Self {
        self.balancer = Some(balancer);
        self
    }

    /// Builds a new [`Balancer`](crate::balance::Balancer) from `config`; see
    /// [`balancer`](Self::balancer).
    pub fn balancing(self, config: crate::balance::BalancerConfig) -> Self {
        self.balancer(crate::balance::Balancer::new(config))
    }

    /// Builds the configuration and its transport (TLS configurations and connection pool;
    /// no connection is opened). Fails when a TLS input is unusable.
    pub fn build(self) -> Result<ProxyConfig, TlsError> {
        let transport = Transport::new(&self.tls, &self.timeouts, &self.pool)?;
        Ok(ProxyConfig {
            inner: Arc::new(ConfigInner {
                cluster: self.cluster,
                allows_everything: self.authorizer.allows_everything(),
                authorizer: self.authorizer,
                resolve: self.resolve,
                timeouts: self.timeouts,
                pool: self.pool,
                headers: self.headers,
                upgrades_as_create: self.upgrades_as_create,
                upgrade: self.upgrade,
                rewrite: self.rewrite,
                original_uri: self.original_uri,
                peer_addr: self.peer_addr,
                transport,
                balancer: self.balancer.unwrap_or_else(|| {
                    crate::balance::Balancer::new(crate::balance::BalancerConfig::default())
                }),
            }),
        })
    }
}
