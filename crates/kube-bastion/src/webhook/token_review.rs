//! [`TokenReviewAuthenticator`]: bearer tokens checked by a TokenReview webhook.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};

use super::WebhookClient;
use super::cache::{Cache, Counters, Key, WebhookStats, key};
use crate::authn::bearer_token;
use crate::{
    AUTHENTICATED_GROUP, AuthenticateFuture, Authentication, Authenticator, UserInfo,
    websocket_token,
};

/// How a [`TokenReviewAuthenticator`] asks and caches.
///
/// By default: no audiences, answers cached for 2 minutes (kube-apiserver's
/// `--authentication-token-webhook-cache-ttl`), at most 8192 cached tokens.
#[derive(Clone, Debug)]
pub struct TokenReviewOptions {
    cache_ttl: Duration,
    audiences: Vec<String>,
    cache_size: usize,
}

impl Default for TokenReviewOptions {
    fn default() -> Self {
        TokenReviewOptions {
            cache_ttl: Duration::from_secs(120),
            audiences: Vec::new(),
            cache_size: 8192,
        }
    }
}

impl TokenReviewOptions {
    /// How long an answer (authenticated or not) is reused for the same token; zero turns
    /// the cache off. Errors are never cached.
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The audiences this server accepts tokens for (kube-apiserver's `--api-audiences`):
    /// sent as `spec.audiences`, and a token is accepted only when the audiences in the
    /// answer's status (or, when it names none, these) include one of them. Empty (the
    /// default): no audience is sent or checked.
    #[must_use]
    pub fn audiences<S: Into<String>>(mut self, audiences: impl IntoIterator<Item = S>) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// The most tokens cached at once (expired entries go first, then the oldest).
    #[must_use]
    pub fn cache_size(mut self, entries: usize) -> Self {
        self.cache_size = entries;
        self
    }
}

/// A cached answer.
#[derive(Clone, Debug)]
pub(super) enum Answer {
    User(UserInfo),
    /// Not authenticated, and why (for the logs).
    Unauthenticated(String),
}

impl From<Answer> for Authentication {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::User(user) => Authentication::User(user),
            Answer::Unauthenticated(reason) => Authentication::Invalid(reason),
        }
    }
}

struct Inner {
    client: WebhookClient,
    options: TokenReviewOptions,
    cache: Cache<Answer>,
    counters: Counters,
}

/// kube-apiserver's webhook token authenticator
/// (`--authentication-token-webhook-config-file`, or the delegated
/// `--authentication-kubeconfig`): the bearer token of a request (`Authorization: Bearer`,
/// or the WebSocket bearer subprotocol when there is no `Authorization`, as
/// [`TokenFile`](crate::TokenFile) reads them) is sent in a TokenReview; an authenticated
/// answer is the user (`status.user`: username, uid, groups, extra; `system:authenticated`
/// added).
///
/// * a request without a bearer token has [`Authentication::NoCredentials`] for it;
/// * a token the webhook does not authenticate, or whose audiences do not match, is
///   [`Authentication::Invalid`] (the next authenticator of the chain is still asked; a
///   `401` when none finds a user);
/// * a webhook that cannot be reached or fails (after the retries of [`WebhookClient`])
///   is [`Authentication::Invalid`] too: never a user.
///
/// Answers are cached by the SHA-256 digest of the token and the audiences (never the
/// token itself) for [`TokenReviewOptions::cache_ttl`]; errors are not cached. Cloning
/// shares the cache and the counters.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("client", &self.inner.client)
            .field("options", &self.inner.options)
            .field("cached", &self.inner.cache.len())
            .finish()
    }
}

/// The bearer token of a request: `Authorization: Bearer <token>`, or the WebSocket
/// subprotocol entry when there is no `Authorization` header.
fn request_token(headers: &http::HeaderMap) -> Option<Cow<'_, [u8]>> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        return bearer_token(value.as_bytes()).map(Cow::Borrowed);
    }
    headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| websocket_token(value.as_bytes()))
        .map(|(token, _)| Cow::Owned(token))
}

/// The TokenReview kube-apiserver sends for `token`.
pub(super) fn review(token: &str, audiences: &[String]) -> TokenReview {
    TokenReview {
        metadata: Default::default(),
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
        },
        // Encoded as `{"user":{}}`, as client-go encodes the empty status.
        status: Some(TokenReviewStatus {
            user: Some(Default::default()),
            ..Default::default()
        }),
    }
}

/// What an answer's status means for a request with `audiences`: the user, not
/// authenticated, or an error the webhook reported (not cached).
pub(super) fn answer(status: TokenReviewStatus, audiences: &[String]) -> Result<Answer, String> {
    if status.authenticated != Some(true) {
        return match status.error.filter(|e| !e.is_empty()) {
            Some(error) => Err(format!("the token webhook reported an error: {error}")),
            None => Ok(Answer::Unauthenticated(
                "the token webhook did not authenticate the token".to_owned(),
            )),
        };
    }
    if !audiences.is_empty() {
        let answered = status.audiences.filter(|a| !a.is_empty());
        let accepted = answered.as_deref().unwrap_or(audiences);
        if !audiences.iter().any(|a| accepted.contains(a)) {
            return Ok(Answer::Unauthenticated(
                "the token's audiences do not include this server's".to_owned(),
            ));
        }
    }
    let user = status.user.unwrap_or_default();
    let mut groups = user.groups.unwrap_or_default();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    let mut info = UserInfo::new(
        user.username.unwrap_or_default(),
        user.uid.unwrap_or_default(),
        groups,
    );
    info.extra = user.extra.unwrap_or_default();
    Ok(Answer::User(info))
}

impl TokenReviewAuthenticator {
    /// An authenticator asking `client`'s webhook.
    pub fn new(client: WebhookClient, options: TokenReviewOptions) -> Self {
        let cache = Cache::new(options.cache_size);
        TokenReviewAuthenticator {
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

    #[cfg(test)]
    pub(super) fn inner_cache_keys(&self) -> Vec<Key> {
        self.inner.cache.keys()
    }

    /// The cache key of a token: SHA-256 over the audiences and the token.
    fn key(&self, token: &[u8]) -> Key {
        let audiences = self.inner.options.audiences.iter().map(String::as_bytes);
        key(audiences.chain([&b"\0token"[..], token]))
    }

    async fn review(&self, token: &str) -> Authentication {
        let inner = &*self.inner;
        let key = self.key(token.as_bytes());
        if let Some(answer) = inner.cache.get(&key) {
            inner.counters.hit();
            return answer.into();
        }
        inner.counters.miss();
        let audiences = &inner.options.audiences;
        let result = match inner.client.post(&review(token, audiences)).await {
            Ok(review) => answer(review.status.unwrap_or_default(), audiences),
            Err(error) => {
                tracing::warn!(
                    endpoint = inner.client.endpoint(),
                    ?error,
                    "token webhook failed"
                );
                Err(format!("webhook token authentication failed: {error}"))
            }
        };
        match result {
            Ok(answer) => {
                inner
                    .cache
                    .insert(key, answer.clone(), inner.options.cache_ttl);
                answer.into()
            }
            Err(error) => {
                inner.counters.error();
                tracing::debug!(%error, "webhook token authentication refused the request");
                Authentication::Invalid(error)
            }
        }
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        let Some(token) = request_token(&request.headers) else {
            return AuthenticateFuture::ready(Authentication::NoCredentials);
        };
        let token = match String::from_utf8(token.into_owned()) {
            Ok(token) if !token.is_empty() => token,
            _ => {
                return AuthenticateFuture::ready(Authentication::Invalid(
                    "invalid bearer token".to_owned(),
                ));
            }
        };
        AuthenticateFuture::boxed(async move { self.review(&token).await })
    }
}
