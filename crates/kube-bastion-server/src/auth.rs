//! Authentication as kube-apiserver's flags configure it: the library's
//! [`AuthenticationLayer`] with the static token file (`--token-auth-file`), client
//! certificates (`--client-ca-file`), a TokenReview webhook (see `crate::webhook`) and
//! anonymous access (`--anonymous-auth`).
//!
//! Without any of them every request passes as it is (the demo and a bastion in front of a
//! lab). With one, a request needs valid credentials (else 401 with kube-apiserver's
//! Status), except `/healthz`, `/livez`, `/readyz` and `/version`, which kube-apiserver's
//! default RBAC lets anyone read. The user goes into the request's extensions as a
//! [`UserInfo`](kube_bastion::UserInfo) for the proxy's authorizer. A WebSocket client that
//! cannot set headers may instead offer the subprotocol
//! `base64url.bearer.authorization.k8s.io.<base64url token>`, which is removed once used
//! (and the proxy library strips it from whatever it forwards in any case).

use kube_bastion::{AuthenticationLayer, TokenFile, X509Authenticator};

use crate::cli::ServeArgs;

/// Paths anyone may read (kube-apiserver's `system:public-info-viewer`).
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// The authentication layer the flags describe.
pub(crate) async fn layer(args: &ServeArgs) -> Result<AuthenticationLayer, String> {
    let mut layer = AuthenticationLayer::new();
    let mut configured = false;
    if let Some(path) = &args.token_auth_file {
        let file = TokenFile::load(path)
            .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
        tracing::info!(tokens = file.len(), "static token authentication on");
        layer = layer.authenticator(file);
        configured = true;
    }
    if args.client_ca_file.is_some() {
        tracing::info!("client certificate authentication on");
        layer = layer.authenticator(X509Authenticator);
        configured = true;
    }
    if let Some(webhook) = crate::webhook::authenticator(&args.webhook).await? {
        layer = layer.authenticator(webhook);
        configured = true;
    }
    if !configured {
        return Ok(layer);
    }
    if args.anonymous_auth {
        tracing::info!("anonymous requests allowed as system:anonymous");
    }
    Ok(PUBLIC_PATHS
        .into_iter()
        .fold(layer.anonymous(args.anonymous_auth), |layer, path| {
            layer.public_path(path)
        }))
}
