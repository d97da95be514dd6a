//! kube-bastion: kube-apiserver's `pods/proxy`, `services/proxy` and `nodes/proxy` as a
//! tower `Layer`/`Service` for custom apiservers.
//!
//! Re-exports the pure core ([`kube_bastion_core`]) at the root.
//!
//! * [`layer`]: [`ProxyLayer`], [`Proxy`] and [`ProxyService`], the tower face;
//! * [`config`]: [`ProxyConfig`] and its builder;
//! * [`authorize`]: the [`Authorizer`] hook;
//! * [`forward`]: the pipeline of one request and the context handed to the
//!   balancing, upgrade and rewriting modules;
//! * [`headers`]: header rules (hop-by-hop, credentials, `X-Forwarded-*`, CORS);
//! * [`transport`]: the backend connection pool, the dialer and rustls;
//! * [`body`]: [`ProxyBody`], the streamed response body.
//!
//! See `docs/architecture.md` in the repository for the path of a request through these
//! modules.

pub mod authn;
pub mod authorize;
pub mod balance;
pub mod body;
pub mod config;
pub mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod layer;
pub mod rewrite;
pub mod transport;
pub mod upgrade;

pub use kube_bastion_core::*;

pub use authorize::{AllowAll, Authorizer, Decision, authorize_fn};
pub use body::ProxyBody;
pub use config::{PoolOptions, ProxyConfig, ProxyConfigBuilder, Timeouts};
pub use headers::{HeaderOptions, HostHeader, PeerAddr};
pub use layer::{Proxy, ProxyLayer, ProxyService};
pub use transport::{ClientIdentity, Roots, TlsOptions, Transport};
