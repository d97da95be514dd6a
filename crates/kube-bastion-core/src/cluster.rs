//! The cluster model: read access to Pods, Services, Endpoints, EndpointSlices and Nodes.
//!
//! [`ClusterView`] is what resolution reads; [`ClusterSnapshot`] is an immutable, indexed
//! implementation of it, and [`MemoryCluster`] hands out snapshots while a writer replaces
//! them (an atomically swapped `Arc`, so readers never take a lock).
//!
//! ```
//! use kube_bastion_core::MemoryCluster;
//!
//! let cluster = MemoryCluster::from_yaml(r#"
//! apiVersion: v1
//! kind: List
//! items:
//! - apiVersion: v1
//!   kind: Pod
//!   metadata: {name: web, namespace: shop}
//!   status: {podIPs: [{ip: 10.0.0.5}]}
//! - apiVersion: v1
//!   kind: ConfigMap
//!   metadata: {name: ignored, namespace: shop}
//! "#).unwrap();
//! let snapshot = cluster.snapshot();
//! assert_eq!(snapshot.pods(Some("shop")).len(), 1);
//! assert_eq!(snapshot.namespaces(), ["shop"]);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::resolve::ServiceBackends;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The namespace given to namespaced objects that do not name one (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Read access to the objects resolution needs. One value is one consistent view.
pub trait ClusterView: Send + Sync {
    /// The pod `namespace/name`.
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>>;
    /// The service `namespace/name`.
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The Endpoints object `namespace/name`.
    fn endpoints(&self, namespace: &str, name: &str) -> Option<Arc<Endpoints>>;
    /// The EndpointSlices labelled `kubernetes.io/service-name: <service>` in `namespace`
    /// (empty when there are none).
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Arc<[Arc<EndpointSlice>]>;
    /// The node `name`.
    fn node(&self, name: &str) -> Option<Arc<Node>>;

    /// The service's endpoints, already validated and grouped by port name, when this view
    /// precomputes them ([`ClusterSnapshot`] does). `None` (the default) makes resolution
    /// compute them from the objects on every request with [`ServiceBackends::compute`],
    /// which gives the same answer, only slower.
    fn service_backends(&self, namespace: &str, service: &str) -> Option<Arc<ServiceBackends>> {
        let _ = (namespace, service);
        None
    }
}

/// Something that hands out consistent [`ClusterView`]s, one per request.
pub trait ClusterSource: Send + Sync {
    /// The current view.
    fn view(&self) -> Arc<dyn ClusterView>;
}

impl<V: ClusterView + 'static> ClusterSource for Arc<V> {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.clone()
    }
}

/// One object of a kind the cluster model keeps.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A Pod.
    Pod(Pod),
    /// A Service.
    Service(Service),
    /// An Endpoints object.
    Endpoints(Endpoints),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Node.
    Node(Node),
    /// A Namespace.
    Namespace(Namespace),
}

/// The kinds of [`Object`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `v1/Pod`.
    Pod,
    /// `v1/Service`.
    Service,
    /// `v1/Endpoints`.
    Endpoints,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Node` (cluster-scoped).
    Node,
    /// `v1/Namespace` (cluster-scoped).
    Namespace,
}

impl ObjectKind {
    /// The `kind` as written in manifests (`Pod`, `EndpointSlice`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "Pod",
            ObjectKind::Service => "Service",
            ObjectKind::Endpoints => "Endpoints",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
            ObjectKind::Namespace => "Namespace",
        }
    }

    /// The `apiVersion` of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, ObjectKind::Node | ObjectKind::Namespace)
    }

    fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Some(match (api_version, kind) {
            ("v1", "Pod") => ObjectKind::Pod,
            ("v1", "Service") => ObjectKind::Service,
            ("v1", "Endpoints") => ObjectKind::Endpoints,
            ("discovery.k8s.io/v1", "EndpointSlice") => ObjectKind::EndpointSlice,
            ("v1", "Node") => ObjectKind::Node,
            ("v1", "Namespace") => ObjectKind::Namespace,
            _ => return None,
        })
    }
}

impl Object {
    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Pod(_) => ObjectKind::Pod,
            Object::Service(_) => ObjectKind::Service,
            Object::Endpoints(_) => ObjectKind::Endpoints,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Node(_) => ObjectKind::Node,
            Object::Namespace(_) => ObjectKind::Namespace,
        }
    }

    /// Its `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// `metadata.name` (empty when unset).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The namespace the cluster model files it under: `None` for cluster-scoped kinds,
    /// `metadata.namespace` or [`DEFAULT_NAMESPACE`] for the others.
    pub fn namespace(&self) -> Option<&str> {
        self.kind()
            .is_namespaced()
            .then(|| namespace_of(self.metadata()))
    }
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

/// Loading cluster objects failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The text is neither valid YAML nor valid JSON.
    #[error("{0}")]
    Syntax(String),
    /// A document has a supported kind but does not decode as that kind.
    #[error("document {index} ({kind}): {message}")]
    Object {
        /// Zero-based document index.
        index: usize,
        /// Its `kind`.
        kind: String,
        /// The decoding error, led by the `List` item path (`items[3]: `) when the object is
        /// inside a list, and by the object's `"namespace/name"`.
        message: String,
    },
    /// A document (or `List` item) is not a Kubernetes object: not a mapping, or a mapping
    /// without `kind`.
    #[error("document {index}: {message}")]
    NotAnObject {
        /// Zero-based document index.
        index: usize,
        /// What is wrong, naming the `List` item when there is one.
        message: String,
    },
}

/// Parses objects from YAML (one or many documents), JSON, or a `kind: List` as
/// `kubectl get -o yaml|json` writes it. Kinds other than the supported ones are skipped.
///
/// Also accepted: a stream of JSON values, a top-level JSON array of objects, typed lists
/// (`PodList`, ... as the API returns them, whose items carry no `kind`), and lists nested in
/// lists. Errors name the document (zero-based) and, inside a list, the item and object name.
pub fn parse_objects(text: &str) -> Result<Vec<Object>, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = parse_documents(text)?;
    let mut objects = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        collect(index, "", None, document, &mut objects)?;
    }
    Ok(objects)
}

fn parse_documents(text: &str) -> Result<Vec<Value>, LoadError> {
    let trimmed = text.trim_start();
    let looks_like_json = trimmed.starts_with('{') || trimmed.starts_with('[');
    let mut json_error = None;
    if looks_like_json {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        match stream.collect::<Result<Vec<Value>, _>>() {
            Ok(values) => return Ok(values),
            // A YAML flow mapping is not always JSON: give YAML its chance.
            Err(err) => json_error = Some(err),
        }
    }
    // YAML 1.2 core booleans: `n`, `no`, `on`, `y` stay strings (a node named `n`).
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_multiple_with_options::<Value>(text, options) {
        Ok(values) => Ok(values),
        Err(yaml_error) => Err(LoadError::Syntax(match json_error {
            Some(json_error) => format!("invalid JSON: {json_error}"),
            None => format!("invalid YAML: {yaml_error}"),
        })),
    }
}

/// The element kind of a typed list such as `PodList`.
fn list_item_kind(kind: &str) -> Option<&str> {
    // A plain `List` has items of any kind (each names its own): report it as a list too.
    if kind == "List" {
        return Some("List");
    }
    kind.strip_suffix("List").filter(|k| !k.is_empty())
}

fn collect(
    index: usize,
    path: &str,
    inherited: Option<(&str, &str)>,
    value: Value,
    out: &mut Vec<Object>,
) -> Result<(), LoadError> {
    let mut map = match value {
        Value::Null => return Ok(()),
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                collect(index, &format!("{path}[{i}]"), inherited, item, out)?;
            }
            return Ok(());
        }
        Value::Object(map) => map,
        other => {
            return Err(LoadError::NotAnObject {
                index,
                message: format!(
                    "{}expected an object, found {}",
                    at(path),
                    type_name(&other)
                ),
            });
        }
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| inherited.map(|(v, _)| v.to_owned()))
        .unwrap_or_default();
    let kind = match map.get("kind").and_then(Value::as_str) {
        Some(kind) => kind.to_owned(),
        None => match inherited {
            Some((_, kind)) => kind.to_owned(),
            None => {
                return Err(LoadError::NotAnObject {
                    index,
                    message: format!("{}object has no `kind`", at(path)),
                });
            }
        },
    };
    if let Some(item_kind) = list_item_kind(&kind) {
        let items = match map.remove("items") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(LoadError::Object {
                    index,
                    kind,
                    message: format!("{}`items` is {}, not a list", at(path), type_name(&other)),
                });
            }
        };
        // `List` items carry their own type; typed lists (`PodList`) give theirs.
        let item_type = (kind != "List").then_some((api_version.as_str(), item_kind));
        for (i, item) in items.into_iter().enumerate() {
            let item_path = if path.is_empty() {
                format!("items[{i}]")
            } else {
                format!("{path}.items[{i}]")
            };
            collect(index, &item_path, item_type, item, out)?;
        }
        return Ok(());
    }
    let Some(object_kind) = ObjectKind::from_type(&api_version, &kind) else {
        return Ok(()); // a kind the cluster model does not keep
    };
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        stringify_metadata(meta);
    }
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind.clone()));
    let value = Value::Object(map);
    let decoded = match object_kind {
        ObjectKind::Pod => serde_json::from_value(value.clone()).map(Object::Pod),
        ObjectKind::Service => serde_json::from_value(value.clone()).map(Object::Service),
        ObjectKind::Endpoints => serde_json::from_value(value.clone()).map(Object::Endpoints),
        ObjectKind::EndpointSlice => {
            serde_json::from_value(value.clone()).map(Object::EndpointSlice)
        }
        ObjectKind::Node => serde_json::from_value(value.clone()).map(Object::Node),
        ObjectKind::Namespace => serde_json::from_value(value.clone()).map(Object::Namespace),
    };
    match decoded {
        Ok(object) => {
            out.push(object);
            Ok(())
        }
        Err(err) => {
            let meta = value.get("metadata");
            let name = meta
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let named = match meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
            {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_owned(),
            };
            Err(LoadError::Object {
                index,
                kind,
                message: format!("{}{named:?}: {err}", at(path)),
            })
        }
    }
}

/// YAML read without a schema turns `name: 1234` or `version: 2` into numbers; kubectl
/// reads them as the strings the fields are. Names, namespaces, label and annotation values
/// that are numbers or booleans become their text.
fn stringify_metadata(meta: &mut serde_json::Map<String, Value>) {
    fn text(value: &mut Value) {
        match value {
            Value::Number(n) => *value = Value::String(n.to_string()),
            Value::Bool(b) => *value = Value::String(b.to_string()),
            _ => {}
        }
    }
    for key in ["name", "namespace", "generateName"] {
        if let Some(value) = meta.get_mut(key) {
            text(value);
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(Value::Object(entries)) = meta.get_mut(key) {
            entries.values_mut().for_each(text);
        }
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Objects of one namespaced kind: namespace → name → object. Two `&str` lookups, no key
/// allocation.
type Namespaced<T> = HashMap<String, HashMap<String, Arc<T>>>;

/// The EndpointSlices of one service, sorted by name.
type SliceGroup = Arc<[Arc<EndpointSlice>]>;

/// Namespace → service name → value.
type PerService<T> = HashMap<String, HashMap<String, T>>;

fn get<T>(index: &Namespaced<T>, namespace: &str, name: &str) -> Option<Arc<T>> {
    index.get(namespace)?.get(name).cloned()
}

fn insert<T>(index: &mut Namespaced<T>, namespace: &str, name: &str, object: Arc<T>) {
    index
        .entry(namespace.to_owned())
        .or_default()
        .insert(name.to_owned(), object);
}

fn remove<T>(index: &mut Namespaced<T>, namespace: &str, name: &str) -> bool {
    let Some(names) = index.get_mut(namespace) else {
        return false;
    };
    let removed = names.remove(name).is_some();
    if names.is_empty() {
        index.remove(namespace);
    }
    removed
}

/// Objects sorted by namespace, then name.
fn list<T>(index: &Namespaced<T>, namespace: Option<&str>) -> Vec<Arc<T>> {
    let mut entries: Vec<(&str, &str, &Arc<T>)> = match namespace {
        Some(ns) => index
            .get(ns)
            .into_iter()
            .flat_map(|names| names.iter().map(move |(n, o)| (ns, n.as_str(), o)))
            .collect(),
        None => index
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(n, o)| (ns.as_str(), n.as_str(), o)))
            .collect(),
    };
    entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    entries.into_iter().map(|(_, _, o)| o.clone()).collect()
}

/// An immutable, indexed set of cluster objects: one consistent view.
///
/// Lookups by namespace and name are hash lookups that allocate nothing. Building a
/// snapshot also precomputes, for every service, its endpoints validated against the pods
/// of the same snapshot ([`ServiceBackends`]), so resolving a service only filters them
/// through the destination policy.
#[derive(Default)]
pub struct ClusterSnapshot {
    pods: Namespaced<Pod>,
    services: Namespaced<Service>,
    endpoints: Namespaced<Endpoints>,
    slices: Namespaced<EndpointSlice>,
    nodes: HashMap<String, Arc<Node>>,
    namespaces: HashMap<String, Arc<Namespace>>,
    // Derived indexes, rebuilt by `index()`.
    slices_by_service: PerService<SliceGroup>,
    backends: PerService<Arc<ServiceBackends>>,
    no_slices: Option<SliceGroup>,
    no_backends: Option<Arc<ServiceBackends>>,
}

impl fmt::Debug for ClusterSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSnapshot")
            .field("objects", &self.counts())
            .finish_non_exhaustive()
    }
}

impl ClusterSnapshot {
    /// Builds a snapshot from objects (later duplicates replace earlier ones).
    ///
    /// Objects without a name are ignored; namespaced objects without a namespace are filed
    /// under [`DEFAULT_NAMESPACE`].
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Self::default();
        for object in objects {
            snapshot.insert(object);
        }
        snapshot.index();
        snapshot
    }

    /// A new snapshot: this one with `objects` added or replaced.
    pub fn with_applied(&self, objects: impl IntoIterator<Item = Object>) -> Self {
        let mut next = self.clone_objects();
        for object in objects {
            next.insert(object);
        }
        next.index();
        next
    }

    /// A new snapshot: this one without the object `kind` `namespace/name` (the namespace is
    /// ignored for cluster-scoped kinds). The `bool` says whether the object existed.
    pub fn with_deleted(&self, kind: ObjectKind, namespace: &str, name: &str) -> (Self, bool) {
        let mut next = self.clone_objects();
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        let removed = match kind {
            ObjectKind::Pod => remove(&mut next.pods, namespace, name),
            ObjectKind::Service => remove(&mut next.services, namespace, name),
            ObjectKind::Endpoints => remove(&mut next.endpoints, namespace, name),
            ObjectKind::EndpointSlice => remove(&mut next.slices, namespace, name),
            ObjectKind::Node => next.nodes.remove(name).is_some(),
            ObjectKind::Namespace => next.namespaces.remove(name).is_some(),
        };
        next.index();
        (next, removed)
    }

    /// Every object, kinds in [`ObjectKind`] order, each sorted by namespace and name: what
    /// `from_objects` needs to rebuild this snapshot.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        out.extend(self.pods(None).iter().map(|o| Object::Pod(Pod::clone(o))));
        out.extend(
            self.services(None)
                .iter()
                .map(|o| Object::Service(Service::clone(o))),
        );
        out.extend(
            self.endpoints(None)
                .iter()
                .map(|o| Object::Endpoints(Endpoints::clone(o))),
        );
        out.extend(
            self.endpoint_slices_in(None)
                .iter()
                .map(|o| Object::EndpointSlice(EndpointSlice::clone(o))),
        );
        out.extend(self.nodes().iter().map(|o| Object::Node(Node::clone(o))));
        let mut namespaces: Vec<_> = self.namespaces.iter().collect();
        namespaces.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.extend(
            namespaces
                .into_iter()
                .map(|(_, o)| Object::Namespace(Namespace::clone(o))),
        );
        out
    }

    fn clone_objects(&self) -> Self {
        Self {
            pods: self.pods.clone(),
            services: self.services.clone(),
            endpoints: self.endpoints.clone(),
            slices: self.slices.clone(),
            nodes: self.nodes.clone(),
            namespaces: self.namespaces.clone(),
            ..Self::default()
        }
    }

    fn insert(&mut self, object: Object) {
        let name = object.name().to_owned();
        if name.is_empty() {
            return;
        }
        let namespace = object.namespace().unwrap_or("").to_owned();
        match object {
            Object::Pod(o) => insert(&mut self.pods, &namespace, &name, Arc::new(o)),
            Object::Service(o) => insert(&mut self.services, &namespace, &name, Arc::new(o)),
            Object::Endpoints(o) => insert(&mut self.endpoints, &namespace, &name, Arc::new(o)),
            Object::EndpointSlice(o) => insert(&mut self.slices, &namespace, &name, Arc::new(o)),
            Object::Node(o) => {
                self.nodes.insert(name, Arc::new(o));
            }
            Object::Namespace(o) => {
                self.namespaces.insert(name, Arc::new(o));
            }
        }
    }

    /// Rebuilds the derived indexes: slices grouped by service, and every service's
    /// validated endpoints.
    fn index(&mut self) {
        let mut grouped: PerService<Vec<Arc<EndpointSlice>>> = HashMap::new();
        for (namespace, names) in &self.slices {
            for slice in names.values() {
                let labels = slice.metadata.labels.as_ref();
                let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                    continue;
                };
                grouped
                    .entry(namespace.clone())
                    .or_default()
                    .entry(service.clone())
                    .or_default()
                    .push(slice.clone());
            }
        }
        self.slices_by_service = grouped
            .into_iter()
            .map(|(namespace, services)| {
                let services = services
                    .into_iter()
                    .map(|(service, mut slices)| {
                        slices.sort_unstable_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                        (service, Arc::from(slices))
                    })
                    .collect();
                (namespace, services)
            })
            .collect();
        self.no_slices = Some(Arc::from(Vec::new()));
        self.no_backends = Some(Arc::new(ServiceBackends::missing()));

        // Every service that has slices or an Endpoints object gets precomputed backends.
        let mut keys: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (namespace, services) in &self.slices_by_service {
            keys.extend(services.keys().map(|s| (namespace.as_str(), s.as_str())));
        }
        for (namespace, names) in &self.endpoints {
            keys.extend(names.keys().map(|s| (namespace.as_str(), s.as_str())));
        }
        let mut backends: PerService<Arc<ServiceBackends>> = HashMap::new();
        for (namespace, service) in keys {
            let computed = ServiceBackends::compute(self, namespace, service);
            backends
                .entry(namespace.to_owned())
                .or_default()
                .insert(service.to_owned(), Arc::new(computed));
        }
        self.backends = backends;
    }

    /// Pods in `namespace` (every namespace when `None`), sorted by namespace and name.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<Arc<Pod>> {
        list(&self.pods, namespace)
    }

    /// Services in `namespace` (every namespace when `None`), sorted by namespace and name.
    pub fn services(&self, namespace: Option<&str>) -> Vec<Arc<Service>> {
        list(&self.services, namespace)
    }

    /// Endpoints objects in `namespace` (every namespace when `None`), sorted by namespace
    /// and name.
    pub fn endpoints(&self, namespace: Option<&str>) -> Vec<Arc<Endpoints>> {
        list(&self.endpoints, namespace)
    }

    /// EndpointSlices in `namespace` (every namespace when `None`), sorted by namespace and
    /// name, whether or not they are labelled for a service.
    pub fn endpoint_slices_in(&self, namespace: Option<&str>) -> Vec<Arc<EndpointSlice>> {
        list(&self.slices, namespace)
    }

    /// Nodes, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<(&String, &Arc<Node>)> = self.nodes.iter().collect();
        nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        nodes.into_iter().map(|(_, n)| n.clone()).collect()
    }

    /// The explicit Namespace object `name`, when one was loaded.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(name).cloned()
    }

    /// Every namespace name, sorted: the explicit Namespace objects plus every namespace any
    /// namespaced object uses.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: BTreeSet<&str> = self.namespaces.keys().map(String::as_str).collect();
        names.extend(self.pods.keys().map(String::as_str));
        names.extend(self.services.keys().map(String::as_str));
        names.extend(self.endpoints.keys().map(String::as_str));
        names.extend(self.slices.keys().map(String::as_str));
        names.into_iter().map(str::to_owned).collect()
    }

    /// Namespace objects for [`namespaces`](Self::namespaces): the loaded ones, and a
    /// minimal `Namespace` (name only) for a namespace that is only used.
    pub fn namespace_objects(&self) -> Vec<Arc<Namespace>> {
        self.namespaces()
            .into_iter()
            .map(|name| {
                self.namespaces.get(&name).cloned().unwrap_or_else(|| {
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
            (ObjectKind::Pod, count_of(&self.pods)),
            (ObjectKind::Service, count_of(&self.services)),
            (ObjectKind::Endpoints, count_of(&self.endpoints)),
            (ObjectKind::EndpointSlice, count_of(&self.slices)),
            (ObjectKind::Node, self.nodes.len()),
            (ObjectKind::Namespace, self.namespaces.len()),
        ])
    }
}

fn count_of<T>(index: &Namespaced<T>) -> usize {
    index.values().map(HashMap::len).sum()
}

impl ClusterView for ClusterSnapshot {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        get(&self.pods, namespace, name)
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        get(&self.services, namespace, name)
    }

    fn endpoints(&self, namespace: &str, name: &str) -> Option<Arc<Endpoints>> {
        get(&self.endpoints, namespace, name)
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Arc<[Arc<EndpointSlice>]> {
        self.slices_by_service
            .get(namespace)
            .and_then(|services| services.get(service))
            .or(self.no_slices.as_ref())
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(name).cloned()
    }

    fn service_backends(&self, namespace: &str, service: &str) -> Option<Arc<ServiceBackends>> {
        // A snapshot under construction (no derived indexes yet) computes on demand.
        let missing = self.no_backends.as_ref()?;
        let found = self
            .backends
            .get(namespace)
            .and_then(|services| services.get(service));
        Some(found.unwrap_or(missing).clone())
    }
}

/// The in-memory [`ClusterSource`]: many readers take consistent snapshots without a lock
/// while a rare writer replaces the whole state.
///
/// Readers call [`snapshot`](Self::snapshot) (an atomic load and a reference-count
/// increment) and keep using what they got however the cluster changes afterwards.
/// Writers build a complete new [`ClusterSnapshot`] and swap it in; concurrent writers
/// ([`apply`](Self::apply), [`delete`](Self::delete), [`update`](Self::update)) are
/// serialized with each other, never with readers.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    current: ArcSwap<ClusterSnapshot>,
    writer: Mutex<()>,
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
            writer: Mutex::new(()),
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

    /// Replaces the whole state; readers holding an older snapshot keep it.
    pub fn replace(&self, snapshot: ClusterSnapshot) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.current.store(Arc::new(snapshot));
    }

    /// Replaces the whole state with these objects.
    pub fn load(&self, objects: impl IntoIterator<Item = Object>) {
        self.replace(ClusterSnapshot::from_objects(objects));
    }

    /// Replaces the whole state with the objects parsed from `text`; on error the state is
    /// unchanged.
    pub fn load_yaml(&self, text: &str) -> Result<(), LoadError> {
        self.load(parse_objects(text)?);
        Ok(())
    }

    /// Builds the next state from the current one with `change` and swaps it in, with other
    /// writers held off meanwhile (so no change is lost).
    pub fn update(&self, change: impl FnOnce(&ClusterSnapshot) -> ClusterSnapshot) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let next = change(&self.current.load());
        self.current.store(Arc::new(next));
    }

    /// Adds or replaces objects (rebuilds the indexes: cost grows with the cluster).
    pub fn apply(&self, objects: impl IntoIterator<Item = Object>) {
        self.update(|current| current.with_applied(objects));
    }

    /// Deletes the object `kind` `namespace/name`; returns whether it existed.
    pub fn delete(&self, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        let mut existed = false;
        self.update(|current| {
            let (next, removed) = current.with_deleted(kind, namespace, name);
            existed = removed;
            next
        });
        existed
    }
}

impl ClusterSource for MemoryCluster {
    fn view(&self) -> Arc<dyn ClusterView> {
        self.snapshot()
    }
}
