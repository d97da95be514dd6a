//! The resource routes: each resource name to its kind, and the query of every list, get
//! and watch decoded, defaulted and validated once, before [`list`](super::list) or
//! [`watch`](super::watch) serves it.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_bastion::Status;

use super::kinds::Served;
use super::list::{self, Scope};
use super::query::{ListOptions, QueryParams};
use super::selector::Selector;
use super::table::IncludeObject;
use super::watch::{self, WatchRequest};
use super::{ApiState, meta_status_response, not_found_path, status_response, wants_table};

type Params = QueryParams;

/// A collection request: list, watch (`?watch=true`), or the watch path form (`/watch/`,
/// `watch_path`), optionally of one object (`name`).
fn collection<T: Served>(
    state: &ApiState,
    namespace: Option<&str>,
    name: Option<&str>,
    watch_path: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let options = match ListOptions::decode(query) {
        Ok(options) => options,
        Err(status) => return status_response(&status),
    };
    let rv = match options.validate() {
        Ok(rv) => rv,
        Err(status) => return meta_status_response(&status),
    };
    let mut selector = match Selector::parse::<T>(&options.label_selector, &options.field_selector)
    {
        Ok(selector) => selector,
        Err(message) => return status_response(&Status::bad_request(message)),
    };
    if let Some(name) = name {
        selector.add_name(name);
    }
    let include = match IncludeObject::parse(query.get("includeObject").map(String::as_str)) {
        Ok(include) => include,
        Err(message) => return status_response(&Status::bad_request(message)),
    };
    if options.watch || watch_path {
        let request = WatchRequest {
            namespace: namespace.map(str::to_owned),
            selector,
            start: options.watch_start(rv),
            bookmarks: options.allow_bookmarks,
            timeout: watch::timeout(&options),
            table: wants_table(headers).then_some(include),
        };
        return watch::watch::<T>(state, request);
    }
    list::list::<T>(
        state,
        Scope { namespace },
        &options,
        rv,
        &selector,
        include,
        headers,
    )
}

/// A get: `?watch` is not looked at (upstream's get ignores it).
fn one<T: Served>(
    state: &ApiState,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    match IncludeObject::parse(query.get("includeObject").map(String::as_str)) {
        Ok(include) => list::get::<T>(state, namespace, name, include, headers),
        Err(message) => status_response(&Status::bad_request(message)),
    }
}

/// Dispatches a collection route by resource name.
fn by_resource(
    state: &ApiState,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    watch_path: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let cluster_wide = namespace.is_none();
    match resource {
        "pods" => collection::<Pod>(state, namespace, name, watch_path, query, headers),
        "services" => collection::<Service>(state, namespace, name, watch_path, query, headers),
        "endpoints" => collection::<Endpoints>(state, namespace, name, watch_path, query, headers),
        "nodes" if cluster_wide => {
            collection::<Node>(state, None, name, watch_path, query, headers)
        }
        "namespaces" if cluster_wide => {
            collection::<Namespace>(state, None, name, watch_path, query, headers)
        }
        _ => status_response(&not_found_path()),
    }
}

/// `GET /api/v1/{resource}`.
pub(crate) async fn list_cluster_wide(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    by_resource(&state, &resource, None, None, false, &query, &headers)
}

/// `GET /api/v1/namespaces/{namespace}/{resource}`.
pub(crate) async fn list_namespaced(
    State(state): State<ApiState>,
    Path((namespace, resource)): Path<(String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    by_resource(
        &state,
        &resource,
        Some(&namespace),
        None,
        false,
        &query,
        &headers,
    )
}

/// `GET /api/v1/watch/{resource}`.
pub(crate) async fn watch_cluster_wide(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    by_resource(&state, &resource, None, None, true, &query, &headers)
}

/// `GET /api/v1/watch/namespaces/{namespace}/{resource}`.
pub(crate) async fn watch_namespaced(
    State(state): State<ApiState>,
    Path((namespace, resource)): Path<(String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    by_resource(
        &state,
        &resource,
        Some(&namespace),
        None,
        true,
        &query,
        &headers,
    )
}

/// `GET /api/v1/watch/namespaces/{namespace}/{resource}/{name}`.
pub(crate) async fn watch_namespaced_one(
    State(state): State<ApiState>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    by_resource(
        &state,
        &resource,
        Some(&namespace),
        Some(&name),
        true,
        &query,
        &headers,
    )
}

/// `GET /api/v1/watch/namespaces/{name}`.
pub(crate) async fn watch_namespace(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<Namespace>(&state, None, Some(&name), true, &query, &headers)
}

/// `GET /api/v1/watch/nodes/{name}`.
pub(crate) async fn watch_node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<Node>(&state, None, Some(&name), true, &query, &headers)
}

/// `GET /api/v1/namespaces/{namespace}/{resource}/{name}`.
pub(crate) async fn get_namespaced(
    State(state): State<ApiState>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    match resource.as_str() {
        "pods" => one::<Pod>(&state, &namespace, &name, &query, &headers),
        "services" => one::<Service>(&state, &namespace, &name, &query, &headers),
        "endpoints" => one::<Endpoints>(&state, &namespace, &name, &query, &headers),
        _ => status_response(&not_found_path()),
    }
}

/// `GET /api/v1/namespaces/{name}`.
pub(crate) async fn get_namespace(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    one::<Namespace>(&state, "", &name, &query, &headers)
}

/// `GET /api/v1/nodes/{name}`.
pub(crate) async fn get_node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    one::<Node>(&state, "", &name, &query, &headers)
}

/// `GET /apis/discovery.k8s.io/v1/endpointslices`.
pub(crate) async fn list_slices(
    State(state): State<ApiState>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<EndpointSlice>(&state, None, None, false, &query, &headers)
}

/// `GET /apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices`.
pub(crate) async fn list_ns_slices(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<EndpointSlice>(&state, Some(&namespace), None, false, &query, &headers)
}

/// `GET /apis/discovery.k8s.io/v1/watch/endpointslices`.
pub(crate) async fn watch_slices(
    State(state): State<ApiState>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<EndpointSlice>(&state, None, None, true, &query, &headers)
}

/// `GET /apis/discovery.k8s.io/v1/watch/namespaces/{namespace}/endpointslices`.
pub(crate) async fn watch_ns_slices(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<EndpointSlice>(&state, Some(&namespace), None, true, &query, &headers)
}

/// `GET /apis/discovery.k8s.io/v1/watch/namespaces/{namespace}/endpointslices/{name}`.
pub(crate) async fn watch_slice(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    collection::<EndpointSlice>(
        &state,
        Some(&namespace),
        Some(&name),
        true,
        &query,
        &headers,
    )
}

/// `GET /apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}`.
pub(crate) async fn get_slice(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    QueryParams(query): Params,
    headers: HeaderMap,
) -> Response {
    one::<EndpointSlice>(&state, &namespace, &name, &query, &headers)
}
