//! The watch hub: the cluster's events, kept for watches to resume from and fanned out to
//! the watches that follow them.
//!
//! The cluster's listener [`publish`](WatchHub::publish)es every batch: its events join a
//! bounded history ring (`--watch-cache-size` events, kube-apiserver's watch cache) and a
//! bounded `tokio::sync::broadcast` channel of the same capacity. A watch
//! [`subscribe`](WatchHub::subscribe)s under the hub's lock: it reads the history after its
//! resourceVersion (or takes the snapshot the hub last published) and joins the broadcast,
//! so it misses nothing and sees nothing twice. Neither structure grows with slow watchers:
//! a watcher that falls a whole channel behind finds it has lagged and is closed, as
//! kube-apiserver closes watchers whose buffer stays full; its client relists.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use kube_bastion::core::EventType;
use tokio::sync::broadcast;

use crate::item::Item;

/// One change as watches see it.
#[derive(Debug)]
pub(crate) struct HubEvent {
    /// Its resourceVersion.
    pub(crate) resource_version: u64,
    /// What happened.
    pub(crate) event_type: EventType,
    /// The object after the change (its last state, for a deletion), carrying
    /// `resource_version`.
    pub(crate) object: Item,
    /// The object before a modification, for selectors (an object that stops matching is
    /// a deletion for that watch).
    pub(crate) previous: Option<Item>,
    /// The object's JSON, made once for every watch that sends it.
    json: OnceLock<Bytes>,
}

impl HubEvent {
    /// An event.
    pub(crate) fn new(
        resource_version: u64,
        event_type: EventType,
        object: Item,
        previous: Option<Item>,
    ) -> Self {
        HubEvent {
            resource_version,
            event_type,
            object,
            previous,
            json: OnceLock::new(),
        }
    }

    /// The object's JSON.
    pub(crate) fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(self.object.to_json()))
    }
}

/// A watch asked to resume from a resourceVersion older than the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooOld {
    /// The requested resourceVersion.
    pub(crate) requested: u64,
    /// The oldest resourceVersion a watch may resume after.
    pub(crate) oldest: u64,
}

impl TooOld {
    /// kube-apiserver's message: `too old resource version: N (M)`.
    pub(crate) fn message(&self) -> String {
        format!(
            "too old resource version: {} ({})",
            self.requested, self.oldest
        )
    }
}

/// What a watch starts with.
#[derive(Debug)]
pub(crate) struct Subscription<S> {
    /// The snapshot the hub last published (the state the history ends at).
    pub(crate) snapshot: Arc<S>,
    /// Its resourceVersion.
    pub(crate) resource_version: u64,
    /// Kept events after the requested resourceVersion (empty for [`Resume::Now`]).
    pub(crate) backlog: VecDeque<Arc<HubEvent>>,
    /// Every event published from now on.
    pub(crate) receiver: broadcast::Receiver<Arc<HubEvent>>,
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// From the last published snapshot.
    Now,
    /// After this resourceVersion: the kept events after it first.
    After(u64),
}

#[derive(Debug)]
struct State<S> {
    history: VecDeque<Arc<HubEvent>>,
    /// Every event after this resourceVersion is in `history`.
    complete_after: u64,
    snapshot: Arc<S>,
    resource_version: u64,
}

/// The hub; `S` is the snapshot type.
#[derive(Debug)]
pub(crate) struct WatchHub<S> {
    state: Mutex<State<S>>,
    sender: broadcast::Sender<Arc<HubEvent>>,
    capacity: usize,
}

impl<S> WatchHub<S> {
    /// A hub keeping `capacity` events (at least one), starting at `snapshot`, whose
    /// resourceVersion is `resource_version`.
    pub(crate) fn new(capacity: usize, snapshot: Arc<S>, resource_version: u64) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        WatchHub {
            state: Mutex::new(State {
                history: VecDeque::with_capacity(capacity.min(4096)),
                complete_after: resource_version,
                snapshot,
                resource_version,
            }),
            sender,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a batch of events (in resourceVersion order) that made `snapshot`.
    pub(crate) fn publish(&self, snapshot: Arc<S>, resource_version: u64, events: Vec<HubEvent>) {
        let mut state = self.lock();
        for event in events {
            let event = Arc::new(event);
            if state.history.len() == self.capacity
                && let Some(dropped) = state.history.pop_front()
            {
                state.complete_after = dropped.resource_version;
            }
            state.history.push_back(Arc::clone(&event));
            // No receiver is not an error: nobody watches.
            let _ = self.sender.send(event);
        }
        state.snapshot = snapshot;
        state.resource_version = resource_version;
    }

    /// Starts a watch (see [`Resume`]); a resourceVersion older than the history is
    /// [`TooOld`].
    pub(crate) fn subscribe(&self, from: Resume) -> Result<Subscription<S>, TooOld> {
        let state = self.lock();
        let backlog = match from {
            Resume::Now => VecDeque::new(),
            Resume::After(rv) if rv < state.complete_after => {
                return Err(TooOld {
                    requested: rv,
                    oldest: state.complete_after,
                });
            }
            Resume::After(rv) => {
                let first = state.history.partition_point(|e| e.resource_version <= rv);
                state.history.range(first..).cloned().collect()
            }
        };
        Ok(Subscription {
            snapshot: Arc::clone(&state.snapshot),
            resource_version: state.resource_version,
            backlog,
            receiver: self.sender.subscribe(),
        })
    }

    /// The snapshot the hub last published.
    pub(crate) fn snapshot(&self) -> Arc<S> {
        Arc::clone(&self.lock().snapshot)
    }

    /// The resourceVersion after which every event is kept: snapshots at or after it can
    /// be recreated, older ones cannot.
    pub(crate) fn complete_after(&self) -> u64 {
        self.lock().complete_after
    }

    /// Watches following the hub now.
    pub(crate) fn watchers(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn event(rv: u64) -> HubEvent {
        HubEvent::new(
            rv,
            EventType::Added,
            Item::Pod(Arc::new(Pod::default())),
            None,
        )
    }

    #[test]
    fn resumes_from_the_history_and_refuses_older_versions() {
        let hub = WatchHub::new(3, Arc::new(()), 10);
        hub.publish(Arc::new(()), 12, vec![event(11), event(12)]);
        let sub = hub.subscribe(Resume::After(10)).unwrap();
        let rvs: Vec<u64> = sub.backlog.iter().map(|e| e.resource_version).collect();
        assert_eq!(rvs, [11, 12]);
        hub.publish(Arc::new(()), 14, vec![event(13), event(14)]);
        // 11 left the ring: resuming after 10 would miss it.
        assert_eq!(
            hub.subscribe(Resume::After(10)).unwrap_err().message(),
            "too old resource version: 10 (11)"
        );
        let sub = hub.subscribe(Resume::After(11)).unwrap();
        assert_eq!(sub.backlog.len(), 3);
        assert_eq!(sub.resource_version, 14);
        // A future version waits for later events.
        assert!(hub.subscribe(Resume::After(99)).unwrap().backlog.is_empty());
    }

    #[test]
    fn subscribers_get_later_events_and_lag_instead_of_growing() {
        let hub = WatchHub::new(4, Arc::new(()), 0);
        let mut sub = hub.subscribe(Resume::Now).unwrap();
        assert_eq!(hub.watchers(), 1);
        for rv in 1..=20 {
            hub.publish(Arc::new(()), rv, vec![event(rv)]);
        }
        assert!(matches!(
            sub.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        assert_eq!(hub.complete_after(), 16);
    }
}
