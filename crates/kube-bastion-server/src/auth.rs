//! Authentication with kube-apiserver's static token file (`--token-auth-file`).
//!
//! The file is CSV, one user per line: `token,user,uid[,"group1,group2"]`
//! ([`TokenFile`], which keeps digests, never tokens). A request must carry
//! `Authorization: Bearer <token>` with a listed token; otherwise it is answered 401 with
//! kube-apiserver's Status. `/healthz`, `/livez`, `/readyz` and `/version` stay open, as
//! kube-apiserver's default RBAC lets anyone read them. The user is put in the request's
//! extensions as a [`UserInfo`](kube_bastion::UserInfo) for the proxy's authorizer. As in kube-apiserver, a
//! WebSocket client that cannot set headers may instead offer the subprotocol
//! `base64url.bearer.authorization.k8s.io.<base64url token>`, which is removed once used
//! (and the proxy library strips it from whatever it forwards in any case).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::{Either, Full};
use kube_bastion::Status;
use kube_bastion::{TokenFile, UserInfo, websocket_token};
use tower::{Layer, Service};

/// Paths anyone may read (kube-apiserver's `system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// The 401 answer.
pub(crate) fn unauthorized() -> Status {
    Status::new(401, Some("Unauthorized"), "Unauthorized")
}

/// Layer: authenticates every request against `tokens` (none: every request passes as
/// it is).
#[derive(Clone, Debug)]
pub(crate) struct AuthenticateLayer {
    tokens: Option<Arc<TokenFile>>,
}

impl AuthenticateLayer {
    pub(crate) fn new(tokens: Option<Arc<TokenFile>>) -> Self {
        AuthenticateLayer { tokens }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`AuthenticateLayer`]: a plain tower service (no boxing), so the proxy
/// layer behind it costs an authenticated request nothing more.
#[derive(Clone, Debug)]
pub(crate) struct Authenticate<S> {
    inner: S,
    tokens: Option<Arc<TokenFile>>,
}

/// The body of an answer: the inner service's, or the 401 Status.
pub(crate) type AuthBody<B> = Either<B, Full<Bytes>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authenticate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            match identify(tokens, &mut request) {
                Some(user) => {
                    tracing::debug!(user = %user.name, "authenticated");
                    request.extensions_mut().insert(user);
                }
                None if is_public(request.uri().path()) => {}
                None => {
                    let refused = unauthorized()
                        .to_response()
                        .map(|b| Full::new(Bytes::from(b)));
                    return AuthFuture::Refused {
                        response: Some(refused),
                    };
                }
            }
        }
        AuthFuture::Inner {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Authenticate`].
    #[project = AuthFutureProj]
    pub(crate) enum AuthFuture<F> {
        Inner { #[pin] inner: F },
        Refused { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F, B, E> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuthBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Inner { inner } => inner
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
            AuthFutureProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("polled after completion")
                .map(Either::Right))),
        }
    }
}

/// The user a request's credentials name: its `Authorization: Bearer` token, or the
/// WebSocket bearer subprotocol (removed from the request once used).
fn identify<B>(tokens: &TokenFile, request: &mut Request<B>) -> Option<UserInfo> {
    let user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| tokens.authenticate(value.as_bytes()))
        .cloned();
    if user.is_some() {
        return user;
    }
    let (token, rest) = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| websocket_token(value.as_bytes()))?;
    let user = tokens.user(&token).cloned()?;
    let headers = request.headers_mut();
    match http::HeaderValue::from_str(&rest) {
        Ok(value) if !rest.is_empty() => {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        _ => {
            headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
        }
    }
    Some(user)
}
