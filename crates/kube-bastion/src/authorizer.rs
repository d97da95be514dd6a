//! The host's authorization hook.
//!
//! The proxy derives kube-style [`Attributes`] from the parsed request (verb from the
//! method, resource `pods|services|nodes`, subresource `proxy`, namespace, the whole id as
//! name) and asks the configured [`Authorizer`]. The request parts come along so the host's
//! authentication layer can pass the user in the request extensions.
//!
//! A [`Decision::Deny`] becomes kube-apiserver's 403 Status through
//! [`Attributes::forbidden`].
//!
//! ```
//! use kube_bastion::{Decision, authorize_fn};
//!
//! #[derive(Clone)]
//! struct User(String);
//!
//! // Allow `get` for everyone who authenticated, deny anything else.
//! let authz = authorize_fn(|attrs, parts| {
//!     let user = parts.extensions.get::<User>().map(|u| u.0.clone()).unwrap_or_default();
//!     if attrs.verb == "get" && !user.is_empty() {
//!         Decision::Allow
//!     } else {
//!         Decision::deny(user, "")
//!     }
//! });
//! # let _ = authz;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::request::Parts;

use crate::Attributes;

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// The request is refused with a 403 naming `user`; a non-empty `reason` is appended to
    /// the message after `": "`.
    Deny {
        /// The user name shown in the message.
        user: String,
        /// Why (may be empty).
        reason: String,
    },
}

impl Decision {
    /// A denial for `user` with `reason` (may be empty).
    pub fn deny(user: impl Into<String>, reason: impl Into<String>) -> Self {
        Decision::Deny {
            user: user.into(),
            reason: reason.into(),
        }
    }
}

/// The future an [`Authorizer`] returns: either an immediate decision (no allocation) or a
/// boxed future for authorizers that do I/O.
pub struct AuthorizeFuture<'a> {
    inner: AuthorizeInner<'a>,
}

enum AuthorizeInner<'a> {
    Ready(Option<Decision>),
    Boxed(Pin<Box<dyn Future<Output = Decision> + Send + 'a>>),
}

impl<'a> AuthorizeFuture<'a> {
    /// A decision that is already known.
    pub fn ready(decision: Decision) -> Self {
        Self {
            inner: AuthorizeInner::Ready(Some(decision)),
        }
    }

    /// A decision that needs asynchronous work (a SubjectAccessReview, a database, ...).
    pub fn boxed(future: impl Future<Output = Decision> + Send + 'a) -> Self {
        Self {
            inner: AuthorizeInner::Boxed(Box::pin(future)),
        }
    }
}

impl fmt::Debug for AuthorizeFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            AuthorizeInner::Ready(d) => f.debug_tuple("AuthorizeFuture::Ready").field(d).finish(),
            AuthorizeInner::Boxed(_) => f.write_str("AuthorizeFuture::Boxed"),
        }
    }
}

impl Future for AuthorizeFuture<'_> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        // Both variants are Unpin (an Option and a Pin<Box<_>>).
        match &mut self.get_mut().inner {
            AuthorizeInner::Ready(d) => {
                // Polling after completion is a caller bug; answer with a denial rather than
                // panic.
                Poll::Ready(
                    d.take()
                        .unwrap_or_else(|| Decision::deny("", "polled twice")),
                )
            }
            AuthorizeInner::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// The host's authorization hook.
///
/// Called once per proxy request after routing and before anything is looked up (and a
/// second time with verb `create` for upgrades when
/// [`ProxyConfigBuilder::authorize_upgrades_as_create`](crate::config::ProxyConfigBuilder::authorize_upgrades_as_create)
/// is on).
pub trait Authorizer: Send + Sync + 'static {
    /// Decides on `attributes`; `parts` are the incoming request's method, URI, headers and
    /// extensions (where the host's authentication put the user).
    fn authorize<'a>(&'a self, attributes: &'a Attributes, parts: &'a Parts)
    -> AuthorizeFuture<'a>;
}

/// Allows everything: for hosts that authorize before the proxy (for example in an outer
/// middleware) and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize<'a>(&'a self, _: &'a Attributes, _: &'a Parts) -> AuthorizeFuture<'a> {
        AuthorizeFuture::ready(Decision::Allow)
    }
}

/// An [`Authorizer`] from a synchronous closure; see [`authorize_fn`].
#[derive(Clone, Copy)]
pub struct AuthorizeFn<F> {
    f: F,
}

impl<F> fmt::Debug for AuthorizeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorizeFn")
    }
}

/// Wraps a closure `Fn(&Attributes, &Parts) -> Decision` as an [`Authorizer`].
pub fn authorize_fn<F>(f: F) -> AuthorizeFn<F>
where
    F: Fn(&Attributes, &Parts) -> Decision + Send + Sync + 'static,
{
    AuthorizeFn { f }
}

impl<F> Authorizer for AuthorizeFn<F>
where
    F: Fn(&Attributes, &Parts) -> Decision + Send + Sync + 'static,
{
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        AuthorizeFuture::ready((self.f)(attributes, parts))
    }
}

impl<A: Authorizer + ?Sized> Authorizer for std::sync::Arc<A> {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        (**self).authorize(attributes, parts)
    }
}
