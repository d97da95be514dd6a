//! [`Feeder`]: one watch stream's way into a [`KubeCluster`](super::KubeCluster).

use std::fmt;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt as _};
use kube::runtime::watcher::{self, Event};
use kube_bastion_core::{Change, Object};

use super::Shared;
use super::kind::WatchedKind;
use super::stats::Counted;

/// At most this many events that are already waiting are applied as one snapshot.
const MAX_BATCH: usize = 1024;

/// Which objects of its kind one watch stream covers: what a relist replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every object of the kind.
    All,
    /// The objects in one namespace (namespaced kinds).
    Namespace(String),
    /// The one object of this name (a cluster-scoped kind watched by name).
    Name(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
            Scope::Name(name) => write!(f, "name {name}"),
        }
    }
}

/// Feeds one stream of kube-rs [`watcher::Event`]s of kind `K` into a
/// [`KubeCluster`](super::KubeCluster), for an application that runs its own watchers
/// (or its own informer cache) instead of letting the cluster own them
/// ([`KubeCluster::watch`](super::KubeCluster::watch) uses feeders too).
///
/// * `Apply` and `Delete` change one object;
/// * `Init`, `InitApply`... `InitDone` is a (re)list: the objects listed replace every
///   object of the feeder's scope at `InitDone`, in one snapshot, so objects deleted while
///   the watch was down go away and readers never see a half-listed state;
/// * events handled together ([`handle_batch`](Self::handle_batch), or those already
///   waiting in [`run`](Self::run)'s stream) publish one snapshot.
///
/// The cluster is [synced](super::KubeCluster::is_synced) once every feeder it handed out
/// has finished its first list (or has been dropped).
///
/// ```no_run
/// # async fn doc(client: kube::Client) {
/// use k8s_openapi::api::core::v1::Pod;
/// use kube::Api;
/// use kube::runtime::{WatchStreamExt as _, watcher};
/// use kube_bastion::KubeCluster;
///
/// let cluster = KubeCluster::default();
/// let pods = cluster.feeder::<Pod>(None);
/// // ... other feeders, then hand `cluster` to `ProxyConfig::builder` ...
/// let stream = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
/// tokio::spawn(pods.run(stream));
/// cluster.ready().await;
/// # }
/// ```
pub struct Feeder<K: WatchedKind> {
    shared: Arc<Shared>,
    scope: Scope,
    /// The objects of the list in progress (between `Init` and `InitDone`).
    listing: Option<Vec<Object>>,
    /// When the list in progress started.
    list_started: Option<Instant>,
    /// The first list has finished (or this feeder never counted towards readiness).
    synced: bool,
    /// A list has finished before: the next `Init` is a relist.
    listed_before: bool,
    kind: PhantomData<fn(K)>,
}

impl<K: WatchedKind> fmt::Debug for Feeder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feeder")
            .field("kind", &K::KIND)
            .field("scope", &self.scope)
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

impl<K: WatchedKind> Feeder<K> {
    pub(super) fn new(shared: Arc<Shared>, scope: Scope) -> Self {
        shared.feeder_added(K::KIND);
        Self {
            shared,
            scope,
            listing: None,
            list_started: None,
            synced: false,
            listed_before: false,
            kind: PhantomData,
        }
    }

    /// Handles one event (one snapshot when it changes something).
    pub fn handle(&mut self, event: Event<K>) {
        self.handle_batch([event]);
    }

    /// Handles events in order; all their changes become visible together, in as few
    /// snapshots as the lists among them allow (one when there is no `InitDone`).
    pub fn handle_batch(&mut self, events: impl IntoIterator<Item = Event<K>>) {
        let mut changes = Vec::new();
        let (mut applied, mut deleted, mut listed) = (0, 0, 0);
        for event in events {
            match event {
                Event::Apply(object) => {
                    applied += 1;
                    changes.push(Change::Apply(object.slim_object()));
                }
                Event::Delete(object) => {
                    deleted += 1;
                    changes.push(delete_of(&object));
                }
                Event::Init => {
                    if self.listed_before {
                        self.count(Counted::Relist, 1);
                        tracing::info!(kind = K::KIND.as_str(), scope = %self.scope, "relisting");
                    }
                    self.listing = Some(Vec::new());
                    self.list_started = Some(Instant::now());
                }
                Event::InitApply(object) => {
                    listed += 1;
                    let object = object.slim_object();
                    match &mut self.listing {
                        Some(listing) => listing.push(object),
                        // Not inside a list: an ordinary apply.
                        None => changes.push(Change::Apply(object)),
                    }
                }
                Event::InitDone => {
                    self.flush(&mut changes);
                    self.finish_list();
                }
            }
        }
        self.flush(&mut changes);
        self.count(Counted::Applied, applied);
        self.count(Counted::Deleted, deleted);
        self.count(Counted::Listed, listed);
    }

    /// Adds or replaces one object (an `Apply` event).
    pub fn apply(&mut self, object: K) {
        self.handle(Event::Apply(object));
    }

    /// Deletes one object (a `Delete` event).
    pub fn delete(&mut self, object: &K) {
        self.handle_batch([Event::Delete(object.clone())]);
    }

    /// Makes this feeder's scope hold exactly `objects` (a whole list: `Init`, one
    /// `InitApply` each, `InitDone`).
    pub fn replace(&mut self, objects: impl IntoIterator<Item = K>) {
        let events = std::iter::once(Event::Init)
            .chain(objects.into_iter().map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone));
        self.handle_batch(events);
    }

    /// Drives this feeder from a watch stream until it ends (a kube-rs watcher with a
    /// backoff never does): the events already waiting are handled as one batch; stream
    /// errors are counted and logged (the watcher retries them), never applied, so the
    /// view keeps its last state.
    pub async fn run<S>(mut self, stream: S)
    where
        S: Stream<Item = Result<Event<K>, watcher::Error>>,
    {
        let mut chunks = pin!(stream.ready_chunks(MAX_BATCH));
        while let Some(chunk) = chunks.next().await {
            let mut events = Vec::with_capacity(chunk.len());
            for item in chunk {
                match item {
                    Ok(event) => events.push(event),
                    Err(error) => {
                        self.count(Counted::Error, 1);
                        tracing::warn!(kind = K::KIND.as_str(), scope = %self.scope, %error, "watch failed; retrying");
                    }
                }
            }
            self.handle_batch(events);
        }
    }

    fn count(&self, what: Counted, n: u64) {
        self.shared.stats.count(K::KIND, what, n);
    }

    fn flush(&self, changes: &mut Vec<Change>) {
        if !changes.is_empty() {
            self.shared.memory.apply_batch(changes.drain(..));
        }
    }

    /// `InitDone`: the listed objects replace the scope's.
    fn finish_list(&mut self) {
        let objects = self.listing.take().unwrap_or_default();
        let count = objects.len();
        let memory = &self.shared.memory;
        match &self.scope {
            Scope::All => {
                memory.sync_scope(K::KIND, None, objects);
            }
            Scope::Namespace(namespace) => {
                memory.sync_scope(K::KIND, Some(namespace), objects);
            }
            Scope::Name(name) => {
                let listed = objects.iter().any(|o| o.name() == name);
                let gone = (!listed).then(|| Change::delete(K::KIND, "", name.as_str()));
                memory.apply_batch(objects.into_iter().map(Change::Apply).chain(gone));
            }
        }
        let elapsed = self.list_started.take().map(|t| t.elapsed());
        tracing::info!(kind = K::KIND.as_str(), scope = %self.scope, objects = count, ?elapsed, "list done");
        self.listed_before = true;
        if !self.synced {
            self.synced = true;
            self.shared.feeder_synced(K::KIND);
        }
    }
}

impl<K: WatchedKind> Drop for Feeder<K> {
    fn drop(&mut self) {
        // A feeder that goes away unsynced must not hold readiness back for ever.
        if !self.synced {
            self.shared.feeder_synced(K::KIND);
        }
    }
}

/// The delete change for `object`.
fn delete_of<K: WatchedKind>(object: &K) -> Change {
    let meta = object.meta();
    let namespace = if K::KIND.is_namespaced() {
        meta.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    Change::delete(K::KIND, namespace, meta.name.clone().unwrap_or_default())
}

/// The slimmed [`Object`] of a watched object.
trait SlimObject {
    fn slim_object(self) -> Object;
}

impl<K: WatchedKind> SlimObject for K {
    fn slim_object(self) -> Object {
        super::kind::sealed::Sealed::slim(self)
    }
}
