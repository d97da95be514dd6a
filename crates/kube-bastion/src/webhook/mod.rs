//! kube-apiserver's webhook authentication and authorization: a [`TokenReviewAuthenticator`]
//! that asks a TokenReview webhook who a bearer token belongs to, and a
//! [`WebhookAuthorizer`] that asks a SubjectAccessReview webhook whether a proxy request
//! may proceed (cargo feature `kube`).
//!
//! Both talk to their webhook through a [`WebhookClient`], built from a kubeconfig file as
//! kube-apiserver's are:
//!
//! * [`WebhookClient::from_webhook_config_file`] reads a webhook configuration file
//!   (`--authentication-token-webhook-config-file`, `--authorization-webhook-config-file`):
//!   a kubeconfig whose cluster `server` URL, path included, is the webhook;
//! * [`WebhookClient::from_kubeconfig_file`] reads a kubeconfig of a kube-apiserver
//!   (`--authentication-kubeconfig`, `--authorization-kubeconfig`, delegated
//!   authentication and authorization) and posts to its review API
//!   ([`TOKEN_REVIEWS_PATH`], [`SUBJECT_ACCESS_REVIEWS_PATH`]).
//!
//! As upstream, each review is one JSON POST (k8s-openapi's `authentication/v1` and
//! `authorization/v1` types) with a timeout (30 s by default); a `429`, `500`, `504`, an
//! answer with `Retry-After` or a connection error is retried with exponential backoff
//! (500 ms, ×1.5, 20 % jitter) up to 5 attempts in all, then the failure rule applies: no user (a `401` unless another
//! authenticator finds one) for tokens, the [`FailurePolicy`] for authorization.
//!
//! Answers are cached for a while (2 minutes for tokens, 5 minutes for allowed and 30
//! seconds for refused requests by default); errors never are. Cache entries are found by
//! the SHA-256 digest of what decides the answer (the token and the audiences; the
//! SubjectAccessReview spec), so the cache never holds a token. [`WebhookStats`] counts
//! cache hits, misses and errors.

mod cache;
mod subject_access_review;
#[cfg(test)]
mod tests;
mod token_review;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use http::uri::PathAndQuery;
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use cache::WebhookStats;
pub use subject_access_review::{FailurePolicy, WebhookAuthorizer, WebhookAuthorizerOptions};
pub use token_review::{TokenReviewAuthenticator, TokenReviewOptions};

/// The TokenReview API of a kube-apiserver (delegated authentication).
pub const TOKEN_REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The SubjectAccessReview API of a kube-apiserver (delegated authorization).
pub const SUBJECT_ACCESS_REVIEWS_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// The largest webhook answer read (a review is a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// A webhook kubeconfig that could not be used: the file and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WebhookConfigError {
    message: String,
}

impl WebhookConfigError {
    fn new(message: impl Into<String>) -> Self {
        WebhookConfigError {
            message: message.into(),
        }
    }
}

/// Why a review got no answer. Its `Display` (the `403` reason) names the kind of
/// failure only; `Debug` (the logs) has the details. Never holds a token or a response
/// body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WebhookError {
    /// The webhook answered with this HTTP status (and said when to retry, or not).
    Status(u16, RetryAfter),
    /// No answer within the timeout.
    Timeout,
    /// Connecting or talking to the webhook failed.
    Transport(String),
    /// The answer is not a review of the kind sent.
    Decode(String),
}

/// Whether an error answer carried `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) bool);

impl WebhookError {
    /// Whether it is retried: what upstream's `DefaultShouldRetry` retries (`429`, `500`,
    /// `504`, any answer with `Retry-After`), and every connection error (upstream: resets
    /// only; a webhook that restarts is retried rather than failed at once).
    fn retryable(&self) -> bool {
        match self {
            WebhookError::Status(code, RetryAfter(retry_after)) => {
                matches!(code, 429 | 500 | 504) || *retry_after
            }
            WebhookError::Transport(_) => true,
            WebhookError::Timeout | WebhookError::Decode(_) => false,
        }
    }
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Status(code, _) => write!(f, "the webhook answered HTTP {code}"),
            WebhookError::Timeout => f.write_str("the webhook did not answer in time"),
            // The details (addresses, decoder positions) go to the logs only.
            WebhookError::Transport(_) => f.write_str("the webhook could not be reached"),
            WebhookError::Decode(_) => f.write_str("the webhook's answer does not decode"),
        }
    }
}

/// A client of one webhook: a kube-rs client and the path reviews are POSTed to, with the
/// per-attempt timeout and the retries.
///
/// ```no_run
/// # async fn demo() -> Result<(), kube_bastion::WebhookConfigError> {
/// use std::time::Duration;
/// use kube_bastion::{WebhookClient, TOKEN_REVIEWS_PATH};
///
/// // A webhook configuration file: the server URL is the webhook.
/// let webhook = WebhookClient::from_webhook_config_file("/etc/authn-webhook.yaml".as_ref())
///     .await?
///     .timeout(Duration::from_secs(10));
/// // The TokenReview API of the kube-apiserver a kubeconfig points at.
/// let delegated =
///     WebhookClient::from_kubeconfig_file("/etc/kubeconfig".as_ref(), TOKEN_REVIEWS_PATH).await?;
/// # let _ = (webhook, delegated);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebhookClient {
    client: kube::Client,
    /// What requests are sent to (relative to the client's base URL).
    path: PathAndQuery,
    /// The webhook's URL for messages (scheme, host, port and path; no credentials).
    endpoint: String,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookClient")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// kube-apiserver's request timeout for webhooks.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream's attempts (`DefaultRetryBackoffWithInitialDelay`: 5 steps).
const DEFAULT_ATTEMPTS: u32 = 5;
/// Upstream's first retry delay.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between two attempts, whatever the initial backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `delay` times `factor`, at most [`MAX_BACKOFF`] (never a panic on overflow).
fn scaled(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor)
        .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
}

async fn read_config(path: &Path, flag_less: &str) -> Result<kube::Config, WebhookConfigError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let shown = path.display();
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| WebhookConfigError::new(format!("{shown}: {e}")))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| WebhookConfigError::new(format!("{shown}: {e}")))?;
    // The retries are upstream's (see `post`), not kube-rs's own.
    config.default_retry = false;
    if config.cluster_url.scheme().is_none() || config.cluster_url.host().is_none() {
        return Err(WebhookConfigError::new(format!(
            "{shown}: {flag_less} server URL {:?} has no scheme or host",
            config.cluster_url.to_string()
        )));
    }
    Ok(config)
}

/// `scheme://authority` of a URL (the base a kube-rs client joins request paths to).
fn origin(url: &http::Uri) -> Result<http::Uri, WebhookConfigError> {
    let mut builder = http::Uri::builder();
    if let Some(scheme) = url.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = url.authority() {
        builder = builder.authority(authority.clone());
    }
    builder
        .path_and_query("/")
        .build()
        .map_err(|e| WebhookConfigError::new(format!("server URL: {e}")))
}

/// The URL without user information, for messages.
fn shown_url(url: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("https"),
        url.authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or_default())
            .unwrap_or_default(),
        url.path()
    )
}

impl WebhookClient {
    /// A client of the webhook a webhook configuration file describes: a kubeconfig whose
    /// current context's cluster `server` URL, path and query included, is where reviews
    /// are POSTed (as kube-apiserver's `--authentication-token-webhook-config-file` and
    /// `--authorization-webhook-config-file` read it); its CA, client certificate, token and
    /// TLS settings are used. Must be called within a tokio runtime.
    pub async fn from_webhook_config_file(path: &Path) -> Result<Self, WebhookConfigError> {
        let mut config = read_config(path, "the webhook").await?;
        let url = config.cluster_url.clone();
        let path_and_query = url
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        config.cluster_url = origin(&url)?;
        Self::build(config, path_and_query, shown_url(&url), path)
    }

    /// A client of the review API `api_path` ([`TOKEN_REVIEWS_PATH`] or
    /// [`SUBJECT_ACCESS_REVIEWS_PATH`]) of the kube-apiserver a kubeconfig file points at
    /// (kube-apiserver's delegated `--authentication-kubeconfig` and
    /// `--authorization-kubeconfig`); a path in the server URL is kept as a prefix. Must be
    /// called within a tokio runtime.
    pub async fn from_kubeconfig_file(
        path: &Path,
        api_path: &str,
    ) -> Result<Self, WebhookConfigError> {
        let config = read_config(path, "the cluster").await?;
        let api_path = PathAndQuery::try_from(api_path)
            .map_err(|e| WebhookConfigError::new(format!("API path {api_path:?}: {e}")))?;
        let endpoint = format!(
            "{}{}",
            shown_url(&config.cluster_url).trim_end_matches('/'),
            api_path.path()
        );
        Self::build(config, api_path, endpoint, path)
    }

    fn build(
        mut config: kube::Config,
        path: PathAndQuery,
        endpoint: String,
        file: &Path,
    ) -> Result<Self, WebhookConfigError> {
        config.connect_timeout = Some(
            config
                .connect_timeout
                .map_or(DEFAULT_TIMEOUT, |t| t.min(DEFAULT_TIMEOUT)),
        );
        let client = kube::Client::try_from(config).map_err(|e| {
            WebhookConfigError::new(format!("{}: webhook client: {e}", file.display()))
        })?;
        Ok(Self::with_client(client, path, endpoint))
    }

    /// A client POSTing reviews to `path` (relative to the client's cluster URL) with an
    /// existing kube-rs client. Turn off the client's own retries
    /// (`kube::Config::default_retry`) to get upstream's retry count.
    pub fn from_client(client: kube::Client, path: &str) -> Result<Self, WebhookConfigError> {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| WebhookConfigError::new(format!("path {path:?}: {e}")))?;
        let endpoint = path.path().to_owned();
        Ok(Self::with_client(client, path, endpoint))
    }

    fn with_client(client: kube::Client, path: PathAndQuery, endpoint: String) -> Self {
        WebhookClient {
            client,
            path,
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// The longest one attempt may take, answer included (default: 30 s, kube-apiserver's).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts in all for a review that fails with a `429`, `500` or `504`, an answer
    /// with `Retry-After`, or a connection error (at least 1; default 5, as upstream), and the delay before the first retry
    /// (default 500 ms; each next one is 1.5 times longer, with up to 20 % jitter).
    #[must_use]
    pub fn retries(mut self, attempts: u32, initial_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = initial_backoff;
        self
    }

    /// The webhook's URL (without credentials), for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POSTs `review` and decodes the answer, with upstream's retries.
    pub(crate) async fn post<T>(&self, review: &T) -> Result<T, WebhookError>
    where
        T: Serialize + DeserializeOwned,
    {
        let body = serde_json::to_vec(review).map_err(|e| WebhookError::Decode(e.to_string()))?;
        let mut delay = self.backoff;
        let mut attempt = 1;
        loop {
            match self.attempt(&body).await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.retryable() && attempt < self.attempts => {
                    tracing::debug!(endpoint = %self.endpoint, attempt, %error, "webhook retry");
                    let jitter = {
                        use rand::{Rng as _, SeedableRng as _};
                        1.0 + rand::rngs::SmallRng::from_os_rng().random::<f64>() * 0.2
                    };
                    tokio::time::sleep(scaled(delay, jitter)).await;
                    delay = scaled(delay, 1.5);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, WebhookError> {
        let request = http::Request::post(self.path.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(kube::client::Body::from(body.to_vec()))
            .map_err(|e| WebhookError::Transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .send(request)
                .await
                .map_err(|e| WebhookError::Transport(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = response.headers().contains_key(http::header::RETRY_AFTER);
                return Err(WebhookError::Status(
                    status.as_u16(),
                    RetryAfter(retry_after),
                ));
            }
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        WebhookError::Decode(format!("longer than {MAX_RESPONSE_BYTES} bytes"))
                    } else {
                        WebhookError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            serde_json::from_slice(&bytes).map_err(|e| WebhookError::Decode(e.to_string()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(WebhookError::Timeout))
    }
}
