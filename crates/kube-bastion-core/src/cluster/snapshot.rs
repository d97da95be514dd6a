//! [`ClusterSnapshot`]: an immutable, indexed set of cluster objects built from persistent
//! maps, so the next snapshot shares everything but the changed paths with this one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::index::{Dirty, Refs};
use super::{Change, ClusterEvent, DEFAULT_NAMESPACE, EventType, Object, ObjectKind, StoredKind};
use crate::view::{ClusterView, ServiceBackends};

/// Objects of one kind: namespace (empty for cluster-scoped kinds) → name → object. Both
/// levels are persistent ordered maps: cloning is O(1), lookups by `&str` allocate nothing,
/// and iteration is in (namespace, name) order.
pub(crate) type Namespaced<T> = OrdMap<Key, OrdMap<Key, Arc<T>>>;

/// The EndpointSlices of one service, sorted by name.
pub(crate) type SliceGroup = Arc<[Arc<EndpointSlice>]>;

/// Namespace → service name → value.
pub(crate) type PerService<T> = OrdMap<Key, OrdMap<Key, T>>;

/// A namespace or name as a map key: shared, so copying a map node on a change copies
/// reference counts, not strings.
pub(crate) type Key = Arc<str>;

/// The value at `key`, inserted as `V::default()` when absent (allocates the key only then).
pub(crate) fn slot<'a, V: Clone + Default>(map: &'a mut OrdMap<Key, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(Key::from(key), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

/// An immutable, indexed set of cluster objects: one consistent view.
///
/// Lookups by namespace and name allocate nothing. A snapshot also keeps, for every
/// service, its endpoints validated against the pods of the same snapshot
/// ([`ServiceBackends`]), so resolving a service only filters them through the destination
/// policy.
///
/// Snapshots are persistent: [`with_changes`](Self::with_changes) builds the next one from
/// this one in work proportional to the change (a Pod change recomputes only the services
/// whose endpoints name that pod; an EndpointSlice or Endpoints change only its service),
/// and the two share every unchanged object and index node. Holding many snapshots that
/// differ by a few objects costs little more than holding one.
///
/// Every object carries a `metadata.resourceVersion`: a counter of the snapshot's history
/// that grows by one per change (as etcd's revision), written when the object was last
/// added or modified. [`resource_version`](Self::resource_version) is that of the last
/// change.
#[derive(Clone)]
pub struct ClusterSnapshot {
    pub(super) pods: Namespaced<Pod>,
    pub(super) services: Namespaced<Service>,
    pub(super) endpoints: Namespaced<Endpoints>,
    pub(super) slices: Namespaced<EndpointSlice>,
    pub(super) nodes: Namespaced<Node>,
    pub(super) namespaces: Namespaced<Namespace>,
    pub(super) revision: u64,
    // Derived indexes, kept up to date by `index::Dirty`.
    pub(super) slices_by_service: PerService<SliceGroup>,
    pub(super) backends: PerService<Arc<ServiceBackends>>,
    pub(super) refs: Refs,
    pub(super) no_slices: SliceGroup,
    pub(super) no_backends: Arc<ServiceBackends>,
}

impl Default for ClusterSnapshot {
    fn default() -> Self {
        Self {
            pods: OrdMap::new(),
            services: OrdMap::new(),
            endpoints: OrdMap::new(),
            slices: OrdMap::new(),
            nodes: OrdMap::new(),
            namespaces: OrdMap::new(),
            revision: 0,
            slices_by_service: OrdMap::new(),
            backends: OrdMap::new(),
            refs: Refs::default(),
            no_slices: Arc::from(Vec::new()),
            no_backends: Arc::new(ServiceBackends::missing()),
        }
    }
}

impl fmt::Debug for ClusterSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSnapshot")
            .field("resource_version", &self.revision)
            .field("objects", &self.counts())
            .finish_non_exhaustive()
    }
}

impl ClusterSnapshot {
    /// Builds a snapshot from objects (later duplicates replace earlier ones). Objects are
    /// stamped with resource versions `1, 2, ...` in order.
    ///
    /// Objects without a name are ignored; namespaced objects without a namespace are filed
    /// under [`DEFAULT_NAMESPACE`].
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Self::default();
        snapshot.change(objects.into_iter().map(Change::Apply), None);
        snapshot
    }

    /// An empty snapshot whose next change gets resource version `resource_version + 1`:
    /// for a process that must not reuse the versions of an earlier run (start it from the
    /// clock, say), since clients that resume a watch trust a version to name one state.
    ///
    /// ```
    /// use kube_bastion_core::{ClusterSnapshot, MemoryCluster, parse_objects};
    ///
    /// let objects = parse_objects("{kind: Node, apiVersion: v1, metadata: {name: n1}}").unwrap();
    /// let snapshot = ClusterSnapshot::starting_at(1_000).with_applied(objects);
    /// assert_eq!(snapshot.resource_version(), 1_001);
    /// ```
    pub fn starting_at(resource_version: u64) -> Self {
        Self {
            revision: resource_version,
            ..Self::default()
        }
    }

    /// A new snapshot: this one with `changes` made in order, and the events they caused
    /// (one per object that was added, modified or deleted; an `Apply` of an object equal to
    /// the stored one, resource version aside, and a `Delete` of a missing object cause
    /// none).
    ///
    /// The work is proportional to the changes, not to the cluster: derived indexes are
    /// updated once per touched service, after all changes.
    pub fn with_changes(
        &self,
        changes: impl IntoIterator<Item = Change>,
    ) -> (Self, Vec<ClusterEvent>) {
        let mut next = self.clone();
        let mut events = Vec::new();
        next.change(changes, Some(&mut events));
        (next, events)
    }

    /// A new snapshot: this one with `objects` added or replaced.
    pub fn with_applied(&self, objects: impl IntoIterator<Item = Object>) -> Self {
        let mut next = self.clone();
        next.change(objects.into_iter().map(Change::Apply), None);
        next
    }

    /// A new snapshot: this one without the object `kind` `namespace/name` (the namespace is
    /// ignored for cluster-scoped kinds). The `bool` says whether the object existed.
    pub fn with_deleted(&self, kind: ObjectKind, namespace: &str, name: &str) -> (Self, bool) {
        let (next, events) = self.with_changes([Change::delete(kind, namespace, name)]);
        (next, !events.is_empty())
    }

    /// The resource version of the last change this snapshot holds (`0` when empty).
    pub fn resource_version(&self) -> u64 {
        self.revision
    }

    fn change(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        mut events: Option<&mut Vec<ClusterEvent>>,
    ) {
        let mut dirty = Dirty::default();
        for change in changes {
            let event = match change {
                Change::Apply(object) => self.apply(object, &mut dirty, events.is_some()),
                Change::Delete {
                    kind,
                    namespace,
                    name,
                } => self.delete(kind, &namespace, &name, &mut dirty),
            };
            if let (Some(events), Some(event)) = (events.as_deref_mut(), event) {
                events.push(event);
            }
        }
        dirty.reindex(self);
    }

    /// Stores `object`; returns its event when something changed (`None` when nothing did,
    /// or when `want_event` is false).
    fn apply(
        &mut self,
        object: Object,
        dirty: &mut Dirty,
        want_event: bool,
    ) -> Option<ClusterEvent> {
        if object.name().is_empty() {
            return None;
        }
        let namespace = object.namespace().unwrap_or("").to_owned();
        let name = object.name().to_owned();
        let next = self.revision + 1;
        macro_rules! store {
            ($field:ident, $variant:ident, $o:ident) => {{
                let mut object = $o;
                let previous = lookup(&self.$field, &namespace, &name);
                if let Some(previous) = &previous {
                    object.metadata.resource_version = previous.metadata.resource_version.clone();
                    if **previous == object {
                        return None;
                    }
                }
                object.metadata.resource_version = Some(next.to_string());
                let object = Arc::new(object);
                dirty.$field(self, &namespace, &name, previous.as_deref(), Some(&object));
                store(&mut self.$field, &namespace, &name, Some(object.clone()));
                self.revision = next;
                let event_type = if previous.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                want_event.then(|| ClusterEvent {
                    event_type,
                    object: Object::$variant((*object).clone()),
                })
            }};
        }
        match object {
            Object::Pod(o) => store!(pods, Pod, o),
            Object::Service(o) => store!(services, Service, o),
            Object::Endpoints(o) => store!(endpoints, Endpoints, o),
            Object::EndpointSlice(o) => store!(slices, EndpointSlice, o),
            Object::Node(o) => store!(nodes, Node, o),
            Object::Namespace(o) => store!(namespaces, Namespace, o),
        }
    }

    fn delete(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        dirty: &mut Dirty,
    ) -> Option<ClusterEvent> {
        let namespace = match (kind.is_namespaced(), namespace) {
            (false, _) => "",
            (true, "") => DEFAULT_NAMESPACE,
            (true, ns) => ns,
        };
        let next = self.revision + 1;
        macro_rules! remove {
            ($field:ident, $variant:ident) => {{
                let previous = lookup(&self.$field, namespace, name)?;
                dirty.$field(self, namespace, name, Some(&previous), None);
                store(&mut self.$field, namespace, name, None);
                self.revision = next;
                let mut last = (*previous).clone();
                last.metadata.resource_version = Some(next.to_string());
                Some(ClusterEvent {
                    event_type: EventType::Deleted,
                    object: Object::$variant(last),
                })
            }};
        }
        match kind {
            ObjectKind::Pod => remove!(pods, Pod),
            ObjectKind::Service => remove!(services, Service),
            ObjectKind::Endpoints => remove!(endpoints, Endpoints),
            ObjectKind::EndpointSlice => remove!(slices, EndpointSlice),
            ObjectKind::Node => remove!(nodes, Node),
            ObjectKind::Namespace => remove!(namespaces, Namespace),
        }
    }

    /// Every object, kinds in [`ObjectKind`] order, each sorted by namespace and name: what
    /// `from_objects` needs to rebuild this snapshot.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        out.extend(self.iter::<Pod>(None).map(|o| Object::Pod(Pod::clone(o))));
        out.extend(
            self.iter::<Service>(None)
                .map(|o| Object::Service(Service::clone(o))),
        );
        out.extend(
            self.iter::<Endpoints>(None)
                .map(|o| Object::Endpoints(Endpoints::clone(o))),
        );
        out.extend(
            self.iter::<EndpointSlice>(None)
                .map(|o| Object::EndpointSlice(EndpointSlice::clone(o))),
        );
        out.extend(
            self.iter::<Node>(None)
                .map(|o| Object::Node(Node::clone(o))),
        );
        out.extend(
            self.iter::<Namespace>(None)
                .map(|o| Object::Namespace(Namespace::clone(o))),
        );
        out
    }

    /// The kind, namespace (empty for cluster-scoped kinds) and name of every object.
    pub(super) fn keys(&self) -> impl Iterator<Item = (ObjectKind, &str, &str)> {
        ObjectKind::ALL
            .into_iter()
            .flat_map(|kind| self.keys_in(kind, None))
    }

    /// The keys of the objects of `kind` in `namespace` (every namespace when `None`; for
    /// cluster-scoped kinds the namespace is ignored).
    pub(super) fn keys_in<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (ObjectKind, &'a str, &'a str)> + 'a> {
        fn of<'a, T>(
            kind: ObjectKind,
            index: &'a Namespaced<T>,
            namespace: Option<&'a str>,
        ) -> Box<dyn Iterator<Item = (ObjectKind, &'a str, &'a str)> + 'a> {
            let names = move |(ns, names): (&'a Key, &'a OrdMap<Key, Arc<T>>)| {
                names.keys().map(move |name| (kind, &**ns, &**name))
            };
            match namespace.filter(|_| kind.is_namespaced()) {
                Some(ns) => Box::new(index.get_key_value(ns).into_iter().flat_map(names)),
                None => Box::new(index.iter().flat_map(names)),
            }
        }
        match kind {
            ObjectKind::Pod => of(kind, &self.pods, namespace),
            ObjectKind::Service => of(kind, &self.services, namespace),
            ObjectKind::Endpoints => of(kind, &self.endpoints, namespace),
            ObjectKind::EndpointSlice => of(kind, &self.slices, namespace),
            ObjectKind::Node => of(kind, &self.nodes, namespace),
            ObjectKind::Namespace => of(kind, &self.namespaces, namespace),
        }
    }

    /// The object `namespace/name` of kind `T` (`namespace` is `""` for nodes and
    /// namespaces).
    pub fn get<T: StoredKind>(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        T::index(self).get(namespace)?.get(name)
    }

    /// Objects of kind `T` in `namespace` (every namespace when `None`), sorted by namespace
    /// and name.
    pub fn iter<'a, T: StoredKind>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<T>> {
        self.iter_from(namespace, ("", ""))
    }

    /// Like [`iter`](Self::iter), from the first object whose `(namespace, name)` is at or
    /// after `start`: how a paginated list resumes.
    pub fn iter_from<'a, T: StoredKind>(
        &'a self,
        namespace: Option<&'a str>,
        start: (&'a str, &'a str),
    ) -> impl Iterator<Item = &'a Arc<T>> {
        let lower = match namespace {
            Some(ns) if ns > start.0 => ns,
            _ => start.0,
        };
        T::index(self)
            .range::<_, str>((Bound::Included(lower), Bound::Unbounded))
            .take_while(move |(ns, _)| namespace.is_none_or(|want| want == &***ns))
            .flat_map(move |(ns, names)| {
                let from = if &**ns == start.0 {
                    Bound::Included(start.1)
                } else {
                    Bound::Unbounded
                };
                names
                    .range::<_, str>((from, Bound::Unbounded))
                    .map(|(_, object)| object)
            })
    }

    /// How many objects of kind `T` are in `namespace` (every namespace when `None`).
    pub fn count<T: StoredKind>(&self, namespace: Option<&str>) -> usize {
        let index = T::index(self);
        match namespace {
            Some(ns) => index.get(ns).map_or(0, OrdMap::len),
            None => index.values().map(OrdMap::len).sum(),
        }
    }

    /// Pods in `namespace` (every namespace when `None`), sorted by namespace and name.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<Arc<Pod>> {
        self.iter(namespace).cloned().collect()
    }

    /// Services in `namespace` (every namespace when `None`), sorted by namespace and name.
    pub fn services(&self, namespace: Option<&str>) -> Vec<Arc<Service>> {
        self.iter(namespace).cloned().collect()
    }

    /// Endpoints objects in `namespace` (every namespace when `None`), sorted by namespace
    /// and name.
    pub fn endpoints(&self, namespace: Option<&str>) -> Vec<Arc<Endpoints>> {
        self.iter(namespace).cloned().collect()
    }

    /// EndpointSlices in `namespace` (every namespace when `None`), sorted by namespace and
    /// name, whether or not they are labelled for a service.
    pub fn endpoint_slices_in(&self, namespace: Option<&str>) -> Vec<Arc<EndpointSlice>> {
        self.iter(namespace).cloned().collect()
    }

    /// Nodes, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.iter(None).cloned().collect()
    }

    /// The explicit Namespace object `name`, when one was loaded.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.get::<Namespace>("", name).cloned()
    }

    /// Every namespace name, sorted: the explicit Namespace objects plus every namespace any
    /// namespaced object uses.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: BTreeSet<&str> = self
            .iter::<Namespace>(None)
            .filter_map(|ns| ns.metadata.name.as_deref())
            .collect();
        names.extend(self.pods.keys().map(|k| &**k));
        names.extend(self.services.keys().map(|k| &**k));
        names.extend(self.endpoints.keys().map(|k| &**k));
        names.extend(self.slices.keys().map(|k| &**k));
        names.into_iter().map(str::to_owned).collect()
    }

    /// Namespace objects for [`namespaces`](Self::namespaces): the loaded ones, and a
    /// minimal `Namespace` (name only) for a namespace that is only used.
    pub fn namespace_objects(&self) -> Vec<Arc<Namespace>> {
        self.namespaces()
            .into_iter()
            .map(|name| {
                self.namespace(&name).unwrap_or_else(|| {
                    Arc::new(Namespace {
                        metadata: ObjectMeta {
                            name: Some(name),
                            ..ObjectMeta::default()
                        },
                        ..Namespace::default()
                    })
                })
            })
            .collect()
    }

    /// How many objects of each kind the snapshot holds.
    pub fn counts(&self) -> BTreeMap<ObjectKind, usize> {
        BTreeMap::from([
            (ObjectKind::Pod, self.count::<Pod>(None)),
            (ObjectKind::Service, self.count::<Service>(None)),
            (ObjectKind::Endpoints, self.count::<Endpoints>(None)),
            (ObjectKind::EndpointSlice, self.count::<EndpointSlice>(None)),
            (ObjectKind::Node, self.count::<Node>(None)),
            (ObjectKind::Namespace, self.count::<Namespace>(None)),
        ])
    }
}

/// The stored object `namespace/name`.
pub(super) fn lookup<T>(index: &Namespaced<T>, namespace: &str, name: &str) -> Option<Arc<T>> {
    index.get(namespace)?.get(name).cloned()
}

/// Stores (`Some`) or removes (`None`) `namespace/name`, dropping a namespace left empty.
fn store<T>(index: &mut Namespaced<T>, namespace: &str, name: &str, object: Option<Arc<T>>) {
    match object {
        Some(object) => {
            slot(index, namespace).insert(Key::from(name), object);
        }
        None => {
            let Some(names) = index.get_mut(namespace) else {
                return;
            };
            names.remove(name);
            if names.is_empty() {
                index.remove(namespace);
            }
        }
    }
}

impl ClusterView for ClusterSnapshot {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        lookup(&self.pods, namespace, name)
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        lookup(&self.services, namespace, name)
    }

    fn endpoints(&self, namespace: &str, name: &str) -> Option<Arc<Endpoints>> {
        lookup(&self.endpoints, namespace, name)
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Arc<[Arc<EndpointSlice>]> {
        self.slices_by_service
            .get(namespace)
            .and_then(|services| services.get(service))
            .unwrap_or(&self.no_slices)
            .clone()
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        lookup(&self.nodes, "", name)
    }

    fn service_backends(&self, namespace: &str, service: &str) -> Option<Arc<ServiceBackends>> {
        let found = self
            .backends
            .get(namespace)
            .and_then(|services| services.get(service));
        Some(found.unwrap_or(&self.no_backends).clone())
    }
}
