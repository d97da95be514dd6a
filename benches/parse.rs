//! Routing and planning cost of one proxy request (`ProxyRequest::route` + `plan`), against
//! the cost of parsing the same request target into an `http::Uri`, which every server pays
//! before any router runs.
//!
//! Run: `cargo bench --locked --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use kube_bastion_core::{ProxyRequest, Route};

const TYPICAL: &str =
    "/api/v1/namespaces/default/services/https:web:8443/proxy/metrics?format=text";
const ESCAPED: &str = "/api/v1/namespaces/default/pods/web-0%3A8080/proxy/static/a%20b/app.js";
const BARE: &str = "/api/v1/namespaces/default/pods/web-0/proxy";
const NOT_PROXY: &str = "/api/v1/namespaces/default/pods/web-0";

fn route(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<ProxyRequest> {
    match ProxyRequest::route(method, uri, headers) {
        Route::Proxy(request) => Some(request),
        Route::NotProxy => None,
    }
}

fn bench_parse(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut upgrade = HeaderMap::new();
    upgrade.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    let mut group = c.benchmark_group("parse");

    group.bench_function("baseline_uri_parse", |b| {
        b.iter(|| Uri::from_static(black_box(TYPICAL)))
    });

    for (name, target, method, headers) in [
        ("route_plan_typical", TYPICAL, Method::GET, &headers),
        ("route_plan_escaped", ESCAPED, Method::GET, &headers),
        ("route_plan_bare_redirect", BARE, Method::GET, &headers),
        ("route_plan_upgrade", TYPICAL, Method::GET, &upgrade),
    ] {
        let uri = Uri::from_static(target);
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = route(black_box(&method), black_box(&uri), black_box(headers));
                request.map(|r| r.plan())
            })
        });
    }

    let uri = Uri::from_static(TYPICAL);
    group.bench_function("route_only_typical", |b| {
        b.iter(|| {
            route(
                black_box(&Method::GET),
                black_box(&uri),
                black_box(&headers),
            )
        })
    });
    let not_proxy = Uri::from_static(NOT_PROXY);
    group.bench_function("route_not_proxy", |b| {
        b.iter(|| {
            route(
                black_box(&Method::GET),
                black_box(&not_proxy),
                black_box(&headers),
            )
        })
    });
    let request = route(&Method::GET, &uri, &headers).expect("a proxy route");
    group.bench_function("check_attributes_target_id_typical", |b| {
        b.iter(|| {
            let request = black_box(&request);
            (request.check(), request.attributes(), request.target_id())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
