//! The README's embedding example: an axum apiserver with the kube-bastion proxy layer in
//! front of its own routes.
//!
//! `cargo run -p kube-bastion-server --example embed -- cluster.yaml` serves the proxy
//! subresources for the objects in `cluster.yaml` on 127.0.0.1:8080.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::{Router, routing::get};
use kube_bastion::{DestinationPolicy, MemoryCluster, ProxyConfig, ProxyLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cluster.yaml".to_owned());

    // Any ClusterSource works; MemoryCluster loads `kubectl get -o yaml` output and can be
    // replaced atomically while requests are in flight.
    let cluster = Arc::new(MemoryCluster::from_yaml(&std::fs::read_to_string(path)?)?);
    let proxy = ProxyConfig::builder(cluster)
        .destination_policy(DestinationPolicy::kube_default())
        .build()?;

    // Your apiserver's own routes; the layer answers the proxy subresources in front of them
    // and passes every other request through untouched.
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(ProxyLayer::new(proxy));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
