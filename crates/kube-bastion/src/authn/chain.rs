//! [`Authenticator`], the chain that runs them ([`AuthenticationLayer`]) and what they
//! answer ([`Authentication`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use super::{AUTHENTICATED_GROUP, UserInfo, websocket_token};
use crate::Status;

/// What one [`Authenticator`] found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// The request authenticated as this user.
    User(UserInfo),
    /// The request carries no credentials this authenticator reads: the next one is asked.
    NoCredentials,
    /// The request carries credentials of this authenticator's kind that are not valid (the
    /// reason, for the logs). The request is refused even when anonymous access is on, as
    /// kube-apiserver refuses a bad bearer token rather than treating it as anonymous.
    Invalid(String),
}

/// The future an [`Authenticator`] answers with: an immediate answer (no allocation) or a
/// boxed future for authenticators that do I/O (a TokenReview webhook), as
/// [`AuthorizeFuture`](crate::AuthorizeFuture) is for authorizers.
pub struct AuthenticateFuture<'a> {
    inner: AuthenticateInner<'a>,
}

enum AuthenticateInner<'a> {
    Ready(Option<Authentication>),
    Boxed(Pin<Box<dyn Future<Output = Authentication> + Send + 'a>>),
}

impl<'a> AuthenticateFuture<'a> {
    /// An answer that is already known.
    pub fn ready(authentication: Authentication) -> Self {
        Self {
            inner: AuthenticateInner::Ready(Some(authentication)),
        }
    }

    /// An answer that needs asynchronous work.
    pub fn boxed(future: impl Future<Output = Authentication> + Send + 'a) -> Self {
        Self {
            inner: AuthenticateInner::Boxed(Box::pin(future)),
        }
    }
}

impl fmt::Debug for AuthenticateFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            AuthenticateInner::Ready(a) => {
                f.debug_tuple("AuthenticateFuture::Ready").field(a).finish()
            }
            AuthenticateInner::Boxed(_) => f.write_str("AuthenticateFuture::Boxed"),
        }
    }
}

impl Future for AuthenticateFuture<'_> {
    type Output = Authentication;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Authentication> {
        // Both variants are Unpin (an Option and a Pin<Box<_>>).
        match &mut self.get_mut().inner {
            // Polled after completion (a caller bug): no credentials, never a user.
            AuthenticateInner::Ready(a) => {
                Poll::Ready(a.take().unwrap_or(Authentication::NoCredentials))
            }
            AuthenticateInner::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// Finds the user of a request from its head: a token, a client certificate, a webhook...
///
/// ```
/// use kube_bastion::{AuthenticateFuture, Authentication, Authenticator, UserInfo};
///
/// /// Everyone who sends `X-Demo-User` is that user (for a demo only!).
/// struct HeaderUser;
///
/// impl Authenticator for HeaderUser {
///     fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
///         let found = match request.headers.get("x-demo-user").and_then(|v| v.to_str().ok()) {
///             Some(name) => Authentication::User(UserInfo::new(name, "", vec![])),
///             None => Authentication::NoCredentials,
///         };
///         AuthenticateFuture::ready(found)
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync {
    /// Authenticates the request whose head is `request`.
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a>;

    /// Removes from a request's headers what this authenticator reads and nothing behind
    /// the authentication layer may see: a front proxy's identity headers
    /// ([`RequestHeaderAuthenticator`](crate::RequestHeaderAuthenticator)). The
    /// [`AuthenticationLayer`] calls it on every request it lets through, whichever
    /// authenticator found the user, so a client that is not a trusted front proxy cannot
    /// pass such headers on either. The default removes nothing.
    fn strip_credentials(&self, headers: &mut http::HeaderMap) {
        let _ = headers;
    }
}

/// The chain an [`AuthenticationLayer`] runs.
#[derive(Default)]
struct Chain {
    authenticators: Vec<Arc<dyn Authenticator>>,
    anonymous: bool,
    public_paths: Vec<String>,
}

/// The outcome of the whole chain.
enum Outcome {
    User(UserInfo),
    /// No credentials anywhere, on a public path: served without a user.
    Public,
    Refused,
}

impl Chain {
    /// kube-apiserver's union: the first authenticator that finds a user wins; when none
    /// does, a request whose credentials were invalid is refused, and one without any is
    /// anonymous when that is on.
    async fn run(&self, request: &http::request::Parts) -> Outcome {
        let mut invalid = false;
        for authenticator in &self.authenticators {
            match authenticator.authenticate(request).await {
                Authentication::User(mut user) => {
                    if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                        user.groups.push(AUTHENTICATED_GROUP.to_owned());
                    }
                    return Outcome::User(user);
                }
                Authentication::NoCredentials => {}
                Authentication::Invalid(reason) => {
                    tracing::debug!(%reason, "credentials refused");
                    invalid = true;
                }
            }
        }
        if invalid {
            Outcome::Refused
        } else if self.anonymous {
            Outcome::User(UserInfo::anonymous())
        } else if self.public_paths.iter().any(|p| p == request.uri.path()) {
            Outcome::Public
        } else {
            Outcome::Refused
        }
    }
}

/// Authenticates every request with a chain of [`Authenticator`]s, as kube-apiserver's
/// authentication filter does, before the service it wraps (put it in front of the
/// [`ProxyLayer`](crate::ProxyLayer)):
///
/// * the first authenticator that finds a user wins; the user (with
///   `system:authenticated` added) goes into the request's extensions as a [`UserInfo`],
///   where the proxy's [`Authorizer`](crate::Authorizer) reads it;
/// * a request with invalid credentials, or without any while anonymous access is off
///   (the default), is answered `401` with kube-apiserver's Status, byte for byte;
/// * with [`anonymous`](Self::anonymous), a request without credentials is
///   `system:anonymous` in `system:unauthenticated`;
/// * [`public_path`](Self::public_path)s are served to a request without credentials
///   without a user (health probes);
/// * a WebSocket bearer subprotocol entry
///   (`base64url.bearer.authorization.k8s.io.<token>`) is removed once authentication has
///   succeeded, as kube-apiserver does;
/// * every authenticator's [`strip_credentials`](Authenticator::strip_credentials) runs on
///   each request let through (a front proxy's identity headers are removed whoever sent
///   them).
///
/// With no authenticator at all the layer passes every request through untouched.
#[derive(Clone, Default)]
pub struct AuthenticationLayer {
    chain: Arc<Chain>,
}

impl fmt::Debug for AuthenticationLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticationLayer")
            .field("authenticators", &self.chain.authenticators.len())
            .field("anonymous", &self.chain.anonymous)
            .field("public_paths", &self.chain.public_paths)
            .finish()
    }
}

impl AuthenticationLayer {
    /// A layer with no authenticator (it passes everything through until one is added).
    pub fn new() -> Self {
        Self::default()
    }

    /// The chain, copied first when a clone of this layer shares it.
    fn chain_mut(&mut self) -> &mut Chain {
        if Arc::get_mut(&mut self.chain).is_none() {
            self.chain = Arc::new(Chain {
                authenticators: self.chain.authenticators.clone(),
                anonymous: self.chain.anonymous,
                public_paths: self.chain.public_paths.clone(),
            });
        }
        Arc::get_mut(&mut self.chain).expect("a fresh Arc is unique")
    }

    /// Adds an authenticator at the end of the chain.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.chain_mut()
            .authenticators
            .push(Arc::new(authenticator));
        self
    }

    /// Lets requests without credentials through as `system:anonymous` (default: off).
    #[must_use]
    pub fn anonymous(mut self, on: bool) -> Self {
        self.chain_mut().anonymous = on;
        self
    }

    /// Serves this exact path to requests without credentials, without a user (for
    /// `/healthz`, `/livez`, `/readyz`, `/version`, which kube-apiserver's default RBAC lets
    /// anyone read).
    #[must_use]
    pub fn public_path(mut self, path: impl Into<String>) -> Self {
        self.chain_mut().public_paths.push(path.into());
        self
    }
}

impl<S> Layer<S> for AuthenticationLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            chain: Arc::clone(&self.chain),
        }
    }
}

/// The service of [`AuthenticationLayer`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    chain: Arc<Chain>,
}

impl<S: fmt::Debug> fmt::Debug for Authenticated<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The body of an [`Authenticated`] answer: the inner service's, or the 401 Status.
pub type AuthenticatedBody<B> = Either<B, Full<Bytes>>;

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<AuthenticatedBody<B>>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        // No authenticator: the inner future, unboxed.
        Direct { #[pin] inner: F },
        // Authentication, then the inner call, boxed.
        Chain { future: Boxed<B, E> },
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Authenticated`]: the inner service's future as it is when
    /// there is no authenticator, else the boxed authentication and call.
    pub struct AuthenticatedFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

impl<F, B, E> fmt::Debug for AuthenticatedFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthenticatedFuture")
    }
}

impl<F, B, E> Future for AuthenticatedFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuthenticatedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Direct { inner } => inner
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
            StateProj::Chain { future } => future.as_mut().poll(cx),
        }
    }
}

/// kube-apiserver's 401 answer.
fn unauthorized<B>() -> Response<AuthenticatedBody<B>> {
    Status::new(401, Some("Unauthorized"), "Unauthorized")
        .to_response()
        .map(|body| Either::Right(Full::new(Bytes::from(body))))
}

/// Removes the WebSocket bearer subprotocol entry, keeping the others.
fn strip_websocket_token(headers: &mut http::HeaderMap) {
    let Some((_, rest)) = headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| websocket_token(value.as_bytes()))
    else {
        return;
    };
    match HeaderValue::from_str(&rest) {
        Ok(value) if !rest.is_empty() => {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        _ => {
            headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authenticated<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<AuthenticatedBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthenticatedFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.chain.authenticators.is_empty() && !self.chain.anonymous {
            return AuthenticatedFuture {
                state: State::Direct {
                    inner: self.inner.call(request),
                },
            };
        }
        // The ready service goes into the future; a clone takes its place (tower's rule
        // for services called from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let chain = Arc::clone(&self.chain);
        AuthenticatedFuture {
            state: State::Chain {
                future: Box::pin(async move {
                    let (mut parts, body) = request.into_parts();
                    match chain.run(&parts).await {
                        Outcome::User(user) => {
                            tracing::debug!(user = %user.name, "authenticated");
                            strip_websocket_token(&mut parts.headers);
                            parts.extensions.insert(user);
                        }
                        Outcome::Public => {}
                        Outcome::Refused => return Ok(unauthorized()),
                    }
                    for authenticator in &chain.authenticators {
                        authenticator.strip_credentials(&mut parts.headers);
                    }
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    Ok(response.map(Either::Left))
                }),
            },
        }
    }
}
