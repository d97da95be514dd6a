//! Helpers for tests of a changing cluster: a cluster file edited in place, pods as YAML,
//! waiting for the server to apply an edit, and a streaming watch client.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::support::{Server, TempDir, eventually, get};

/// A pod in `namespace` with these labels, on `node`; `extra` is appended to its metadata
/// annotations (to make it bigger or different).
pub(crate) fn pod(
    name: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    node: &str,
    extra: &str,
) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("\n    {k}: \"{v}\""))
        .collect();
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         creationTimestamp: \"2026-01-01T00:00:00Z\"\n  labels:{}\n  annotations:\n    note: \"{extra}\"\n\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: example/app:1\n\
         status:\n  phase: Running\n  podIP: 10.1.0.1\n",
        if labels.is_empty() {
            " {}".to_owned()
        } else {
            labels
        },
    )
}

/// A cluster file the server reads, in its own directory.
pub(crate) struct ClusterFile {
    _dir: TempDir,
    pub(crate) path: PathBuf,
}

impl ClusterFile {
    pub(crate) fn new(tag: &str, text: &str) -> Self {
        let dir = TempDir::new(tag);
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, text).unwrap();
        ClusterFile { _dir: dir, path }
    }

    pub(crate) fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Starts a server on this file, polling it every 20 ms, with `extra` flags.
    pub(crate) fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--cluster", self.arg(), "--cluster-poll-interval-ms", "20"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Replaces the file (write, then rename) and waits until `server` applied it.
    pub(crate) async fn edit(&self, server: &Server, text: &str) {
        let before = reloads(server).await;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
        let applied = eventually(Duration::from_secs(30), || async {
            (reloads(server).await > before).then_some(())
        })
        .await;
        assert!(applied.is_some(), "edit not applied:\n{}", server.stderr());
    }
}

/// Successful reloads so far (from `/metrics`).
pub(crate) async fn reloads(server: &Server) -> u64 {
    let metrics = get(server, "/metrics").await.body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kube_bastion_cluster_reloads_total{result=\"success\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The resourceVersion of a list.
pub(crate) async fn list_rv(server: &Server, path: &str) -> u64 {
    let list = get(server, path).await.json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion: {list}"))
}

/// A watch being read event by event.
pub(crate) struct WatchStream {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
    ended: bool,
}

impl WatchStream {
    /// Sends `GET url` with these headers and waits for the response head.
    pub(crate) async fn open(url: &str, headers: &[(&str, &str)]) -> Self {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(request.body(Empty::new()).unwrap()),
        )
        .await
        .expect("response head in time")
        .expect("response");
        let (parts, body) = response.into_parts();
        WatchStream {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buffer: Vec::new(),
            ended: false,
        }
    }

    /// The next event, or `None` when the server ended the stream; panics when nothing
    /// comes within `limit`.
    pub(crate) async fn next(&mut self, limit: Duration) -> Option<Value> {
        tokio::time::timeout(limit, self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no watch event within {limit:?}"))
    }

    async fn next_event(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!("not a JSON event ({e}): {}", String::from_utf8_lossy(&line))
                }));
            }
            if self.ended {
                assert!(self.buffer.is_empty(), "a partial event at the end");
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(err)) => panic!("watch body failed: {err}"),
                None => self.ended = true,
            }
        }
    }

    /// Events until one matches `until` (included), within `limit` each.
    pub(crate) async fn until(
        &mut self,
        limit: Duration,
        until: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self
                .next(limit)
                .await
                .unwrap_or_else(|| panic!("the watch ended early after {events:?}"));
            let last = until(&event);
            events.push(event);
            if last {
                return events;
            }
        }
    }
}

/// `TYPE name` of an event (the name of a Table row's object for Tables).
pub(crate) fn summary(event: &Value) -> String {
    let object = &event["object"];
    let name = object["metadata"]["name"]
        .as_str()
        .or_else(|| object["rows"][0]["object"]["metadata"]["name"].as_str())
        .unwrap_or("");
    format!("{} {name}", event["type"].as_str().unwrap_or("?"))
}
