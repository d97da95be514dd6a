//! The tower face: [`ProxyLayer`], [`Proxy`] and [`ProxyService`].
//!
//! * [`ProxyLayer`] wraps an inner service into a [`Proxy`]: proxy routes
//!   (`/api/v1/namespaces/{ns}/{pods,services}/{id}/proxy...`, `/api/v1/nodes/{id}/proxy...`)
//!   are handled, every other request goes to the inner service untouched.
//! * [`ProxyService`] stands alone and answers non-proxy paths with a 404 Status.
//!
//! Both are `Clone + Send + Sync + 'static` and generic over the request body, so they mount
//! in axum 0.8 with `Router::layer`, `route_service`, `nest_service` and
//! `fallback_service`. With `nest_service` axum strips the nesting prefix from the URI: set
//! [`ProxyConfigBuilder::original_uri`](crate::config::ProxyConfigBuilder::original_uri) so
//! the proxy routes on axum's `OriginalUri`.
//!
//! ```
//! use std::sync::Arc;
//! use kube_bastion::{MemoryCluster, ProxyConfig, ProxyLayer};
//! use tower::ServiceBuilder;
//!
//! let config = ProxyConfig::builder(Arc::new(MemoryCluster::new())).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(ProxyLayer::new(config))
//!     .service(tower::service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("not a proxy path")))
//!     }));
//! # let _ = svc;
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ProxyBody;
use crate::config::ProxyConfig;
use crate::forward::{self, status_response};
use crate::transport::BoxError;
use crate::{ProxyRequest, Route, Status};

type ProxyFuture = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// Where a request goes.
// A transient value moved once per request: boxing the request would cost an allocation
// on every pass-through request.
#[allow(clippy::large_enum_variant)]
enum Dispatch<B> {
    /// A proxy route: the pipeline future.
    Proxy(ProxyFuture),
    /// Not a proxy route: the request, untouched.
    Other(Request<B>),
}

/// Routes `req` on the configured routing URI.
fn dispatch<B>(config: &ProxyConfig, req: Request<B>) -> Dispatch<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let route = {
        let uri = config.routing_uri(&parts);
        ProxyRequest::route(&parts.method, &uri, &parts.headers)
    };
    match route {
        Route::NotProxy => Dispatch::Other(Request::from_parts(parts, body)),
        Route::Proxy(preq) => {
            let req = Request::from_parts(parts, body);
            Dispatch::Proxy(Box::pin(forward::proxy(config.clone(), req, preq)))
        }
    }
}

/// A [`tower_layer::Layer`] that puts the proxy in front of a service. Holds only the
/// configuration.
#[derive(Clone, Debug)]
pub struct ProxyLayer {
    config: ProxyConfig,
}

impl ProxyLayer {
    /// A layer with this configuration.
    pub fn new(config: ProxyConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for ProxyLayer {
    type Service = Proxy<S>;

    fn layer(&self, inner: S) -> Proxy<S> {
        Proxy {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The proxy in front of `S`: proxy routes are answered here, everything else goes to `S`
/// untouched. `poll_ready` delegates to `S`.
#[derive(Clone, Debug)]
pub struct Proxy<S> {
    inner: S,
    config: ProxyConfig,
}

impl<S> Proxy<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: ProxyConfig) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
}

impl<S, B, ResBody> Service<Request<B>> for Proxy<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match dispatch(&self.config, req) {
            Dispatch::Proxy(fut) => ResponseFuture {
                kind: FutureKind::Proxy { fut },
            },
            Dispatch::Other(req) => ResponseFuture {
                kind: FutureKind::Inner {
                    fut: self.inner.call(req),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`Proxy`]: the inner service's future, or the proxy pipeline.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Inner { #[pin] fut: F },
        Proxy { fut: ProxyFuture },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            FutureKind::Inner { .. } => "Inner",
            FutureKind::Proxy { .. } => "Proxy",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { fut } => fut.poll(cx).map_ok(|res| {
                res.map(|body| ResponseBody {
                    kind: BodyKind::Inner { body },
                })
            }),
            FutureKindProj::Proxy { fut } => fut.as_mut().poll(cx).map(|res| {
                Ok(res.map(|body| ResponseBody {
                    kind: BodyKind::Proxy { body },
                }))
            }),
        }
    }
}

pin_project! {
    /// The response body of [`Proxy`]: the inner service's body or a [`ProxyBody`].
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Proxy { body: ProxyBody },
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            BodyKind::Proxy { body } => f.debug_tuple("ResponseBody::Proxy").field(body).finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyKindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(Into::into))),
            BodyKindProj::Proxy { body } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Proxy { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Proxy { body } => body.size_hint(),
        }
    }
}

/// The proxy as a standalone service: proxy routes are handled, anything else is answered
/// `404` with a Status (`the server could not find the requested resource`).
#[derive(Clone, Debug)]
pub struct ProxyService {
    config: ProxyConfig,
}

impl ProxyService {
    /// A service with this configuration.
    pub fn new(config: ProxyConfig) -> Self {
        Self { config }
    }
}

impl<B> Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ServiceFuture {
        match dispatch(&self.config, req) {
            Dispatch::Proxy(fut) => ServiceFuture {
                kind: ServiceKind::Proxy(fut),
            },
            Dispatch::Other(_) => {
                let status = Status::new(
                    404,
                    Some("NotFound"),
                    "the server could not find the requested resource",
                );
                ServiceFuture {
                    kind: ServiceKind::Ready(Some(Box::new(status_response(&status)))),
                }
            }
        }
    }
}

/// The response future of [`ProxyService`].
pub struct ServiceFuture {
    kind: ServiceKind,
}

enum ServiceKind {
    /// Boxed: rare (non-proxy paths), and it keeps the future small.
    Ready(Option<Box<Response<ProxyBody>>>),
    Proxy(ProxyFuture),
}

impl fmt::Debug for ServiceFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ServiceKind::Ready(_) => "Ready",
            ServiceKind::Proxy(_) => "Proxy",
        };
        f.debug_struct("ServiceFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl Future for ServiceFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            ServiceKind::Ready(res) => Poll::Ready(Ok(res.take().map_or_else(
                || status_response(&Status::internal("polled after completion")),
                |res| *res,
            ))),
            ServiceKind::Proxy(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}
