//! Real loopback servers and clients for the engine tests: hyper backends (plain, TLS with
//! rcgen certificates, HTTP/1.1 and HTTP/2), the proxy served by hyper, and clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube_bastion::{
    DestinationPolicy, MemoryCluster, PeerAddr, ProxyConfig, ProxyConfigBuilder, ProxyService,
};
use tokio::net::TcpListener;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestBody = BoxBody<Bytes, BoxError>;

pub(crate) fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub(crate) fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Requests seen by a backend, in arrival order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    pub(crate) fn last(&self) -> Seen {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend saw a request")
    }
    pub(crate) fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn accept_loop<S, F>(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, make: F)
where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<TestBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let make = Arc::new(make);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let make = make.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = make(peer);
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

/// A backend answering with `handler`, on 127.0.0.1, HTTP/1.1 and h2c (prior knowledge),
/// optionally TLS (ALPN h2 and http/1.1).
pub(crate) async fn backend_with<H, Fut>(tls: Option<&TlsIdentity>, handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|t| t.acceptor());
    tokio::spawn(accept_loop(listener, acceptor, move |_peer| {
        let handler = handler.clone();
        service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        })
    }));
    addr
}

/// A plain backend that records every request (body collected) and answers `200 ok`
/// with `X-Backend-Version` set to the HTTP version it saw.
pub(crate) async fn recording_backend(tls: Option<&TlsIdentity>) -> (SocketAddr, Recorder) {
    let rec = Recorder::default();
    let r = rec.clone();
    let addr = backend_with(tls, move |req: Request<Incoming>| {
        let r = r.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let version = format!("{:?}", parts.version);
            r.0.lock().unwrap().push(Seen {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
                body,
            });
            let mut res = Response::new(full("ok"));
            res.headers_mut()
                .insert("x-backend-version", version.parse().unwrap());
            res
        }
    })
    .await;
    (addr, rec)
}

/// A port on 127.0.0.1 where nothing listens.
pub(crate) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Serves any tower service (the proxy, an axum router) on 127.0.0.1 with hyper's auto
/// (HTTP/1.1 + h2c) server, inserting [`PeerAddr`] into every request.
pub(crate) async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
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
                    async move {
                        let res = tower::Service::call(&mut svc, req).await?;
                        Ok::<_, Infallible>(res.map(|b| b.map_err(Into::into).boxed_unsync()))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), hyper_svc)
                    .await;
            });
        }
    });
    addr
}

/// Serves a [`ProxyService`] built from `config`.
pub(crate) async fn serve_proxy(config: ProxyConfig) -> SocketAddr {
    serve(ProxyService::new(config)).await
}

/// An HTTP/1.1 client (no pooling surprises: default pool).
pub(crate) fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge client.
pub(crate) fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` and collects the answer: status, headers, body.
pub(crate) async fn send(req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
    let res = client().request(req).await.expect("the proxy answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("complete body").to_bytes();
    (parts.status, parts.headers, body)
}

/// `GET http://{proxy}{path}`.
pub(crate) async fn get(proxy: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(
        Request::get(format!("http://{proxy}{path}"))
            .body(empty())
            .unwrap(),
    )
    .await
}

/// Parses a Status body: (code, reason, message).
pub(crate) fn status_of(body: &[u8]) -> (u64, Option<String>, String) {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(v["kind"], "Status", "{v}");
    (
        v["code"].as_u64().unwrap(),
        v["reason"].as_str().map(str::to_owned),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A pod `ns/name` with IP `ip` (and no declared ports).
pub(crate) fn pod_yaml(ns: &str, name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"
    )
}

/// A Service `ns/name` with one port (`port`, named `http`, optional appProtocol) whose
/// Endpoints list `endpoints` (pod name, IP, target port).
pub(crate) fn service_yaml(
    ns: &str,
    name: &str,
    port: u16,
    app_protocol: Option<&str>,
    endpoints: &[(&str, &str, u16)],
) -> String {
    let app = app_protocol
        .map(|a| format!("    appProtocol: {a}\n"))
        .unwrap_or_default();
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: {port}\n{app}"
    );
    for (i, (pod, ip, target)) in endpoints.iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- addresses: [\"{ip}\"]\n  conditions:\n    ready: true\n  targetRef:\n    kind: Pod\n    name: {pod}\n    namespace: {ns}\nports:\n- name: http\n  port: {target}\n  protocol: TCP\n{}",
            app_protocol.map(|a| format!("  appProtocol: {a}\n")).unwrap_or_default()
        ));
    }
    y
}

/// A cluster from YAML documents joined with `---`.
pub(crate) fn cluster(docs: &[String]) -> Arc<MemoryCluster> {
    Arc::new(MemoryCluster::from_yaml(&docs.join("---\n")).expect("valid cluster YAML"))
}

/// A builder over `docs` with loopback admitted and short timeouts.
pub(crate) fn config(docs: &[String]) -> ProxyConfigBuilder {
    ProxyConfig::builder(cluster(docs))
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .connect_timeout(Duration::from_secs(5))
}

/// The proxy path of pod `ns/name` on `port` plus `rest`.
pub(crate) fn pod_path(ns: &str, name: &str, port: u16, rest: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy{rest}")
}

/// A self-signed certificate (rcgen) for `names`, with rustls server and client pieces.
pub(crate) struct TlsIdentity {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_der: rustls_pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
    /// When set, the server requires a client certificate signed by this one.
    pub(crate) client_ca: Option<rustls_pki_types::CertificateDer<'static>>,
}

impl TlsIdentity {
    pub(crate) fn new(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            cert_der: ck.cert.der().clone(),
            key_der: ck.signing_key.serialize_der(),
            client_ca: None,
        }
    }

    pub(crate) fn requiring_client_cert(mut self, ca: &TlsIdentity) -> Self {
        self.client_ca = Some(ca.cert_der.clone());
        self
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = rustls_pki_types::PrivateKeyDer::try_from(self.key_der.clone()).unwrap();
        let mut config = builder
            .with_single_cert(vec![self.cert_der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// Resident memory of this process in KiB (`VmRSS` in `/proc/self/status`).
pub(crate) fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
