//! The read-only apiserver face: version, health, discovery, and get/list of namespaces,
//! pods, services, endpoints, endpointslices and nodes, as JSON objects and lists or as the
//! `meta.k8s.io/v1` Table that `kubectl get` prints.
//!
//! Proxy routes never reach this router: the proxy layer in front of it answers them.
//! Every other path is a 404 Status, and a write method on a non-proxy path a 405 Status.

pub(crate) mod discovery;
pub(crate) mod selector;
pub(crate) mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use k8s_openapi::{List, ListableResource};
use kube_bastion::Balancer;
use kube_bastion::Status;
use serde::Serialize;

use crate::metrics::{self, Metrics};
use crate::store::{Objects, Store};
use selector::Selector;
use table::{IncludeObject, Tabular};

/// What the API handlers share.
#[derive(Clone, Debug)]
pub(crate) struct ApiState {
    /// The cluster state.
    pub(crate) store: Arc<Store>,
    /// The metrics registry (served at `/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// `host:port` clients reach this server at (for `/api`'s server address).
    pub(crate) server_address: String,
    /// The proxy's balancer, for endpoint health in `/metrics`.
    pub(crate) balancer: Balancer,
}

/// The router of the read-only API.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json(StatusCode::OK, &discovery::version()) }),
        )
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/metrics", get(serve_metrics))
        .route("/api", get(api_versions))
        .route(
            "/api/v1",
            get(|| async { json(StatusCode::OK, &discovery::core_v1()) }),
        )
        .route(
            "/apis",
            get(|| async { json(StatusCode::OK, &discovery::groups()) }),
        )
        .route(
            "/apis/discovery.k8s.io",
            get(|| async { json(StatusCode::OK, &discovery::group()) }),
        )
        .route(
            "/apis/discovery.k8s.io/v1",
            get(|| async { json(StatusCode::OK, &discovery::discovery_v1()) }),
        )
        .route("/api/v1/{resource}", get(list_cluster_wide))
        .route("/api/v1/namespaces/{name}", get(get_namespace))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route(
            "/api/v1/namespaces/{namespace}/{resource}",
            get(list_namespaced),
        )
        .route(
            "/api/v1/namespaces/{namespace}/{resource}/{name}",
            get(get_namespaced),
        )
        .route("/apis/discovery.k8s.io/v1/endpointslices", get(list_slices))
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            get(list_ns_slices),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}",
            get(get_slice),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A Status as a response.
pub(crate) fn status_response(status: &Status) -> Response {
    status.to_response().map(axum::body::Body::from)
}

/// The 404 for a path this server does not serve.
pub(crate) fn not_found_path() -> Status {
    Status::new(
        404,
        Some("NotFound"),
        "the server could not find the requested resource",
    )
}

/// The 405 for a write or an unsupported method.
pub(crate) fn method_not_allowed_status() -> Status {
    Status::new(
        405,
        Some("MethodNotAllowed"),
        "the server does not allow this method on the requested resource",
    )
}

fn json<T: Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = (code, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => status_response(&Status::internal(err.to_string())),
    }
}

async fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

async fn serve_metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render()
            + &metrics::endpoint_health(&state.store.inventory(), &state.balancer),
    )
        .into_response()
}

async fn api_versions(State(state): State<ApiState>) -> Response {
    json(
        StatusCode::OK,
        &discovery::core_versions(&state.server_address),
    )
}

async fn fallback(method: Method) -> Response {
    if is_write(&method) {
        status_response(&method_not_allowed_status())
    } else {
        status_response(&not_found_path())
    }
}

async fn method_not_allowed() -> Response {
    status_response(&method_not_allowed_status())
}

/// Whether a method changes state (and so is refused outside proxy paths).
pub(crate) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether the client asked for the `meta.k8s.io` Table form.
pub(crate) fn wants_table(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|media| {
            let text = String::from_utf8_lossy(media);
            let params: Vec<String> = text
                .split(';')
                .skip(1)
                .map(|p| p.trim().replace(' ', ""))
                .collect();
            params.iter().any(|p| p == "as=Table")
                && params.iter().any(|p| p == "g=meta.k8s.io")
                && params.iter().any(|p| p == "v=v1" || p == "v=v1beta1")
        })
    })
}

/// Query parameters of get and list.
struct ListQuery {
    selector: Selector,
    include: IncludeObject,
}

fn list_query(query: &HashMap<String, String>) -> Result<ListQuery, Status> {
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(Status::new(
            405,
            Some("MethodNotAllowed"),
            "watch is not supported",
        ));
    }
    let mut selector =
        Selector::parse_labels(query.get("labelSelector").map_or("", String::as_str))
            .map_err(Status::bad_request)?;
    selector
        .add_fields(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(Status::bad_request)?;
    let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
        .map_err(Status::bad_request)?;
    Ok(ListQuery { selector, include })
}

/// Answers a list of `objects` (optionally restricted to `namespace`).
fn list<T>(
    objects: &Objects<T>,
    namespace: Option<&str>,
    resource_version: u64,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response
where
    T: Tabular + ListableResource + Clone,
{
    let query = match list_query(query) {
        Ok(q) => q,
        Err(status) => return status_response(&status),
    };
    let items: Vec<&T> = objects
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
        .map(|(_, object)| object)
        .filter(|object| query.selector.matches(object.metadata()))
        .collect();
    if wants_table(headers) {
        return json(
            StatusCode::OK,
            &table::table(items, resource_version, query.include, now()),
        );
    }
    let list = List::<T> {
        items: items.into_iter().cloned().collect(),
        metadata: ListMeta {
            resource_version: Some(resource_version.to_string()),
            ..ListMeta::default()
        },
    };
    json(StatusCode::OK, &list)
}

/// Answers one object.
fn get_one<T>(
    objects: &Objects<T>,
    key: (&str, &str),
    resource: &str,
    resource_version: u64,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response
where
    T: Tabular,
{
    let query = match list_query(query) {
        Ok(q) => q,
        Err(status) => return status_response(&status),
    };
    match objects.get(&(key.0.to_owned(), key.1.to_owned())) {
        Some(object) if wants_table(headers) => json(
            StatusCode::OK,
            &table::table([object], resource_version, query.include, now()),
        ),
        Some(object) => json(StatusCode::OK, object),
        None => status_response(&Status::not_found(resource, key.1)),
    }
}

async fn list_cluster_wide(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    let rv = inv.resource_version;
    match resource.as_str() {
        "namespaces" => list(&inv.namespaces, None, rv, &headers, &query),
        "pods" => list(&inv.pods, None, rv, &headers, &query),
        "services" => list(&inv.services, None, rv, &headers, &query),
        "endpoints" => list(&inv.endpoints, None, rv, &headers, &query),
        "nodes" => list(&inv.nodes, None, rv, &headers, &query),
        _ => status_response(&not_found_path()),
    }
}

async fn list_namespaced(
    State(state): State<ApiState>,
    Path((namespace, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    let rv = inv.resource_version;
    let ns = Some(namespace.as_str());
    match resource.as_str() {
        "pods" => list(&inv.pods, ns, rv, &headers, &query),
        "services" => list(&inv.services, ns, rv, &headers, &query),
        "endpoints" => list(&inv.endpoints, ns, rv, &headers, &query),
        _ => status_response(&not_found_path()),
    }
}

async fn get_namespaced(
    State(state): State<ApiState>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    let rv = inv.resource_version;
    let key = (namespace.as_str(), name.as_str());
    match resource.as_str() {
        "pods" => get_one(&inv.pods, key, "pods", rv, &headers, &query),
        "services" => get_one(&inv.services, key, "services", rv, &headers, &query),
        "endpoints" => get_one(&inv.endpoints, key, "endpoints", rv, &headers, &query),
        _ => status_response(&not_found_path()),
    }
}

async fn get_namespace(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    get_one(
        &inv.namespaces,
        ("", &name),
        "namespaces",
        inv.resource_version,
        &headers,
        &query,
    )
}

async fn get_node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    get_one(
        &inv.nodes,
        ("", &name),
        "nodes",
        inv.resource_version,
        &headers,
        &query,
    )
}

async fn list_slices(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    list(
        &inv.endpoint_slices,
        None,
        inv.resource_version,
        &headers,
        &query,
    )
}

async fn list_ns_slices(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    list(
        &inv.endpoint_slices,
        Some(&namespace),
        inv.resource_version,
        &headers,
        &query,
    )
}

async fn get_slice(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inv = state.store.inventory();
    let key = (namespace.as_str(), name.as_str());
    get_one(
        &inv.endpoint_slices,
        key,
        "endpointslices",
        inv.resource_version,
        &headers,
        &query,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn table_negotiation_follows_kubectl() {
        assert!(wants_table(&accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(&accept("application/json")));
        assert!(!wants_table(&accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_table(&HeaderMap::new()));
    }
}
