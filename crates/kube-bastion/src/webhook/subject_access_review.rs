//! [`WebhookAuthorizer`]: proxy requests authorized by a SubjectAccessReview webhook.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};

use super::WebhookClient;
use super::cache::{Cache, Counters, WebhookStats, key};
use crate::{Attributes, AuthorizeFuture, Authorizer, Decision, UserInfo};

/// What a [`WebhookAuthorizer`] decides when its webhook gives no answer (after the
/// retries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// No opinion (the default, as kube-apiserver's `--authorization-webhook-*` flags): the
    /// next authorizer of a [`union`](crate::union) decides; when none allows, a `403` whose
    /// message carries the error.
    #[default]
    NoOpinion,
    /// Deny: a `403` whose message carries the error, whatever later authorizers would say.
    Deny,
}

/// How a [`WebhookAuthorizer`] caches and fails.
///
/// By default (kube-apiserver's): allowed answers cached for 5 minutes, others for 30
/// seconds, at most 8192 cached answers, [`FailurePolicy::NoOpinion`].
#[derive(Clone, Debug)]
pub struct WebhookAuthorizerOptions {
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    failure_policy: FailurePolicy,
    cache_size: usize,
}

impl Default for WebhookAuthorizerOptions {
    fn default() -> Self {
        WebhookAuthorizerOptions {
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
            failure_policy: FailurePolicy::NoOpinion,
            cache_size: 8192,
        }
    }
}

impl WebhookAuthorizerOptions {
    /// How long an allowed answer is reused (`--authorization-webhook-cache-authorized-ttl`);
    /// zero does not cache them.
    #[must_use]
    pub fn authorized_ttl(mut self, ttl: Duration) -> Self {
        self.authorized_ttl = ttl;
        self
    }

    /// How long an answer that does not allow is reused
    /// (`--authorization-webhook-cache-unauthorized-ttl`); zero does not cache them.
    #[must_use]
    pub fn unauthorized_ttl(mut self, ttl: Duration) -> Self {
        self.unauthorized_ttl = ttl;
        self
    }

    /// What to decide when the webhook gives no answer.
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// The most answers cached at once (expired entries go first, then the oldest).
    #[must_use]
    pub fn cache_size(mut self, entries: usize) -> Self {
        self.cache_size = entries;
        self
    }
}

/// Requester-controlled attribute bytes from which upstream stops caching a decision.
const MAX_CACHED_ATTRIBUTE_BYTES: usize = 10_000;

/// The reason given when a webhook both allows and denies (upstream's error text).
const ALLOWED_AND_DENIED: &str =
    "webhook subject access review returned both allow and deny response";

struct Inner {
    client: WebhookClient,
    options: WebhookAuthorizerOptions,
    cache: Cache<SubjectAccessReviewStatus>,
    counters: Counters,
}

/// kube-apiserver's webhook authorizer (`--authorization-mode=Webhook` with
/// `--authorization-webhook-config-file`, or the delegated `--authorization-kubeconfig`):
/// every proxy request is sent as the SubjectAccessReview kube-apiserver sends for it
/// (`spec.resourceAttributes`: namespace, verb, group `""`, version `v1`, resource,
/// subresource `proxy`, the whole id as name; `spec.user`, `uid`, `groups`, `extra` of the
/// authenticated [`UserInfo`]).
///
/// The answer decides as upstream's: `denied` and `allowed` both set is a denial with an
/// error; `denied` is a [`Decision::Deny`] with the answer's reason; `allowed` is
/// [`Decision::Allow`]; anything else is [`Decision::NoOpinion`] with the reason. A webhook
/// that gives no answer decides by the [`FailurePolicy`], with the error as the reason.
///
/// Answers are cached by the SHA-256 digest of the spec's JSON (so two users never share
/// an entry): allowed ones for [`authorized_ttl`](WebhookAuthorizerOptions::authorized_ttl),
/// others for [`unauthorized_ttl`](WebhookAuthorizerOptions::unauthorized_ttl); errors are
/// not cached, nor requests whose requester-controlled attributes (namespace, verb, group,
/// version, resource, subresource, name and request path) reach 10,000 bytes. Cloning
/// shares the cache and the counters.
#[derive(Clone)]
pub struct WebhookAuthorizer {
    inner: Arc<Inner>,
}

impl fmt::Debug for WebhookAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAuthorizer")
            .field("client", &self.inner.client)
            .field("options", &self.inner.options)
            .field("cached", &self.inner.cache.len())
            .finish()
    }
}

/// `Some` of a non-empty string (upstream's fields are all `omitempty`).
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The resource attributes of a request, as strings (the vectors use verbs and groups the
/// proxy never produces).
pub(super) struct ResourceRequest<'a> {
    pub(super) namespace: &'a str,
    pub(super) verb: &'a str,
    pub(super) group: &'a str,
    pub(super) version: &'a str,
    pub(super) resource: &'a str,
    pub(super) subresource: &'a str,
    pub(super) name: &'a str,
}

impl<'a> ResourceRequest<'a> {
    fn of(attributes: &'a Attributes) -> Self {
        ResourceRequest {
            namespace: attributes.namespace.as_deref().unwrap_or_default(),
            verb: attributes.verb,
            group: attributes.api_group,
            version: attributes.api_version,
            resource: attributes.resource,
            subresource: attributes.subresource,
            name: &attributes.name,
        }
    }

    /// Upstream's `shouldCache` sum: the attribute bytes a requester chooses.
    fn controlled_bytes(&self, path: &str) -> usize {
        [
            self.namespace,
            self.verb,
            self.group,
            self.version,
            self.resource,
            self.subresource,
            self.name,
            path,
        ]
        .iter()
        .map(|s| s.len())
        .sum()
    }
}

/// The SubjectAccessReview spec kube-apiserver's webhook authorizer sends.
pub(super) fn spec(
    request: &ResourceRequest<'_>,
    user: Option<&UserInfo>,
) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        resource_attributes: Some(ResourceAttributes {
            namespace: non_empty(request.namespace),
            verb: non_empty(request.verb),
            group: non_empty(request.group),
            version: non_empty(request.version),
            resource: non_empty(request.resource),
            subresource: non_empty(request.subresource),
            name: non_empty(request.name),
            ..Default::default()
        }),
        user: user.and_then(|u| non_empty(&u.name)),
        uid: user.and_then(|u| non_empty(&u.uid)),
        groups: user.and_then(|u| (!u.groups.is_empty()).then(|| u.groups.clone())),
        extra: user.and_then(|u| (!u.extra.is_empty()).then(|| u.extra.clone())),
        non_resource_attributes: None,
    }
}

/// The review POSTed for `spec` (`status` encodes as `{"allowed":false}`, as client-go
/// encodes the empty status).
pub(super) fn review(spec: SubjectAccessReviewSpec) -> SubjectAccessReview {
    SubjectAccessReview {
        metadata: Default::default(),
        spec,
        status: Some(SubjectAccessReviewStatus::default()),
    }
}

/// Upstream's decision for an answer's status; `user` is named by a denial.
pub(super) fn decide(status: &SubjectAccessReviewStatus, user: &str) -> Decision {
    let reason = status.reason.clone().unwrap_or_default();
    let denied = status.denied == Some(true);
    match (status.allowed, denied) {
        (true, true) => Decision::deny(
            user,
            if reason.is_empty() {
                ALLOWED_AND_DENIED.to_owned()
            } else {
                format!("{ALLOWED_AND_DENIED}: {reason}")
            },
        ),
        (false, true) => Decision::deny(user, reason),
        (true, false) => Decision::Allow,
        (false, false) => Decision::NoOpinion { reason },
    }
}

impl WebhookAuthorizer {
    /// An authorizer asking `client`'s webhook.
    pub fn new(client: WebhookClient, options: WebhookAuthorizerOptions) -> Self {
        let cache = Cache::new(options.cache_size);
        WebhookAuthorizer {
            inner: Arc::new(Inner {
                client,
                options,
                cache,
                counters: Counters::default(),
            }),
        }
    }

    /// The cache hits, misses and errors so far.
    pub fn stats(&self) -> WebhookStats {
        self.inner.counters.snapshot()
    }

    async fn review(&self, attributes: &Attributes, parts: &Parts) -> Decision {
        let inner = &*self.inner;
        let user = parts.extensions.get::<UserInfo>();
        let user_name = user.map(|u| u.name.as_str()).unwrap_or_default();
        let request = ResourceRequest::of(attributes);
        let cacheable = request.controlled_bytes(parts.uri.path()) < MAX_CACHED_ATTRIBUTE_BYTES;
        let spec = spec(&request, user);
        // The spec's JSON decides the answer: its digest finds the cached one.
        let cache_key = cacheable
            .then(|| serde_json::to_vec(&spec).ok())
            .flatten()
            .map(|json| key([json.as_slice()]));
        if let Some(status) = cache_key.as_ref().and_then(|k| inner.cache.get(k)) {
            inner.counters.hit();
            return decide(&status, user_name);
        }
        inner.counters.miss();
        match inner.client.post(&review(spec)).await {
            Ok(answer) => {
                let status = answer.status.unwrap_or_default();
                if let Some(cache_key) = cache_key {
                    let ttl = if status.allowed {
                        inner.options.authorized_ttl
                    } else {
                        inner.options.unauthorized_ttl
                    };
                    inner.cache.insert(cache_key, status.clone(), ttl);
                }
                decide(&status, user_name)
            }
            Err(error) => {
                inner.counters.error();
                tracing::warn!(
                    endpoint = inner.client.endpoint(),
                    ?error,
                    policy = ?inner.options.failure_policy,
                    "authorization webhook failed"
                );
                let reason = format!("webhook authorization failed: {error}");
                match inner.options.failure_policy {
                    FailurePolicy::NoOpinion => Decision::NoOpinion { reason },
                    FailurePolicy::Deny => Decision::deny(user_name, reason),
                }
            }
        }
    }
}

impl Authorizer for WebhookAuthorizer {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        parts: &'a Parts,
    ) -> AuthorizeFuture<'a> {
        AuthorizeFuture::boxed(self.review(attributes, parts))
    }
}
