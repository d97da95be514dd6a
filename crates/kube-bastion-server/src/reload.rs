//! `--cluster` files: loading, and reloading when they change.
//!
//! Files are polled (modification time and size) rather than watched with inotify, which
//! keeps this portable and works for files replaced by rename (editors, `kubectl get -o
//! yaml > file`, ConfigMap volume updates). A file that fails to parse is reported and the
//! last good state stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube_bastion::Object;
use kube_bastion::core::parse_objects;

use crate::metrics::Metrics;
use crate::store::Store;

/// Reads and parses one cluster file.
pub(crate) fn load_file(path: &Path) -> Result<Vec<Object>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_objects(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and parses every cluster file, in order (later files win on duplicates).
pub(crate) fn load_files(paths: &[PathBuf]) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    for path in paths {
        objects.extend(load_file(path)?);
    }
    Ok(objects)
}

/// What identifies a version of a file for change detection: modification time, size and
/// (on Unix) inode, so a file replaced by rename within one timestamp tick is still seen.
type Stamp = Option<(SystemTime, u64, u64)>;

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len(), inode(&meta)))
        })
        .collect()
}

/// Polls `paths` every `interval` and, when any file changed and all of them parse, makes
/// the store hold exactly their objects: only the objects that changed are touched, and
/// watches get one event per object added, modified or deleted. Runs forever.
pub(crate) async fn watch(
    paths: Vec<PathBuf>,
    interval: Duration,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    rbac: Option<Arc<kube_bastion::RbacAuthorizer>>,
) {
    let mut last = stamps(&paths);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = stamps(&paths);
        if now == last {
            continue;
        }
        last = now;
        // Parsing, and the sync (the diff, the watch hub's listener and its events), are
        // CPU work proportional to the cluster: off the async workers.
        let loaded = {
            let paths = paths.clone();
            let store = Arc::clone(&store);
            let rbac = rbac.clone();
            tokio::task::spawn_blocking(move || {
                let objects = load_files(&paths)?;
                // RBAC follows the same files: parsed before anything changes, so a bad
                // file leaves both the cluster and the policy as they were.
                let policy = rbac
                    .as_ref()
                    .map(|_| crate::authz::load_rbac(&paths))
                    .transpose()?;
                if let (Some(rbac), Some(policy)) = (rbac, policy) {
                    rbac.update(policy);
                }
                let count = objects.len();
                Ok::<_, String>((count, store.sync(objects)))
            })
            .await
        };
        match loaded {
            Ok(Ok((count, changed))) => {
                metrics.reload(true);
                tracing::info!(objects = count, changed, "cluster files changed: reloaded");
            }
            Ok(Err(err)) => {
                metrics.reload(false);
                tracing::error!(error = %err, "cluster file rejected; keeping the last good state");
            }
            Err(err) => {
                metrics.reload(false);
                tracing::error!(error = %err, "cluster reload task failed");
            }
        }
    }
}
