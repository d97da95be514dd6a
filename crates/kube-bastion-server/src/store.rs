//! The server's cluster state: the [`MemoryCluster`] the proxy resolves against and the API
//! reads (its persistent snapshots, served as they are), the [`WatchHub`] its listener
//! feeds, and the recent snapshots that paged lists continue from.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_bastion::core::{
    ClusterEvent, ClusterSnapshot, ClusterSource, EventType, MemoryCluster, Object, ObjectKind,
};
use kube_bastion::{KubeCluster, KubeRbac};
use tokio::sync::watch;

use crate::api::kinds::{implied_namespace, namespace_in_use};
use crate::item::Item;
use crate::watch_hub::{HubEvent, WatchHub};

/// Snapshots kept for paged lists, at most (besides the current one). Only snapshots whose
/// changes since are all in the watch history are kept, so they share most of their
/// memory with the history's objects.
const RETAINED_SNAPSHOTS: usize = 64;

/// The live cluster state, shared by the proxy and the API.
#[derive(Debug)]
pub(crate) struct Store {
    cluster: Arc<MemoryCluster>,
    hub: Arc<WatchHub<ClusterSnapshot>>,
    retained: Arc<Mutex<VecDeque<Arc<ClusterSnapshot>>>>,
    closing: watch::Sender<bool>,
    /// The watchers keeping the cluster up to date, when it is a live one.
    live: OnceLock<KubeCluster>,
    /// The watchers keeping the RBAC policy, with a live cluster and RBAC authorization.
    rbac: OnceLock<KubeRbac>,
}

impl Store {
    /// A store holding `objects`, whose watch history keeps `watch_cache_size` events.
    ///
    /// Resource versions start after the microseconds since the Unix epoch, so a restarted
    /// server never serves a version an earlier run gave to another state (a client
    /// resuming a watch would trust it), and they stay below 2^53, exact for clients that
    /// read them as JavaScript numbers.
    pub(crate) fn new(objects: Vec<Object>, watch_cache_size: usize) -> Self {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or_default());
        let initial = ClusterSnapshot::starting_at(base).with_applied(objects);
        let cluster = Arc::new(MemoryCluster::from_snapshot(initial));
        let snapshot = cluster.snapshot();
        let rv = snapshot.resource_version();
        let retained = Arc::new(Mutex::new(VecDeque::from([Arc::clone(&snapshot)])));
        let hub = Arc::new(WatchHub::new(watch_cache_size, snapshot, rv));
        {
            let hub = Arc::clone(&hub);
            let retained = Arc::clone(&retained);
            cluster.set_listener(move |next, events| {
                let previous = hub.snapshot();
                let batch = hub_events(&previous, next, events);
                hub.publish(Arc::clone(next), next.resource_version(), batch);
                let complete_after = hub.complete_after();
                let mut kept = retained.lock().unwrap_or_else(PoisonError::into_inner);
                kept.push_back(Arc::clone(next));
                while kept.len() > RETAINED_SNAPSHOTS
                    || kept.front().is_some_and(|s: &Arc<ClusterSnapshot>| {
                        s.resource_version() < complete_after
                    })
                {
                    kept.pop_front();
                }
            });
        }
        let (closing, _) = watch::channel(false);
        Store {
            cluster,
            hub,
            retained,
            closing,
            live: OnceLock::new(),
            rbac: OnceLock::new(),
        }
    }

    /// The cluster the watchers and file reloads write to.
    pub(crate) fn cluster(&self) -> Arc<MemoryCluster> {
        self.cluster.clone()
    }

    /// What the proxy resolves against: the live cluster when there is one (it answers
    /// `503` until synced), else the memory cluster.
    pub(crate) fn source(&self) -> Arc<dyn ClusterSource> {
        match self.live.get() {
            Some(live) => Arc::new(live.clone()),
            None => self.cluster.clone(),
        }
    }

    /// Records the live cluster that feeds this store, and the RBAC watchers beside it.
    pub(crate) fn set_live(&self, live: KubeCluster, rbac: Option<KubeRbac>) {
        let _ = self.live.set(live);
        if let Some(rbac) = rbac {
            let _ = self.rbac.set(rbac);
        }
    }

    /// The live cluster, when there is one.
    pub(crate) fn live(&self) -> Option<&KubeCluster> {
        self.live.get()
    }

    /// Whether the view is complete: always for files and the demo; for a live cluster,
    /// once every watcher has finished its first list.
    pub(crate) fn is_synced(&self) -> bool {
        self.live.get().is_none_or(KubeCluster::is_synced)
    }

    /// Whether the RBAC policy is complete: always, except with RBAC watchers that have not
    /// finished their first lists.
    pub(crate) fn is_rbac_synced(&self) -> bool {
        self.rbac.get().is_none_or(KubeRbac::is_synced)
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.cluster.snapshot()
    }

    /// The snapshot whose resourceVersion is exactly `rv`, while it is kept.
    pub(crate) fn snapshot_at(&self, rv: u64) -> Option<Arc<ClusterSnapshot>> {
        let current = self.cluster.snapshot();
        if current.resource_version() == rv {
            return Some(current);
        }
        let kept = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().find(|s| s.resource_version() == rv).cloned()
    }

    /// The watch hub.
    pub(crate) fn hub(&self) -> &WatchHub<ClusterSnapshot> {
        &self.hub
    }

    /// Makes the cluster hold exactly `objects`; returns how many objects changed.
    pub(crate) fn sync(&self, objects: Vec<Object>) -> usize {
        self.cluster.sync(objects).len()
    }

    /// Ends every watch (server shutdown).
    pub(crate) fn close_watches(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when watches must end.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// The object of `kind` `namespace/name` in `snapshot`.
fn lookup(
    snapshot: &ClusterSnapshot,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> Option<Item> {
    Some(match kind {
        ObjectKind::Pod => Item::Pod(snapshot.get::<Pod>(namespace, name)?.clone()),
        ObjectKind::Service => Item::Service(snapshot.get::<Service>(namespace, name)?.clone()),
        ObjectKind::Endpoints => {
            Item::Endpoints(snapshot.get::<Endpoints>(namespace, name)?.clone())
        }
        ObjectKind::EndpointSlice => {
            Item::EndpointSlice(snapshot.get::<EndpointSlice>(namespace, name)?.clone())
        }
        ObjectKind::Node => Item::Node(snapshot.get::<Node>("", name)?.clone()),
        ObjectKind::Namespace => Item::Namespace(snapshot.get::<Namespace>("", name)?.clone()),
    })
}

/// The Namespace the API serves as `name` in `snapshot`: the stored one, or the implied one
/// (stamped `rv`) of a namespace that objects use.
fn served_namespace(snapshot: &ClusterSnapshot, name: &str, rv: u64) -> Option<Arc<Namespace>> {
    if let Some(stored) = snapshot.get::<Namespace>("", name) {
        return Some(Arc::clone(stored));
    }
    namespace_in_use(snapshot, name).then(|| Arc::new(implied_namespace(name, rv)))
}

/// The namespace event (if any) for `name` between two snapshots, at `rv`.
fn namespace_event(
    before: &ClusterSnapshot,
    after: &ClusterSnapshot,
    name: &str,
    rv: u64,
) -> Option<HubEvent> {
    let old = served_namespace(before, name, rv);
    let new = served_namespace(after, name, rv);
    let changed = match (&old, &new) {
        (Some(old), Some(new)) => {
            let explicit_before = before.get::<Namespace>("", name).is_some();
            let explicit_after = after.get::<Namespace>("", name).is_some();
            match (explicit_before, explicit_after) {
                (true, true) => !Arc::ptr_eq(old, new),
                (false, false) => false,
                _ => true,
            }
        }
        _ => true,
    };
    if changed {
        namespace_change(old, new, rv)
    } else {
        None
    }
}

/// How many namespaced objects live in `name`.
fn objects_in(snapshot: &ClusterSnapshot, name: &str) -> usize {
    let ns = Some(name);
    snapshot.count::<Pod>(ns)
        + snapshot.count::<Service>(ns)
        + snapshot.count::<Endpoints>(ns)
        + snapshot.count::<EndpointSlice>(ns)
}

/// The event that takes a watch of namespaces from `old` to `new` at `rv`, if any.
fn namespace_change(
    old: Option<Arc<Namespace>>,
    new: Option<Arc<Namespace>>,
    rv: u64,
) -> Option<HubEvent> {
    match (old, new) {
        (None, Some(new)) => Some(HubEvent::new(
            rv,
            EventType::Added,
            Item::Namespace(new),
            None,
        )),
        (Some(old), None) => {
            let mut last = Namespace::clone(&old);
            last.metadata.resource_version = Some(rv.to_string());
            Some(HubEvent::new(
                rv,
                EventType::Deleted,
                Item::Namespace(Arc::new(last)),
                None,
            ))
        }
        (Some(old), Some(new)) => Some(HubEvent::new(
            rv,
            EventType::Modified,
            Item::Namespace(new),
            Some(Item::Namespace(old)),
        )),
        (None, None) => None,
    }
}

/// The watch events of one published batch: every core event of a namespaced kind or Node
/// with the object's previous state; every change of a Namespace object at its own place
/// and version (a deleted one whose namespace is still in use becomes the implied one);
/// and the implied namespaces' comings and goings, one event per namespace whose served
/// object changed that way, placed at the last change that touched it.
pub(crate) fn hub_events(
    before: &ClusterSnapshot,
    after: &ClusterSnapshot,
    events: &[ClusterEvent],
) -> Vec<HubEvent> {
    let namespace_of = |event: &ClusterEvent| -> String {
        match event.object.kind() {
            ObjectKind::Namespace => event.object.name().to_owned(),
            ObjectKind::Node => String::new(),
            _ => event.object.namespace().unwrap_or("").to_owned(),
        }
    };
    let mut last_touch: HashMap<String, usize> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let ns = namespace_of(event);
        if !ns.is_empty() {
            last_touch.insert(ns, i);
        }
    }
    let before_rv = before.resource_version();
    let mut in_batch: HashMap<(ObjectKind, String, String), Item> = HashMap::new();
    // Objects in a namespace so far in the batch (for namespaces with Namespace changes).
    let mut counts: HashMap<String, usize> = HashMap::new();
    // The served Namespace as last sent, for namespaces whose Namespace object changed.
    let mut sent: HashMap<String, Option<Arc<Namespace>>> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let rv = event.resource_version();
        let kind = event.object.kind();
        let ns = namespace_of(event);
        if kind == ObjectKind::Namespace {
            let count = *counts
                .entry(ns.clone())
                .or_insert_with(|| objects_in(before, &ns));
            let old = sent
                .remove(&ns)
                .unwrap_or_else(|| served_namespace(before, &ns, before_rv));
            let new = match (event.event_type, &event.object) {
                (EventType::Deleted, _) => {
                    (count > 0).then(|| Arc::new(implied_namespace(&ns, rv)))
                }
                (_, object) => match Item::of_event(object, after) {
                    Item::Namespace(namespace) => Some(namespace),
                    _ => None,
                },
            };
            out.extend(namespace_change(old, new.clone(), rv));
            sent.insert(ns.clone(), new);
        } else {
            let namespace = event.object.namespace().unwrap_or("").to_owned();
            if let Some(count) = counts.get_mut(&namespace) {
                match event.event_type {
                    EventType::Added => *count += 1,
                    EventType::Deleted => *count = count.saturating_sub(1),
                    EventType::Modified => {}
                }
            }
            let name = event.object.name().to_owned();
            let object = Item::of_event(&event.object, after);
            let key = (kind, namespace, name);
            let previous = match event.event_type {
                EventType::Modified => in_batch
                    .get(&key)
                    .cloned()
                    .or_else(|| lookup(before, kind, &key.1, &key.2)),
                _ => None,
            };
            in_batch.insert(key, object.clone());
            out.push(HubEvent::new(rv, event.event_type, object, previous));
        }
        if ns.is_empty() || last_touch.get(&ns) != Some(&i) {
            continue;
        }
        let implied = match sent.get(&ns) {
            // The Namespace object changed (and was sent): only an implied namespace
            // coming or going since is left to send.
            Some(last) => match (last, served_namespace(after, &ns, rv)) {
                (None, Some(now)) => namespace_change(None, Some(now), rv),
                (Some(last), None) => namespace_change(Some(Arc::clone(last)), None, rv),
                _ => None,
            },
            None => namespace_event(before, after, &ns, rv),
        };
        out.extend(implied);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch_hub::Resume;
    use kube_bastion::core::Change;

    fn pod(namespace: &str, name: &str, note: &str) -> Object {
        Object::Pod(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace, "annotations": {"n": note}}
            }))
            .unwrap(),
        )
    }

    fn describe(event: &HubEvent) -> String {
        let kind = match &event.object {
            Item::Pod(_) => "pod",
            Item::Namespace(_) => "ns",
            _ => "other",
        };
        let name = match &event.object {
            Item::Pod(p) => p.metadata.name.clone(),
            Item::Namespace(n) => n.metadata.name.clone(),
            _ => None,
        };
        format!("{} {kind} {}", event.event_type, name.unwrap_or_default())
    }

    /// Pod events carry their previous state; namespaces come and go with the objects in
    /// them, at the change that made them; snapshots stay reachable by resourceVersion.
    #[test]
    fn events_previous_states_and_implied_namespaces() {
        let store = Store::new(vec![pod("one", "a", "")], 16);
        let first = store.snapshot().resource_version();
        let mut sub = store.hub().subscribe(Resume::Now).unwrap();
        let cluster = store.cluster();
        cluster.apply_batch([Change::Apply(pod("two", "b", ""))]);
        cluster.apply_batch([Change::Apply(pod("two", "b", "changed"))]);
        cluster.apply_batch([Change::delete(ObjectKind::Pod, "two", "b")]);
        let mut seen = Vec::new();
        while let Ok(event) = sub.receiver.try_recv() {
            if event.event_type == EventType::Modified {
                let Some(Item::Pod(previous)) = &event.previous else {
                    panic!("no previous state")
                };
                assert_eq!(previous.metadata.annotations.as_ref().unwrap()["n"], "");
            }
            seen.push((describe(&event), event.resource_version));
        }
        let names: Vec<&str> = seen.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            names,
            [
                "ADDED pod b",
                "ADDED ns two",
                "MODIFIED pod b",
                "DELETED pod b",
                "DELETED ns two"
            ]
        );
        assert_eq!(seen[0].1, seen[1].1);
        assert_eq!(seen[3].1, seen[4].1);
        assert!(seen[2].1 > seen[0].1 && seen[3].1 > seen[2].1);
        assert_eq!(store.snapshot_at(first).unwrap().resource_version(), first);
        assert!(store.snapshot_at(first + 1).is_some());
        assert!(store.snapshot_at(first + 99).is_none());
        // Unchanged objects make no event.
        assert_eq!(store.sync(vec![pod("one", "a", "")]), 0);
    }

    fn namespace(name: &str, note: &str) -> Object {
        Object::Namespace(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": {"n": note}}
            }))
            .unwrap(),
        )
    }

    /// Namespace object changes are sent at their own version, even when their namespace
    /// is touched again later in the batch; versions never go backwards.
    #[test]
    fn namespace_objects_keep_their_place_in_a_batch() {
        let store = Store::new(vec![pod("one", "a", "")], 16);
        let mut sub = store.hub().subscribe(Resume::Now).unwrap();
        let cluster = store.cluster();
        // An explicit Namespace over an implied one, then a pod in it.
        cluster.apply_batch([
            Change::Apply(namespace("one", "x")),
            Change::Apply(pod("one", "b", "")),
        ]);
        // A new Namespace, then a pod in it; then the Namespace deleted while the pod
        // stays, and another pod: the implied namespace takes over at the deletion.
        cluster.apply_batch([
            Change::Apply(namespace("two", "")),
            Change::Apply(pod("two", "c", "")),
        ]);
        cluster.apply_batch([
            Change::delete(ObjectKind::Namespace, "", "two"),
            Change::Apply(pod("two", "d", "")),
        ]);
        let mut seen = Vec::new();
        let mut last = 0;
        while let Ok(event) = sub.receiver.try_recv() {
            assert!(event.resource_version >= last, "backwards: {event:?}");
            last = event.resource_version;
            if let Item::Namespace(ns) = &event.object {
                assert_eq!(
                    ns.metadata.resource_version.as_deref(),
                    Some(event.resource_version.to_string().as_str()),
                    "{event:?}"
                );
            }
            seen.push(describe(&event));
        }
        assert_eq!(
            seen,
            [
                "MODIFIED ns one",
                "ADDED pod b",
                "ADDED ns two",
                "ADDED pod c",
                "MODIFIED ns two",
                "ADDED pod d",
            ]
        );
    }
}
