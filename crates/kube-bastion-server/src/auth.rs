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

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::AUTHORIZATION;
use kube_bastion::Status;
use kube_bastion::{TokenFile, websocket_token};

use crate::api::status_response;

/// Paths anyone may read (kube-apiserver's `system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// The 401 answer.
pub(crate) fn unauthorized() -> Status {
    Status::new(401, Some("Unauthorized"), "Unauthorized")
}

/// Middleware: authenticates every request against `tokens`.
pub(crate) async fn authenticate(
    State(tokens): State<Arc<TokenFile>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| tokens.authenticate(value.as_bytes()))
        .cloned();
    if user.is_none()
        && let Some((token, rest)) = request
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|value| websocket_token(value.as_bytes()))
    {
        user = tokens.user(&token).cloned();
        if user.is_some() {
            let headers = request.headers_mut();
            match http::HeaderValue::from_str(&rest) {
                Ok(value) if !rest.is_empty() => {
                    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
                }
                _ => {
                    headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
                }
            }
        }
    }
    match user {
        Some(user) => {
            tracing::debug!(user = %user.name, "authenticated");
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None if is_public(request.uri().path()) => next.run(request).await,
        None => status_response(&unauthorized()),
    }
}
