//! [`MemoryCluster`]: the in-memory [`ClusterSource`] that writers change in batches, and
//! the [`Change`]s and [`ClusterEvent`]s they exchange.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::{ClusterSnapshot, LoadError, Object, ObjectKind, parse_objects};
use crate::view::{ClusterSource, ClusterView};

/// One change to the cluster.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// Add the object, or replace the stored one of the same kind, namespace and name.
    Apply(Object),
    /// Delete the object `kind` `namespace/name` (the namespace is ignored for
    /// cluster-scoped kinds; empty means [`DEFAULT_NAMESPACE`](super::DEFAULT_NAMESPACE)).
    Delete {
        /// Its kind.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Change {
    /// A [`Change::Delete`].
    pub fn delete(kind: ObjectKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Change::Delete {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What a change did to one object, in the Kubernetes watch protocol's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object did not exist before.
    Added,
    /// The object existed and changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object that a change added, modified or deleted.
#[derive(Clone, Debug)]
pub struct ClusterEvent {
    /// What happened.
    pub event_type: EventType,
    /// The object as stored after the change, or, for [`EventType::Deleted`], its last
    /// state. Either way its `metadata.resourceVersion` is the change's resource version.
    pub object: Object,
}

impl ClusterEvent {
    /// The resource version of this change.
    pub fn resource_version(&self) -> u64 {
        self.object
            .metadata()
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0)
    }
}

/// Called with each published snapshot and the events that made it.
type Listener = Box<dyn Fn(&Arc<ClusterSnapshot>, &[ClusterEvent]) + Send + Sync>;

#[derive(Default)]
struct Writer {
    listener: Option<Listener>,
}

/// The in-memory [`ClusterSource`]: many readers take consistent snapshots without a lock
/// while writers publish new ones.
///
/// Readers call [`snapshot`](Self::snapshot) (an atomic load and a reference-count
/// increment) and keep using what they got however the cluster changes afterwards.
/// Writers ([`apply_batch`](Self::apply_batch), [`sync`](Self::sync) and the methods built
/// on them) are serialized with each other, never with readers; each call publishes at most
/// one snapshot, built from the current one in work proportional to the call's changes
/// (see [`ClusterSnapshot::with_changes`]). A listener ([`set_listener`](Self::set_listener))
/// sees every published snapshot with the events that made it, in order.
#[derive(Default)]
pub struct MemoryCluster {
    current: ArcSwap<ClusterSnapshot>,
    writer: Mutex<Writer>,
}

impl fmt::Debug for MemoryCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCluster")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl MemoryCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cluster holding these objects.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        Self::from_snapshot(ClusterSnapshot::from_objects(objects))
    }

    /// A cluster starting from `snapshot`.
    pub fn from_snapshot(snapshot: ClusterSnapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::default(),
        }
    }

    /// Parses `text` with [`parse_objects`] into a cluster.
    pub fn from_yaml(text: &str) -> Result<Self, LoadError> {
        Ok(Self::from_objects(parse_objects(text)?))
    }

    /// The current snapshot; it stays consistent however the cluster changes afterwards.
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.current.load_full()
    }

    /// Calls `listener` after every publication, with the new snapshot and the events that
    /// made it (never empty), under the writer lock: calls come one at a time, in resource
    /// version order. A reader that loads a snapshot may see it before its listener call has
    /// run. Replaces any previous listener.
    pub fn set_listener(
        &self,
        listener: impl Fn(&Arc<ClusterSnapshot>, &[ClusterEvent]) + Send + Sync + 'static,
    ) {
        self.lock().listener = Some(Box::new(listener));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `changes` in order and publishes one snapshot for all of them (none when
    /// nothing changed). Returns the events.
    pub fn apply_batch(&self, changes: impl IntoIterator<Item = Change>) -> Vec<ClusterEvent> {
        let writer = self.lock();
        let (next, events) = self.current.load().with_changes(changes);
        self.publish(&writer, next, &events);
        events
    }

    fn publish(&self, writer: &Writer, next: ClusterSnapshot, events: &[ClusterEvent]) {
        if events.is_empty() {
            return;
        }
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        if let Some(listener) = &writer.listener {
            listener(&next, events);
        }
    }

    /// Makes the cluster hold exactly `objects` (later duplicates win): new and changed
    /// objects are applied, objects not among them deleted, unchanged ones left alone, in one
    /// snapshot. Returns the events: a per-object diff, never a replay of the whole state.
    pub fn sync(&self, objects: impl IntoIterator<Item = Object>) -> Vec<ClusterEvent> {
        let writer = self.lock();
        self.sync_locked(&writer, objects.into_iter().collect())
    }

    /// Makes the objects of `kind` in `namespace` (every namespace when `None`; ignored for
    /// cluster-scoped kinds) exactly `objects`, leaving every other object alone, in one
    /// snapshot: what a watcher's relist means. Objects of `kind` in the scope that are not
    /// among `objects` are deleted; `objects` outside the scope are applied but never cause a
    /// deletion. Returns the events, a per-object diff as [`sync`](Self::sync) gives.
    pub fn sync_scope(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
        objects: impl IntoIterator<Item = Object>,
    ) -> Vec<ClusterEvent> {
        let writer = self.lock();
        self.sync_in(
            &writer,
            Some((kind, namespace)),
            objects.into_iter().collect(),
        )
    }

    fn sync_locked(&self, writer: &Writer, objects: Vec<Object>) -> Vec<ClusterEvent> {
        self.sync_in(writer, None, objects)
    }

    /// Syncs the objects of `scope` (every object when `None`) to `objects`.
    fn sync_in(
        &self,
        writer: &Writer,
        scope: Option<(ObjectKind, Option<&str>)>,
        objects: Vec<Object>,
    ) -> Vec<ClusterEvent> {
        let current = self.current.load();
        let keep: HashSet<(ObjectKind, &str, &str)> = objects
            .iter()
            .map(|o| (o.kind(), o.namespace().unwrap_or(""), o.name()))
            .collect();
        let existing = match scope {
            Some((kind, namespace)) => current.keys_in(kind, namespace),
            None => Box::new(current.keys()),
        };
        let gone: Vec<Change> = existing
            .filter(|key| !keep.contains(key))
            .map(|(kind, namespace, name)| Change::delete(kind, namespace, name))
            .collect();
        drop(keep);
        let changes = objects.into_iter().map(Change::Apply).chain(gone);
        let (next, events) = current.with_changes(changes);
        self.publish(writer, next, &events);
        events
    }

    /// Makes the cluster hold what `snapshot` holds ([`sync`](Self::sync) of its objects;
    /// their resource versions are this cluster's). Readers holding an older snapshot keep
    /// it.
    pub fn replace(&self, snapshot: ClusterSnapshot) {
        let writer = self.lock();
        self.sync_locked(&writer, snapshot.objects());
    }

    /// Makes the cluster hold exactly these objects ([`sync`](Self::sync)).
    pub fn load(&self, objects: impl IntoIterator<Item = Object>) {
        self.sync(objects);
    }

    /// Makes the cluster hold exactly the objects parsed from `text`; on error the state is
    /// unchanged.
    pub fn load_yaml(&self, text: &str) -> Result<(), LoadError> {
        self.load(parse_objects(text)?);
        Ok(())
    }

    /// Makes the cluster hold what `change` builds from the current snapshot, as
    /// [`replace`](Self::replace) does. The whole state is compared: prefer
    /// [`apply_batch`](Self::apply_batch) for small changes.
    pub fn update(&self, change: impl FnOnce(&ClusterSnapshot) -> ClusterSnapshot) {
        let writer = self.lock();
        let next = change(&self.current.load());
        self.sync_locked(&writer, next.objects());
    }

    /// Adds or replaces objects, in one snapshot.
    pub fn apply(&self, objects: impl IntoIterator<Item = Object>) {
        self.apply_batch(objects.into_iter().map(Change::Apply));
    }

    /// Deletes the object `kind` `namespace/name`; returns whether it existed.
    pub fn delete(&self, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        !self
            .apply_batch([Change::delete(kind, namespace, name)])
            .is_empty()
    }
}

impl ClusterSource for MemoryCluster {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.snapshot()
    }
}
