//! A kube-rs `watcher` follows the server: the initial list, added and deleted pods, a
//! relist after `410 Gone`, and the streaming-list mode.

use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};

use crate::live::{ClusterFile, pod};

const WAIT: Duration = Duration::from_secs(20);

fn pods(namespace: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| pod(n, namespace, &[], "n1", ""))
        .collect()
}

fn api(url: &str) -> Api<Pod> {
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    Api::namespaced(client, "live")
}

/// What one event says: `Init`, `InitApply a`, `InitDone`, `Apply a`, `Delete a`, or
/// `Error <code>`.
fn describe(item: Result<Event<Pod>, watcher::Error>) -> String {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    match item {
        Ok(Event::Init) => "Init".to_owned(),
        Ok(Event::InitApply(p)) => format!("InitApply {}", name(&p)),
        Ok(Event::InitDone) => "InitDone".to_owned(),
        Ok(Event::Apply(p)) => format!("Apply {}", name(&p)),
        Ok(Event::Delete(p)) => format!("Delete {}", name(&p)),
        Err(watcher::Error::WatchError(status)) => format!("Error {}", status.code),
        Err(err) => format!("Error {err}"),
    }
}

/// The next `count` events.
async fn take<S>(stream: &mut S, count: usize) -> Vec<String>
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < count {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no watcher event after {out:?}"))
            .expect("the watcher never ends");
        out.push(describe(item));
    }
    out
}

#[tokio::test]
async fn kube_watcher_lists_follows_and_relists_after_gone() {
    let file = ClusterFile::new("kube-watcher", &pods("live", &["a", "b"]));
    let server = file.serve(&["--watch-cache-size", "4"]);
    // Each watch lasts a second, then resumes from the last version it saw.
    let config = watcher::Config::default().timeout(1);
    let mut stream = watcher::watcher(api(&server.url), config).boxed();
    assert_eq!(
        take(&mut stream, 4).await,
        ["Init", "InitApply a", "InitApply b", "InitDone"]
    );
    file.edit(&server, &pods("live", &["a", "b", "c"])).await;
    assert_eq!(take(&mut stream, 1).await, ["Apply c"]);
    file.edit(&server, &pods("live", &["a", "c"])).await;
    assert_eq!(take(&mut stream, 1).await, ["Delete b"]);
    // Ten changes elsewhere push this watcher's version out of the four kept: its next
    // watch is answered 410 Gone, and it lists again.
    let others: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let text = pods("live", &["a", "c"]) + &pods("other", &others);
    file.edit(&server, &text).await;
    assert_eq!(
        take(&mut stream, 5).await,
        [
            "Error 410",
            "Init",
            "InitApply a",
            "InitApply c",
            "InitDone"
        ]
    );
    // And follows again.
    file.edit(&server, &(text + &pods("live", &["d"]))).await;
    assert_eq!(take(&mut stream, 1).await, ["Apply d"]);
}

#[tokio::test]
async fn kube_watcher_streaming_list() {
    let file = ClusterFile::new("kube-streaming", &pods("live", &["a", "b"]));
    let server = file.serve(&[]);
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(api(&server.url), config).boxed();
    assert_eq!(
        take(&mut stream, 4).await,
        ["Init", "InitApply a", "InitApply b", "InitDone"]
    );
    file.edit(&server, &pods("live", &["a", "b", "c"])).await;
    assert_eq!(take(&mut stream, 1).await, ["Apply c"]);
    file.edit(&server, &pods("live", &["b", "c"])).await;
    assert_eq!(take(&mut stream, 1).await, ["Delete a"]);
}
