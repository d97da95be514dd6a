//! Target resolution against an in-memory cluster of 1,000 and 10,000 Services with ten
//! ready endpoints each (one EndpointSlice per service, one pod per endpoint), and of one
//! Service with 100,000 endpoints (the candidate list is shared, not copied, per request; also
//! under a deny CIDR, where the filtered copy is made once per snapshot).
//!
//! `cargo bench --locked --bench resolve -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, Uri};
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube_bastion_core::{
    ClusterSnapshot, DestinationPolicy, Object, ProxyRequest, ResolveOptions, Route, resolve,
};

#[path = "support/cluster.rs"]
mod synthetic;

use synthetic::{ENDPOINTS_PER_SERVICE, NAMESPACES, ip, meta, ready_endpoint};

fn cluster(services: usize) -> ClusterSnapshot {
    ClusterSnapshot::from_objects(synthetic::objects(services))
}

fn route(path: &str) -> ProxyRequest {
    let uri: Uri = path.parse().expect("path");
    match ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) {
        Route::Proxy(request) => request,
        Route::NotProxy => panic!("{path} is a proxy route"),
    }
}

fn bench_resolve(c: &mut Criterion) {
    let options = ResolveOptions::default();
    let mut group = c.benchmark_group("resolve");
    for services in [1_000usize, 10_000] {
        let snapshot = cluster(services);
        // A service in the middle of the cluster.
        let s = services / 2 + 7;
        let namespace = format!("ns-{}", s % NAMESPACES);
        let by_number = route(&format!(
            "/api/v1/namespaces/{namespace}/services/svc-{s}:80/proxy/"
        ));
        let by_name = route(&format!(
            "/api/v1/namespaces/{namespace}/services/https:svc-{s}:metrics/proxy/"
        ));
        let pod = route(&format!(
            "/api/v1/namespaces/{namespace}/pods/svc-{s}-3:http/proxy/"
        ));
        let node = route("/api/v1/nodes/node-42/proxy/metrics");
        let target = resolve(&snapshot, &by_number, &options).expect("resolves");
        assert_eq!(target.candidates.len(), ENDPOINTS_PER_SERVICE);

        group.bench_with_input(
            BenchmarkId::new("service_port_number", services),
            &by_number,
            |b, r| b.iter(|| resolve(black_box(&snapshot), black_box(r), &options)),
        );
        group.bench_with_input(
            BenchmarkId::new("service_port_name", services),
            &by_name,
            |b, r| b.iter(|| resolve(black_box(&snapshot), black_box(r), &options)),
        );
        group.bench_with_input(
            BenchmarkId::new("pod_named_port", services),
            &pod,
            |b, r| b.iter(|| resolve(black_box(&snapshot), black_box(r), &options)),
        );
        group.bench_with_input(BenchmarkId::new("node_kubelet", services), &node, |b, r| {
            b.iter(|| resolve(black_box(&snapshot), black_box(r), &options))
        });
        let path: Uri = format!(
            "/api/v1/namespaces/{namespace}/services/svc-{s}:80/proxy/api/v1/items?limit=10"
        )
        .parse()
        .expect("uri");
        let headers = HeaderMap::new();
        group.bench_with_input(
            BenchmarkId::new("route_and_resolve_service", services),
            &path,
            |b, uri| {
                b.iter(
                    || match ProxyRequest::route(&Method::GET, black_box(uri), &headers) {
                        Route::Proxy(request) => {
                            resolve(&snapshot, &request, &options).map(|t| t.candidates.len())
                        }
                        Route::NotProxy => Ok(0),
                    },
                )
            },
        );
    }
    group.finish();
}

/// One Service (`big/web`, port `http` 80) with `endpoints` ready endpoints in EndpointSlices
/// of 1,000 (the API server's own cap), and the pods behind them.
fn big_service(endpoints: usize) -> ClusterSnapshot {
    let namespace = "big";
    let name = "web";
    let mut objects = Vec::with_capacity(endpoints * 2 + 1);
    objects.push(Object::Service(Service {
        metadata: meta(Some(namespace), name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }));
    for (slice_number, first) in (0..endpoints).step_by(1_000).enumerate() {
        let mut slice_endpoints = Vec::with_capacity(1_000);
        for e in first..(first + 1_000).min(endpoints) {
            let pod_name = format!("{name}-{e}");
            let address = ip(e);
            objects.push(Object::Pod(Pod {
                metadata: meta(Some(namespace), &pod_name),
                status: Some(PodStatus {
                    pod_ips: Some(vec![PodIP {
                        ip: address.clone(),
                    }]),
                    ..PodStatus::default()
                }),
                ..Pod::default()
            }));
            slice_endpoints.push(ready_endpoint(namespace, pod_name, address));
        }
        let mut slice_meta = meta(Some(namespace), &format!("{name}-{slice_number:05}"));
        slice_meta.labels = Some(BTreeMap::from([(
            "kubernetes.io/service-name".to_owned(),
            name.to_owned(),
        )]));
        objects.push(Object::EndpointSlice(EndpointSlice {
            metadata: slice_meta,
            address_type: "IPv4".into(),
            endpoints: slice_endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..EndpointPort::default()
            }]),
        }));
    }
    ClusterSnapshot::from_objects(objects)
}

/// One Service with 100,000 endpoints: resolution shares the precomputed candidate list, so
/// it costs what it costs with ten.
fn bench_big_service(c: &mut Criterion) {
    const ENDPOINTS: usize = 100_000;
    let snapshot = big_service(ENDPOINTS);
    let options = ResolveOptions::default();
    let request = route("/api/v1/namespaces/big/services/web:80/proxy/");
    let target = resolve(&snapshot, &request, &options).expect("resolves");
    assert_eq!(target.candidates.len(), ENDPOINTS);
    c.bench_with_input(
        BenchmarkId::new("resolve/service_port_number_one_service", ENDPOINTS),
        &request,
        |b, r| b.iter(|| resolve(black_box(&snapshot), black_box(r), &options)),
    );
    // The same under a policy that filters (a deny CIDR refusing one endpoint): the
    // filtered copy is made by the first request of the snapshot and shared afterwards.
    let deny = ResolveOptions {
        policy: DestinationPolicy::kube_default().deny("10.0.0.0/32".parse().expect("cidr")),
        ..ResolveOptions::default()
    };
    let filtered = resolve(&snapshot, &request, &deny).expect("resolves");
    assert!(filtered.candidates.len() < ENDPOINTS);
    c.bench_with_input(
        BenchmarkId::new(
            "resolve/service_port_number_one_service_deny_cidr",
            ENDPOINTS,
        ),
        &request,
        |b, r| b.iter(|| resolve(black_box(&snapshot), black_box(r), &deny)),
    );
}

/// What resolution would pay if it returned ten owned candidates instead of the shared list:
/// copying them into a `Vec` (one allocation, ten `Arc` increments for the pod names).
/// Measured in the same run, it puts the resolve numbers of a loaded machine in proportion.
fn bench_baseline(c: &mut Criterion) {
    let snapshot = cluster(10);
    let request = route("/api/v1/namespaces/ns-7/services/svc-7:80/proxy/");
    let target = resolve(&snapshot, &request, &ResolveOptions::default()).expect("resolves");
    let candidates = target.candidates;
    c.bench_function("baseline/clone_10_candidates", |b| {
        b.iter(|| black_box(&candidates).to_vec())
    });
}

criterion_group!(benches, bench_resolve, bench_big_service, bench_baseline);
criterion_main!(benches);
