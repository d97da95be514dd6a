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
#[non_exhaustive]
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
    /// This authorizer neither allows nor denies (kube-apiserver's `DecisionNoOpinion`): in
    /// a [`union`] the next authorizer decides; alone, or last, the request is refused with a
    /// 403 naming the authenticated [`UserInfo`](crate::UserInfo) and the non-empty reasons.
    NoOpinion {
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

    /// Whether this authorizer allows every request whatever its attributes, as
    /// [`AllowAll`] does: the proxy then neither builds the attributes nor calls
    /// [`authorize`](Authorizer::authorize). `false` unless overridden; override it only for
    /// an authorizer that never denies and needs to see no request.
    fn allows_everything(&self) -> bool {
        false
    }
}

/// Denies everything (kube-apiserver's `--authorization-mode=AlwaysDeny`), naming the
/// authenticated user.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysDeny;

impl Authorizer for AlwaysDeny {
    fn authorize<'a>(&'a self, _: &'a Attributes, parts: &'a Parts) -> AuthorizeFuture<'a> {
        AuthorizeFuture::ready(Decision::deny(user_name(parts), ""))
    }
}

/// The name of the user authentication put in the request's extensions (`""` without one).
pub(crate) fn user_name(parts: &Parts) -> String {
    parts
        .extensions
        .get::<crate::UserInfo>()
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

/// Authorizers asked in order, as kube-apiserver's `--authorization-mode=A,B,...`: the
/// first that allows or denies decides; when every one has no opinion, the answer is no
/// opinion with their non-empty reasons joined by newlines (a 403).
///
/// ```
/// use kube_bastion::{AlwaysDeny, Authorizer, Decision, authorize_fn, union};
///
/// let only_shop = authorize_fn(|attrs, _| match attrs.namespace.as_deref() {
///     Some("shop") => Decision::Allow,
///     _ => Decision::NoOpinion { reason: String::new() },
/// });
/// let chain = union(vec![Box::new(only_shop) as Box<dyn Authorizer>, Box::new(AlwaysDeny)]);
/// # let _ = chain;
/// ```
pub fn union(authorizers: Vec<Box<dyn Authorizer>>) -> Union {
    Union { authorizers }
}

/// The [`union`] of authorizers.
pub struct Union {
    authorizers: Vec<Box<dyn Authorizer>>,
}

impl fmt::Debug for Union {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Union")
            .field("authorizers", &self.authorizers.len())
            .finish()
    }
}

impl Authorizer for Union {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        AuthorizeFuture::boxed(async move {
            let mut reasons: Vec<String> = Vec::new();
            for authorizer in &self.authorizers {
                match authorizer.authorize(attributes, parts).await {
                    Decision::NoOpinion { reason } => {
                        if !reason.is_empty() {
                            reasons.push(reason);
                        }
                    }
                    decided => return decided,
                }
            }
            Decision::NoOpinion {
                reason: reasons.join("\n"),
            }
        })
    }

    /// The first authorizer decides every request when it allows everything.
    fn allows_everything(&self) -> bool {
        self.authorizers
            .first()
            .is_some_and(|first| first.allows_everything())
    }
}

/// Allows everything: for hosts that authorize before the proxy (for example in an outer
/// middleware) and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize<'a>(&'a self, _: &'a Attributes, _: &'a Parts) -> AuthorizeFuture<'a> {
        AuthorizeFuture::ready(Decision::Allow)
    }

    fn allows_everything(&self) -> bool {
        true
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

    fn allows_everything(&self) -> bool {
        (**self).allows_everything()
    }
}

/// kube-apiserver's RBAC authorizer over a [`RbacPolicy`](crate::core::RbacPolicy) that
/// can be replaced while requests run (a reload swaps it atomically): the authenticated
/// [`UserInfo`](crate::UserInfo) (name and groups) is allowed when a rule of a binding that
/// applies to it allows the proxy request (`get` on `pods/proxy` with `resourceNames`
/// matched against the whole id, `*/proxy`, `*`, ...); otherwise RBAC has no opinion, as
/// upstream (a 403 unless a later authorizer of a [`union`] allows). A request without a
/// user has no opinion.
pub struct RbacAuthorizer {
    policy: arc_swap::ArcSwap<crate::core::RbacPolicy>,
}

impl fmt::Debug for RbacAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacAuthorizer")
            .field("bindings", &self.policy.load().bindings())
            .finish()
    }
}

impl RbacAuthorizer {
    /// An authorizer deciding by `policy`.
    pub fn new(policy: crate::core::RbacPolicy) -> Self {
        RbacAuthorizer {
            policy: arc_swap::ArcSwap::from_pointee(policy),
        }
    }

    /// Replaces the policy; requests already deciding keep the one they started with.
    pub fn update(&self, policy: crate::core::RbacPolicy) {
        self.policy.store(std::sync::Arc::new(policy));
    }

    /// The policy now.
    #[cfg(all(test, feature = "kube"))]
    pub(crate) fn policy(&self) -> std::sync::Arc<crate::core::RbacPolicy> {
        self.policy.load_full()
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        let Some(user) = parts.extensions.get::<crate::UserInfo>() else {
            return AuthorizeFuture::ready(Decision::NoOpinion {
                reason: String::new(),
            });
        };
        let request = crate::core::RbacRequest::proxy(attributes, &user.name, &user.groups);
        AuthorizeFuture::ready(match self.policy.load().authorize(&request) {
            crate::core::RbacDecision::Allow => Decision::Allow,
            crate::core::RbacDecision::NoOpinion(reason) => Decision::NoOpinion { reason },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn only_authorizers_that_allow_everything_say_so() {
        assert!(AllowAll.allows_everything());
        assert!(!AlwaysDeny.allows_everything());
        assert!(!authorize_fn(|_, _| Decision::Allow).allows_everything());
        let shared: Arc<dyn Authorizer> = Arc::new(AllowAll);
        assert!(shared.allows_everything());
        // A union is decided by its first authorizer only when that one allows everything.
        assert!(union(vec![Box::new(AllowAll), Box::new(AlwaysDeny)]).allows_everything());
        assert!(!union(vec![Box::new(AlwaysDeny), Box::new(AllowAll)]).allows_everything());
        assert!(!union(Vec::new()).allows_everything());
    }
}
