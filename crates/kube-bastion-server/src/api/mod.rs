//! The read-only apiserver face: version, health, discovery, and get, list and watch of
//! namespaces, pods, services, endpoints, endpointslices and nodes, as JSON objects, lists
//! and watch events or as the `meta.k8s.io/v1` Table that `kubectl get` prints.
//!
//! Proxy routes never reach this router: the proxy layer in front of it answers them.
//! Every other path is a 404 Status, and a write method on a non-proxy path a 405 Status.

pub(crate) mod continue_token;
pub(crate) mod discovery;
pub(crate) mod kinds;
pub(crate) mod list;
pub(crate) mod query;
pub(crate) mod resources;
pub(crate) mod selector;
pub(crate) mod table;
pub(crate) mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube_bastion::Balancer;
use kube_bastion::Status;
use serde::Serialize;

use crate::metrics::{self, Metrics};
use crate::store::Store;
use resources::Route;

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
    /// How often a watch that allows bookmarks gets one.
    pub(crate) bookmark_interval: Duration,
}

/// EndpointSlice lists (and `?watch`) in the discovery.k8s.io group.
const SLICES: Route = Route::list(Some("endpointslices")).discovery();

/// The `/watch/` form of EndpointSlices.
const SLICE_WATCH: Route = Route::watch(Some("endpointslices")).discovery();

/// The router of the read-only API.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json(StatusCode::OK, &discovery::version()) }),
        )
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
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
        .route("/api/v1/{resource}", Route::list(None).handler())
        .route(
            "/api/v1/namespaces/{name}",
            Route::get(Some("namespaces")).handler(),
        )
        .route("/api/v1/nodes/{name}", Route::get(Some("nodes")).handler())
        .route(
            "/api/v1/namespaces/{namespace}/{resource}",
            Route::list(None).handler(),
        )
        .route(
            "/api/v1/namespaces/{namespace}/{resource}/{name}",
            Route::get(None).handler(),
        )
        .route("/api/v1/watch/{resource}", Route::watch(None).handler())
        .route(
            "/api/v1/watch/namespaces/{name}",
            Route::watch(Some("namespaces")).handler(),
        )
        .route(
            "/api/v1/watch/nodes/{name}",
            Route::watch(Some("nodes")).handler(),
        )
        .route(
            "/api/v1/watch/namespaces/{namespace}/{resource}",
            Route::watch(None).handler(),
        )
        .route(
            "/api/v1/watch/namespaces/{namespace}/{resource}/{name}",
            Route::watch(None).handler(),
        )
        .route("/apis/discovery.k8s.io/v1/endpointslices", SLICES.handler())
        .route(
            "/apis/discovery.k8s.io/v1/watch/endpointslices",
            SLICE_WATCH.handler(),
        )
        .route(
            "/apis/discovery.k8s.io/v1/watch/namespaces/{namespace}/endpointslices",
            SLICE_WATCH.handler(),
        )
        .route(
            "/apis/discovery.k8s.io/v1/watch/namespaces/{namespace}/endpointslices/{name}",
            SLICE_WATCH.handler(),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            SLICES.handler(),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}",
            Route::get(Some("endpointslices")).discovery().handler(),
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

/// A `metav1.Status` (one a [`Status`] cannot express: causes, a continue token) as a
/// response with its code.
pub(crate) fn meta_status_response(status: &meta::Status) -> Response {
    let code = status
        .code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, status)
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

/// `/readyz`: `ok` once the cluster view (and, with RBAC watchers, the RBAC policy) is
/// complete; until then 500 with the failed checks, as kube-apiserver's health checks answer.
async fn readyz(State(state): State<ApiState>) -> Response {
    let checks = [
        ("cluster-view-synced", state.store.is_synced()),
        ("rbac-policy-synced", state.store.is_rbac_synced()),
    ];
    if checks.iter().all(|(_, ok)| *ok) {
        return ok().await.into_response();
    }
    let mut body = String::from("[+]ping ok\n");
    for (name, ok) in checks {
        body.push_str(&if ok {
            format!("[+]{name} ok\n")
        } else {
            format!("[-]{name} failed: reason withheld\n")
        });
    }
    body.push_str("readyz check failed\n");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn serve_metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render()
            + &metrics::endpoint_health(&state.store.snapshot(), &state.balancer)
            + &format!(
                "# HELP kube_bastion_watches Watches being served now.\n\
                 # TYPE kube_bastion_watches gauge\nkube_bastion_watches {}\n",
                state.store.hub().watchers()
            )
            + &state
                .store
                .live()
                .map(|live| crate::live::render_metrics(&live.stats()))
                .unwrap_or_default(),
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

/// Seconds since the epoch (for Age cells).
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
