//! The request pipeline of one proxy request, and the hook points of the balancing,
//! upgrade and rewriting modules.
//!
//! Order (each step's failure is a [`Status`] and ends the request):
//!
//! 1. route (done by the [`layer`](crate::layer), which hands a [`ProxyRequest`] here);
//! 2. authorize: the [`Authorizer`](crate::Authorizer) with the request's
//!    [`Attributes`] (and verb `create` for upgrades when configured);
//!    a denial is kube-apiserver's 403;
//! 3. [`ProxyRequest::check`] (405, `dryRun`), [`ProxyRequest::target_id`] (400);
//! 4. [`resolve()`] against one cluster view → [`Target`];
//! 5. destination checks: candidate names are resolved **once** with tokio, every address
//!    judged by [`DestinationPolicy::check_resolved`](crate::DestinationPolicy::check_resolved),
//!    and only the checked addresses become [`ApprovedEndpoint`]s (CVE-2020-8562);
//! 6. upgrades go to the upgrade hook; other requests follow [`ProxyRequest::plan`]: a 301,
//!    or
//! 7. forwarding: headers prepared ([`crate::headers`]), the body streamed over the pooled
//!    client of the target's transport, endpoints tried in the balancer's order with
//!    failover on connect failure while no body byte has left;
//! 8. the response head's hop-by-hop and CORS headers removed, the rewrite hook applied,
//!    the body streamed back with an idle timeout ([`ProxyBody`]).

mod redirect;
mod upgrade;

use std::fmt;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::balance::FailureKind;
use crate::body::ProxyBody;
use crate::config::ProxyConfig;
use crate::context::{ApprovedEndpoint, ProxyContext, approve};
use crate::headers::{self, HostHeader};
use crate::transport::{BoxError, ConnectError, RequestBody, SendFailure};
use crate::{Attributes, Plan, ProxyRequest, Status, resolve};

/// A `Content-Type: application/json` response carrying `status`.
pub(crate) fn status_response(status: &Status) -> Response<ProxyBody> {
    status.to_response().map(ProxyBody::full)
}

/// Runs the whole pipeline for one routed proxy request, inside a tracing span with
/// resource, namespace, name, chosen endpoint, status and duration.
pub(crate) async fn proxy<B>(
    config: ProxyConfig,
    req: Request<B>,
    preq: ProxyRequest,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // DEBUG, as tower-http's and hyper's per-request spans: at a host's usual INFO level it
    // costs one disabled-callsite check, not a span with seven formatted fields per request.
    let span = tracing::debug_span!(
        "proxy",
        resource = preq.kind().resource(),
        namespace = preq.namespace().unwrap_or(""),
        name = preq.raw_id(),
        method = %preq.method(),
        upgrade = preq.is_upgrade(),
        endpoint = tracing::field::Empty,
        status = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    if span.is_disabled() {
        // No subscriber wants the span: skip the clock reads and the instrumentation.
        let res = match run(config, req, preq).await {
            Ok(res) => res,
            Err(status) => {
                tracing::debug!(message = status.message(), "refused");
                status_response(&status)
            }
        };
        tracing::debug!("response head sent");
        return res;
    }
    let started = Instant::now();
    let res = match run(config, req, preq).instrument(span.clone()).await {
        Ok(res) => res,
        Err(status) => {
            span.in_scope(|| tracing::debug!(message = status.message(), "refused"));
            status_response(&status)
        }
    };
    span.record("status", res.status().as_u16());
    span.record("duration_us", started.elapsed().as_micros() as u64);
    span.in_scope(|| tracing::debug!("response head sent"));
    res
}

async fn authorize(
    config: &ProxyConfig,
    attrs: &Attributes,
    parts: &http::request::Parts,
) -> Result<(), Status> {
    match config.inner.authorizer.authorize(attrs, parts).await {
        crate::Decision::Allow => Ok(()),
        crate::Decision::Deny { user, reason } => Err(attrs.forbidden(&user, &reason)),
        crate::Decision::NoOpinion { reason } => {
            Err(attrs.forbidden(&crate::authorizer::user_name(parts), &reason))
        }
    }
}

async fn run<B>(
    config: ProxyConfig,
    req: Request<B>,
    preq: ProxyRequest,
) -> Result<Response<ProxyBody>, Status>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();

    // 2. authorize (an authorizer that allows everything needs no attributes)
    if !config.inner.allows_everything {
        let attrs = preq.attributes();
        authorize(&config, &attrs, &parts).await?;
        if preq.is_upgrade() && config.upgrades_as_create() && attrs.verb != "create" {
            let create = Attributes {
                verb: "create",
                ..attrs
            };
            authorize(&config, &create, &parts).await?;
        }
    }

    // 3. request checks (`resolve` parses the target id first thing, so its 400 comes
    // before any lookup without parsing it twice here)
    preq.check()?;

    // 4. resolve against one consistent view
    let target = {
        let cluster = config.cluster();
        if !cluster.is_synced() {
            return Err(Status::not_synced());
        }
        let view = cluster.view();
        resolve(&*view, &preq, config.resolve_options())?
    };

    // 5. destination checks
    let resolved = approve(&config, &target).await?;

    // Identity for the backend: only for a Service that asked for it (services/proxy
    // only: a pod or node target has no ServiceInfo).
    let identity = target
        .service
        .as_ref()
        .filter(|s| s.forward_identity)
        .and_then(|_| parts.extensions.get::<crate::UserInfo>().cloned());
    let ctx = ProxyContext {
        peer: config.peer_addr(&parts),
        client_host: headers::client_host(&parts.headers, &parts.uri),
        identity,
        config,
        request: preq,
        target,
        resolved,
    };

    // 6. upgrades, redirects, forwarding
    if ctx.request.is_upgrade() {
        // Boxed: the upgrade future is large and would otherwise size (and be copied with)
        // every ordinary request's future.
        return Box::pin(upgrade::serve(ctx, Request::from_parts(parts, body))).await;
    }
    match ctx.request.plan() {
        Plan::Redirect { location } => {
            let mut res = Response::new(ProxyBody::empty());
            *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let location = HeaderValue::from_str(&location)
                .map_err(|_| Status::internal("invalid redirect location"))?;
            res.headers_mut().insert(header::LOCATION, location);
            Ok(res)
        }
        Plan::Forward {
            path_and_query,
            forwarded_uri,
        } => {
            forward(
                ctx,
                parts.method,
                parts.headers,
                body,
                &path_and_query,
                &forwarded_uri,
            )
            .await
        }
    }
}

/// A response after the rewrite step: ready to send, or an HTML body being rewritten whose
/// first frame must be read before the head goes out ([`first_html_frame`]).
enum Rewritten {
    Ready(Response<ProxyBody>),
    Html(Response<crate::rewrite::RewrittenBody<ProxyBody>>),
}

/// Rewrites `Location` and HTML links of the response back under `ctx.request.prefix()`
/// ([`crate::rewrite`]), when rewriting is on for this request kind. Hop-by-hop and CORS
/// headers are already removed.
fn rewrite(
    ctx: &ProxyContext,
    endpoint: &ApprovedEndpoint,
    parts: http::response::Parts,
    body: ProxyBody,
) -> Result<Rewritten, Status> {
    let options = ctx.config.rewrite_options();
    if !options.is_enabled_for(ctx.request.kind()) || !crate::rewrite::may_rewrite(&parts.headers) {
        return Ok(Rewritten::Ready(Response::from_parts(parts, body)));
    }
    let response = Response::from_parts(parts, body);
    let request_host = ctx
        .backend_host(endpoint)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let rewrite_ctx = crate::rewrite::RewriteContext::for_request(
        &ctx.request,
        ctx.backend_authority(endpoint),
        request_host,
        options.clone(),
    );
    let rewritten = crate::rewrite::rewrite_response(&rewrite_ctx, response)?;
    Ok(if rewritten.body().is_rewriting() {
        Rewritten::Html(rewritten)
    } else {
        Rewritten::Ready(rewritten.map(crate::rewrite::RewrittenBody::into_inner))
    })
}

/// Reads the first frame of a rewritten HTML body before the response head is sent: a body
/// that cannot be decoded or rewritten from its first bytes (a `gzip` label on something
/// that is not gzip) is answered with a 500 Status carrying the error text, as
/// kube-apiserver answers rewrite errors, instead of a head followed by a broken body.
/// Once data has been produced, a later error can only end the body early.
async fn first_html_frame(
    response: Response<crate::rewrite::RewrittenBody<ProxyBody>>,
) -> Result<Response<ProxyBody>, Status> {
    let (parts, mut body) = response.into_parts();
    if let Err(err) = body.first_frame().await {
        tracing::warn!(error = %err, "refusing a response whose body cannot be rewritten");
        return Err(Status::internal(err.to_string()));
    }
    Ok(Response::from_parts(parts, ProxyBody::new(body)))
}

/// The request body as sent to one attempt. With several endpoints the body is kept in a
/// shared slot until the client first polls it, so a connect failure (which never polls
/// the body) lets the next attempt send it.
struct AttemptBody {
    slot: Arc<Mutex<Option<RequestBody>>>,
    taken: Option<RequestBody>,
    end_stream: bool,
    hint: SizeHint,
}

impl fmt::Debug for AttemptBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptBody")
            .field("started", &self.taken.is_some())
            .finish_non_exhaustive()
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            let taken = this.slot.lock().map(|mut s| s.take()).unwrap_or(None);
            match taken {
                Some(b) => this.taken = Some(b),
                None => return Poll::Ready(Some(Err("request body already consumed".into()))),
            }
        }
        match &mut this.taken {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(b) => b.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}

/// The request body across attempts: handed over as is when only one attempt is allowed
/// (no shared slot, no extra body layer), else kept in an [`AttemptBody`] slot.
enum OutgoingBody {
    /// One attempt: the body itself, until it is sent.
    Direct(Option<RequestBody>),
    /// Several attempts may need it.
    Shared {
        slot: Arc<Mutex<Option<RequestBody>>>,
        end_stream: bool,
        hint: SizeHint,
    },
}

impl OutgoingBody {
    fn new(body: RequestBody, replayable: bool) -> Self {
        if !replayable {
            return OutgoingBody::Direct(Some(body));
        }
        OutgoingBody::Shared {
            end_stream: body.is_end_stream(),
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// The body of the next attempt. A direct body is handed out once; a second attempt
    /// would get a body that fails with "request body already consumed", as a shared slot
    /// whose body was taken does.
    fn for_attempt(&mut self) -> RequestBody {
        match self {
            OutgoingBody::Direct(body) => body.take().unwrap_or_else(|| {
                AttemptBody {
                    slot: Arc::new(Mutex::new(None)),
                    taken: None,
                    end_stream: false,
                    hint: SizeHint::default(),
                }
                .boxed_unsync()
            }),
            OutgoingBody::Shared {
                slot,
                end_stream,
                hint,
            } => AttemptBody {
                slot: slot.clone(),
                taken: None,
                end_stream: *end_stream,
                hint: *hint,
            }
            .boxed_unsync(),
        }
    }

    /// Whether no byte of the body has left yet (the body could go to another endpoint).
    fn unsent(&self) -> bool {
        match self {
            OutgoingBody::Direct(body) => body.is_some(),
            OutgoingBody::Shared { slot, .. } => slot.lock().map(|s| s.is_some()).unwrap_or(false),
        }
    }
}

/// Why a backend exchange failed, before the response head.
/// Why one attempt failed; each variant keeps its cause for the logs, and
/// [`SendError::into_status`] gives the client kube-apiserver's message.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("timeout awaiting response headers")]
    Timeout,
    /// The backend's answer is not HTTP.
    #[error("invalid response from backend: {0}")]
    Invalid(#[source] hyper::Error),
    #[error(transparent)]
    Other(hyper::Error),
    #[error("connection closed before the request was sent")]
    Closed,
}

impl SendError {
    fn classify(failure: SendFailure) -> Self {
        match failure {
            SendFailure::Connect(e) => SendError::Connect(e),
            SendFailure::Handshake(e) | SendFailure::Exchange(e) => {
                if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
                    SendError::Invalid(e)
                } else {
                    SendError::Other(e)
                }
            }
            SendFailure::Closed => SendError::Closed,
        }
    }

    /// The Status the client gets: kube-apiserver's `error trying to reach service: ...`
    /// (503, or 504 for a timeout, 502 for an answer that is not HTTP).
    fn into_status(self) -> Status {
        let message = format!("error trying to reach service: {self}");
        match self {
            SendError::Timeout => Status::new(504, Some("Timeout"), message),
            SendError::Invalid(_) => Status::new(502, None, message),
            SendError::Connect(_) | SendError::Other(_) | SendError::Closed => {
                Status::service_unavailable(message)
            }
        }
    }
}

/// The origin-form request target (`/path?query`); the pool turns it into the absolute
/// form for HTTP/2.
fn backend_uri(path_and_query: &str) -> Result<Uri, Status> {
    Uri::from_maybe_shared(Bytes::copy_from_slice(path_and_query.as_bytes()))
        .map_err(|e| Status::internal(format!("invalid backend request target: {e}")))
}

async fn forward<B>(
    ctx: ProxyContext,
    method: Method,
    mut headers: HeaderMap,
    body: B,
    path_and_query: &str,
    forwarded_uri: &str,
) -> Result<Response<ProxyBody>, Status>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let options = ctx.config.headers();
    headers::prepare_request(
        &mut headers,
        options,
        ctx.forwarded(forwarded_uri, &ctx.request.forwarded_prefix()),
        ctx.client_host.clone(),
    );

    let body: RequestBody = body.map_err(Into::into).boxed_unsync();

    let transport = ctx.config.transport();
    let header_timeout = ctx.config.timeouts().response_header;
    let span = tracing::Span::current();

    // Balancing (crate::balance): candidates in the balancer's order, each attempt
    // accounted on its endpoint until the response body ends.
    let mut attempts = ctx.config.balancer().plan(&ctx.target, ctx.peer_ip());
    let mut body = OutgoingBody::new(body, attempts.max_attempts() > 1);
    let mut last_error: Option<SendError> = None;
    while let Some((endpoint, mut handle, last)) = attempts.begin(|i| ctx.endpoint(i)).await? {
        let endpoint = &endpoint;
        span.record("endpoint", tracing::field::display(endpoint.addr));

        let mut out = Request::new(body.for_attempt());
        *out.method_mut() = method.clone();
        *out.uri_mut() = backend_uri(path_and_query)?;
        *out.version_mut() = Version::HTTP_11;
        // The last attempt the plan allows takes the prepared headers; earlier ones copy.
        *out.headers_mut() = if last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        if options.host == HostHeader::Target {
            match ctx.backend_host(endpoint) {
                Some(h) => out.headers_mut().insert(header::HOST, h),
                None => out.headers_mut().remove(header::HOST),
            };
        }

        let send = transport.send(&ctx.target, endpoint.addr, out);
        let result = match header_timeout {
            Some(d) => match tokio::time::timeout(d, send).await {
                Ok(r) => r.map_err(SendError::classify),
                Err(_) => Err(SendError::Timeout),
            },
            None => send.await.map_err(SendError::classify),
        };

        let (res, checkin) = match result {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(endpoint = %endpoint.addr, %error, "attempt failed");
                // A connect failure left nothing behind; a reset may be retried (idempotent,
                // body never read, option on); an answer that is not HTTP or a timeout is
                // final.
                let kind = match error {
                    SendError::Connect(_) => Some(FailureKind::Connect),
                    SendError::Other(_) | SendError::Closed => {
                        Some(FailureKind::BeforeResponseHead)
                    }
                    SendError::Timeout | SendError::Invalid(_) => None,
                };
                let replayable = body.unsent();
                last_error = Some(error);
                if attempts.failed(handle, kind, &method, replayable) {
                    continue;
                }
                break;
            }
        };
        handle.response_head(res.status());
        let (mut parts, incoming) = res.into_parts();
        headers::prepare_response(&mut parts.headers);
        // Redirect safety (`redirect`): optionally refuse 3xx with a Location instead of
        // passing it on; never follow it.
        if let Some(status) = redirect::check_forwarding_redirect(
            ctx.config.upgrade_options().rejects_forwarding_redirects(),
            parts.status,
            &parts.headers,
        ) {
            return Err(status);
        }
        parts.version = Version::HTTP_11;
        let body = ProxyBody::pooled(incoming, checkin, ctx.config.timeouts().body_idle)
            .on_completion(move |completion| match completion {
                crate::body::Completion::Finished => handle.success(),
                crate::body::Completion::Failed => handle.failure(),
                _ => drop(handle),
            });
        return match rewrite(&ctx, endpoint, parts, body)? {
            Rewritten::Ready(response) => Ok(response),
            // Boxed: only HTML responses wait here; the others keep a small future.
            Rewritten::Html(response) => Box::pin(first_html_frame(response)).await,
        };
    }
    // The one place an attempt's error becomes the client's Status: the log keeps the
    // whole cause chain, the client gets kube-apiserver's message.
    let Some(error) = last_error else {
        return Err(Status::service_unavailable("no endpoints available"));
    };
    tracing::warn!(
        error = %crate::report::Report(&error),
        tried = attempts.tried(),
        endpoints = attempts.total(),
        "backend unreachable"
    );
    Err(match error {
        SendError::Connect(_) | SendError::Other(_) | SendError::Closed => {
            attempts.exhausted(&error)
        }
        other => other.into_status(),
    })
}
