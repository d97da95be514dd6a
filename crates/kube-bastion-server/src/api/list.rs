//! List and get, served straight from the cluster's snapshots: `resourceVersion` and
//! `resourceVersionMatch` (the current snapshot, or a kept one for `Exact`), `limit` and
//! `continue` (each page from the snapshot of the first, while it is kept; 410 with a fresh
//! token after), `remainingItemCount`, selectors, and the Table form.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube_bastion::Status;
use kube_bastion::core::{ClusterSnapshot, StoredKind};
use serde::Serialize;

use super::continue_token::{self, Continue};
use super::kinds::Served;
use super::query::{EXACT, ListOptions};
use super::selector::Selector;
use super::table::{self, IncludeObject};
use super::{ApiState, json, meta_status_response, now, status_response, wants_table};

/// upstream's message for a continue token whose snapshot is gone, when a fresh token is
/// offered.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a \
consistent list result. You can start a new list without the continue parameter, or use the \
continue token in this response to retrieve the remainder of the results. Continuing with the \
provided token results in an inconsistent list - objects that were created, modified, or \
deleted between the time the first chunk was returned and now may show up in the list.";

/// The body of a typed list; items are serialized where they are, never copied.
#[derive(Serialize)]
struct ListBody<'a, T> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: meta::ListMeta,
    items: Vec<&'a T>,
}

/// Where a list is read: the namespace of the route, if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a> {
    /// The route's namespace (`None`: every namespace, or a cluster-scoped kind).
    pub(crate) namespace: Option<&'a str>,
}

impl Scope<'_> {
    /// The key of an object relative to the list's prefix: `ns/name` for a cluster-wide
    /// list of a namespaced kind, `name` otherwise.
    fn key<T: Served>(&self, object: &T) -> String {
        let meta = object.metadata();
        let name = meta.name.as_deref().unwrap_or("");
        if self.namespace.is_none() && <T as StoredKind>::KIND.is_namespaced() {
            let ns = super::kinds::namespace_field::<T>(meta);
            format!("{ns}/{name}")
        } else {
            name.to_owned()
        }
    }

    /// The `(namespace, name)` to iterate from, for a decoded start key.
    fn start<'k, T: Served>(&'k self, key: &'k str) -> (&'k str, &'k str) {
        match self.namespace {
            Some(ns) => (ns, key),
            None if <T as StoredKind>::KIND.is_namespaced() => {
                key.split_once('/').unwrap_or((key, ""))
            }
            None => ("", key),
        }
    }
}

pub(crate) fn too_large(requested: u64, current: u64) -> meta::Status {
    let mut status = meta::Status::from(Status::gateway_timeout(format!(
        "Too large resource version: {requested}, current: {current}"
    )));
    status.reason = Some("Timeout".to_owned());
    status.details = Some(meta::StatusDetails {
        causes: Some(vec![meta::StatusCause {
            reason: Some("ResourceVersionTooLarge".to_owned()),
            message: Some("Too large resource version".to_owned()),
            field: None,
        }]),
        retry_after_seconds: Some(1),
        ..meta::StatusDetails::default()
    });
    status
}

fn expired(message: &str) -> meta::Status {
    meta::Status::from(Status::new(410, Some("Expired"), message))
}

/// The snapshot a list reads, and where it starts.
fn choose(
    state: &ApiState,
    options: &ListOptions,
    rv: Option<u64>,
) -> Result<(Arc<ClusterSnapshot>, Option<Continue>), Box<meta::Status>> {
    let current = state.store.snapshot();
    if !options.continue_token.is_empty() {
        let token = continue_token::decode(&options.continue_token)
            .map_err(|status| Box::new(status.into()))?;
        if rv.is_some() {
            return Err(Box::new(
                Status::bad_request(
                    "specifying resource version is not allowed when using continue",
                )
                .into(),
            ));
        }
        let snapshot = match u64::try_from(token.resource_version) {
            // A negative version continues from the current state (the fresh token of a
            // 410).
            Err(_) => current,
            Ok(rv) => match state.store.snapshot_at(rv) {
                Some(snapshot) => snapshot,
                None => {
                    let mut status = expired(INCONSISTENT_CONTINUE);
                    status.metadata.continue_ = Some(continue_token::encode(-1, &token.start));
                    return Err(Box::new(status));
                }
            },
        };
        return Ok((snapshot, Some(token)));
    }
    let latest = current.resource_version();
    match rv {
        None => Ok((current, None)),
        Some(rv) if options.resource_version_match == EXACT => {
            if rv > latest {
                return Err(Box::new(too_large(rv, latest)));
            }
            state
                .store
                .snapshot_at(rv)
                .map(|s| (s, None))
                .ok_or_else(|| {
                    Box::new(expired(
                        "The resourceVersion for the provided list is too old.",
                    ))
                })
        }
        Some(rv) if rv > latest => Err(Box::new(too_large(rv, latest))),
        Some(_) => Ok((current, None)),
    }
}

/// Answers a list of `T` (options already validated; `rv` is the parsed
/// `resourceVersion`).
pub(crate) fn list<T: Served>(
    state: &ApiState,
    scope: Scope<'_>,
    options: &ListOptions,
    rv: Option<u64>,
    selector: &Selector,
    include: IncludeObject,
    headers: &HeaderMap,
) -> Response {
    let (snapshot, token) = match choose(state, options, rv) {
        Ok(found) => found,
        Err(status) => return meta_status_response(&status),
    };
    let list_rv = snapshot.resource_version();
    let start_key = token.as_ref().map_or("", |t| t.start.as_str());
    let start = scope.start::<T>(start_key);
    let limit = usize::try_from(options.limit).ok().filter(|l| *l > 0);
    let mut matching =
        T::served(&snapshot, scope.namespace, start).filter(|o| selector.matches(&**o));
    let items: Vec<Arc<T>> = match limit {
        Some(limit) => matching.by_ref().take(limit).collect(),
        None => matching.by_ref().collect(),
    };
    let more = limit.is_some() && matching.next().is_some();
    drop(matching);
    let mut list_meta = meta::ListMeta {
        resource_version: Some(list_rv.to_string()),
        ..meta::ListMeta::default()
    };
    if more && let Some(last) = items.last() {
        let next = continue_token::next_key(&scope.key(&**last));
        if selector.is_empty() {
            let remaining = T::served(&snapshot, scope.namespace, scope.start::<T>(&next)).count();
            list_meta.remaining_item_count = i64::try_from(remaining).ok();
        }
        // A token is a resourceVersion and a key: signed as upstream's.
        let rv = i64::try_from(list_rv).unwrap_or(i64::MAX);
        list_meta.continue_ = Some(continue_token::encode(rv, &next));
    }
    if wants_table(headers) {
        let metadata = serde_json::to_value(&list_meta).unwrap_or_default();
        return json(
            StatusCode::OK,
            &table::table(items.iter().map(|o| &**o), metadata, include, now(), true),
        );
    }
    json(
        StatusCode::OK,
        &ListBody {
            api_version: T::API_VERSION,
            kind: T::LIST_KIND,
            metadata: list_meta,
            items: items.iter().map(|o| &**o).collect(),
        },
    )
}

/// Answers one object.
pub(crate) fn get<T: Served>(
    state: &ApiState,
    namespace: &str,
    name: &str,
    include: IncludeObject,
    headers: &HeaderMap,
) -> Response {
    let snapshot = state.store.snapshot();
    match T::served_one(&snapshot, namespace, name) {
        Some(object) if wants_table(headers) => {
            let rv = object
                .metadata()
                .resource_version
                .clone()
                .unwrap_or_default();
            json(
                StatusCode::OK,
                &table::table(
                    [&*object],
                    serde_json::json!({ "resourceVersion": rv }),
                    include,
                    now(),
                    true,
                ),
            )
        }
        Some(object) => json(StatusCode::OK, &*object),
        None => status_response(&Status::not_found(T::URL_PATH_SEGMENT, name)),
    }
}
