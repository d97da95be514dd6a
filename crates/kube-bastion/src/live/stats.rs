//! Counters of what the watchers did, per kind: [`KubeClusterStats`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube_bastion_core::ObjectKind;

/// What happened to one kind's watchers, summed over their namespaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Objects received in initial lists and relists (`InitApply` events).
    pub listed: u64,
    /// Objects added or modified (`Apply` events).
    pub applied: u64,
    /// Objects deleted (`Delete` events).
    pub deleted: u64,
    /// Relists started after the first list (after `410 Gone`, or when a watch cannot
    /// resume); a relist whose list request fails and starts again counts again.
    pub relists: u64,
    /// Errors the watch streams reported (each one retried with kube-rs's default backoff).
    pub errors: u64,
    /// Time since the last event of this kind; `None` before the first.
    pub last_event_age: Option<Duration>,
    /// Every watcher of this kind has finished its initial list.
    pub synced: bool,
}

/// A snapshot of the counters of a [`KubeCluster`](super::KubeCluster), one entry per
/// watched kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeClusterStats {
    /// The kinds, in [`ObjectKind::ALL`] order, with their counters.
    pub kinds: Vec<(ObjectKind, KindStats)>,
}

impl KubeClusterStats {
    /// The counters of `kind`, when it is watched.
    pub fn kind(&self, kind: ObjectKind) -> Option<&KindStats> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
    }
}

/// The live counters of one kind.
#[derive(Debug, Default)]
struct Counters {
    used: AtomicBool,
    listed: AtomicU64,
    applied: AtomicU64,
    deleted: AtomicU64,
    relists: AtomicU64,
    errors: AtomicU64,
    /// Nanoseconds after `Stats::start` of the last event, plus one (0: none yet).
    last_event: AtomicU64,
    /// Watchers of this kind that have not finished their initial list.
    unsynced: AtomicU64,
}

/// How a watcher event counts.
#[derive(Clone, Copy, Debug)]
pub(super) enum Counted {
    Listed,
    Applied,
    Deleted,
    Relist,
    Error,
}

/// The counters of every kind.
#[derive(Debug)]
pub(super) struct Stats {
    start: Instant,
    kinds: [Counters; ObjectKind::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            kinds: Default::default(),
        }
    }
}

fn index(kind: ObjectKind) -> usize {
    ObjectKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

impl Stats {
    fn of(&self, kind: ObjectKind) -> &Counters {
        &self.kinds[index(kind)]
    }

    /// A watcher of `kind` starts (not synced yet).
    pub(super) fn watcher_added(&self, kind: ObjectKind) {
        let counters = self.of(kind);
        counters.used.store(true, Ordering::Relaxed);
        counters.unsynced.fetch_add(1, Ordering::Relaxed);
    }

    /// A watcher of `kind` finished its initial list (or went away before it did).
    pub(super) fn watcher_synced(&self, kind: ObjectKind) {
        self.of(kind).unsynced.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts `n` events of `kind`.
    pub(super) fn count(&self, kind: ObjectKind, what: Counted, n: u64) {
        if n == 0 {
            return;
        }
        let counters = self.of(kind);
        let counter = match what {
            Counted::Listed => &counters.listed,
            Counted::Applied => &counters.applied,
            Counted::Deleted => &counters.deleted,
            Counted::Relist => &counters.relists,
            Counted::Error => &counters.errors,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if !matches!(what, Counted::Error) {
            let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            counters.last_event.store(nanos + 1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub(super) fn snapshot(&self) -> KubeClusterStats {
        let now = self.start.elapsed();
        let kinds = ObjectKind::ALL
            .into_iter()
            .filter(|kind| self.of(*kind).used.load(Ordering::Relaxed))
            .map(|kind| {
                let c = self.of(kind);
                let last = c.last_event.load(Ordering::Relaxed);
                let stats = KindStats {
                    listed: c.listed.load(Ordering::Relaxed),
                    applied: c.applied.load(Ordering::Relaxed),
                    deleted: c.deleted.load(Ordering::Relaxed),
                    relists: c.relists.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    last_event_age: (last > 0)
                        .then(|| now.saturating_sub(Duration::from_nanos(last - 1))),
                    synced: c.unsynced.load(Ordering::Relaxed) == 0,
                };
                (kind, stats)
            })
            .collect();
        KubeClusterStats { kinds }
    }
}
