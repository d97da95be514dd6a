//! The upgrade step of the proxy pipeline: what [`crate::forward`] runs for a request the
//! core classifies as an upgrade, once it is authorized and its endpoints approved.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;

use crate::balance::FailureKind;
use crate::body::ProxyBody;
use crate::context::ProxyContext;
use crate::headers;
use crate::transport::ConnectError;
use crate::upgrade::{
    UpgradeError, UpgradeRequest, prepare, proxy_upgrade, restore_upgrade_headers,
};
use crate::{Plan, Status};

/// Serves one upgrade request: checks it, prepares the backend headers as for any request
/// (hop-by-hop removed, credentials stripped, `X-Forwarded-For` appended, `X-Forwarded-Uri`
/// and `X-Forwarded-Prefix` set, the identity a Service asked for added, `Host` chosen)
/// plus the upgrade headers, dials endpoints in the balancer's order until one connects (a
/// connect failure moves on to the next, as the balancer allows; nothing was sent), then
/// lets [`proxy_upgrade`] speak to it, holding the balancer's handle for as long as the
/// backend connection is in use.
pub(crate) async fn serve<B>(
    ctx: ProxyContext,
    req: Request<B>,
) -> Result<Response<ProxyBody>, Status>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let options = ctx.config.upgrade_options();
    let (mut parts, _body) = req.into_parts();
    let client = prepare(&mut parts, options).map_err(|e| e.to_status())?;
    let (path_and_query, forwarded_uri) = match ctx.request.plan() {
        Plan::Forward {
            path_and_query,
            forwarded_uri,
        } => (path_and_query, forwarded_uri),
        // The core never plans a redirect for an upgrade.
        Plan::Redirect { .. } => {
            return Err(Status::internal("upgrade request planned as a redirect"));
        }
    };

    // The rules of every forwarded request (the client's `X-Forwarded-Uri` replaced too);
    // `Host` is set per endpoint below.
    let mut prepared: HeaderMap = parts.headers.clone();
    headers::prepare_request(
        &mut prepared,
        ctx.config.headers(),
        ctx.forwarded(&forwarded_uri, &ctx.request.forwarded_prefix()),
        None,
    );
    restore_upgrade_headers(&parts.headers, &mut prepared);

    let transport = ctx.config.transport();
    let span = tracing::Span::current();
    // Balancing (crate::balance): candidates in the balancer's order; the attempt's handle
    // counts the upgrade in flight on its endpoint for as long as the backend connection
    // lives (the whole tunnel after a 101).
    let mut attempts = ctx.config.balancer().plan(&ctx.target, ctx.peer_ip());
    let mut last_error: Option<ConnectError> = None;
    while let Some((endpoint, handle, _last)) = attempts.begin(|i| ctx.endpoint(i)).await? {
        let endpoint = &endpoint;
        span.record("endpoint", tracing::field::display(endpoint.addr));
        let stream = match transport.connect_raw(&ctx.target, endpoint.addr).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "upgrade connect failed");
                last_error = Some(e);
                // Nothing was sent: the request can always go to the next candidate.
                if attempts.failed(handle, Some(FailureKind::Connect), &parts.method, true) {
                    continue;
                }
                break;
            }
        };
        let mut headers = prepared;
        match ctx.backend_host(endpoint) {
            Some(host) => headers.insert(header::HOST, host),
            None => headers.remove(header::HOST),
        };
        let request = UpgradeRequest {
            method: parts.method,
            path_and_query,
            authority: ctx.backend_authority(endpoint),
            headers,
        };
        let response = proxy_upgrade(client, request, stream, options, handle).await;
        return Ok(response.map(ProxyBody::new));
    }
    let tried = attempts.tried();
    let total = attempts.total();
    if let Some(error) = &last_error {
        tracing::warn!(
            error = %crate::report::Report(error),
            tried,
            endpoints = total,
            "backend unreachable for an upgrade"
        );
    }
    let message = match last_error {
        Some(e) if total > 1 => format!("{e} (tried {tried} of {total} endpoints)"),
        Some(e) => e.to_string(),
        None => "no endpoint could be dialed".to_owned(),
    };
    Err(UpgradeError::Dial(message).to_status())
}
