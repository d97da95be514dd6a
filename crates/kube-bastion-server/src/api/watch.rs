//! Watches: kube-apiserver's watch protocol over HTTP, as newline-delimited JSON
//! `{"type":..,"object":..}` events in a chunked `application/json` body.
//!
//! A watch subscribes to the [`WatchHub`](crate::watch_hub::WatchHub) and streams lazily:
//! events are encoded only when hyper polls the body (the client reads), so a watcher that
//! stops reading holds nothing but its place in the shared broadcast channel; when it falls
//! a whole channel behind it is closed (the client relists), as kube-apiserver closes
//! watchers whose buffer stays full. The initial state of a streaming list is read from
//! the subscribed snapshot a few objects at a time, in key order, without copying it.
//!
//! Selectors apply to events as upstream's watch cache applies them: an object that starts
//! matching is `ADDED`, one that stops matching is `DELETED` (its previous state, at the
//! change's resourceVersion).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut as _, Bytes, BytesMut};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube_bastion::Status;
use kube_bastion::core::{ClusterSnapshot, EventType};
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, Sleep};

use super::kinds::{Served, namespace_field};
use super::list::too_large;
use super::query::{ListOptions, WatchStart};
use super::selector::Selector;
use super::table::{self, IncludeObject};
use super::{ApiState, now};
use crate::store::Store;
use crate::watch_hub::{HubEvent, Resume, TooOld};

/// kube-apiserver's `--min-request-timeout` default: a watch without `timeoutSeconds` ends
/// after a random time in `[1800 s, 3600 s)`.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);

/// A chunk is sent once it holds this many bytes (or when nothing more is ready).
const CHUNK_BYTES: usize = 32 * 1024;

/// Objects of the initial state examined per chunk.
const INITIAL_BATCH: usize = 256;

/// The annotation of the bookmark that ends a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// What a watch was asked for, validated.
#[derive(Debug)]
pub(crate) struct WatchRequest {
    /// The route's namespace.
    pub(crate) namespace: Option<String>,
    /// Label and field selectors.
    pub(crate) selector: Selector,
    /// Where it starts.
    pub(crate) start: WatchStart,
    /// `allowWatchBookmarks`.
    pub(crate) bookmarks: bool,
    /// When it ends.
    pub(crate) timeout: Duration,
    /// The Table form's row content, when the client asked for Tables.
    pub(crate) table: Option<IncludeObject>,
}

/// How long a watch lasts: `timeoutSeconds` when positive, else kube-apiserver's random
/// `minRequestTimeout * (1 + rand)`.
pub(crate) fn timeout(options: &ListOptions) -> Duration {
    match options.timeout_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds.unsigned_abs()),
        Some(seconds) if seconds < 0 => Duration::ZERO,
        _ => {
            let mut rng = rand::rngs::SmallRng::from_os_rng();
            MIN_REQUEST_TIMEOUT.mul_f64(1.0 + rng.random::<f64>())
        }
    }
}

enum Phase {
    /// Sending the snapshot's objects from this `(namespace, name)` key on.
    Initial((String, String)),
    /// Sending kept events.
    Backlog,
    /// Following the broadcast.
    Live,
    /// Finished.
    Done,
}

struct Watcher<T> {
    request: WatchRequest,
    phase: Phase,
    snapshot: Option<Arc<ClusterSnapshot>>,
    /// The initial objects, made once per watch, for a kind that computes them
    /// ([`Served::served_all`]).
    listed: Option<Arc<[Arc<T>]>>,
    end_bookmark: bool,
    backlog: VecDeque<Arc<HubEvent>>,
    receiver: broadcast::Receiver<Arc<HubEvent>>,
    /// Events at or before this resourceVersion are already in what was sent.
    after: u64,
    /// The newest resourceVersion this watch has accounted for (bookmarks carry it).
    seen: u64,
    deadline: Pin<Box<Sleep>>,
    bookmark: Interval,
    closing: watch::Receiver<bool>,
    columns_sent: bool,
    _kind: std::marker::PhantomData<fn() -> T>,
}

/// Appends `{"type":"<t>","object":<object>}\n`.
fn frame(out: &mut BytesMut, event_type: &str, object: &[u8]) {
    out.put_slice(b"{\"type\":\"");
    out.put_slice(event_type.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
}

/// One `ERROR` event carrying `status`.
fn error_frame(status: &meta::Status) -> Bytes {
    let mut out = BytesMut::new();
    frame(
        &mut out,
        "ERROR",
        &serde_json::to_vec(status).unwrap_or_default(),
    );
    out.freeze()
}

/// The 410 of a watch from a resourceVersion older than the history.
fn too_old(err: TooOld) -> meta::Status {
    meta::Status::from(Status::new(410, Some("Expired"), err.message()))
}

impl<T: Served> Watcher<T> {
    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
            || Instant::now() >= self.deadline.deadline()
            || *self.closing.borrow()
    }

    /// The JSON of `object` as this watch sends it (the object, or a one-row Table); the
    /// object of `event`, whose JSON is made once for every watch, when it is one.
    fn object_json(&mut self, object: &T, event: Option<&HubEvent>) -> Vec<u8> {
        match self.request.table {
            None => match event {
                Some(event) => event.json().to_vec(),
                None => serde_json::to_vec(object).unwrap_or_default(),
            },
            Some(include) => {
                let rv = object
                    .metadata()
                    .resource_version
                    .clone()
                    .unwrap_or_default();
                let columns = !self.columns_sent;
                self.columns_sent = true;
                let value = table::table(
                    [object],
                    serde_json::json!({ "resourceVersion": rv }),
                    include,
                    now(),
                    columns,
                );
                serde_json::to_vec(&value).unwrap_or_default()
            }
        }
    }

    /// A BOOKMARK: an empty object of the kind carrying `rv` (and the initial-events-end
    /// annotation at the end of the initial events), converted to a Table for Table
    /// watches as upstream converts every event's object, so the row's object metadata
    /// keeps the annotation and the first event sent carries the column definitions,
    /// whether it is a bookmark or not.
    fn bookmark(&mut self, out: &mut BytesMut, rv: u64, end_of_initial: bool) {
        let mut object = T::default();
        let metadata = object.metadata_mut();
        metadata.resource_version = Some(rv.to_string());
        if end_of_initial {
            metadata.annotations = Some(
                [(INITIAL_EVENTS_END.to_owned(), "true".to_owned())]
                    .into_iter()
                    .collect(),
            );
        }
        let json = self.object_json(&object, None);
        frame(out, "BOOKMARK", &json);
    }

    fn selected(&self, object: &T) -> bool {
        self.request
            .namespace
            .as_deref()
            .is_none_or(|ns| namespace_field::<T>(object.metadata()) == ns)
            && self.request.selector.matches(object)
    }

    /// Appends what `event` means to this watch, if anything.
    fn event(&mut self, out: &mut BytesMut, event: &HubEvent) {
        self.seen = self.seen.max(event.resource_version);
        if event.resource_version <= self.after {
            return;
        }
        let Some(object) = T::of(&event.object) else {
            return;
        };
        let previous = event.previous.as_ref().and_then(T::of);
        let (now_selected, was_selected) = match event.event_type {
            EventType::Added => (self.selected(object), false),
            EventType::Modified => (
                self.selected(object),
                previous.is_some_and(|p| self.selected(p)),
            ),
            EventType::Deleted => (false, self.selected(object)),
        };
        let (event_type, json) = match (now_selected, was_selected) {
            (true, false) => ("ADDED", self.object_json(object, Some(event))),
            (true, true) => ("MODIFIED", self.object_json(object, Some(event))),
            (false, true) if event.event_type == EventType::Deleted => {
                ("DELETED", self.object_json(object, Some(event)))
            }
            (false, true) => {
                // It stopped matching: a deletion of its previous state, at this change.
                let Some(previous) = previous else { return };
                let mut last = T::clone(previous);
                last.metadata_mut().resource_version = Some(event.resource_version.to_string());
                ("DELETED", self.object_json(&last, None))
            }
            (false, false) => return,
        };
        frame(out, event_type, &json);
    }

    /// Sends the next part of the initial state (at most [`INITIAL_BATCH`] objects
    /// examined, whether they match or not); moves on when it is all sent.
    fn initial(&mut self, out: &mut BytesMut, from: (String, String)) {
        let Some(snapshot) = self.snapshot.clone() else {
            self.phase = Phase::Backlog;
            return;
        };
        let namespace = self.request.namespace.clone();
        let objects: Box<dyn Iterator<Item = Arc<T>> + '_> = match self.listed.clone() {
            Some(all) => {
                let first = all.partition_point(|o| {
                    let meta = o.metadata();
                    (
                        namespace_field::<T>(meta),
                        meta.name.as_deref().unwrap_or(""),
                    ) < (from.0.as_str(), from.1.as_str())
                });
                Box::new((first..all.len()).map(move |i| Arc::clone(&all[i])))
            }
            None => T::served(&snapshot, namespace.as_deref(), (&from.0, &from.1)),
        };
        let mut examined = 0;
        let mut next = None;
        for object in objects {
            examined += 1;
            let meta = object.metadata();
            next = Some((
                namespace_field::<T>(meta).to_owned(),
                format!("{}\u{0}", meta.name.as_deref().unwrap_or("")),
            ));
            if self.request.selector.matches(&*object) {
                let json = self.object_json(&object, None);
                frame(out, "ADDED", &json);
            }
            if examined == INITIAL_BATCH || out.len() >= CHUNK_BYTES {
                break;
            }
        }
        match next {
            Some(key) if examined == INITIAL_BATCH || out.len() >= CHUNK_BYTES => {
                self.phase = Phase::Initial(key);
            }
            _ => {
                if self.end_bookmark {
                    let rv = snapshot.resource_version();
                    self.bookmark(out, rv, true);
                }
                self.snapshot = None;
                self.listed = None;
                self.phase = Phase::Backlog;
            }
        }
    }

    /// The next chunk of the body, or `None` at its end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        loop {
            if self.done() {
                self.phase = Phase::Done;
                return None;
            }
            match std::mem::replace(&mut self.phase, Phase::Live) {
                Phase::Initial(from) => {
                    self.initial(&mut out, from);
                    if matches!(self.phase, Phase::Initial(_)) {
                        // Let other tasks run between batches, even when nothing matched.
                        tokio::task::yield_now().await;
                    }
                }
                Phase::Backlog => match self.backlog.pop_front() {
                    Some(event) => {
                        self.event(&mut out, &event);
                        self.phase = Phase::Backlog;
                    }
                    None => self.phase = Phase::Live,
                },
                Phase::Live => {
                    if !out.is_empty() {
                        return Some(out.freeze());
                    }
                    self.live(&mut out).await;
                }
                Phase::Done => {
                    self.phase = Phase::Done;
                    return None;
                }
            }
            if out.len() >= CHUNK_BYTES {
                return Some(out.freeze());
            }
        }
    }

    /// Waits for the next events (taking every one already there), a bookmark tick, the
    /// timeout or the server's shutdown.
    async fn live(&mut self, out: &mut BytesMut) {
        tokio::select! {
            biased;
            () = &mut self.deadline => self.phase = Phase::Done,
            _ = self.closing.changed() => self.phase = Phase::Done,
            received = self.receiver.recv() => match received {
                Ok(event) => {
                    self.event(out, &event);
                    while out.len() < CHUNK_BYTES {
                        match self.receiver.try_recv() {
                            Ok(event) => self.event(out, &event),
                            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                self.lagged(missed);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => self.lagged(missed),
                Err(broadcast::error::RecvError::Closed) => self.phase = Phase::Done,
            },
            _ = self.bookmark.tick(), if self.request.bookmarks => {
                let rv = self.seen;
                self.bookmark(out, rv, false);
            }
        }
    }

    fn lagged(&mut self, missed: u64) {
        tracing::info!(
            missed,
            resource = T::URL_PATH_SEGMENT,
            "watch closed: the client reads too slowly"
        );
        self.phase = Phase::Done;
    }
}

/// Subscribes a watch of `T` to the store's hub.
fn start<T: Served>(
    store: &Store,
    bookmark_interval: Duration,
    request: WatchRequest,
) -> Result<Watcher<T>, TooOld> {
    let resume = match request.start {
        WatchStart::After(rv) => Resume::After(rv),
        WatchStart::Initial { .. } | WatchStart::Now => Resume::Now,
    };
    let subscription = store.hub().subscribe(resume)?;
    let snapshot_rv = subscription.resource_version;
    // Only the initial events read the snapshot: other watches do not keep it.
    let (phase, after, end_bookmark, snapshot) = match request.start {
        WatchStart::Initial { end_bookmark } => (
            Phase::Initial((String::new(), String::new())),
            snapshot_rv,
            end_bookmark,
            Some(subscription.snapshot),
        ),
        WatchStart::Now => (Phase::Live, snapshot_rv, false, None),
        WatchStart::After(rv) => (Phase::Backlog, rv, false, None),
    };
    let mut bookmark =
        tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval);
    bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Ok(Watcher::<T> {
        deadline: Box::pin(tokio::time::sleep(request.timeout)),
        request,
        phase,
        listed: snapshot.as_deref().and_then(T::served_all).map(Arc::from),
        snapshot,
        end_bookmark,
        backlog: subscription.backlog,
        receiver: subscription.receiver,
        after,
        seen: after,
        bookmark,
        closing: store.closing(),
        columns_sent: false,
        _kind: std::marker::PhantomData,
    })
}

/// Answers a watch of `T`.
pub(crate) fn watch<T: Served>(state: &ApiState, request: WatchRequest) -> Response {
    if let WatchStart::After(rv) = request.start {
        // A version the server has not reached: kube-apiserver's watch cache answers 504
        // `Too large resource version` (after waiting for it); nothing here makes versions
        // advance but a file reload, so it answers at once. A version a list has already
        // returned is never refused: the current snapshot is published before its events.
        let current = state.store.snapshot().resource_version();
        if rv > current {
            return stream_response(Body::from(error_frame(&too_large(rv, current))));
        }
    }
    let body = match start::<T>(&state.store, state.bookmark_interval, request) {
        Err(err) => Body::from(error_frame(&too_old(err))),
        Ok(watcher) => {
            Body::from_stream(futures_util::stream::unfold(watcher, |mut w| async move {
                let chunk = w.next_chunk().await?;
                Some((Ok::<_, Infallible>(chunk), w))
            }))
        }
    };
    stream_response(body)
}

/// The 200 `application/json` response streaming `body`.
fn stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube_bastion::Object;

    /// A watch over many objects that its selector all rejects still hands the runtime
    /// back after a batch, instead of scanning everything in one poll.
    #[tokio::test]
    async fn the_initial_list_yields_between_batches() {
        let pods = (0..INITIAL_BATCH * 8).map(|i| {
            let mut pod = Pod::default();
            pod.metadata.name = Some(format!("p{i:05}"));
            pod.metadata.namespace = Some("a".to_owned());
            Object::Pod(pod)
        });
        let store = Store::new(pods.collect(), 16);
        let request = WatchRequest {
            namespace: None,
            selector: Selector::parse_labels("app=none").unwrap(),
            start: WatchStart::Initial { end_bookmark: true },
            bookmarks: true,
            timeout: Duration::from_secs(60),
            table: None,
        };
        let mut watcher = start::<Pod>(&store, Duration::from_secs(60), request).unwrap();
        {
            let mut chunk = std::pin::pin!(watcher.next_chunk());
            assert!(futures_util::poll!(&mut chunk).is_pending());
        }
        let Phase::Initial((_, name)) = &watcher.phase else {
            panic!("the first poll scanned everything");
        };
        assert_eq!(name, &format!("p{:05}\u{0}", INITIAL_BATCH - 1));
        // The rest follows: only the initial-events-end bookmark.
        let chunk = watcher.next_chunk().await.unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert!(text.starts_with("{\"type\":\"BOOKMARK\""), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    /// Only a watch that sends initial events holds the snapshot, and only until they are
    /// sent.
    #[tokio::test]
    async fn only_initial_events_hold_the_snapshot() {
        let store = Store::new(Vec::new(), 16);
        let rv = store.snapshot().resource_version();
        let request = |start| WatchRequest {
            namespace: None,
            selector: Selector::default(),
            start,
            bookmarks: false,
            timeout: Duration::from_secs(60),
            table: None,
        };
        let interval = Duration::from_secs(60);
        for from in [WatchStart::After(rv), WatchStart::Now] {
            let watcher = start::<Pod>(&store, interval, request(from)).unwrap();
            assert!(watcher.snapshot.is_none(), "{from:?}");
        }
        let initial = WatchStart::Initial { end_bookmark: true };
        let mut watcher = start::<Pod>(&store, interval, request(initial)).unwrap();
        assert!(watcher.snapshot.is_some());
        let chunk = watcher.next_chunk().await.unwrap();
        assert!(chunk.starts_with(b"{\"type\":\"BOOKMARK\""));
        assert!(watcher.snapshot.is_none());
    }

    /// Namespaces, made once per watch, are sent across batches in order, each once.
    #[tokio::test]
    async fn initial_namespaces_span_batches() {
        let count = INITIAL_BATCH * 2 + 7;
        let pods = (0..count).map(|i| {
            let mut pod = Pod::default();
            pod.metadata.name = Some("p".to_owned());
            pod.metadata.namespace = Some(format!("ns{i:04}"));
            Object::Pod(pod)
        });
        let store = Store::new(pods.collect(), 16);
        let request = WatchRequest {
            namespace: None,
            selector: Selector::default(),
            start: WatchStart::Initial { end_bookmark: true },
            bookmarks: true,
            timeout: Duration::from_secs(60),
            table: None,
        };
        let interval = Duration::from_secs(60);
        let mut watcher = start::<Namespace>(&store, interval, request).unwrap();
        let mut text = String::new();
        while !text.contains("BOOKMARK") {
            let chunk = watcher.next_chunk().await.unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let names: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                (event["type"] == "ADDED").then(|| {
                    event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
            })
            .collect();
        let expected: Vec<String> = (0..count).map(|i| format!("ns{i:04}")).collect();
        assert_eq!(names, expected);
    }
}
