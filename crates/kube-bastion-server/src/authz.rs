//! Authorization as kube-apiserver's `--authorization-mode` configures it: a comma-separated
//! list of `AlwaysAllow`, `AlwaysDeny`, `RBAC` and `Webhook` (a SubjectAccessReview
//! webhook, see `crate::webhook`), asked in order ([`kube_bastion::union`]).
//! RBAC reads the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings of the
//! `--cluster` files and follows their reloads, or, with a live cluster, watches them there
//! (`live::start`). `--kubelet-fine-grained-authorization` wraps
//! the whole list in a [`KubeletAuthorizer`].

use std::path::PathBuf;
use std::sync::Arc;

use kube_bastion::core::RbacPolicy;
use kube_bastion::{AllowAll, AlwaysDeny, Authorizer, KubeletAuthorizer, RbacAuthorizer, union};

use crate::cli::ServeArgs;

/// The authorizer the flags describe, and the RBAC authorizer inside it (for reloads).
pub(crate) struct Authorization {
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) rbac: Option<Arc<RbacAuthorizer>>,
}

/// Reads the RBAC objects of the cluster files.
pub(crate) fn load_rbac(paths: &[PathBuf]) -> Result<RbacPolicy, String> {
    let texts = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<Vec<_>, _>>()?;
    RbacPolicy::from_texts(texts.iter().map(String::as_str)).map_err(|e| e.to_string())
}

/// Builds the authorizer of `--authorization-mode`.
pub(crate) async fn from_args(
    args: &ServeArgs,
    metrics: &crate::metrics::Metrics,
) -> Result<Authorization, String> {
    let mut authorizers: Vec<Box<dyn Authorizer>> = Vec::new();
    let mut rbac = None;
    for mode in args.authorization_mode.split(',').map(str::trim) {
        match mode {
            "AlwaysAllow" => authorizers.push(Box::new(AllowAll)),
            "AlwaysDeny" => authorizers.push(Box::new(AlwaysDeny)),
            "RBAC" => {
                // Without cluster files the policy comes from the live cluster's watchers.
                let policy = if args.clusters.is_empty() {
                    RbacPolicy::default()
                } else {
                    load_rbac(&args.clusters)
                        .map_err(|e| format!("--authorization-mode RBAC: {e}"))?
                };
                tracing::info!(bindings = policy.bindings(), "RBAC authorization on");
                let authorizer = Arc::new(RbacAuthorizer::new(policy));
                authorizers.push(Box::new(Arc::clone(&authorizer)));
                rbac = Some(authorizer);
            }
            "Webhook" => {
                let webhook = crate::webhook::authorizer(&args.webhook).await?;
                let counters = webhook.clone();
                metrics.register_webhook("authorization", move || counters.stats());
                authorizers.push(Box::new(webhook));
            }
            other => {
                return Err(format!(
                    "--authorization-mode: unknown mode {other:?} (AlwaysAllow, AlwaysDeny, RBAC, \
                     Webhook)"
                ));
            }
        }
    }
    if crate::webhook::authorizer_configured(&args.webhook)
        && !args
            .authorization_mode
            .split(',')
            .any(|m| m.trim() == "Webhook")
    {
        return Err(
            "--authorization-webhook-config-file and --authorization-kubeconfig need Webhook \
             in --authorization-mode"
                .to_owned(),
        );
    }
    let mut authorizer: Arc<dyn Authorizer> = match authorizers.len() {
        1 => Arc::from(authorizers.pop().expect("one")),
        _ => Arc::new(union(authorizers)),
    };
    if args.kubelet_fine_grained_authorization {
        tracing::info!("kubelet paths of nodes/proxy authorized as the kubelet would");
        authorizer = Arc::new(KubeletAuthorizer::new(authorizer));
    }
    Ok(Authorization { authorizer, rbac })
}
