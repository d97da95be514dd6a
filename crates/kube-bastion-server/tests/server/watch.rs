//! The watch protocol against the real binary: framing, bookmarks, timeouts, resource
//! versions, selectors on events, 410, validation (the vectors), kubectl's `get -w`, the
//! Python client, and a slow watcher closed while the server's memory stays flat.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::live::{ClusterFile, WatchStream, list_rv, pod, summary};
use crate::support::{TempDir, fixture, get, kubectl};

const WAIT: Duration = Duration::from_secs(20);

fn pods(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| pod(n, "live", &[("app", "web")], "n1", ""))
        .collect()
}

/// The vector rows named `prefix...`.
fn vector_rows(prefix: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("watch_protocol.json")).unwrap();
    let vectors: Value = serde_json::from_str(&text).unwrap();
    vectors["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test]
async fn framing_bookmarks_and_timeout() {
    let file = ClusterFile::new("watch-framing", &pods(&["a", "b"]));
    let server = file.serve(&["--watch-bookmark-interval", "1"]);
    let started = Instant::now();
    let url = format!(
        "{}/api/v1/namespaces/live/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=3",
        server.url
    );
    let mut watch = WatchStream::open(&url, &[]).await;
    // The vector row "JSON watch framing".
    assert_eq!(watch.status, 200);
    assert_eq!(watch.headers["content-type"], "application/json");
    assert_eq!(watch.headers["transfer-encoding"], "chunked");
    let first = watch.until(WAIT, |e| e["type"] == "BOOKMARK").await;
    let names: Vec<String> = first.iter().map(summary).collect();
    assert_eq!(names, ["ADDED a", "ADDED b", "BOOKMARK "]);
    // The vector row "initial-events-end BOOKMARK": a typed, empty object.
    let end = &first[2]["object"];
    assert_eq!(
        (end["kind"].as_str(), end["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
    assert_eq!(
        end["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let rv = end["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        rv,
        first[1]["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
    );
    // Then a periodic bookmark, not annotated, at the same version (nothing changed).
    let tick = watch.next(WAIT).await.expect("a periodic bookmark");
    assert_eq!(tick["type"], "BOOKMARK");
    assert_eq!(tick["object"]["metadata"]["resourceVersion"], rv.as_str());
    assert!(
        tick["object"]["metadata"].get("annotations").is_none(),
        "{tick}"
    );
    // timeoutSeconds=3: a clean end (no ERROR event).
    while let Some(event) = watch.next(WAIT).await {
        assert_eq!(event["type"], "BOOKMARK", "{event}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2900),
        "ended after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(15), "ended after {elapsed:?}");
}

#[tokio::test]
async fn resumed_watches_get_later_changes_through_their_selectors() {
    let file = ClusterFile::new("watch-selectors", &pods(&["a", "b"]));
    let server = file.serve(&[]);
    let rv = list_rv(&server, "/api/v1/namespaces/live/pods").await;
    let base = format!(
        "{}/api/v1/namespaces/live/pods?watch=true&resourceVersion={rv}",
        server.url
    );
    let mut all = WatchStream::open(&base, &[]).await;
    let mut web_on_n1 = WatchStream::open(
        &format!("{base}&labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1"),
        &[],
    )
    .await;
    let mut path_form = WatchStream::open(
        &format!(
            "{}/api/v1/watch/namespaces/live/pods/c?resourceVersion={rv}",
            server.url
        ),
        &[],
    )
    .await;
    // a stops being web, c appears as web on n1, d appears on n2, b's note changes.
    let text = [
        pod("a", "live", &[("app", "db")], "n1", ""),
        pod("b", "live", &[("app", "web")], "n1", "changed"),
        pod("c", "live", &[("app", "web")], "n1", ""),
        pod("d", "live", &[("app", "web")], "n2", ""),
    ]
    .concat();
    file.edit(&server, &text).await;
    file.edit(&server, &pods(&["b"])).await;

    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(summary(&all.next(WAIT).await.unwrap()));
    }
    // In the files' order, then deletions in key order, batch after batch.
    assert_eq!(
        seen,
        [
            "MODIFIED a",
            "MODIFIED b",
            "ADDED c",
            "ADDED d",
            "MODIFIED b",
            "DELETED a",
            "DELETED c",
            "DELETED d"
        ]
    );
    // Through the selectors: a left (DELETED), b changed, c arrived and left; d never
    // matched.
    let mut selected = Vec::new();
    for _ in 0..5 {
        selected.push(web_on_n1.next(WAIT).await.unwrap());
    }
    let names: Vec<String> = selected.iter().map(summary).collect();
    assert_eq!(
        names,
        [
            "DELETED a",
            "MODIFIED b",
            "ADDED c",
            "MODIFIED b",
            "DELETED c"
        ]
    );
    // The deletion of an object that stopped matching carries its previous state, at the
    // change's resourceVersion.
    assert_eq!(selected[0]["object"]["metadata"]["labels"]["app"], "web");
    // Resource versions grow with each event.
    let rvs: Vec<u64> = selected
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.iter().all(|v| *v > rv), "{rvs:?}");
    let created = path_form.next(WAIT).await.unwrap();
    assert_eq!(summary(&created), "ADDED c");
    assert_eq!(summary(&path_form.next(WAIT).await.unwrap()), "DELETED c");
}

#[tokio::test]
async fn implied_namespaces_come_and_go_in_watches() {
    let file = ClusterFile::new("watch-namespaces", &pods(&["a"]));
    let server = file.serve(&[]);
    let mut watch =
        WatchStream::open(&format!("{}/api/v1/namespaces?watch=1", server.url), &[]).await;
    assert_eq!(summary(&watch.next(WAIT).await.unwrap()), "ADDED live");
    let text = pods(&["a"]) + &pod("x", "extra", &[], "n1", "");
    file.edit(&server, &text).await;
    let added = watch.next(WAIT).await.unwrap();
    assert_eq!(summary(&added), "ADDED extra");
    assert_eq!(added["object"]["status"]["phase"], "Active");
    file.edit(&server, &pods(&["a"])).await;
    assert_eq!(summary(&watch.next(WAIT).await.unwrap()), "DELETED extra");
}

#[tokio::test]
async fn versions_older_than_the_history_are_410_error_events() {
    let file = ClusterFile::new("watch-gone", &pods(&["a"]));
    let server = file.serve(&["--watch-cache-size", "2"]);
    let old = list_rv(&server, "/api/v1/pods").await;
    file.edit(&server, &pods(&["a", "b", "c", "d"])).await;
    let url = format!("{}/api/v1/pods?watch=1&resourceVersion={old}", server.url);
    let mut watch = WatchStream::open(&url, &[]).await;
    assert_eq!(watch.status, 200);
    let error = watch.next(WAIT).await.unwrap();
    assert_eq!(error["type"], "ERROR");
    let status = &error["object"];
    let expected = &vector_rows("410 for a too-old RV")[0]["expected"]["event"]["object"];
    for field in ["kind", "apiVersion", "status", "reason", "code"] {
        assert_eq!(status[field], expected[field], "{field}: {status}");
    }
    let message = status["message"].as_str().unwrap();
    // Three changes, two kept: resuming after the first kept one's predecessor works.
    assert_eq!(
        message,
        format!("too old resource version: {old} ({})", old + 1)
    );
    assert!(
        watch.next(WAIT).await.is_none(),
        "the stream ends after ERROR"
    );
    let resumable = format!(
        "{}/api/v1/pods?watch=1&resourceVersion={}&timeoutSeconds=1",
        server.url,
        old + 1
    );
    let mut ok = WatchStream::open(&resumable, &[]).await;
    let events = [ok.next(WAIT).await.unwrap(), ok.next(WAIT).await.unwrap()];
    assert_eq!(events.map(|e| summary(&e)), ["ADDED c", "ADDED d"]);
}

#[tokio::test]
async fn watches_end_at_shutdown_without_holding_it() {
    let file = ClusterFile::new("watch-shutdown", &pods(&["a"]));
    let mut server = file.serve(&["--shutdown-grace-period", "60"]);
    let url = format!("{}/api/v1/pods?watch=1", server.url);
    let mut watch = WatchStream::open(&url, &[]).await;
    assert_eq!(summary(&watch.next(WAIT).await.unwrap()), "ADDED a");
    let asked = Instant::now();
    server.signal("TERM");
    assert!(watch.next(WAIT).await.is_none(), "the watch ends cleanly");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits");
    assert!(status.success());
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
}

/// The vectors' ListOptions rows, through the server (its WatchList gate is on: the
/// gate's own error is not expected).
#[tokio::test]
async fn list_options_are_validated_with_upstreams_texts() {
    let file = ClusterFile::new("watch-validation", &pods(&["a"]));
    let server = file.serve(&[]);
    let rows = vector_rows("ListOptions");
    assert!(rows.len() >= 7);
    for row in rows {
        let mut query: Vec<String> = row["input"]["query"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        query.push("timeoutSeconds=1".to_owned());
        let path = format!("/api/v1/namespaces/live/pods?{}", query.join("&"));
        let errors: Vec<&str> = row["expected"]["fieldErrors"]
            .as_array()
            .map(|e| e.iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.contains("WatchList feature gate"))
            .collect();
        let reply = get(&server, &path).await;
        let name = row["name"].as_str().unwrap();
        if errors.is_empty() {
            assert_eq!(reply.status, 200, "{name}: {}", reply.body);
            continue;
        }
        assert_eq!(reply.status, 422, "{name}: {}", reply.body);
        let body = reply.json();
        let aggregate = match errors.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("[{}]", many.join(", ")),
        };
        assert_eq!(
            body["message"],
            format!("ListOptions.meta.k8s.io \"\" is invalid: {aggregate}"),
            "{name}"
        );
        assert_eq!(
            (body["reason"].as_str(), body["code"].as_i64()),
            (Some("Invalid"), Some(422))
        );
        assert_eq!(body["details"]["group"], "meta.k8s.io");
        assert_eq!(body["details"]["kind"], "ListOptions");
        assert_eq!(
            body["details"]["causes"].as_array().unwrap().len(),
            errors.len(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn kubectl_get_watch_prints_new_and_modified_rows() {
    let file = ClusterFile::new("watch-kubectl", &pods(&["web-1"]));
    let server = file.serve(&[]);
    let dir = TempDir::new("watch-kubectl");
    let mut child = kubectl(&server.url, dir.path())
        .args(["get", "pods", "-n", "live", "-w", "--request-timeout=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |limit: Duration| rx.recv_timeout(limit).ok();
    assert!(next_line(WAIT).unwrap().starts_with("NAME"));
    assert!(next_line(WAIT).unwrap().starts_with("web-1 "));
    // A new pod: its row within 2 s of the file's change.
    let changed = Instant::now();
    file.edit(&server, &pods(&["web-1", "web-2"])).await;
    let row = next_line(Duration::from_secs(2).saturating_sub(changed.elapsed()));
    let row = row.expect("a row for the new pod within 2 s");
    assert!(
        row.starts_with("web-2 ") && row.contains("Running"),
        "{row}"
    );
    // A modified pod: a row for it.
    let mut text = pods(&["web-2"]);
    text.push_str(&pod("web-1", "live", &[("app", "web")], "n1", "").replace("Running", "Failed"));
    file.edit(&server, &text).await;
    let row = next_line(Duration::from_secs(2)).expect("a row for the modified pod");
    assert!(row.starts_with("web-1 ") && row.contains("Failed"), "{row}");
    let _ = child.kill();
    let _ = child.wait();
}

const PYTHON_WATCH: &str = r#"
import json, sys
from kubernetes import client, watch
cfg = client.Configuration()
cfg.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(cfg))
def follow(rv, count):
    w = watch.Watch()
    out = []
    for event in w.stream(api.list_namespaced_pod, "live", resource_version=rv, timeout_seconds=30):
        o = event["object"]
        out.append([event["type"], o.metadata.name, o.metadata.resource_version])
        if len(out) == count:
            w.stop()
    return out
first = follow(sys.argv[2], 3)
print(json.dumps(first), flush=True)
print(json.dumps(follow(first[0][2], 2)), flush=True)
"#;

#[tokio::test]
async fn python_client_watches_and_resumes() {
    let file = ClusterFile::new("watch-python", &pods(&["a"]));
    let server = file.serve(&[]);
    let rv = list_rv(&server, "/api/v1/namespaces/live/pods").await;
    file.edit(&server, &pods(&["a", "b"])).await;
    let modified = pods(&["b"]) + &pod("a", "live", &[("app", "web")], "n1", "changed");
    file.edit(&server, &modified).await;
    file.edit(
        &server,
        &pod("a", "live", &[("app", "web")], "n1", "changed"),
    )
    .await;
    let stdout = crate::support::python(PYTHON_WATCH, &[&server.url, &rv.to_string()]);
    let mut lines = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let kinds = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e[0].as_str().unwrap(), e[1].as_str().unwrap()))
            .collect()
    };
    let first = lines.next().unwrap();
    assert_eq!(kinds(&first), ["ADDED b", "MODIFIED a", "DELETED b"]);
    // Resumed from the first event's resourceVersion: only what came after it.
    let resumed = lines.next().unwrap();
    assert_eq!(kinds(&resumed), ["MODIFIED a", "DELETED b"]);
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_slow_watcher_is_closed_and_memory_stays_flat() {
    const PODS: usize = 200;
    let fat = "x".repeat(4000);
    let cluster = |round: usize| -> String {
        (0..PODS)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    "live",
                    &[("round", &round.to_string())],
                    "n1",
                    &fat,
                )
            })
            .collect()
    };
    let file = ClusterFile::new("watch-slow", &cluster(0));
    let server = file.serve(&["--watch-cache-size", "256"]);
    let rv = list_rv(&server, "/api/v1/pods").await;
    // A client that reads the response head, then nothing, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = server.url.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /api/v1/namespaces/live/pods?watch=1&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 256];
    let n = stream.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    for round in 1..=3 {
        file.edit(&server, &cluster(round)).await;
    }
    let before = rss_kib(server.pid());
    // 40 rounds of 200 modified 4 KiB pods: about 32 MiB of events the client never reads.
    for round in 4..=43 {
        file.edit(&server, &cluster(round)).await;
    }
    let after = rss_kib(server.pid());
    eprintln!("server RSS with a stalled watcher: {before} KiB before, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB with a stalled watcher"
    );
    // Reading again: what was buffered, then the end of the stream (the server closed it).
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 || received.ends_with(b"0\r\n\r\n") {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            if received.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the slow watcher was not closed");
    let events = received
        .windows(17)
        .filter(|w| w == b"{\"type\":\"MODIFIED")
        .count();
    eprintln!("the stalled watcher got {events} of {} events", 43 * PODS);
    assert!(events < 40 * PODS, "{events} events: it was not behind");
    let closed = server
        .stderr()
        .contains("watch closed: the client reads too slowly");
    assert!(closed, "{}", server.stderr());
}
