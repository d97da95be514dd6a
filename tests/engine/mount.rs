//! The four ways to mount the proxy in axum 0.8: `Router::layer`, `route_service`,
//! `nest_service` (with the original URI) and `fallback_service` (served by `axum::serve`
//! with `ConnectInfo` as the peer address).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, OriginalUri};
use axum::routing::get as get_route;
use http::StatusCode;
use kube_bastion::{ProxyLayer, ProxyService};

use crate::harness::*;

#[tokio::test]
async fn router_layer_handles_proxy_routes_and_passes_the_rest() {
    let (backend, rec) = recording_backend(None).await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .build()
        .unwrap();
    let app: Router = Router::new()
        .route("/healthz", get_route(|| async { "healthy" }))
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get_route(|| async { "pod list" }),
        )
        .layer(ProxyLayer::new(config));
    let addr = serve(app).await;

    let (status, _, body) = get(addr, "/healthz").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"healthy"[..]));
    let (status, _, body) = get(addr, "/api/v1/namespaces/ns/pods").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"pod list"[..]));
    assert_eq!(rec.count(), 0);

    let (status, _, body) = get(addr, &pod_path("ns", "web", backend.port(), "/via-layer")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(rec.last().uri.path(), "/via-layer");
    assert_eq!(get(addr, "/nothing-here").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn route_service_on_the_proxy_routes() {
    let (backend, rec) = recording_backend(None).await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .build()
        .unwrap();
    let proxy = ProxyService::new(config);
    let app: Router = Router::new()
        .route_service("/api/v1/namespaces/{ns}/pods/{id}/proxy", proxy.clone())
        .route_service("/api/v1/namespaces/{ns}/pods/{id}/proxy/{*rest}", proxy);
    let addr = serve(app).await;
    let (status, _, _) = get(addr, &pod_path("ns", "web", backend.port(), "/a/b?c=d")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rec.last().uri.path_and_query().unwrap().as_str(),
        "/a/b?c=d"
    );
    let (status, headers, _) = get(addr, &pod_path("ns", "web", backend.port(), "")).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert!(headers["location"].to_str().unwrap().ends_with("/proxy/"));
}

#[tokio::test]
async fn nest_service_routes_on_the_original_uri() {
    let (backend, rec) = recording_backend(None).await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .original_uri(|parts| parts.extensions.get::<OriginalUri>().map(|o| o.0.clone()))
        .build()
        .unwrap();
    let app: Router = Router::new().nest_service("/api", ProxyService::new(config));
    let addr = serve(app).await;
    let (status, _, body) = get(addr, &pod_path("ns", "web", backend.port(), "/nested")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rec.last().uri.path(), "/nested");
    // X-Forwarded-Uri names the full path the client used, not the stripped one.
    assert_eq!(
        rec.last().headers["x-forwarded-uri"],
        pod_path("ns", "web", backend.port(), "/nested").as_str()
    );
}

#[tokio::test]
async fn fallback_service_with_connect_info_as_peer() {
    let (backend, rec) = recording_backend(None).await;
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .peer_addr(|parts| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
        .build()
        .unwrap();
    let app = Router::new()
        .route("/version", get_route(|| async { "v1" }))
        .fallback_service(ProxyService::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let (status, _, body) = get(addr, "/version").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"v1"[..]));
    let (status, _, _) = get(addr, &pod_path("ns", "web", backend.port(), "/fallback")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec.last().uri.path(), "/fallback");
    assert_eq!(rec.last().headers["x-forwarded-for"], "127.0.0.1");
    let (status, _, body) = get(addr, "/apis/unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&body).0, 404);
}
