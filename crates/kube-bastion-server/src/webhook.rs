//! Webhook authentication and authorization as kube-apiserver's flags configure them: the
//! library's [`TokenReviewAuthenticator`] (`--authentication-token-webhook-config-file`, or
//! the delegated `--authentication-kubeconfig`) and [`WebhookAuthorizer`] (the `Webhook`
//! entry of `--authorization-mode`, with `--authorization-webhook-config-file` or the
//! delegated `--authorization-kubeconfig`).

use std::path::Path;

use kube_bastion::{
    SUBJECT_ACCESS_REVIEWS_PATH, TOKEN_REVIEWS_PATH, TokenReviewAuthenticator, TokenReviewOptions,
    WebhookAuthorizer, WebhookAuthorizerOptions, WebhookClient,
};

use crate::cli::WebhookArgs;

/// A client of the webhook file, or of the review API of the kubeconfig's apiserver.
async fn client(
    config_file: Option<&Path>,
    kubeconfig: Option<&Path>,
    api_path: &str,
    flags: (&str, &str),
) -> Result<Option<WebhookClient>, String> {
    match (config_file, kubeconfig) {
        (Some(file), _) => WebhookClient::from_webhook_config_file(file)
            .await
            .map(Some)
            .map_err(|e| format!("{}: {e}", flags.0)),
        (None, Some(file)) => WebhookClient::from_kubeconfig_file(file, api_path)
            .await
            .map(Some)
            .map_err(|e| format!("{}: {e}", flags.1)),
        (None, None) => Ok(None),
    }
}

/// The TokenReview authenticator the flags describe, if any.
pub(crate) async fn authenticator(
    args: &WebhookArgs,
) -> Result<Option<TokenReviewAuthenticator>, String> {
    let Some(client) = client(
        args.authentication_webhook_config_file.as_deref(),
        args.authentication_kubeconfig.as_deref(),
        TOKEN_REVIEWS_PATH,
        (
            "--authentication-token-webhook-config-file",
            "--authentication-kubeconfig",
        ),
    )
    .await?
    else {
        return Ok(None);
    };
    tracing::info!(
        endpoint = client.endpoint(),
        cache_ttl = ?args.authentication_cache_ttl,
        "webhook token authentication on"
    );
    Ok(Some(TokenReviewAuthenticator::new(
        client,
        TokenReviewOptions::default().cache_ttl(args.authentication_cache_ttl),
    )))
}

/// Whether a SubjectAccessReview webhook is configured.
pub(crate) fn authorizer_configured(args: &WebhookArgs) -> bool {
    args.authorization_webhook_config_file.is_some() || args.authorization_kubeconfig.is_some()
}

/// The SubjectAccessReview authorizer of the `Webhook` mode.
pub(crate) async fn authorizer(args: &WebhookArgs) -> Result<WebhookAuthorizer, String> {
    let client = client(
        args.authorization_webhook_config_file.as_deref(),
        args.authorization_kubeconfig.as_deref(),
        SUBJECT_ACCESS_REVIEWS_PATH,
        (
            "--authorization-webhook-config-file",
            "--authorization-kubeconfig",
        ),
    )
    .await?
    .ok_or_else(|| {
        "--authorization-mode Webhook needs --authorization-webhook-config-file or \
         --authorization-kubeconfig"
            .to_owned()
    })?;
    tracing::info!(
        endpoint = client.endpoint(),
        authorized_ttl = ?args.authorization_authorized_ttl,
        unauthorized_ttl = ?args.authorization_unauthorized_ttl,
        "webhook authorization on"
    );
    Ok(WebhookAuthorizer::new(
        client,
        WebhookAuthorizerOptions::default()
            .authorized_ttl(args.authorization_authorized_ttl)
            .unauthorized_ttl(args.authorization_unauthorized_ttl),
    ))
}
