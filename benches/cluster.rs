//! Applying one change to the cluster model, against a full rebuild as the baseline.
//!
//! Clusters of 1,000 pods (100 services) and 100,000 pods (10,000 services, 100,000
//! endpoints), ten ready endpoints per service, one EndpointSlice each (`support/cluster.rs`).
//! One change is one `MemoryCluster::apply_batch` of a single object, published as a new
//! snapshot with its event: a Pod whose IP changes (its service's backends are recomputed),
//! an EndpointSlice whose first endpoint flips readiness, a Service whose port changes. The
//! baseline is `ClusterSnapshot::from_objects` of the whole cluster, which is what every
//! change cost before snapshots became incremental.
//!
//! Before the timings it prints the heap held by a 100,000-pod snapshot, and what a second
//! snapshot that differs by one pod adds (structural sharing: a few KiB, not a copy).
//!
//! `cargo bench --locked --bench cluster -- --warm-up-time 1 --measurement-time 3`

use std::alloc::System;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Pod, PodIP, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_bastion_core::{Change, ClusterSnapshot, MemoryCluster, Object};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[path = "support/cluster.rs"]
mod synthetic;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bytes the heap holds.
fn live() -> isize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

/// Two versions of one object, so that every applied change is a real one.
struct Toggle {
    versions: [Object; 2],
}

fn pod_toggle(objects: &[Object], services: usize) -> Toggle {
    let name = format!("svc-{}-3", services / 2 + 7);
    let pod = objects
        .iter()
        .find_map(|o| match o {
            Object::Pod(p) if p.metadata.name.as_deref() == Some(name.as_str()) => Some(p),
            _ => None,
        })
        .expect("the pod");
    let mut moved: Pod = pod.clone();
    let status = moved.status.as_mut().expect("status");
    status.pod_ips = Some(vec![PodIP {
        ip: "10.250.250.250".into(),
    }]);
    Toggle {
        versions: [Object::Pod(pod.clone()), Object::Pod(moved)],
    }
}

fn slice_toggle(objects: &[Object], services: usize) -> Toggle {
    let name = format!("svc-{}-abcde", services / 2 + 7);
    let slice = objects
        .iter()
        .find_map(|o| match o {
            Object::EndpointSlice(s) if s.metadata.name.as_deref() == Some(name.as_str()) => {
                Some(s)
            }
            _ => None,
        })
        .expect("the slice");
    let mut flipped: EndpointSlice = slice.clone();
    if let Some(conditions) = flipped.endpoints[0].conditions.as_mut() {
        conditions.ready = Some(false);
    }
    Toggle {
        versions: [
            Object::EndpointSlice(slice.clone()),
            Object::EndpointSlice(flipped),
        ],
    }
}

fn service_toggle(objects: &[Object], services: usize) -> Toggle {
    let name = format!("svc-{}", services / 2 + 7);
    let service = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) if s.metadata.name.as_deref() == Some(name.as_str()) => Some(s),
            _ => None,
        })
        .expect("the service");
    let mut changed: Service = service.clone();
    if let Some(ports) = changed.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports[0].port = 8081;
    }
    Toggle {
        versions: [Object::Service(service.clone()), Object::Service(changed)],
    }
}

fn memory() {
    let objects = synthetic::objects(10_000);
    let before = live();
    let first = ClusterSnapshot::from_objects(objects.clone());
    let one = live() - before;
    let (second, events) = first.with_changes([Change::Apply(
        pod_toggle(&objects, 10_000).versions[1].clone(),
    )]);
    drop(events);
    let two = live() - before;
    eprintln!(
        "memory: one 100,000-pod snapshot holds {:.1} MiB; a second one that differs by one pod adds {:.1} KiB",
        one as f64 / (1024.0 * 1024.0),
        (two - one) as f64 / 1024.0
    );
    black_box((first, second));
}

fn bench_apply(c: &mut Criterion) {
    memory();
    let mut group = c.benchmark_group("cluster");
    for (services, label) in [(100usize, "1k_pods"), (10_000, "100k_pods")] {
        let objects = synthetic::objects(services);
        let cluster = MemoryCluster::from_objects(objects.clone());
        for (kind, toggle) in [
            ("apply_pod", pod_toggle(&objects, services)),
            ("apply_endpointslice", slice_toggle(&objects, services)),
            ("apply_service", service_toggle(&objects, services)),
        ] {
            let mut next = 1;
            group.bench_function(BenchmarkId::new(kind, label), |b| {
                b.iter(|| {
                    let events =
                        cluster.apply_batch([Change::Apply(toggle.versions[next].clone())]);
                    assert_eq!(events.len(), 1);
                    next = 1 - next;
                    black_box(events)
                })
            });
            cluster.apply_batch([Change::Apply(toggle.versions[0].clone())]);
        }
        group.sample_size(if services > 1_000 { 10 } else { 30 });
        group.bench_function(BenchmarkId::new("full_rebuild", label), |b| {
            b.iter_batched(
                || objects.clone(),
                |objects| black_box(ClusterSnapshot::from_objects(objects)),
                BatchSize::LargeInput,
            )
        });
        group.sample_size(100);
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
