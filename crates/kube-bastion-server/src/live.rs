//! The live cluster: a kube-rs client from `--kubeconfig` or the in-cluster configuration,
//! the [`KubeCluster`] whose watchers keep the store's cluster up to date, and the
//! [`KubeRbac`] watchers of `--authorization-mode RBAC`.

use std::fmt::Write as _;
use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_bastion::core::MemoryCluster;
use kube_bastion::{KubeCluster, KubeClusterOptions, KubeClusterStats, KubeRbac, RbacAuthorizer};

use crate::cli::SourceArgs;

/// The environment variable kubelet sets in every pod: its presence means "in a cluster".
const IN_CLUSTER: &str = "KUBERNETES_SERVICE_HOST";

/// The client configuration to watch a live cluster with: `--kubeconfig`, or the in-cluster
/// configuration when the process runs in a pod and no cluster file is given; `None` when
/// neither applies (cluster files or the demo).
pub(crate) async fn client_config(
    args: &SourceArgs,
    has_files: bool,
) -> Result<Option<Config>, String> {
    if let Some(path) = &args.kubeconfig {
        let shown = path.display();
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {shown}: {e}"))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("--kubeconfig {shown}: {e}"))?;
        return Ok(Some(config));
    }
    if has_files || std::env::var_os(IN_CLUSTER).is_none() {
        return Ok(None);
    }
    Config::incluster()
        .map(Some)
        .map_err(|e| format!("in-cluster configuration ({IN_CLUSTER} is set): {e}"))
}

/// Starts the watchers on `config`'s cluster, feeding `memory`, and, with `rbac`, the RBAC
/// watchers that keep that authorizer's policy.
pub(crate) fn start(
    config: Config,
    args: &SourceArgs,
    memory: Arc<MemoryCluster>,
    rbac: Option<Arc<RbacAuthorizer>>,
) -> Result<(KubeCluster, Option<KubeRbac>), String> {
    // kube-rs builds its TLS configuration from the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| format!("kube client for {server}: {e}"))?;
    let options = KubeClusterOptions::default()
        .namespaces(args.watch_namespaces.iter().cloned())
        .endpoints(args.watch_endpoints);
    let cluster = KubeCluster::new(memory);
    cluster.watch(client.clone(), &options);
    tracing::info!(
        %server,
        namespaces = ?options.watched_namespaces(),
        kinds = ?options.kinds(),
        "watching a live cluster"
    );
    let rbac = rbac.map(|authorizer| {
        tracing::info!("RBAC authorization from the cluster's Roles and bindings");
        KubeRbac::watch(client, authorizer, Default::default())
    });
    Ok((cluster, rbac))
}

/// The watchers' counters in Prometheus text.
pub(crate) fn render_metrics(stats: &KubeClusterStats) -> String {
    let mut out = String::from(
        "# HELP kube_bastion_cluster_events_total Watch events applied to the cluster view, \
         by kind and type (list: objects of initial lists and relists).\n\
         # TYPE kube_bastion_cluster_events_total counter\n",
    );
    for (kind, s) in &stats.kinds {
        for (ty, n) in [
            ("list", s.listed),
            ("apply", s.applied),
            ("delete", s.deleted),
        ] {
            let _ = writeln!(
                out,
                "kube_bastion_cluster_events_total{{kind=\"{kind}\",type=\"{ty}\"}} {n}",
                kind = kind.as_str()
            );
        }
    }
    let mut gauge =
        |name: &str,
         help: &str,
         kind_type: &str,
         value: &dyn Fn(&kube_bastion::KindStats) -> Option<String>| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind_type}\n");
            for (kind, s) in &stats.kinds {
                if let Some(v) = value(s) {
                    let _ = writeln!(out, "{name}{{kind=\"{}\"}} {v}", kind.as_str());
                }
            }
        };
    gauge(
        "kube_bastion_cluster_relists_total",
        "Lists after the first: relists after 410 Gone or a lost watch.",
        "counter",
        &|s| Some(s.relists.to_string()),
    );
    gauge(
        "kube_bastion_cluster_watch_errors_total",
        "Errors of the watch streams (each retried with backoff).",
        "counter",
        &|s| Some(s.errors.to_string()),
    );
    gauge(
        "kube_bastion_cluster_last_event_age_seconds",
        "Seconds since the last watch event of the kind.",
        "gauge",
        &|s| {
            s.last_event_age
                .map(|age| format!("{:.3}", age.as_secs_f64()))
        },
    );
    gauge(
        "kube_bastion_cluster_synced",
        "1 when every watcher of the kind has finished its initial list.",
        "gauge",
        &|s| Some(u8::from(s.synced).to_string()),
    );
    out
}
