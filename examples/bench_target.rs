//! A minimal proxy process for external load generators: `ProxyService` served by hyper on
//! one thread, with pod `default/origin` at 127.0.0.1 (loopback admitted).
//!
//! ```sh
//! cargo run --release --example bench_target -- 127.0.0.1:18083
//! # then: GET http://127.0.0.1:18083/api/v1/namespaces/default/pods/origin:18080/proxy/small
//! ```
//!
//! The peer harness (`docs/benchmarks.md`) starts it with
//! `TARGET_CMD_ours='target/release/examples/bench_target 127.0.0.1:18083'`.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube_bastion::{DestinationPolicy, MemoryCluster, PeerAddr, ProxyConfig, ProxyService};
use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:18083")
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let cluster = Arc::new(MemoryCluster::from_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: origin\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  podIP: 127.0.0.1\n",
        )?);
        let config = ProxyConfig::builder(cluster)
            .destination_policy(DestinationPolicy::kube_default().allow_loopback())
            .build()?;
        let service = ProxyService::new(config);
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (tcp, peer) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let service = service.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    tower::ServiceExt::oneshot(service.clone(), req)
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    })
}
