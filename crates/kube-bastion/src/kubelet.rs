//! Kubelet path authorization for `nodes/proxy`: [`KubeletAuthorizer`].

use std::fmt;

use http::request::Parts;

use crate::core::kubelet::KubeletCheck;
use crate::core::{Attributes, ProxyRequest, Route, go};
use crate::{AuthorizeFuture, Authorizer, Decision};

/// An [`Authorizer`] that, for `nodes/proxy` requests, also asks what the kubelet itself
/// would check for the forwarded path, with the requesting user's identity.
///
/// kube-apiserver checks only `nodes/proxy` and then talks to the kubelet as itself, so a
/// user with `get nodes/proxy` reaches every kubelet endpoint, exec included (a WebSocket
/// exec is a GET: kubernetes #119640). Wrapped in this authorizer, a `nodes/proxy` request
/// that `inner` allows is asked again, as the kubelet's fine-grained authorization
/// (`KubeletFineGrainedAuthz`) would ask for the backend path
/// ([`KubeletCheck::for_path`](crate::core::kubelet::KubeletCheck::for_path)): `/stats/...` needs `nodes/stats`, `/metrics/...`
/// `nodes/metrics`, `/logs/...` `nodes/log`, `/pods` `nodes/pods` or `nodes/proxy`,
/// `/healthz` `nodes/healthz` or `nodes/proxy`, ..., named after the node (not the whole
/// id), and `/exec`, `/attach`, `/run`, `/portForward` and `/cri` need `create` on
/// `nodes/proxy` whatever the method. A node id that does not parse is refused. Pods and Services pass straight to `inner`.
///
/// A refusal is a 403 whose reason names what the path needs.
///
/// ```
/// use kube_bastion::{Decision, KubeletAuthorizer, authorize_fn};
///
/// // `get` on anything, never `create`: node health is readable, exec is not.
/// let readers = authorize_fn(|attrs, _| match attrs.verb {
///     "get" => Decision::Allow,
///     _ => Decision::NoOpinion { reason: String::new() },
/// });
/// let authorizer = KubeletAuthorizer::new(readers);
/// # let _ = authorizer;
/// ```
pub struct KubeletAuthorizer<A> {
    inner: A,
}

impl<A> fmt::Debug for KubeletAuthorizer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubeletAuthorizer")
    }
}

impl<A: Authorizer> KubeletAuthorizer<A> {
    /// Wraps `inner`, which decides every question asked.
    pub fn new(inner: A) -> Self {
        KubeletAuthorizer { inner }
    }
}

impl<A: Authorizer> Authorizer for KubeletAuthorizer<A> {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        if attributes.resource != "nodes" {
            return self.inner.authorize(attributes, parts);
        }
        AuthorizeFuture::boxed(async move {
            let decision = self.inner.authorize(attributes, parts).await;
            if decision != Decision::Allow {
                return decision;
            }
            let Route::Proxy(request) = ProxyRequest::from_parts(parts) else {
                return Decision::deny(
                    crate::authorizer::user_name(parts),
                    "not a node proxy request",
                );
            };
            let Ok(id) = request.target_id() else {
                // Nothing to judge the kubelet path against: refused (fail closed).
                return Decision::deny(crate::authorizer::user_name(parts), "invalid node id");
            };
            let path = go::clean(&request.sub_path());
            let path = String::from_utf8_lossy(&path);
            let check = KubeletCheck::for_path(&parts.method, &path);
            for subresource in check.subresources {
                let asked = check.attributes(subresource, id.name());
                if self.inner.authorize(&asked, parts).await == Decision::Allow {
                    return Decision::Allow;
                }
            }
            let needed = check
                .subresources
                .iter()
                .map(|s| format!("\"nodes/{s}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            Decision::deny(
                crate::authorizer::user_name(parts),
                format!(
                    "the kubelet path {path:?} needs {:?} on {needed} of node {:?}",
                    check.verb,
                    id.name()
                ),
            )
        })
    }
}
