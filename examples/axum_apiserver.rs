//! A tiny custom apiserver in axum with kube-bastion mounted as a layer.
//!
//! It starts a demo backend ("the pod") on a loopback port, describes it as a Pod in an
//! in-memory cluster, and serves an axum router where:
//!
//! * `/healthz` is an ordinary route of the host;
//! * every `.../proxy/...` path goes through [`ProxyLayer`];
//! * a small authentication middleware puts the user into the request extensions, and the
//!   authorizer lets `alice` `get` pods/proxy and nothing else;
//! * axum's `ConnectInfo` provides the client address for `X-Forwarded-For`.
//!
//! ```sh
//! cargo run --example axum_apiserver            # serves until interrupted
//! cargo run --example axum_apiserver -- --once  # one request through the proxy, then exits
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_bastion::{Decision, authorize_fn};
use kube_bastion::{DestinationPolicy, MemoryCluster, ProxyConfig, ProxyLayer};
use tokio::net::TcpListener;

/// The authenticated user, as the host's authentication would record it.
#[derive(Clone, Debug)]
struct User(String);

/// Demo authentication: the user named by the `X-Demo-User` header (never do this for real:
/// use client certificates or bearer tokens). The proxy strips nothing it does not know, so
/// this header is also listed in `strip_header` below.
async fn authenticate(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get("x-demo-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("system:anonymous")
        .to_owned();
    req.extensions_mut().insert(User(user));
    next.run(req).await
}

/// The demo pod: answers every request with what it saw.
async fn start_pod() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the demo pod");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let text = format!(
                            "hello from the pod: {} {} (x-forwarded-for: {:?}, x-forwarded-uri: {:?})\n",
                            req.method(),
                            req.uri(),
                            req.headers().get("x-forwarded-for"),
                            req.headers().get("x-forwarded-uri"),
                        );
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let pod = start_pod().await;

    let cluster = Arc::new(MemoryCluster::from_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\n  namespace: default\nspec:\n  containers:\n  - name: web\n    image: demo\nstatus:\n  podIP: 127.0.0.1\n",
    )?);
    let config = ProxyConfig::builder(cluster)
        // The demo pod lives on loopback, which the kube rule refuses: admit it explicitly.
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .authorizer(authorize_fn(|attrs, parts| {
            let user = parts
                .extensions
                .get::<User>()
                .map_or("system:anonymous", |u| u.0.as_str());
            if user == "alice" && attrs.verb == "get" {
                Decision::Allow
            } else {
                Decision::deny(user, "")
            }
        }))
        .peer_addr(|parts| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
        .strip_header(http::HeaderName::from_static("x-demo-user"))
        .build()?;

    // Layers run outside-in: authentication first, then the proxy, then the routes.
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .layer(ProxyLayer::new(config))
        .layer(middleware::from_fn(authenticate));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let path = format!(
        "/api/v1/namespaces/default/pods/demo:{}/proxy/hello?x=1",
        pod.port()
    );
    println!("apiserver on http://{addr}");
    println!("try: curl -H 'X-Demo-User: alice' 'http://{addr}{path}'");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    if once {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::get(format!("http://{addr}{path}"))
            .header("x-demo-user", "alice")
            .body(Empty::new())?;
        let res = client.request(req).await?;
        println!("{}", res.status());
        print!(
            "{}",
            String::from_utf8_lossy(&res.into_body().collect().await?.to_bytes())
        );
        return Ok(());
    }
    server.await??;
    Ok(())
}
