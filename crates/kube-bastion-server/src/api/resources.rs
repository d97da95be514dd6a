//! The resource routes: each resource name to its kind, and the query of every list, get
//! and watch decoded, defaulted and validated once, before [`list`](super::list) or
//! [`watch`](super::watch) serves it.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
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

/// What a resource route serves besides its path parameters (`namespace`, `resource`,
/// `name`, whichever the path has).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    /// Resources of the discovery.k8s.io group (EndpointSlices) rather than of core/v1.
    discovery: bool,
    /// The resource, when the path fixes it.
    resource: Option<&'static str>,
    /// The `/watch/` path form.
    watch_path: bool,
    /// A get of the object `name` (otherwise a list or watch, of one object when named).
    get: bool,
}

impl Route {
    /// A list or `?watch` of `{resource}`, or of `resource` when given.
    pub(crate) const fn list(resource: Option<&'static str>) -> Self {
        Route {
            discovery: false,
            resource,
            watch_path: false,
            get: false,
        }
    }

    /// A get of `{name}` (of `resource` when given).
    pub(crate) const fn get(resource: Option<&'static str>) -> Self {
        Route {
            get: true,
            ..Route::list(resource)
        }
    }

    /// The `/watch/` path form (of one object when the path names one).
    pub(crate) const fn watch(resource: Option<&'static str>) -> Self {
        Route {
            watch_path: true,
            ..Route::list(resource)
        }
    }

    /// The same route in the discovery.k8s.io group.
    pub(crate) const fn discovery(self) -> Self {
        Route {
            discovery: true,
            ..self
        }
    }

    /// The axum handler of this route.
    pub(crate) fn handler(self) -> MethodRouter<ApiState> {
        get(
            move |State(state): State<ApiState>,
                  params: Option<Path<HashMap<String, String>>>,
                  QueryParams(query): QueryParams,
                  headers: HeaderMap| async move {
                let params = params.map(|Path(p)| p).unwrap_or_default();
                self.serve(&state, &params, &query, &headers)
            },
        )
    }

    fn serve(
        self,
        state: &ApiState,
        params: &HashMap<String, String>,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Response {
        let param = |key: &str| params.get(key).map(String::as_str);
        let resource = self.resource.or(param("resource")).unwrap_or_default();
        let namespace = param("namespace");
        let cluster_wide = namespace.is_none();
        let request = (state, namespace, param("name"), query, headers);
        match (self.discovery, resource) {
            (false, "pods") => self.at::<Pod>(request),
            (false, "services") => self.at::<Service>(request),
            (false, "endpoints") => self.at::<Endpoints>(request),
            (false, "nodes") if cluster_wide => self.at::<Node>(request),
            (false, "namespaces") if cluster_wide => self.at::<Namespace>(request),
            (true, "endpointslices") => self.at::<EndpointSlice>(request),
            _ => status_response(&not_found_path()),
        }
    }

    fn at<T: Served>(
        self,
        (state, namespace, name, query, headers): (
            &ApiState,
            Option<&str>,
            Option<&str>,
            &HashMap<String, String>,
            &HeaderMap,
        ),
    ) -> Response {
        match name {
            Some(name) if self.get => {
                one::<T>(state, namespace.unwrap_or(""), name, query, headers)
            }
            _ => collection::<T>(state, namespace, name, self.watch_path, query, headers),
        }
    }
}
