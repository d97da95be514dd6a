//! The balancing tests' own pieces: the Service `shop/web` with one pod per loopback
//! endpoint, backends that name themselves or hang up, and calls through the proxy. The
//! loopback harness itself is `tests/support`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use kube_bastion::{Balancer, MemoryCluster, ServiceKey};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::net::{TestBody, accept_each, backend_on, full, listener, serve_proxy};
use crate::support::objects::{self, Conditions, config_for, endpoint_slice_yaml, pod_yaml};
use crate::support::status::status_of;

pub(crate) use crate::support::net::{client, client_from, closed_port};

pub(crate) const NS: &str = "shop";
pub(crate) const SERVICE: &str = "web";

/// The key the balancer keeps the test Service's state under.
pub(crate) fn service_key() -> ServiceKey {
    ServiceKey::new(NS, SERVICE, "http")
}

/// A backend that answers `200` with its name after `delay`, counting requests.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Backend {
    pub(crate) async fn start(name: &str, delay: Duration) -> Self {
        Self::on(listener().await, name, delay)
    }

    /// Starts on `port` (a port that was closed until now).
    pub(crate) async fn start_on(port: u16, name: &str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        Self::on(listener, name, Duration::ZERO)
    }

    fn on(listener: TcpListener, name: &str, delay: Duration) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let (counter, name) = (hits.clone(), Bytes::from(name.to_owned()));
        let addr = backend_on(listener, None, move |req: Request<Incoming>| {
            let (counter, name) = (counter.clone(), name.clone());
            async move {
                let _ = req.into_body().collect().await;
                counter.fetch_add(1, Ordering::SeqCst);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Response::new(full(name))
            }
        });
        Self { addr, hits }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A backend that reads each request and closes the connection without answering (the
/// exchange breaks after the request left, before a response head). Counts requests.
pub(crate) async fn hanging_up_backend() -> (u16, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let addr = accept_each(None, move |mut io, _| {
        let counter = counter.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            // Closing with unread data (the body) makes the kernel send a reset.
        }
    })
    .await;
    (addr.port(), seen)
}

/// How the test Service looks.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceSpec {
    /// `kube-bastion.io/balancer`.
    pub(crate) balancer: Option<&'static str>,
    /// `sessionAffinity: ClientIP` with this timeout.
    pub(crate) client_ip_timeout: Option<u32>,
    /// Endpoints (ports on 127.0.0.1) that are serving but terminating.
    pub(crate) terminating: Vec<u16>,
}

/// The cluster: one pod per endpoint port (all on 127.0.0.1) and the Service `shop/web`
/// (port `http`) with one EndpointSlice per endpoint.
pub(crate) fn cluster(ports: &[u16], spec: &ServiceSpec) -> Arc<MemoryCluster> {
    let mut docs = Vec::new();
    let annotations = spec
        .balancer
        .map(|b| format!("  annotations:\n    kube-bastion.io/balancer: {b}\n"))
        .unwrap_or_default();
    let affinity = spec
        .client_ip_timeout
        .map(|t| {
            format!(
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {t}\n"
            )
        })
        .unwrap_or_default();
    docs.push(format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {NS}\n{annotations}spec:\n  ports:\n  - name: http\n    port: 80\n{affinity}"
    ));
    for (i, &port) in ports.iter().enumerate() {
        let pod = format!("web-{i}");
        docs.push(pod_yaml(NS, &pod, "127.0.0.1"));
        let terminating = spec.terminating.contains(&port);
        docs.push(endpoint_slice_yaml(
            NS,
            SERVICE,
            i,
            (&pod, "127.0.0.1", port),
            None,
            Conditions::Serving { terminating },
        ));
    }
    objects::cluster(&docs)
}

/// Serves the proxy over `cluster` with `balancer` (loopback allowed), inserting each
/// connection's peer address.
pub(crate) async fn proxy(cluster: Arc<MemoryCluster>, balancer: &Balancer) -> SocketAddr {
    let config = config_for(cluster)
        .balancer(balancer.clone())
        .build()
        .expect("proxy config");
    serve_proxy(config).await
}

/// What the proxy answered: status and body.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

impl Answer {
    /// The Status body's `(code, reason, message)`.
    pub(crate) fn status_body(&self) -> (u64, Option<String>, String) {
        status_of(self.body.as_bytes())
    }
}

/// Sends `method` with `payload` to `/api/v1/namespaces/shop/services/web:http/proxy/`.
pub(crate) async fn call(
    client: &Client<HttpConnector, TestBody>,
    proxy: SocketAddr,
    method: Method,
    payload: &'static str,
) -> Answer {
    let uri = format!("http://{proxy}/api/v1/namespaces/{NS}/services/{SERVICE}:http/proxy/");
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(full(payload))
        .unwrap();
    let res = client.request(req).await.expect("the proxy answers");
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("a complete body")
        .to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET` through the proxy.
pub(crate) async fn get(client: &Client<HttpConnector, TestBody>, proxy: SocketAddr) -> Answer {
    call(client, proxy, Method::GET, "").await
}

/// The address of the endpoint on `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}
