//! Loopback networking: listeners and backends on 127.0.0.1 (plain or TLS), closed ports,
//! the proxy served by hyper, and hyper clients with the tests' boxed body type.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube_bastion::{PeerAddr, ProxyConfig, ProxyService};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::tls::TlsIdentity;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestBody = BoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub(crate) fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A listener on a fresh port of 127.0.0.1.
pub(crate) async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A port on 127.0.0.1 where nothing listens (connections are refused): bound, then
/// released.
pub(crate) async fn closed_port() -> u16 {
    listener().await.local_addr().unwrap().port()
}

/// A stream that is plain TCP or TLS, for backends that serve both.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What [`accept_on`] knows of a connection it accepted.
#[derive(Clone, Debug)]
pub(crate) struct Accepted {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The ALPN protocol negotiated, over TLS.
    pub(crate) alpn: Option<Vec<u8>>,
}

/// Accepts connections on `listener` (TLS-terminated when `tls` is given, `TCP_NODELAY`
/// set) and hands each to `handle`.
pub(crate) fn accept_on<F, Fut>(
    listener: TcpListener,
    tls: Option<&TlsIdentity>,
    handle: F,
) -> SocketAddr
where
    F: Fn(Box<dyn Io>, Accepted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(TlsIdentity::acceptor);
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => handle(Box::new(tcp), Accepted { peer, alpn: None }).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        handle(Box::new(tls), Accepted { peer, alpn }).await;
                    }
                }
            });
        }
    });
    addr
}

/// [`accept_on`] a fresh port of 127.0.0.1.
pub(crate) async fn accept_each<F, Fut>(tls: Option<&TlsIdentity>, handle: F) -> SocketAddr
where
    F: Fn(Box<dyn Io>, Accepted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_on(listener().await, tls, handle)
}

/// A backend on `listener` answering with `handler`: HTTP/1.1 and h2c (prior knowledge), or
/// with `tls` TLS (ALPN h2 and http/1.1).
pub(crate) fn backend_on<H, Fut>(
    listener: TcpListener,
    tls: Option<&TlsIdentity>,
    handler: H,
) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    accept_on(listener, tls, move |io, _| {
        let handler = handler.clone();
        async move {
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc)
                .await;
        }
    })
}

/// [`backend_on`] a fresh port of 127.0.0.1.
pub(crate) async fn backend_with<H, Fut>(tls: Option<&TlsIdentity>, handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    backend_on(listener().await, tls, handler)
}

/// Serves any tower service (the proxy, an axum router) on 127.0.0.1 with hyper's auto
/// (HTTP/1.1 + h2c) server, upgrades enabled, inserting [`PeerAddr`] into every request.
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
    accept_each(None, move |io, Accepted { peer, .. }| {
        let svc = svc.clone();
        async move {
            let hyper_svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let mut svc = svc.clone();
                async move {
                    let res = tower::Service::call(&mut svc, req).await?;
                    Ok::<_, Infallible>(res.map(|b| b.map_err(Into::into).boxed_unsync()))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(io), hyper_svc)
                .await;
        }
    })
    .await
}

/// Serves a [`ProxyService`] built from `config` (see [`serve`]).
pub(crate) async fn serve_proxy(config: ProxyConfig) -> SocketAddr {
    serve(ProxyService::new(config)).await
}

/// A connector with `TCP_NODELAY` set.
fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// An HTTP/1.1 client (default pool).
pub(crate) fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(connector())
}

/// An HTTP/1.1 client whose connections come from `from` (another loopback address).
pub(crate) fn client_from(from: IpAddr) -> Client<HttpConnector, TestBody> {
    let mut connector = connector();
    connector.set_local_address(Some(from));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// An HTTP/2 prior-knowledge client.
pub(crate) fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector())
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
