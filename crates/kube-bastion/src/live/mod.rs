//! [`KubeCluster`]: a [`ClusterSource`] that kube-rs watchers keep up to date (cargo
//! feature `kube`).
//!
//! * `kind`: [`WatchedKind`] and what is kept of each object;
//! * `feeder`: [`Feeder`], one watch stream's way in (relists, batches, errors);
//! * `options`: [`KubeClusterOptions`] (namespaces, the watcher configuration, the RBAC
//!   rules the watchers need);
//! * `rbac`: [`KubeRbac`], an RBAC policy kept up to date;
//! * `stats`: [`KubeClusterStats`].

mod feeder;
mod kind;
mod options;
mod rbac;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_bastion_core::{ClusterSnapshot, ClusterSource, ClusterView, MemoryCluster, ObjectKind};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use feeder::Feeder;
use feeder::Scope;
pub use kind::WatchedKind;
pub use options::KubeClusterOptions;
pub use rbac::KubeRbac;
pub use stats::{KindStats, KubeClusterStats};

/// The cluster view of a live Kubernetes cluster: a [`MemoryCluster`] that kube-rs
/// watchers (on Pods, Services, EndpointSlices, Nodes and Namespaces, optionally Endpoints)
/// keep up to date through incremental snapshots.
///
/// * [`watch`](Self::watch) starts the watchers on a [`kube::Client`]; or an application
///   that already runs watchers feeds its own events through [`feeder`](Self::feeder).
/// * An initial list publishes one snapshot; each later event costs work independent of
///   the cluster's size ([`ClusterSnapshot::with_changes`]); events already waiting are
///   applied together.
/// * Until every watcher has finished its initial list, [`is_synced`](Self::is_synced) is
///   `false` and the proxy answers `503` ([`Status::not_synced`](crate::Status::not_synced)),
///   never a `404` from a partial view; [`ready`](Self::ready) waits for it.
/// * A watch error (the apiserver unreachable, `410 Gone`) never empties the view: the
///   watcher retries with kube-rs's default backoff and relists, and the view keeps its last
///   state meanwhile.
/// * Objects are stored without the fields the proxy never reads (`managedFields`, the
///   last-applied annotation, most of a pod's spec, a node's image list).
///
/// Clones share the cluster and its watchers; the watchers stop when the last clone is
/// dropped.
///
/// ```no_run
/// # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
/// use kube_bastion::{KubeCluster, KubeClusterOptions, ProxyConfig, ProxyLayer};
///
/// let client = kube::Client::try_default().await?;
/// let cluster = KubeCluster::default();
/// cluster.watch(client, &KubeClusterOptions::default().namespaces(["shop"]));
/// let layer = ProxyLayer::new(ProxyConfig::builder(Arc::new(cluster.clone())).build()?);
/// cluster.ready().await;
/// # use std::sync::Arc; let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct KubeCluster {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

/// What feeders and the cluster share.
pub(crate) struct Shared {
    memory: Arc<MemoryCluster>,
    stats: stats::Stats,
    /// Feeders handed out that have not finished their first list.
    unsynced: Mutex<usize>,
    synced: AtomicBool,
    ready: watch::Sender<bool>,
}

impl Shared {
    fn feeder_added(&self, kind: ObjectKind) {
        self.stats.watcher_added(kind);
        // Under the lock, as in `feeder_synced`: the flag always follows the count.
        let mut unsynced = self.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
        *unsynced += 1;
        self.set_synced(false);
    }

    fn feeder_synced(&self, kind: ObjectKind) {
        self.stats.watcher_synced(kind);
        let mut unsynced = self.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
        *unsynced = unsynced.saturating_sub(1);
        if *unsynced == 0 {
            self.set_synced(true);
        }
    }

    fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        self.ready.send_replace(synced);
    }
}

/// The watcher tasks; aborted when the last [`KubeCluster`] clone goes.
#[derive(Default)]
struct Tasks(Mutex<Vec<AbortHandle>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Default for KubeCluster {
    /// A cluster over a new, empty [`MemoryCluster`].
    fn default() -> Self {
        Self::new(Arc::new(MemoryCluster::new()))
    }
}

impl fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCluster")
            .field("synced", &self.is_synced())
            .field("memory", &self.shared.memory)
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// A cluster that keeps `memory` up to date (a [`MemoryCluster`] whose listener the
    /// caller may have set, to follow every change). It is not synced until its first
    /// feeder or watcher finishes its list.
    pub fn new(memory: Arc<MemoryCluster>) -> Self {
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                memory,
                stats: stats::Stats::default(),
                unsynced: Mutex::new(0),
                synced: AtomicBool::new(false),
                ready,
            }),
            tasks: Arc::default(),
        }
    }

    /// Starts the watchers `options` describe on `client`, each a tokio task running a
    /// [`Feeder`] over `kube::runtime::watcher` with kube-rs's default backoff. Call it
    /// inside a tokio runtime. The watchers stop when the last clone of this cluster is
    /// dropped.
    pub fn watch(&self, client: Client, options: &KubeClusterOptions) {
        for kind in options.kinds() {
            match kind {
                ObjectKind::Pod => self.spawn::<Pod>(&client, options),
                ObjectKind::Service => self.spawn::<Service>(&client, options),
                ObjectKind::EndpointSlice => self.spawn::<EndpointSlice>(&client, options),
                ObjectKind::Endpoints => self.spawn::<Endpoints>(&client, options),
                ObjectKind::Node => self.spawn::<Node>(&client, options),
                ObjectKind::Namespace => self.spawn::<Namespace>(&client, options),
            }
        }
    }

    fn spawn<K: WatchedKind>(&self, client: &Client, options: &KubeClusterOptions) {
        let mut tasks = self.tasks.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (scope, config) in options.watchers(K::KIND) {
            let namespace = match &scope {
                Scope::Namespace(ns) => Some(ns.as_str()),
                Scope::All | Scope::Name(_) => None,
            };
            let api = <K as kind::sealed::Sealed>::api(client.clone(), namespace);
            let feeder = Feeder::<K>::new(Arc::clone(&self.shared), scope);
            let stream = watcher(api, config).default_backoff();
            tasks.push(tokio::spawn(feeder.run(stream)).abort_handle());
        }
    }

    /// A feeder for kind `K` covering `namespace` (every namespace when `None`; must be
    /// `None` for Nodes and Namespaces), for an application that runs its own watchers.
    /// Create every feeder before serving: the cluster is synced once all feeders handed
    /// out so far have finished their first list.
    pub fn feeder<K: WatchedKind>(&self, namespace: Option<&str>) -> Feeder<K> {
        let scope = match namespace {
            Some(ns) if K::KIND.is_namespaced() => Scope::Namespace(ns.to_owned()),
            _ => Scope::All,
        };
        Feeder::new(Arc::clone(&self.shared), scope)
    }

    /// Whether every watcher or feeder has finished its initial list (and there is at least
    /// one).
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Resolves once [`is_synced`](Self::is_synced) is true.
    pub async fn ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        // The sender lives in `self.shared`, so `wait_for` cannot fail while `self` lives.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// The memory cluster the watchers keep up to date.
    pub fn memory(&self) -> &Arc<MemoryCluster> {
        &self.shared.memory
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.shared.memory.snapshot()
    }

    /// The watchers' counters now.
    pub fn stats(&self) -> KubeClusterStats {
        self.shared.stats.snapshot()
    }
}

impl ClusterSource for KubeCluster {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.shared.memory.snapshot()
    }

    fn is_synced(&self) -> bool {
        KubeCluster::is_synced(self)
    }
}

#[cfg(test)]
mod tests;
