//! Prometheus metrics: requests by verb, resource, subresource and code, a latency histogram
//! of proxied requests (time until the backend's response head reached us), in-flight
//! requests, cluster reloads and the balancer's per-endpoint health; plus an access log line
//! per request.
//!
//! [`MetricsLayer`] is a plain tower layer, so the same code measures any router.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use kube_bastion::Attributes;
use tower::{Layer, Service};

use crate::connection::ConnectionStats;

mod endpoints;

pub(crate) use endpoints::endpoint_health;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram updated without a lock: per-bucket counts (each observation adds to
/// the one bucket it falls in, three atomic adds in all; [`Histogram::cumulative`] sums
/// them for Prometheus' `le` buckets), the count and the sum (in nanoseconds, exact).
#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        // Above the last bound (or NaN): only `+Inf`, which is the count.
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // `as` saturates: a negative or NaN duration adds nothing.
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations at or below each bound of [`BUCKETS`].
    fn cumulative(&self) -> [u64; BUCKETS.len()] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.counts[i].load(Ordering::Relaxed);
            total
        })
    }
}

/// Every verb label: the request-info verbs, the lowercase standard methods of non-resource
/// requests, and [`OTHER`] (last).
const VERBS: [&str; 14] = [
    "get", "list", "watch", "create", "update", "patch", "delete", "head", "post", "put",
    "options", "connect", "trace", OTHER,
];

/// Every resource label: none (non-resource requests), [`RESOURCES`], [`OTHER`] (last).
const RESOURCE_LABELS: [&str; RESOURCES.len() + 2] = labels(RESOURCES);

/// Every subresource label: none, [`SUBRESOURCES`], [`OTHER`] (last).
const SUBRESOURCE_LABELS: [&str; SUBRESOURCES.len() + 2] = labels(SUBRESOURCES);

/// `names` as a label list: the empty label first, then `names`, then [`OTHER`].
const fn labels<const N: usize, const M: usize>(names: [&'static str; N]) -> [&'static str; M] {
    let mut out = [""; M];
    let mut i = 0;
    while i < N {
        out[i + 1] = names[i];
        i += 1;
    }
    out[M - 1] = OTHER;
    out
}

/// HTTP status codes are 100 to 999 (`http::StatusCode`).
const CODES: usize = 900;

/// The position of `value` in `labels`, or the last (`other`) when it is not there. Every
/// label a request gets comes from these lists, so the number of series is bounded
/// whatever requests arrive.
fn label_index(labels: &[&str], value: &str) -> usize {
    labels
        .iter()
        .position(|l| *l == value)
        .unwrap_or(labels.len() - 1)
}

/// Request counters by verb, resource, subresource and code, updated without a lock: one
/// slot per label combination, whose per-code counters are allocated on its first request.
#[derive(Debug)]
struct RequestCounters {
    series: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Default for RequestCounters {
    fn default() -> Self {
        let slots = VERBS.len() * RESOURCE_LABELS.len() * SUBRESOURCE_LABELS.len();
        RequestCounters {
            series: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl RequestCounters {
    fn slot(verb: usize, resource: usize, subresource: usize) -> usize {
        (verb * RESOURCE_LABELS.len() + resource) * SUBRESOURCE_LABELS.len() + subresource
    }

    fn add(&self, info: &RequestInfo, code: u16) {
        let slot = Self::slot(
            label_index(&VERBS, info.verb),
            label_index(&RESOURCE_LABELS, info.resource),
            label_index(&SUBRESOURCE_LABELS, info.subresource),
        );
        let Some(series) = self.series.get(slot) else {
            return;
        };
        let codes = series.get_or_init(|| (0..CODES).map(|_| AtomicU64::new(0)).collect());
        let index = usize::from(code.clamp(100, 999) - 100);
        if let Some(counter) = codes.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every series with a count: (verb, resource, subresource, code, count).
    fn each(&self, mut f: impl FnMut(&str, &str, &str, usize, u64)) {
        for (v, verb) in VERBS.iter().enumerate() {
            for (r, resource) in RESOURCE_LABELS.iter().enumerate() {
                for (s, subresource) in SUBRESOURCE_LABELS.iter().enumerate() {
                    let Some(codes) = self.series.get(Self::slot(v, r, s)).and_then(OnceLock::get)
                    else {
                        continue;
                    };
                    for (i, counter) in codes.iter().enumerate() {
                        let count = counter.load(Ordering::Relaxed);
                        if count > 0 {
                            f(verb, resource, subresource, 100 + i, count);
                        }
                    }
                }
            }
        }
    }
}

/// The label value of anything outside the fixed lists.
const OTHER: &str = "other";

/// Resources the server serves (the read-only API and the proxy subresources).
const RESOURCES: [&str; 6] = [
    "pods",
    "services",
    "endpoints",
    "endpointslices",
    "nodes",
    "namespaces",
];

/// Subresources a label may name.
const SUBRESOURCES: [&str; 3] = ["proxy", "status", "log"];

/// The label for a client-supplied resource or subresource name: its entry in `known`,
/// else [`OTHER`].
fn known(name: &str, list: &[&'static str]) -> &'static str {
    list.iter().find(|k| **k == name).copied().unwrap_or(OTHER)
}

/// The verb of a non-resource request: the lowercase method for the standard methods,
/// [`OTHER`] for extension methods.
fn method_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::CONNECT => "connect",
        Method::TRACE => "trace",
        _ => OTHER,
    }
}

/// The metrics registry.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: RequestCounters,
    /// Proxy latency by resource label ([`RESOURCE_LABELS`]).
    proxy_latency: [Histogram; RESOURCE_LABELS.len()],
    in_flight: AtomicI64,
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    connections: Arc<ConnectionStats>,
    audit_dropped: Arc<AtomicU64>,
    /// The webhooks' cache counters, by webhook (registered at startup).
    webhooks: std::sync::Mutex<Vec<(&'static str, WebhookStatsFn)>>,
}

/// Reads one webhook's counters.
struct WebhookStatsFn(Box<dyn Fn() -> kube_bastion::WebhookStats + Send + Sync>);

impl std::fmt::Debug for WebhookStatsFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookStatsFn")
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The listener's connection counters, rendered with the other metrics.
    pub(crate) fn connections(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.connections)
    }

    /// The counter of audit events dropped because the audit log queue was full.
    pub(crate) fn audit_dropped(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.audit_dropped)
    }

    /// Renders `webhook`'s cache counters (`authentication` or `authorization`) with the
    /// other metrics.
    pub(crate) fn register_webhook(
        &self,
        webhook: &'static str,
        stats: impl Fn() -> kube_bastion::WebhookStats + Send + Sync + 'static,
    ) {
        self.webhooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((webhook, WebhookStatsFn(Box::new(stats))));
    }

    /// Counts a cluster reload attempt.
    pub(crate) fn reload(&self, ok: bool) {
        if ok {
            self.reload_success.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failure.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, info: &RequestInfo, code: u16, seconds: f64) {
        self.requests.add(info, code);
        if info.proxy {
            self.proxy_latency[label_index(&RESOURCE_LABELS, info.resource)].observe(seconds);
        }
    }

    /// Number of request-counter series (for the cardinality tests).
    #[cfg(test)]
    fn request_series(&self) -> usize {
        let mut n = 0;
        self.requests.each(|_, _, _, _, _| n += 1);
        n
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP kube_bastion_requests_total Requests answered, by kube verb, resource, \
             subresource and HTTP code.\n# TYPE kube_bastion_requests_total counter\n",
        );
        self.requests
            .each(|verb, resource, subresource, code, count| {
                let _ = writeln!(
                    out,
                    "kube_bastion_requests_total{{verb=\"{verb}\",resource=\"{resource}\",subresource=\"{subresource}\",code=\"{code}\"}} {count}",
                );
            });
        out.push_str(
            "# HELP kube_bastion_proxy_upstream_duration_seconds Time from receiving a proxy \
             request to the backend's response head (or the proxy's error answer).\n\
             # TYPE kube_bastion_proxy_upstream_duration_seconds histogram\n",
        );
        for (resource, hist) in RESOURCE_LABELS.iter().zip(self.proxy_latency.iter()) {
            let count = hist.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (bound, bucket) in BUCKETS.iter().zip(hist.cumulative()) {
                let _ = writeln!(
                    out,
                    "kube_bastion_proxy_upstream_duration_seconds_bucket{{resource=\"{resource}\",le=\"{bound}\"}} {bucket}",
                );
            }
            let sum = hist.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "kube_bastion_proxy_upstream_duration_seconds_bucket{{resource=\"{resource}\",le=\"+Inf\"}} {count}\n\
                 kube_bastion_proxy_upstream_duration_seconds_sum{{resource=\"{resource}\"}} {sum}\n\
                 kube_bastion_proxy_upstream_duration_seconds_count{{resource=\"{resource}\"}} {count}",
            );
        }
        let _ = write!(
            out,
            "# HELP kube_bastion_in_flight_requests Requests being answered now.\n\
             # TYPE kube_bastion_in_flight_requests gauge\n\
             kube_bastion_in_flight_requests {}\n\
             # HELP kube_bastion_cluster_reloads_total Cluster file reloads, by result.\n\
             # TYPE kube_bastion_cluster_reloads_total counter\n\
             kube_bastion_cluster_reloads_total{{result=\"success\"}} {}\n\
             kube_bastion_cluster_reloads_total{{result=\"failure\"}} {}\n",
            self.in_flight.load(Ordering::Relaxed),
            self.reload_success.load(Ordering::Relaxed),
            self.reload_failure.load(Ordering::Relaxed),
        );
        let c = &self.connections;
        let _ = write!(
            out,
            "# HELP kube_bastion_open_connections Client connections open now.\n\
             # TYPE kube_bastion_open_connections gauge\n\
             kube_bastion_open_connections {}\n\
             # HELP kube_bastion_closed_connections_total Client connections the server closed, \
             by reason: over --max-connections, setup not finished in time, idle, a request \
             head not finished in time.\n\
             # TYPE kube_bastion_closed_connections_total counter\n\
             kube_bastion_closed_connections_total{{reason=\"limit\"}} {}\n\
             kube_bastion_closed_connections_total{{reason=\"setup-timeout\"}} {}\n\
             kube_bastion_closed_connections_total{{reason=\"idle\"}} {}\n\
             kube_bastion_closed_connections_total{{reason=\"head-timeout\"}} {}\n",
            c.open.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            c.setup_timeouts.load(Ordering::Relaxed),
            c.idle_closed.load(Ordering::Relaxed),
            c.head_timeouts.load(Ordering::Relaxed),
        );
        let _ = write!(
            out,
            "# HELP kube_bastion_audit_events_dropped_total Audit events dropped because the \
             audit log queue was full.\n\
             # TYPE kube_bastion_audit_events_dropped_total counter\n\
             kube_bastion_audit_events_dropped_total {}\n",
            self.audit_dropped.load(Ordering::Relaxed),
        );
        let webhooks = self
            .webhooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !webhooks.is_empty() {
            out.push_str(
                "# HELP kube_bastion_webhook_requests_total Answers of the TokenReview and \
                 SubjectAccessReview webhooks, by how they were found: from the cache (hit), by \
                 asking (miss), and asks that failed (error, also counted as misses).\n\
                 # TYPE kube_bastion_webhook_requests_total counter\n",
            );
            for (webhook, stats) in webhooks.iter() {
                let s = (stats.0)();
                for (result, n) in [("hit", s.hits), ("miss", s.misses), ("error", s.errors)] {
                    let _ = writeln!(
                        out,
                        "kube_bastion_webhook_requests_total{{webhook=\"{webhook}\",result=\"{result}\"}} {n}"
                    );
                }
            }
        }
        out
    }
}

/// What kube-apiserver's request-info parser would call this request, in labels from
/// fixed lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
    /// A request the proxy layer answers (its latency goes into the histogram).
    proxy: bool,
}

/// Whether a request is a watch, as kube-apiserver's request info decides: the
/// `/api/v1/watch/...` (or `/apis/<group>/<version>/watch/...`) path form, or `?watch=` a
/// true value on a collection (a get of one object ignores it).
pub(crate) fn is_watch(uri: &http::Uri) -> bool {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, "watch", ..] | ["apis", _, _, "watch", ..] => return true,
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    matches!(rest, [_resource] | ["namespaces", _, _resource])
        && crate::api::query::is_watch_query(uri)
}

/// Fills `parts` with the first non-empty `/`-separated segments of `path`; how many.
/// A byte loop: the segments are short, where `str::split` pays `memchr`'s set-up per
/// segment.
fn first_segments<'a>(path: &'a str, parts: &mut [&'a str]) -> usize {
    let bytes = path.as_bytes();
    let mut len = 0;
    let mut start = 0;
    while len < parts.len() && start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i);
        if end > start {
            // `/` is ASCII: both ends are character boundaries.
            parts[len] = &path[start..end];
            len += 1;
        }
        start = end + 1;
    }
    len
}

/// Classifies a request by the shape of its path, as kube-apiserver's request-info parser
/// does: the proxy subresources (`/api/v1/namespaces/{ns}/pods|services/{name}/proxy...`,
/// `/api/v1/nodes/{name}/proxy...`, verb from the method as the proxy's authorizer sees it),
/// API paths, and anything else as a non-resource URL whose verb is the lowercase method.
/// Names outside the server's resources, subresources and the standard methods become
/// `other`. Nothing is allocated: at most the first eight path segments are read.
pub(crate) fn classify<B>(request: &Request<B>) -> RequestInfo {
    let method = request.method();
    let mut parts = [""; 8];
    let len = first_segments(request.uri().path(), &mut parts);
    let segments = &parts[..len];
    if let [
        "api",
        "v1",
        "namespaces",
        _,
        resource @ ("pods" | "services"),
        _,
        "proxy",
        ..,
    ]
    | ["api", "v1", resource @ "nodes", _, "proxy", ..] = segments
    {
        let verb = Attributes::verb_for(method);
        return RequestInfo {
            verb: if verb.is_empty() { OTHER } else { verb },
            resource: known(resource, &RESOURCES),
            subresource: "proxy",
            proxy: true,
        };
    }
    let rest: &[&str] = match segments {
        ["api", "v1", "watch", rest @ ..] => rest,
        ["apis", _group, _version, "watch", rest @ ..] => rest,
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let watch = is_watch(request.uri()) && (*method == Method::GET || *method == Method::HEAD);
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let nonresource = || RequestInfo {
        verb: method_verb(method),
        resource: "",
        subresource: "",
        proxy: false,
    };
    match rest {
        [resource] => RequestInfo {
            verb: if watch {
                "watch"
            } else if *method == Method::GET || *method == Method::HEAD {
                "list"
            } else {
                "create"
            },
            resource: known(resource, &RESOURCES),
            subresource: "",
            proxy: false,
        },
        [resource, _name, sub @ ..] => RequestInfo {
            verb: match *method {
                Method::GET | Method::HEAD if watch => "watch",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "create",
            },
            resource: known(resource, &RESOURCES),
            subresource: sub.first().map_or("", |s| known(s, &SUBRESOURCES)),
            proxy: false,
        },
        _ => nonresource(),
    }
}

/// The tracing target of the access log (one INFO line per request).
const ACCESS_LOG: &str = "kube_bastion_server::access";

/// Tower layer that records [`Metrics`] and logs one line per request.
#[derive(Clone, Debug)]
pub(crate) struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let info = classify(&request);
        // The method and path are copied only for the access log line, when it is on.
        let logged = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        MetricsFuture {
            inner: self.inner.call(request),
            state: Some(Pending {
                metrics: self.metrics.clone(),
                info,
                logged,
                start: Instant::now(),
            }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    metrics: Arc<Metrics>,
    info: RequestInfo,
    /// The method and path, when the access log is on.
    logged: Option<(Method, String)>,
    start: Instant,
}

impl Pending {
    fn finish(self, code: u16) {
        let elapsed = self.start.elapsed();
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.record(&self.info, code, elapsed.as_secs_f64());
        let Some((method, path)) = self.logged else {
            return;
        };
        tracing::info!(
            target: ACCESS_LOG,
            method = %method,
            path = %path,
            verb = %self.info.verb,
            resource = %self.info.resource,
            subresource = %self.info.subresource,
            code,
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`MetricsService`].
    #[derive(Debug)]
    pub(crate) struct MetricsFuture<F> {
        #[pin]
        inner: F,
        state: Option<Pending>,
    }

    impl<F> PinnedDrop for MetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A request abandoned before its response head (client gone) counts as 499,
            // nginx's "client closed request".
            if let Some(state) = this.project().state.take() {
                state.finish(499);
            }
        }
    }
}

impl<F, B, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(state) = this.state.take() {
            let code = match &result {
                Ok(response) => response.status().as_u16(),
                Err(_) => 500,
            };
            state.finish(code);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str) -> RequestInfo {
        classify(
            &Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap(),
        )
    }

    #[test]
    fn first_segments_are_the_non_empty_segments_of_split() {
        for path in [
            "",
            "/",
            "//",
            "/api/v1/namespaces/default/pods/origin-0:18090/proxy/small",
            "/api//v1///nodes/n1/proxy/",
            "api/v1",
            "/a/b/c/d/e/f/g/h/i/j",
            "/ä/ö//ü/",
        ] {
            let expected: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).take(8).collect();
            let mut parts = [""; 8];
            let len = first_segments(path, &mut parts);
            assert_eq!(&parts[..len], expected.as_slice(), "{path:?}");
        }
    }

    #[test]
    fn api_paths_classify_like_request_info() {
        let list = info(Method::GET, "/api/v1/namespaces/demo/pods");
        assert_eq!((list.verb, list.resource), ("list", "pods"));
        let get = info(Method::GET, "/api/v1/nodes/n1");
        assert_eq!((get.verb, get.resource), ("get", "nodes"));
        let slices = info(Method::GET, "/apis/discovery.k8s.io/v1/endpointslices");
        assert_eq!(slices.resource, "endpointslices");
        let watch = info(Method::GET, "/api/v1/namespaces/demo/pods?watch=1");
        assert_eq!((watch.verb, watch.resource), ("watch", "pods"));
        let watch = info(Method::GET, "/api/v1/watch/namespaces/demo/services");
        assert_eq!((watch.verb, watch.resource), ("watch", "services"));
        let watch = info(
            Method::GET,
            "/apis/discovery.k8s.io/v1/watch/endpointslices",
        );
        assert_eq!((watch.verb, watch.resource), ("watch", "endpointslices"));
        let watch = info(Method::GET, "/api/v1/watch/nodes/n1");
        assert_eq!((watch.verb, watch.resource), ("watch", "nodes"));
        let not = info(Method::GET, "/api/v1/pods?watch=false");
        assert_eq!(not.verb, "list");
        // The handlers' decoding: the first value wins, escapes are decoded.
        for (query, verb) in [
            ("watch=true&watch=false", "watch"),
            ("watch=%74rue", "watch"),
        ] {
            assert_eq!(
                info(Method::GET, &format!("/api/v1/pods?{query}")).verb,
                verb
            );
        }
        assert_eq!(
            info(Method::GET, "/api/v1/pods?watch=false&watch=true").verb,
            "list"
        );
        let one = info(Method::GET, "/api/v1/namespaces/demo/pods/p?watch=1");
        assert_eq!(one.verb, "get");
        let health = info(Method::GET, "/healthz");
        assert_eq!((health.verb, health.resource), ("get", ""));
        let proxy = info(Method::GET, "/api/v1/namespaces/demo/pods/echo-0/proxy/x");
        assert_eq!(
            (proxy.verb, proxy.resource, proxy.subresource),
            ("get", "pods", "proxy")
        );
        assert!(proxy.proxy);
        let node = info(Method::POST, "/api/v1/nodes/n1:10250/proxy");
        assert_eq!(
            (node.verb, node.resource, node.proxy),
            ("create", "nodes", true)
        );
        let service = info(
            Method::DELETE,
            "/api/v1/namespaces/a/services/https:web:443/proxy/",
        );
        assert_eq!(
            (service.verb, service.resource, service.proxy),
            ("delete", "services", true)
        );
        // Not a proxy route: pods live in namespaces, nodes do not, and the group API has
        // no proxy subresource.
        for path in [
            "/api/v1/pods/p/proxy",
            "/api/v1/namespaces/a/nodes/n/proxy",
            "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/s/proxy",
        ] {
            assert!(!info(Method::GET, path).proxy, "{path}");
        }
    }

    /// The labels never carry what a client chose: unknown resources, subresources and
    /// methods become `other`, and proxy-looking paths of unknown resources get no
    /// histogram.
    #[test]
    fn client_chosen_names_become_other() {
        let weird = info(Method::GET, "/api/v1/x1AAAA/n/proxy");
        assert_eq!((weird.resource, weird.subresource), ("other", "proxy"));
        assert!(!weird.proxy);
        let sub = info(Method::GET, "/api/v1/namespaces/demo/pods/p/zzz");
        assert_eq!(sub.subresource, "other");
        let method = Method::from_bytes(b"FOOBARBAZ").unwrap();
        assert_eq!(info(method.clone(), "/healthz").verb, "other");
        assert_eq!(
            info(method, "/api/v1/namespaces/demo/pods/p/proxy/").verb,
            "other"
        );
    }

    /// The cardinality attack of the security review: thousands of requests with fresh
    /// resource names, subresources and methods leave a bounded number of series.
    #[test]
    fn series_stay_bounded_under_client_chosen_names() {
        let m = Metrics::default();
        for i in 0..2_000 {
            let name = format!("x{i}{}", "A".repeat(4096));
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            for path in [
                format!("/api/v1/{name}/n/proxy"),
                format!("/api/v1/{name}"),
                format!("/api/v1/namespaces/demo/pods/p/{name}"),
                format!("/{name}"),
            ] {
                m.record(&info(Method::GET, &path), 401, 0.001);
                m.record(&info(method.clone(), &path), 401, 0.001);
            }
        }
        assert!(m.request_series() <= 8, "{} series", m.request_series());
        assert!(
            m.proxy_latency
                .iter()
                .all(|h| h.count.load(Ordering::Relaxed) == 0)
        );
        assert!(m.render().len() < 8 * 1024, "{} bytes", m.render().len());
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(0.003);
        h.observe(7.0);
        h.observe(f64::NAN);
        let cumulative = h.cumulative();
        let count = |i: usize| cumulative[i];
        assert_eq!(count(0), 0);
        assert_eq!(count(3), 1); // le=0.005
        assert_eq!(count(4), 1); // le=0.01
        assert_eq!(count(BUCKETS.len() - 1), 2); // le=10
        assert_eq!(h.count.load(Ordering::Relaxed), 3); // NaN: in +Inf only
        assert_eq!(h.sum_nanos.load(Ordering::Relaxed), 7_003_000_000);
    }

    #[test]
    fn rendering_has_counters_histograms_and_only_known_labels() {
        let m = Metrics::default();
        let get = |resource: &'static str, proxy: bool| RequestInfo {
            verb: "get",
            resource,
            subresource: if proxy { "proxy" } else { "" },
            proxy,
        };
        m.record(&get("pods", false), 200, 0.01);
        m.record(&get("pods", false), 200, 0.01);
        m.record(&get("pods", false), 404, 0.01);
        m.record(&get("nodes", true), 502, 0.25);
        // A label value outside the fixed lists is counted as `other`, never written out.
        m.record(&get("a\"b", false), 200, 0.01);
        m.record(&get("a\"b", false), 999, 0.01);
        let text = m.render();
        for line in [
            "kube_bastion_requests_total{verb=\"get\",resource=\"pods\",subresource=\"\",code=\"200\"} 2",
            "kube_bastion_requests_total{verb=\"get\",resource=\"pods\",subresource=\"\",code=\"404\"} 1",
            "kube_bastion_requests_total{verb=\"get\",resource=\"nodes\",subresource=\"proxy\",code=\"502\"} 1",
            "kube_bastion_requests_total{verb=\"get\",resource=\"other\",subresource=\"\",code=\"200\"} 1",
            "kube_bastion_requests_total{verb=\"get\",resource=\"other\",subresource=\"\",code=\"999\"} 1",
            "kube_bastion_proxy_upstream_duration_seconds_bucket{resource=\"nodes\",le=\"0.25\"} 1",
            "kube_bastion_proxy_upstream_duration_seconds_bucket{resource=\"nodes\",le=\"0.1\"} 0",
            "kube_bastion_proxy_upstream_duration_seconds_sum{resource=\"nodes\"} 0.25",
            "kube_bastion_proxy_upstream_duration_seconds_count{resource=\"nodes\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("a\\\"b"), "{text}");
        assert!(
            !text.contains("resource=\"pods\",le="),
            "no histogram without proxy requests"
        );
        assert_eq!(m.request_series(), 5);
    }
}
