//! Readers keep a consistent snapshot while a writer replaces the state.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use kube_bastion_core::{
    ClusterSnapshot, ClusterSource, MemoryCluster, ObjectKind, ResolveOptions, Target,
    parse_objects,
};
use serde_json::json;

use crate::common::{pod, resolve_path, service_path};

const PODS: usize = 5;

/// Generation `g`: a service whose slice points at `PODS` pods named `g<g>-<i>` with IPs
/// `10.<g>.0.<i+1>`.
fn generation(g: usize) -> ClusterSnapshot {
    let mut items = vec![json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ns",
        "annotations": {"generation": g.to_string()}},
        "spec": {"ports": [{"port": 80}]},
    })];
    let mut endpoints = Vec::new();
    for i in 0..PODS {
        let name = format!("g{g}-{i}");
        let ip = format!("10.{g}.0.{}", i + 1);
        items.push(pod("ns", &name, &[&ip], json!([])));
        endpoints.push(json!({"addresses": [ip], "targetRef": {"kind": "Pod", "namespace": "ns", "name": name}}));
    }
    items.push(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": endpoints,
    }));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    ClusterSnapshot::from_objects(parse_objects(&list.to_string()).expect("objects"))
}

/// The generation every part of `target` and `snapshot` agrees on; panics on a mix.
fn consistent_generation(target: &Target, snapshot: &ClusterSnapshot) -> usize {
    let of_pod = |name: &str| -> usize {
        name.strip_prefix('g')
            .and_then(|r| r.split('-').next())
            .and_then(|g| g.parse().ok())
            .expect("gen")
    };
    let mut generations: Vec<usize> = target
        .candidates
        .iter()
        .map(|c| {
            let g = of_pod(c.pod.as_deref().expect("pod"));
            assert!(c.authority().starts_with(&format!("10.{g}.0.")), "{c:?}");
            g
        })
        .collect();
    generations.extend(
        snapshot
            .pods(None)
            .iter()
            .map(|p| of_pod(p.metadata.name.as_deref().expect("name"))),
    );
    let service = snapshot.services(None).pop().expect("service");
    let annotated = service.metadata.annotations.as_ref().expect("annotations")["generation"]
        .parse()
        .expect("g");
    generations.push(annotated);
    assert_eq!(target.candidates.len(), PODS);
    assert!(
        generations.iter().all(|g| *g == annotated),
        "mixed generations: {generations:?}"
    );
    annotated
}

#[test]
fn readers_see_whole_snapshots_while_a_writer_replaces_them() {
    const READERS: usize = 3;
    const WRITES: usize = 60;
    let cluster = Arc::new(MemoryCluster::from_snapshot(generation(0)));
    let first = cluster.snapshot();
    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let start = Barrier::new(READERS + 1);
    let options = ResolveOptions::default();
    let path = service_path("ns", "web:80");
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| {
                start.wait();
                let mut last = 0;
                // At least a few reads each, then until the writer is done.
                let mut n = 0;
                while n < 20 || !done.load(Ordering::Acquire) {
                    let view = cluster.snapshot();
                    // Through the trait object the engine uses, too.
                    let dyn_view = ClusterSource::view(&*cluster);
                    let target = resolve_path(&*view, &path, &options).expect("always resolvable");
                    let g = consistent_generation(&target, &view);
                    assert!(g >= last, "generations never go back for one reader");
                    last = g;
                    let other = resolve_path(&*dyn_view, &path, &options).expect("resolvable");
                    assert_eq!(other.candidates.len(), PODS);
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        start.wait();
        for g in 1..=WRITES {
            if g % 3 == 0 {
                // Writers also go through apply/delete (serialized with each other).
                let next = generation(g);
                cluster.update(|_| next);
                cluster.apply(Vec::new());
            } else {
                cluster.replace(generation(g));
            }
        }
        done.store(true, Ordering::Release);
    });
    assert!(reads.load(Ordering::Relaxed) >= READERS * 20);
    // The first snapshot is untouched by every later write.
    let target = resolve_path(&*first, &path, &options).expect("old snapshot");
    assert_eq!(consistent_generation(&target, &first), 0);
    let latest = cluster.snapshot();
    let target = resolve_path(&*latest, &path, &options).expect("latest");
    assert_eq!(consistent_generation(&target, &latest), WRITES);
    assert!(cluster.delete(ObjectKind::Service, "ns", "web"));
    assert!(first.services(None).len() == 1 && latest.services(None).len() == 1);
}
