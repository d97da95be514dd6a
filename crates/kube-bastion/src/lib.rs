//! kube-bastion: kube-apiserver's `pods/proxy`, `services/proxy` and `nodes/proxy` as a
//! tower `Layer`/`Service` for custom apiservers.
//!
//! # Which type for which use
//!
//! | you want to | use |
//! |---|---|
//! | embed the proxy in an apiserver built on tower or hyper | [`ProxyLayer`] in front of your service (it answers the proxy paths and passes everything else on), configured with [`ProxyConfig::builder`] |
//! | mount it as an axum route | `Router::layer(ProxyLayer::new(config))`, or [`ProxyService`] with `route_service`/`nest_service`/`fallback_service` (set [`ProxyConfigBuilder::original_uri`] when nesting) |
//! | unit-test proxy path resolution without sockets | the pure [`core`]: [`ProxyRequest::route`], a [`MemoryCluster`], [`core::resolve()`] |
//!
//! The pieces a configuration is made of:
//!
//! * where targets come from: a [`ClusterSource`] ([`MemoryCluster`] loads `kubectl get -o
//!   yaml` output and can be swapped atomically); with the cargo feature `kube`,
//!   `KubeCluster` keeps one up to date from kube-rs watchers (or from events you feed it);
//! * who may proxy: an [`Authorizer`] ([`AllowAll`], [`authorize_fn`], [`KubeletAuthorizer`] for
//!   `nodes/proxy`, or your own), given
//!   kube-style [`Attributes`]; [`UserInfo`] and [`TokenFile`] for hosts that authenticate
//!   with kube-apiserver's token file; with the cargo feature `kube`,
//!   `TokenReviewAuthenticator` and `WebhookAuthorizer` ask TokenReview and
//!   SubjectAccessReview webhooks;
//! * where it may go: the [`DestinationPolicy`] inside [`ResolveOptions`];
//! * how backends are reached: [`TlsOptions`] ([`Roots`], [`ClientIdentity`]),
//!   [`Timeouts`], [`PoolOptions`], [`HeaderOptions`] ([`HostHeader`], [`PeerAddr`]);
//! * how a Service endpoint is chosen: a [`Balancer`] ([`BalancerConfig`],
//!   [`BalancePolicy`], [`EjectionConfig`]), shared with metrics through [`ServiceKey`] and
//!   [`EndpointSnapshot`];
//! * upgrades (WebSocket, SPDY) and graceful shutdown: [`UpgradeOptions`], [`Shutdown`];
//! * response rewriting: [`RewriteOptions`].
//!
//! Every failure a client sees is a kube-apiserver [`Status`]. Response bodies are
//! [`ProxyBody`]; their errors ([`BodyIdleTimeout`], [`RewriteBodyError`]) come boxed.
//!
//! See `docs/architecture.md` in the repository for the path of a request through the
//! modules, and `docs/api.md` for this map with examples.

mod authn;
mod authorizer;
mod balance;
mod body;
mod config;
mod context;
mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod kubelet;
mod layer;
#[cfg(feature = "kube")]
mod live;
mod report;
mod rewrite;
mod transport;
mod upgrade;
#[cfg(feature = "kube")]
mod webhook;

/// The pure core: path grammar, target ids, the cluster model, resolution, the destination
/// policy and `Status` (the `kube-bastion-core` crate).
pub use kube_bastion_core as core;

pub use kube_bastion_core::{
    Attributes, Change, ClusterEvent, ClusterSnapshot, ClusterSource, ClusterView,
    DestinationPolicy, EventType, KubeletOptions, LoadError, MemoryCluster, NodeAddressType,
    Object, ProxyRequest, ResolveOptions, ResourceKind, Route, Status,
};

// Core types the modules of this crate name as `crate::X`.
use kube_bastion_core::{
    AppProtocol, Candidate, Host, Plan, Scheme, Target, TransportKind, resolve,
};

pub use authn::{
    ANONYMOUS_USER, AUTHENTICATED_GROUP, AuthenticateFuture, Authenticated, AuthenticatedBody,
    AuthenticatedFuture, Authentication, AuthenticationLayer, Authenticator, ClientCertificates,
    TokenFile, TokenFileError, UNAUTHENTICATED_GROUP, UserInfo, X509Authenticator, websocket_token,
};
pub use authn::{
    ClientCaError, REMOTE_EXTRA_PREFIX, REMOTE_GROUP_HEADER, REMOTE_USER_HEADER,
    RequestHeaderAuthenticator,
};
pub use authorizer::{
    AllowAll, AlwaysDeny, AuthorizeFn, AuthorizeFuture, Authorizer, Decision, RbacAuthorizer,
    Union, authorize_fn, union,
};
pub use balance::{
    BALANCER_ANNOTATION, BalancePolicy, Balancer, BalancerConfig, ConcurrencyLimit, EjectionConfig,
    EndpointSnapshot, ServiceKey, UnknownPolicy,
};
pub use body::{BodyIdleTimeout, ProxyBody};
pub use config::{ProxyConfig, ProxyConfigBuilder};
pub use headers::{HeaderOptions, HostHeader, PeerAddr};
pub use kube_bastion_core::resolve::FORWARD_IDENTITY_ANNOTATION;
pub use kubelet::KubeletAuthorizer;
pub use layer::{Proxy, ProxyLayer, ProxyService, ResponseBody, ResponseFuture, ServiceFuture};
#[cfg(feature = "kube")]
pub use live::{
    Feeder, KindStats, KubeCluster, KubeClusterOptions, KubeClusterStats, KubeRbac, WatchedKind,
};
pub use rewrite::{RewriteBodyError, RewriteOptions};
pub use transport::{ClientIdentity, PoolOptions, Roots, Timeouts, TlsError, TlsOptions};
pub use upgrade::{Shutdown, UpgradeOptions};
#[cfg(feature = "kube")]
pub use webhook::{
    FailurePolicy, SUBJECT_ACCESS_REVIEWS_PATH, TOKEN_REVIEWS_PATH, TokenReviewAuthenticator,
    TokenReviewOptions, WebhookAuthorizer, WebhookAuthorizerOptions, WebhookClient,
    WebhookConfigError, WebhookStats,
};

/// Internals for this workspace's own tests and benchmarks; not a public API, no
/// stability promise.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_util {
    pub use crate::balance::{Clock, ManualClock};
    pub use crate::rewrite::{RewriteContext, RewrittenBody, UrlParseError, rewrite_response};
}
