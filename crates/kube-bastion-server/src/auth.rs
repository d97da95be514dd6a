//! Authentication as kube-apiserver's flags configure it: the library's
//! [`AuthenticationLayer`] with front proxies (`--requestheader-*`, first in the chain),
//! the static token file (`--token-auth-file`), client certificates (`--client-ca-file`), a
//! TokenReview webhook (see `crate::webhook`) and anonymous access (`--anonymous-auth`).
//!
//! Without any of them every request passes as it is (the demo and a bastion in front of a
//! lab). With one, a request needs valid credentials (else 401 with kube-apiserver's
//! Status), except `/healthz`, `/livez`, `/readyz` and `/version`, which kube-apiserver's
//! default RBAC lets anyone read. The user goes into the request's extensions as a
//! [`UserInfo`](kube_bastion::UserInfo) for the proxy's authorizer. A WebSocket client that
//! cannot set headers may instead offer the subprotocol
//! `base64url.bearer.authorization.k8s.io.<base64url token>`, which is removed once used
//! (and the proxy library strips it from whatever it forwards in any case).

use kube_bastion::{AuthenticationLayer, RequestHeaderAuthenticator, TokenFile, X509Authenticator};

use crate::cli::ServeArgs;
use crate::serve::load_certs;

/// Paths anyone may read (kube-apiserver's `system:public-info-viewer`).
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// The authentication layer the flags describe.
pub(crate) async fn layer(
    args: &ServeArgs,
    metrics: &crate::metrics::Metrics,
) -> Result<AuthenticationLayer, String> {
    let mut layer = AuthenticationLayer::new();
    let mut configured = false;
    // First in the chain, as in kube-apiserver.
    if let Some(path) = &args.requestheader_client_ca_file {
        let roots = load_certs(path).map_err(|e| format!("--requestheader-client-ca-file {e}"))?;
        let front_proxy = RequestHeaderAuthenticator::new(roots)
            .map_err(|e| format!("--requestheader-client-ca-file {}: {e}", path.display()))?
            .allowed_names(
                args.requestheader_allowed_names
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned(),
            )
            .username_headers(args.requestheader_username_headers.iter().cloned())
            .group_headers(args.requestheader_group_headers.iter().cloned())
            .extra_headers_prefixes(args.requestheader_extra_headers_prefix.iter().cloned());
        tracing::info!(
            allowed_names = ?args.requestheader_allowed_names,
            "front-proxy (requestheader) authentication on"
        );
        layer = layer.authenticator(front_proxy);
        configured = true;
    }
    if let Some(path) = &args.token_auth_file {
        let file = TokenFile::load(path)
            .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
        tracing::info!(tokens = file.len(), "static token authentication on");
        layer = layer.authenticator(file);
        configured = true;
    }
    if let Some(path) = &args.client_ca_file {
        tracing::info!("client certificate authentication on");
        // With a front-proxy CA the TLS listener accepts certificates of both CAs: the x509
        // authenticator then checks its own, so a front proxy's certificate is no user.
        let x509 = if args.requestheader_client_ca_file.is_some() {
            X509Authenticator::with_roots(
                load_certs(path).map_err(|e| format!("--client-ca-file {e}"))?,
            )
            .map_err(|e| format!("--client-ca-file {}: {e}", path.display()))?
        } else {
            X509Authenticator::new()
        };
        layer = layer.authenticator(x509);
        configured = true;
    }
    if let Some(webhook) = crate::webhook::authenticator(&args.webhook).await? {
        let counters = webhook.clone();
        metrics.register_webhook("authentication", move || counters.stats());
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
