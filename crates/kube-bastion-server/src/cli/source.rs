//! Flags that choose where the cluster view comes from when it is a live cluster.

use std::path::PathBuf;

use clap::Args;

/// A live cluster as the source of the view.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Live cluster")]
pub(crate) struct SourceArgs {
    /// kubeconfig file of the cluster to serve: its Pods, Services, EndpointSlices, Nodes
    /// and Namespaces are watched and the proxy follows them (the flag of kube-apiserver's
    /// aggregated servers). Without it and without --cluster, a process running in a pod
    /// uses the in-cluster configuration; elsewhere the demo cluster is served.
    #[arg(long = "kubeconfig", value_name = "FILE", conflicts_with = "clusters")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (repeatable; default: every namespace). Nodes are watched
    /// cluster-wide either way.
    #[arg(long = "watch-namespace", value_name = "NS")]
    pub(crate) watch_namespaces: Vec<String>,
    /// Also watch Endpoints objects: a Service with no EndpointSlice then falls back to
    /// its Endpoints, as kube-apiserver does. Off by default: slices are the source of
    /// truth.
    #[arg(long = "watch-endpoints")]
    pub(crate) watch_endpoints: bool,
}
