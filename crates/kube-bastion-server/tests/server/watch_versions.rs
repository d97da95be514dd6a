//! Resource versions across watches and restarts (a watch from a version the server has
//! not reached, versions that do not restart with the process), and the query decoded
//! alike by the handlers, the limiter and the metrics.

use std::time::Duration;

use crate::live::{ClusterFile, WatchStream, list_rv, pod};
use crate::support::get;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn watches_from_a_future_version_are_504_error_events() {
    let file = ClusterFile::new("watch-future", &pod("a", "live", &[], "n1", ""));
    let server = file.serve(&["--watch-bookmark-interval", "1"]);
    let current = list_rv(&server, "/api/v1/pods").await;
    let future = current + 1000;
    let url = format!(
        "{}/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={future}",
        server.url
    );
    let mut watch = WatchStream::open(&url, &[]).await;
    assert_eq!(watch.status, 200);
    let error = watch.next(WAIT).await.expect("an ERROR event");
    assert_eq!(error["type"], "ERROR", "{error}");
    let status = &error["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], 504);
    assert_eq!(status["reason"], "Timeout");
    assert_eq!(
        status["message"],
        format!("Too large resource version: {future}, current: {current}")
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    assert!(
        watch.next(WAIT).await.is_none(),
        "the stream ends after ERROR"
    );
    // The current version itself is a valid start.
    let url = format!(
        "{}/api/v1/pods?watch=1&resourceVersion={current}&timeoutSeconds=1",
        server.url
    );
    let mut ok = WatchStream::open(&url, &[]).await;
    assert!(ok.next(WAIT).await.is_none(), "a clean end, no ERROR");
}

#[tokio::test]
async fn a_restarted_server_serves_larger_versions() {
    let file = ClusterFile::new("watch-restart", &pod("a", "live", &[], "n1", ""));
    let first = {
        let server = file.serve(&[]);
        list_rv(&server, "/api/v1/pods").await
    };
    let server = file.serve(&[]);
    let second = list_rv(&server, "/api/v1/pods").await;
    assert!(second > first, "{second} after {first}");
    // Exact as a JavaScript number.
    assert!(second < 1 << 53, "{second}");
}

/// The handlers decode the query as the limiter and the metrics do: the first of repeated
/// values wins, escapes are decoded.
#[tokio::test]
async fn repeated_and_escaped_watch_parameters() {
    let file = ClusterFile::new("watch-query", &pod("a", "live", &[], "n1", ""));
    let server = file.serve(&[]);
    for query in ["watch=true&watch=false", "watch=%74rue"] {
        let url = format!("{}/api/v1/pods?{query}&timeoutSeconds=1", server.url);
        let mut watch = WatchStream::open(&url, &[]).await;
        let added = watch.next(WAIT).await.expect("an event");
        assert_eq!(added["type"], "ADDED", "{query}: {added}");
    }
    let list = get(&server, "/api/v1/pods?watch=false&watch=true")
        .await
        .json();
    assert_eq!(list["kind"], "PodList");
    let metrics = get(&server, "/metrics").await.body;
    let watches = metrics
        .lines()
        .filter(|l| l.starts_with("kube_bastion_requests_total{verb=\"watch\""))
        .count();
    assert!(watches > 0, "{metrics}");
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Table watches convert bookmarks as they convert objects: one row whose object metadata
/// keeps the initial-events-end annotation; column definitions only on the first event
/// sent, a bookmark or not.
#[tokio::test]
async fn table_watches_convert_bookmarks_and_send_columns_once() {
    let file = ClusterFile::new("watch-table", &pod("a", "live", &[], "n1", ""));
    let server = file.serve(&["--watch-bookmark-interval", "1"]);
    let columns = |e: &serde_json::Value| {
        e["object"]["columnDefinitions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let url = format!(
        "{}/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=5",
        server.url
    );
    let mut watch = WatchStream::open(&url, &[("accept", TABLE)]).await;
    let events = watch.until(WAIT, |e| e["type"] == "BOOKMARK").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(columns(&events[0]) > 0, "{}", events[0]);
    let end = &events[1]["object"];
    assert_eq!(end["kind"], "Table");
    assert_eq!(columns(&events[1]), 0, "{end}");
    let row = &end["rows"][0]["object"];
    assert_eq!(row["kind"], "PartialObjectMetadata", "{end}");
    assert_eq!(
        row["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let rv = end["metadata"]["resourceVersion"].as_str().unwrap();
    assert_eq!(row["metadata"]["resourceVersion"], rv);

    // A watch whose first event is a periodic bookmark gets the columns there, once.
    let url = format!(
        "{}/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={rv}",
        server.url
    );
    let mut watch = WatchStream::open(&url, &[("accept", TABLE)]).await;
    let tick = watch.next(WAIT).await.unwrap();
    assert_eq!(tick["type"], "BOOKMARK");
    assert!(columns(&tick) > 0, "{tick}");
    assert!(
        tick["object"]["rows"][0]["object"]["metadata"]
            .get("annotations")
            .is_none()
    );
    file.edit(
        &server,
        &(pod("a", "live", &[], "n1", "") + &pod("b", "live", &[], "n1", "")),
    )
    .await;
    let added = watch.until(WAIT, |e| e["type"] == "ADDED").await;
    assert_eq!(columns(added.last().unwrap()), 0, "{added:?}");
}

/// Every resource route serves its kind, in its form: lists, gets, the `/watch/` path form
/// of collections and of one object, in core/v1 and in discovery.k8s.io; a kind outside its
/// group or scope is a 404.
#[tokio::test]
async fn every_route_serves_its_kind_in_its_form() {
    let extra = "---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n\
                 ---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: s1, namespace: live, labels: {kubernetes.io/service-name: web}}\n\
                 addressType: IPv4\nendpoints: []\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: s2, namespace: live, labels: {kubernetes.io/service-name: web}}\n\
                 addressType: IPv4\nendpoints: []\n";
    let text = pod("a", "live", &[], "n1", "") + extra;
    let file = ClusterFile::new("routes", &text);
    let server = file.serve(&[]);

    // Lists and gets: (path, kind of the answer, names in it).
    for (path, kind, names) in [
        ("/api/v1/nodes", "NodeList", &["n1", "n2"][..]),
        ("/api/v1/nodes/n2", "Node", &["n2"][..]),
        ("/api/v1/namespaces/live", "Namespace", &["live"][..]),
        ("/api/v1/namespaces/live/pods/a", "Pod", &["a"][..]),
        (
            "/apis/discovery.k8s.io/v1/endpointslices",
            "EndpointSliceList",
            &["s1", "s2"][..],
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/live/endpointslices/s2",
            "EndpointSlice",
            &["s2"][..],
        ),
    ] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(body["kind"], kind, "{path}");
        let got: Vec<&str> = match body["items"].as_array() {
            Some(items) => items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect(),
            None => body["metadata"]["name"].as_str().into_iter().collect(),
        };
        assert_eq!(got, names, "{path}");
    }

    // The `/watch/` path form: the ADDED events of exactly the objects it names.
    for (path, names) in [
        ("/api/v1/watch/nodes", &["n1", "n2"][..]),
        ("/api/v1/watch/nodes/n2", &["n2"][..]),
        ("/api/v1/watch/namespaces/live", &["live"][..]),
        ("/api/v1/watch/namespaces/live/pods/a", &["a"][..]),
        (
            "/apis/discovery.k8s.io/v1/watch/endpointslices",
            &["s1", "s2"][..],
        ),
        (
            "/apis/discovery.k8s.io/v1/watch/namespaces/live/endpointslices",
            &["s1", "s2"][..],
        ),
        (
            "/apis/discovery.k8s.io/v1/watch/namespaces/live/endpointslices/s1",
            &["s1"][..],
        ),
    ] {
        let url = format!("{}{path}?timeoutSeconds=1", server.url);
        let mut watch = WatchStream::open(&url, &[]).await;
        assert_eq!(watch.status, 200, "{path}");
        let mut got = Vec::new();
        while let Some(event) = watch.next(WAIT).await {
            assert_eq!(event["type"], "ADDED", "{path}: {event}");
            got.push(
                event["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        assert_eq!(got, names, "{path}");
    }

    // A kind outside its group or scope.
    for path in [
        "/api/v1/endpointslices",
        "/api/v1/namespaces/live/nodes",
        "/api/v1/namespaces/live/namespaces",
        "/api/v1/watch/namespaces/live/nodes",
        "/apis/discovery.k8s.io/v1/pods",
    ] {
        assert_eq!(get(&server, path).await.status, 404, "{path}");
    }
}
