//! [`KubeCluster::watch`] against a mock apiserver: a `tower_test` mock service under a
//! [`kube::Client`], whose requests a test-side task answers with JSON lists and with watch
//! bodies the test feeds event by event (kube-rs's own mock-client pattern).
//!
//! `watch` starts every default kind (Pods, Services, EndpointSlices, Nodes, Namespaces);
//! the kinds a test does not care about get an empty list and a watch held open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use kube_bastion_core::{EventType, MemoryCluster, ObjectKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::SendResponse;

use super::{KubeCluster, KubeClusterOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type MockBody = UnsyncBoxBody<Bytes, BoxError>;
type MockHandle = tower_test::mock::Handle<Request<kube::client::Body>, Response<MockBody>>;

/// The longest a test waits for one thing (a request, a change of the view). The default
/// backoff waits 0.8 to 1.6 s after a first error and 1.6 to 2.4 s after a second.
const WAIT: Duration = Duration::from_secs(5);

const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";
const NAMESPACES: &str = "/api/v1/namespaces";

/// The collections the default options watch: path, kind, list kind and apiVersion.
const RESOURCES: [(&str, ObjectKind, &str, &str); 5] = [
    (PODS, ObjectKind::Pod, "PodList", "v1"),
    (SERVICES, ObjectKind::Service, "ServiceList", "v1"),
    (
        SLICES,
        ObjectKind::EndpointSlice,
        "EndpointSliceList",
        "discovery.k8s.io/v1",
    ),
    (NODES, ObjectKind::Node, "NodeList", "v1"),
    (NAMESPACES, ObjectKind::Namespace, "NamespaceList", "v1"),
];

/// One request a watcher sent, waiting for its answer.
struct Call {
    uri: String,
    path: String,
    query: BTreeMap<String, String>,
    respond: SendResponse<Response<MockBody>>,
}

impl Call {
    fn new(
        request: &Request<kube::client::Body>,
        respond: SendResponse<Response<MockBody>>,
    ) -> Self {
        let uri = request.uri();
        let query = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Self {
            uri: uri.to_string(),
            path: uri.path().to_owned(),
            query,
            respond,
        }
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn is_watch(&self) -> bool {
        self.param("watch") == Some("true")
    }

    /// Checks this is a watch of `path` from `resource_version`, with bookmarks.
    fn assert_watch(&self, path: &str, resource_version: &str) {
        assert_eq!(self.path, path, "{}", self.uri);
        assert!(self.is_watch(), "expected a watch: {}", self.uri);
        assert_eq!(
            self.param("resourceVersion"),
            Some(resource_version),
            "{}",
            self.uri
        );
        assert_eq!(
            self.param("allowWatchBookmarks"),
            Some("true"),
            "{}",
            self.uri
        );
    }

    /// Checks this is a list of `path` (a page of 500, kube-rs's default).
    fn assert_list(&self, path: &str) {
        assert_eq!(self.path, path, "{}", self.uri);
        assert!(!self.is_watch(), "expected a list: {}", self.uri);
        assert_eq!(self.param("limit"), Some("500"), "{}", self.uri);
    }

    /// Answers a list request: `items` at `resource_version`, the last page.
    fn list(self, resource_version: &str, items: Vec<Value>) {
        self.list_page(resource_version, None, items);
    }

    /// Answers a list request with one page; `next` is the continue token of the next one.
    fn list_page(self, resource_version: &str, next: Option<&str>, items: Vec<Value>) {
        assert!(!self.is_watch(), "expected a list: {}", self.uri);
        let (_, _, kind, api_version) = RESOURCES
            .into_iter()
            .find(|(path, ..)| *path == self.path)
            .unwrap_or_else(|| panic!("unexpected request {}", self.uri));
        let mut metadata = json!({ "resourceVersion": resource_version });
        if let Some(next) = next {
            metadata["continue"] = next.into();
        }
        let list = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": metadata,
            "items": items,
        });
        self.reply(StatusCode::OK, &list);
    }

    /// Answers a watch request with a body that stays open until the returned [`Watch`]
    /// is dropped; each event sent through it is one line of the body.
    fn watch(self) -> Watch {
        assert!(self.is_watch(), "expected a watch: {}", self.uri);
        let (sender, receiver) = mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|frame| (frame, receiver))
        });
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(frames).boxed_unsync())
            .expect("a response");
        self.respond.send_response(response);
        Watch(sender)
    }

    /// Answers with an error status (a `Status` body, as kube-apiserver writes it).
    fn fail(self, code: u16, reason: &str, message: &str) {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        self.reply(StatusCode::from_u16(code).expect("a status code"), &status);
    }

    fn reply(self, status: StatusCode, body: &Value) {
        let body = Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("a response");
        self.respond.send_response(response);
    }
}

/// The test's end of one open watch body.
struct Watch(mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>);

impl Watch {
    /// Sends one event line (a watcher that has dropped the stream ignores it).
    fn event(&self, event_type: &str, object: Value) {
        let line = json!({ "type": event_type, "object": object });
        let _ = self
            .0
            .send(Ok(Frame::data(Bytes::from(format!("{line}\n")))));
    }

    fn bookmark(&self, resource_version: &str) {
        self.event(
            "BOOKMARK",
            json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": { "resourceVersion": resource_version },
            }),
        );
    }

    /// The `410 Gone` watch event of a resource version that fell out of the window.
    fn expired(&self) {
        self.event(
            "ERROR",
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "too old resource version: 1 (5)",
                "reason": "Expired",
                "code": 410,
            }),
        );
    }

    /// The connection breaks: the body fails, then ends.
    fn break_connection(self) {
        let _ = self.0.send(Err("connection reset by peer".into()));
    }
}

/// A pod in namespace `shop`, with what the cluster must not keep (`managedFields`, the
/// last-applied annotation, a container's command).
fn pod(name: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": format!("uid-{name}"),
            "resourceVersion": resource_version,
            "labels": { "app": "web" },
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            "managedFields": [{ "manager": "kubectl", "operation": "Apply", "apiVersion": "v1" }],
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{
                "name": "app",
                "image": "nginx",
                "command": ["serve"],
                "ports": [{ "name": "http", "containerPort": 8080 }],
            }],
        },
        "status": { "phase": "Running", "podIP": "10.0.0.5" },
    })
}

/// What one published snapshot held and changed (the pods only).
#[derive(Clone, Debug)]
struct Published {
    pods: Vec<String>,
    events: Vec<(EventType, String)>,
}

/// A [`KubeCluster`] watching through a mock client, and the test's end of the mock.
struct Fixture {
    cluster: KubeCluster,
    /// The requests of the collections the test answers itself.
    calls: mpsc::UnboundedReceiver<Call>,
    /// Every snapshot published, in order.
    published: Arc<Mutex<Vec<Published>>>,
}

/// Starts the watchers of the default options on a mock client. Requests for the
/// collections in `manual` come to the test ([`Fixture::next`]); the others are answered
/// with an empty list and a watch that stays open.
fn start(manual: &[&'static str]) -> Fixture {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<MockBody>>();
    let client = kube::Client::new(service, "default");
    let (sender, calls) = mpsc::unbounded_channel();
    tokio::spawn(serve(handle, manual.to_vec(), sender));

    let memory = Arc::new(MemoryCluster::new());
    let published = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&published);
    memory.set_listener(move |snapshot, events| {
        let names = |name: Option<&String>| name.cloned().unwrap_or_default();
        let published = Published {
            pods: snapshot
                .pods(None)
                .iter()
                .map(|pod| names(pod.metadata.name.as_ref()))
                .collect(),
            events: events
                .iter()
                .filter(|event| event.object.kind() == ObjectKind::Pod)
                .map(|event| (event.event_type, event.object.name().to_owned()))
                .collect(),
        };
        record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(published);
    });
    let cluster = KubeCluster::new(memory);
    cluster.watch(client, &KubeClusterOptions::default());
    Fixture {
        cluster,
        calls,
        published,
    }
}

/// The mock apiserver: forwards the requests of `manual` collections to the test, answers
/// the others.
async fn serve(
    mut handle: MockHandle,
    manual: Vec<&'static str>,
    to_test: mpsc::UnboundedSender<Call>,
) {
    // The watches answered here, held open while the mock lives.
    let mut open = Vec::new();
    while let Some((request, respond)) = handle.next_request().await {
        let call = Call::new(&request, respond);
        if manual.contains(&call.path.as_str()) {
            if to_test.send(call).is_err() {
                return;
            }
        } else if call.is_watch() {
            open.push(call.watch());
        } else {
            call.list("1", Vec::new());
        }
    }
}

impl Fixture {
    /// The next request of a collection the test answers.
    async fn next(&mut self) -> Call {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("no request in time")
            .expect("the mock apiserver stopped")
    }

    /// The pods' names in the current snapshot.
    fn pods(&self) -> Vec<String> {
        self.cluster
            .snapshot()
            .pods(None)
            .iter()
            .map(|pod| pod.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    fn pod_stats(&self) -> super::KindStats {
        *self
            .cluster
            .stats()
            .kind(ObjectKind::Pod)
            .expect("pods are watched")
    }

    fn published(&self) -> Vec<Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `condition` holds.
    async fn eventually(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let wait = async {
            while !condition(self) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            panic!(
                "timed out waiting for {what}: pods {:?}, stats {:?}",
                self.pods(),
                self.cluster.stats()
            );
        }
    }

    /// Waits until the pods are `names`.
    async fn pods_become(&self, names: &[&str]) {
        self.eventually(&format!("pods {names:?}"), |f| f.pods() == names)
            .await;
    }

    /// Answers the pods' initial list with `pods` at `resource_version`, opens their watch
    /// and waits until the cluster is ready.
    async fn sync_pods(&mut self, resource_version: &str, pods: Vec<Value>) -> Watch {
        let list = self.next().await;
        list.assert_list(PODS);
        list.list(resource_version, pods);
        let watch = self.next().await;
        watch.assert_watch(PODS, resource_version);
        let watch = watch.watch();
        tokio::time::timeout(WAIT, self.cluster.ready())
            .await
            .expect("the cluster is ready");
        watch
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test]
async fn the_cluster_is_synced_once_every_kind_is_listed_and_keeps_slimmed_objects() {
    let mut fixture = start(&[PODS, SERVICES, SLICES, NODES, NAMESPACES]);
    let mut lists = BTreeMap::new();
    for _ in 0..RESOURCES.len() {
        let call = fixture.next().await;
        call.assert_list(&call.path.clone());
        assert_eq!(call.param("resourceVersion"), None, "a consistent list");
        lists.insert(call.path.clone(), call);
    }
    assert_eq!(
        lists.keys().cloned().collect::<Vec<_>>(),
        sorted(
            RESOURCES
                .iter()
                .map(|(path, ..)| (*path).to_owned())
                .collect()
        )
    );
    assert!(!fixture.cluster.is_synced());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), fixture.cluster.ready())
            .await
            .is_err(),
        "not ready before the lists"
    );
    let stats = fixture.cluster.stats();
    assert_eq!(
        stats
            .kinds
            .iter()
            .map(|(kind, _)| *kind)
            .collect::<Vec<_>>(),
        RESOURCES.map(|(_, kind, ..)| kind)
    );
    assert!(stats.kinds.iter().all(|(_, kind)| !kind.synced));

    let managed = || json!([{ "manager": "kube-controller-manager", "operation": "Update" }]);
    let objects = [
        pod("web-1", "5"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "web", "namespace": "shop", "resourceVersion": "6", "managedFields": managed() },
            "spec": { "ports": [{ "name": "http", "port": 80 }] },
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc", "namespace": "shop", "resourceVersion": "7", "managedFields": managed(),
                "labels": { "kubernetes.io/service-name": "web" },
            },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["10.0.0.5"] }],
        }),
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "node-1", "resourceVersion": "8", "managedFields": managed() },
            "status": {
                "addresses": [{ "type": "InternalIP", "address": "192.168.0.1" }],
                "images": [{ "names": ["nginx"], "sizeBytes": 1000 }],
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": "shop", "resourceVersion": "9", "managedFields": managed() },
        }),
    ];
    // Answered one kind at a time: the cluster is synced only after the last.
    let mut watches = Vec::new();
    for ((path, kind, ..), object) in RESOURCES.into_iter().zip(objects) {
        assert!(
            !fixture.cluster.is_synced(),
            "synced before {path} was listed"
        );
        lists
            .remove(path)
            .expect("a list request")
            .list("10", vec![object]);
        let watch = fixture.next().await;
        watch.assert_watch(path, "10");
        watches.push(watch.watch());
        fixture
            .eventually(&format!("{kind:?} synced"), |f| {
                f.cluster.stats().kind(kind).is_some_and(|s| s.synced)
            })
            .await;
    }
    tokio::time::timeout(WAIT, fixture.cluster.ready())
        .await
        .expect("ready once every kind is listed");
    assert!(fixture.cluster.is_synced());

    let snapshot = fixture.cluster.snapshot();
    let pods = snapshot.pods(None);
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod.metadata.name.as_deref(), Some("web-1"));
    assert_eq!(pod.metadata.managed_fields, None, "managedFields stripped");
    assert_eq!(pod.metadata.annotations, None, "last-applied stripped");
    let spec = pod.spec.as_ref().expect("a spec");
    assert_eq!(spec.node_name.as_deref(), Some("node-1"));
    assert_eq!(spec.containers[0].command, None);
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.0.0.5")
    );
    let services = snapshot.services(Some("shop"));
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].metadata.managed_fields, None);
    let slices = snapshot.endpoint_slices_in(Some("shop"));
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].metadata.managed_fields, None);
    let nodes = snapshot.nodes();
    assert_eq!(nodes.len(), 1);
    let status = nodes[0].status.as_ref().expect("a node status");
    assert_eq!(status.images, None, "the image list dropped");
    assert_eq!(status.addresses.as_ref().map(Vec::len), Some(1));
    let namespace = snapshot.namespace("shop").expect("the namespace");
    assert_eq!(namespace.metadata.managed_fields, None);

    for (kind, stats) in fixture.cluster.stats().kinds {
        assert!(stats.synced, "{kind:?}");
        assert_eq!(
            (stats.listed, stats.applied, stats.deleted),
            (1, 0, 0),
            "{kind:?}"
        );
        assert_eq!((stats.relists, stats.errors), (0, 0), "{kind:?}");
        assert!(stats.last_event_age.is_some(), "{kind:?}");
    }
}

#[tokio::test]
async fn a_410_relists_and_the_relist_replaces_the_pods_without_emptying_the_view() {
    let mut fixture = start(&[PODS]);
    let watch = fixture
        .sync_pods("10", vec![pod("a", "5"), pod("b", "6")])
        .await;
    watch.event("ADDED", pod("c", "11"));
    fixture.pods_become(&["a", "b", "c"]).await;
    let published_before = fixture.published().len();

    watch.expired();
    let relist = fixture.next().await;
    relist.assert_list(PODS);
    fixture
        .eventually("the relist counted", |f| f.pod_stats().relists == 1)
        .await;
    // Between the 410 and the relist's answer the view keeps its last state.
    assert_eq!(fixture.pods(), ["a", "b", "c"]);
    assert!(fixture.cluster.is_synced(), "a relist does not unsync");
    let stats = fixture.pod_stats();
    assert_eq!(stats.errors, 1, "the 410 is counted");

    // "b" was deleted while the watch was down, "d" created.
    relist.list("30", vec![pod("a", "5"), pod("c", "11"), pod("d", "25")]);
    let watch = fixture.next().await;
    watch.assert_watch(PODS, "30");
    let _watch = watch.watch();
    fixture.pods_become(&["a", "c", "d"]).await;

    let published = fixture.published();
    let after: Vec<_> = published[published_before..]
        .iter()
        .filter(|p| !p.events.is_empty())
        .collect();
    assert_eq!(after.len(), 1, "the relist is one snapshot: {after:?}");
    let mut events = after[0].events.clone();
    events.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        events,
        [
            (EventType::Deleted, "b".to_owned()),
            (EventType::Added, "d".to_owned())
        ],
        "only the difference changes"
    );
    assert!(
        published.iter().skip(1).all(|p| p.pods.len() >= 2),
        "the view was never emptied: {published:?}"
    );
    let stats = fixture.pod_stats();
    assert_eq!((stats.relists, stats.errors), (1, 1));
    assert_eq!((stats.listed, stats.applied, stats.deleted), (5, 1, 0));
    assert!(stats.synced);
}

#[tokio::test]
async fn objects_deleted_during_a_paged_relist_go_and_objects_created_stay() {
    let mut fixture = start(&[PODS]);
    let watch = fixture
        .sync_pods("10", vec![pod("a", "5"), pod("b", "6"), pod("x", "7")])
        .await;
    // A delete seen on the watch.
    watch.event("DELETED", pod("x", "12"));
    fixture.pods_become(&["a", "b"]).await;
    assert_eq!(fixture.pod_stats().deleted, 1);

    watch.expired();
    // The relist comes in two pages; "b"'s DELETED event is never sent (it happened while
    // the watch was down), and "c" was created meanwhile.
    let page = fixture.next().await;
    page.assert_list(PODS);
    assert_eq!(page.param("continue"), None, "{}", page.uri);
    page.list_page("40", Some("page-2"), vec![pod("a", "5")]);
    let page = fixture.next().await;
    page.assert_list(PODS);
    assert_eq!(page.param("continue"), Some("page-2"), "{}", page.uri);
    fixture
        .eventually("the relist counted", |f| f.pod_stats().relists == 1)
        .await;
    assert_eq!(fixture.pods(), ["a", "b"], "half a relist is never visible");
    page.list_page("40", None, vec![pod("c", "35")]);

    let watch = fixture.next().await;
    watch.assert_watch(PODS, "40");
    let watch = watch.watch();
    fixture.pods_become(&["a", "c"]).await;
    assert!(
        fixture
            .published()
            .iter()
            .all(|p| p.pods.is_empty() || p.pods.contains(&"a".to_owned())),
        "no snapshot lost \"a\": {:?}",
        fixture.published()
    );

    // Events after the relist apply.
    watch.event("DELETED", pod("c", "41"));
    fixture.pods_become(&["a"]).await;
    let stats = fixture.pod_stats();
    assert_eq!((stats.listed, stats.applied, stats.deleted), (5, 0, 2));
    assert_eq!((stats.relists, stats.errors), (1, 1));
}

#[tokio::test]
async fn a_watch_resumes_from_its_last_bookmark_and_bookmarks_change_nothing() {
    let mut fixture = start(&[PODS]);
    let watch = fixture.sync_pods("10", vec![pod("a", "5")]).await;
    watch.event("ADDED", pod("b", "15"));
    fixture.pods_become(&["a", "b"]).await;
    let before = fixture.cluster.snapshot();
    let published_before = fixture.published().len();
    let stats_before = fixture.pod_stats();

    watch.bookmark("20");
    // The apiserver ends the watch (its timeout): the watcher resumes from the bookmark,
    // without a relist.
    drop(watch);
    let call = fixture.next().await;
    call.assert_watch(PODS, "20");
    assert!(
        Arc::ptr_eq(&before, &fixture.cluster.snapshot()),
        "the bookmark published nothing"
    );
    assert_eq!(fixture.published().len(), published_before);
    let stats = fixture.pod_stats();
    assert_eq!(
        (stats.listed, stats.applied, stats.deleted),
        (
            stats_before.listed,
            stats_before.applied,
            stats_before.deleted
        )
    );
    assert_eq!((stats.relists, stats.errors), (0, 0));

    let watch = call.watch();
    watch.event("MODIFIED", pod("a", "21"));
    fixture
        .eventually("the modification after the resume", |f| {
            f.pod_stats().applied == 2
        })
        .await;
    assert_eq!(fixture.pods(), ["a", "b"]);
}

#[tokio::test]
async fn watch_errors_keep_the_view_and_later_events_apply() {
    let mut fixture = start(&[PODS]);
    let watch = fixture
        .sync_pods("10", vec![pod("a", "5"), pod("b", "6")])
        .await;

    // The connection breaks mid-watch: counted, retried after the backoff from the same
    // resource version.
    watch.break_connection();
    let call = fixture.next().await;
    call.assert_watch(PODS, "10");
    assert_eq!(fixture.pod_stats().errors, 1);
    assert_eq!(fixture.pods(), ["a", "b"]);
    assert!(fixture.cluster.is_synced());

    // The apiserver fails the new watch.
    call.fail(500, "InternalError", "etcd cluster is unavailable");
    let call = fixture.next().await;
    call.assert_watch(PODS, "10");
    assert_eq!(fixture.pod_stats().errors, 2);
    assert_eq!(fixture.pods(), ["a", "b"]);
    assert!(fixture.cluster.is_synced());

    let watch = call.watch();
    watch.event("ADDED", pod("c", "11"));
    watch.event("DELETED", pod("a", "12"));
    fixture.pods_become(&["b", "c"]).await;
    let stats = fixture.pod_stats();
    assert_eq!((stats.listed, stats.applied, stats.deleted), (2, 1, 1));
    assert_eq!((stats.relists, stats.errors), (0, 2));
    assert!(
        fixture
            .published()
            .iter()
            .skip(1)
            .all(|p| !p.pods.is_empty()),
        "the view was never emptied: {:?}",
        fixture.published()
    );
}

/// Readiness is a count of feeders that have not listed yet: a cluster without feeders is
/// not synced, each feeder holds it back until its first list, and one dropped before its
/// list releases it (it will never list).
#[test]
fn readiness_follows_every_feeder_and_dropped_ones_release_it() {
    let cluster = KubeCluster::default();
    assert!(!cluster.is_synced(), "no feeder yet: nothing listed");
    let mut pods = cluster.feeder::<k8s_openapi::api::core::v1::Pod>(None);
    let services = cluster.feeder::<k8s_openapi::api::core::v1::Service>(Some("shop"));
    pods.replace([]);
    assert!(!cluster.is_synced(), "the Service feeder has not listed");
    drop(services);
    assert!(
        cluster.is_synced(),
        "a dropped feeder never lists: it must not hold readiness"
    );
    let _nodes = cluster.feeder::<k8s_openapi::api::core::v1::Node>(None);
    assert!(
        !cluster.is_synced(),
        "a new feeder holds readiness until it lists"
    );
}
