//! `--max-requests-inflight`: how many requests of the read-only API are answered at once.
//! One more is answered at once with kube-apiserver's 429 Status and `Retry-After: 1`,
//! instead of queueing without bound. Health probes are exempt (a loaded server must not
//! look dead to its kubelet), and so are watches (long-running, exempt upstream too); proxy
//! requests never reach this layer (the proxy layer sits in front of it and answers them
//! itself).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use kube_bastion::Status;
use tokio::sync::Semaphore;

use crate::api::status_response;

/// Seconds a refused client is asked to wait (kube-apiserver's value).
const RETRY_AFTER_SECONDS: u32 = 1;

/// Wraps `router` in the in-flight limit of `max` requests (`0`: no limit).
pub(crate) fn in_flight(router: Router, max: usize) -> Router {
    if max == 0 {
        return router;
    }
    let permits = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    router.layer(axum::middleware::from_fn_with_state(permits, limit))
}

/// Requests that are never limited: health probes and watches.
fn exempt(uri: &http::Uri) -> bool {
    matches!(uri.path(), "/healthz" | "/livez" | "/readyz") || crate::metrics::is_watch(uri)
}

async fn limit(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    if exempt(request.uri()) {
        return next.run(request).await;
    }
    let Ok(_permit) = permits.try_acquire() else {
        return too_many_requests();
    };
    next.run(request).await
}

/// The 429 answer: a Status with `retryAfterSeconds`, and `Retry-After`
/// ([`Status::to_response`] writes it).
pub(crate) fn too_many_requests() -> Response {
    status_response(&Status::too_many_requests(RETRY_AFTER_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::QueryParams;
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    fn get_request(path: &str) -> Request {
        Request::get(path).body(axum::body::Body::empty()).unwrap()
    }

    /// With one request in flight and a limit of one, the next is answered 429 with
    /// kube-apiserver's Status and `Retry-After`; probes still pass; once the first ends,
    /// requests are served again.
    #[tokio::test]
    async fn over_the_limit_is_429_with_retry_after() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (r, e) = (release.clone(), entered.clone());
        let router = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    e.notify_one();
                    r.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/api/v1/pods",
                get(|q: QueryParams| async move { if q.is_watch() { "watch" } else { "list" } }),
            );
        let app = in_flight(router, 1);
        let first = tokio::spawn(app.clone().oneshot(get_request("/slow")));
        entered.notified().await;

        let refused = app.clone().oneshot(get_request("/fast")).await.unwrap();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()[http::header::RETRY_AFTER], "1");
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(
            status["message"],
            "Too many requests, please try again later."
        );
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
        assert_eq!(status["code"], 429);

        let probe = app.clone().oneshot(get_request("/healthz")).await.unwrap();
        assert_eq!(probe.status(), 200);
        // Watches are long-running: never counted, never refused.
        let watch = app
            .clone()
            .oneshot(get_request("/api/v1/pods?watch=1"))
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
        // The limiter decodes the query as the handler does: the first value wins and
        // escapes are decoded, so what is exempted as a watch is served as one.
        for query in ["watch=true&watch=false", "watch=%74rue"] {
            let path = format!("/api/v1/pods?{query}");
            let watch = app.clone().oneshot(get_request(&path)).await.unwrap();
            assert_eq!(watch.status(), 200, "{query}");
            let body = watch.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "watch", "{query}");
        }
        let list = app
            .clone()
            .oneshot(get_request("/api/v1/pods?watch=false&watch=true"))
            .await
            .unwrap();
        assert_eq!(list.status(), 429);

        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        let again = app.oneshot(get_request("/fast")).await.unwrap();
        assert_eq!(again.status(), 200);
    }
}
