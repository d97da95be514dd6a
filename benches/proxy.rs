//! End-to-end forwarding overhead: one small `GET` (100-byte answer) sent directly to a
//! hyper origin, and the same request sent through the proxy (`ProxyService` served by
//! hyper, pods/proxy to the same origin), over real loopback sockets with keep-alive
//! connections on both hops. Client, proxy and origin share one current-thread runtime, so
//! the difference between the two medians is the proxy's whole cost per request (routing,
//! authorization, resolution, header rules, the pooled backend exchange and the second
//! loopback round trip).
//!
//! `cargo bench --locked --bench proxy -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_bastion::{DestinationPolicy, MemoryCluster, PeerAddr, ProxyConfig, ProxyService};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

const SMALL: &[u8] = &[b'x'; 100];

async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(SMALL))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn proxy() -> SocketAddr {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: origin\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  podIP: 127.0.0.1\n";
    let cluster = Arc::new(MemoryCluster::from_yaml(yaml).unwrap());
    let config = ProxyConfig::builder(cluster)
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .build()
        .unwrap();
    let service = ProxyService::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    tower::ServiceExt::oneshot(service.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn get(client: &Client<HttpConnector, Empty<Bytes>>, uri: &http::Uri) {
    let res = client.get(uri.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), SMALL.len());
}

fn bench_proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (origin, proxy) = rt.block_on(async {
        let origin = origin().await;
        (origin, proxy().await)
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let direct: http::Uri = format!("http://{origin}/small").parse().unwrap();
    let proxied: http::Uri = format!(
        "http://{proxy}/api/v1/namespaces/default/pods/origin:{}/proxy/small",
        origin.port()
    )
    .parse()
    .unwrap();

    let mut group = c.benchmark_group("small_get");
    group.bench_function("direct", |b| b.iter(|| block(&rt, get(&client, &direct))));
    group.bench_function("proxied", |b| b.iter(|| block(&rt, get(&client, &proxied))));
    group.finish();
}

fn block<F: std::future::Future>(rt: &Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

criterion_group!(benches, bench_proxy);
criterion_main!(benches);
