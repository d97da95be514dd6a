//! Backends, a proxy and clients for the balancing tests.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube_bastion::{Balancer, ServiceKey};
use kube_bastion::{DestinationPolicy, MemoryCluster, PeerAddr, ProxyConfig, ProxyService};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestBody = BoxBody<Bytes, BoxError>;

pub(crate) const NS: &str = "shop";
pub(crate) const SERVICE: &str = "web";

/// The key the balancer keeps the test Service's state under.
pub(crate) fn service_key() -> ServiceKey {
    ServiceKey::new(NS, SERVICE, "http")
}

fn body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A backend that answers `200` with its name after `delay`, counting requests.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Backend {
    pub(crate) async fn start(name: &str, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, name, delay)
    }

    /// Starts on `port` (a port that was closed until now).
    pub(crate) async fn start_on(port: u16, name: &str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        Self::on(listener, name, Duration::ZERO)
    }

    fn on(listener: TcpListener, name: &str, delay: Duration) -> Self {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (counter, name) = (hits.clone(), Bytes::from(name.to_owned()));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (counter, name) = (counter.clone(), name.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (counter, name) = (counter.clone(), name.clone());
                        async move {
                            let _ = req.into_body().collect().await;
                            counter.fetch_add(1, Ordering::SeqCst);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(Response::new(body(name)))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, hits }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A port on 127.0.0.1 where nothing listens (connections are refused).
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A backend that reads each request and closes the connection without answering (the
/// exchange breaks after the request left, before a response head). Counts requests.
pub(crate) async fn hanging_up_backend() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                // Closing with unread data (the body) makes the kernel send a reset.
            });
        }
    });
    (port, seen)
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
    for (i, port) in ports.iter().enumerate() {
        let pod = format!("web-{i}");
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {NS}\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  phase: Running\n  podIP: 127.0.0.1\n  podIPs:\n  - ip: 127.0.0.1\n"
        ));
        let (ready, terminating) = if spec.terminating.contains(port) {
            (false, true)
        } else {
            (true, false)
        };
        docs.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {SERVICE}-{i}\n  namespace: {NS}\n  labels:\n    kubernetes.io/service-name: {SERVICE}\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions:\n    ready: {ready}\n    serving: true\n    terminating: {terminating}\n  targetRef:\n    kind: Pod\n    name: {pod}\n    namespace: {NS}\nports:\n- name: http\n  port: {port}\n  protocol: TCP\n"
        ));
    }
    Arc::new(MemoryCluster::from_yaml(&docs.join("---\n")).expect("valid cluster YAML"))
}

/// Serves the proxy over `cluster` with `balancer` (loopback allowed), inserting each
/// connection's peer address.
pub(crate) async fn proxy(cluster: Arc<MemoryCluster>, balancer: &Balancer) -> SocketAddr {
    let config = ProxyConfig::builder(cluster)
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .connect_timeout(Duration::from_secs(5))
        .balancer(balancer.clone())
        .build()
        .expect("proxy config");
    let svc = ProxyService::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let mut svc = svc.clone();
                    async move { tower::Service::call(&mut svc, req).await }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper_svc)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/1.1 client whose connections come from `from`.
pub(crate) fn client_from(from: IpAddr) -> Client<HttpConnector, TestBody> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A client from 127.0.0.1.
pub(crate) fn client() -> Client<HttpConnector, TestBody> {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
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
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not a Status ({e}): {}", self.body));
        (
            v["code"].as_u64().unwrap_or_default(),
            v["reason"].as_str().map(str::to_owned),
            v["message"].as_str().unwrap_or_default().to_owned(),
        )
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
        .body(body(payload))
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
