//! Watch events through `KubeCluster` into a 100,000-pod view (fed in-process, as an
//! application that runs its own watchers does), on one core.
//!
//! The view: 10,000 Services in 100 namespaces with one EndpointSlice of ten ready pods
//! each (100,000 pods, `support/cluster.rs`), loaded as initial lists. An event is a Pod
//! whose IP changes: it is an endpoint of its Service, so the Service's backends are
//! recomputed, and the next request to that Service is routed by it.
//!
//! * **events/s, one at a time**: `Feeder::handle` per event (one snapshot each);
//! * **events/s, as a watcher delivers them**: `Feeder::run` over a stream that already
//!   holds every event (batches of what is waiting, up to 1,024, one snapshot each);
//! * **delay**: a producer thread offers events at a fixed rate (5,000/s, then 20,000/s)
//!   to `Feeder::run` on a current-thread runtime; the delay of an event is from its send
//!   to the publication of the first snapshot that holds it (the moment a request resolves
//!   with it: the cluster's listener runs right after the snapshot is stored). A sample of
//!   requests is then resolved against the final view to check they are routed by the last
//!   events.
//!
//! `cargo bench --locked --bench kube_feed`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream;
use k8s_openapi::api::core::v1::{Node, Pod, PodIP, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube_bastion::core::{
    ClusterSource, Host, MemoryCluster, ProxyRequest, ResolveOptions, Route, resolve,
};
use kube_bastion::{Feeder, KubeCluster};
use kube_bastion_core::Object;

#[path = "support/cluster.rs"]
mod synthetic;

const SERVICES: usize = 10_000;

/// Events per measurement of throughput.
const EVENTS: usize = 50_000;

/// The annotation that carries an event's sequence number.
const SEQ: &str = "bench/seq";

fn split(objects: Vec<Object>) -> (Vec<Pod>, Vec<Service>, Vec<EndpointSlice>, Vec<Node>) {
    let (mut pods, mut services, mut slices, mut nodes) = (vec![], vec![], vec![], vec![]);
    for object in objects {
        match object {
            Object::Pod(p) => pods.push(p),
            Object::Service(s) => services.push(s),
            Object::EndpointSlice(s) => slices.push(s),
            Object::Node(n) => nodes.push(n),
            _ => {}
        }
    }
    (pods, services, slices, nodes)
}

/// Event `seq`: pod `seq % pods.len()` moves to a new IP (`10.200.x.y` or back).
fn event(pods: &[Pod], seq: usize) -> Event<Pod> {
    let mut pod = pods[seq % pods.len()].clone();
    pod.metadata.annotations = Some([(SEQ.to_owned(), seq.to_string())].into());
    if (seq / pods.len()).is_multiple_of(2) {
        pod.status.as_mut().unwrap().pod_ips = Some(vec![PodIP {
            ip: format!("10.200.{}.{}", (seq >> 8) & 255, seq & 255),
        }]);
    }
    Event::Apply(pod)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct View {
    cluster: KubeCluster,
    pods: Feeder<Pod>,
    objects: Vec<Pod>,
    /// Publication instants, by event sequence number.
    published: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl View {
    /// A new pod feeder over the same cluster after `run` consumed the last one; its list
    /// puts every pod back at its first address.
    fn resumed(
        cluster: KubeCluster,
        objects: Vec<Pod>,
        published: Arc<Mutex<Vec<Option<Instant>>>>,
    ) -> Self {
        let mut pods = cluster.feeder::<Pod>(None);
        pods.replace(objects.iter().cloned());
        View {
            cluster,
            pods,
            objects,
            published,
        }
    }
}

fn view() -> View {
    let (pods, services, slices, nodes) = split(synthetic::objects(SERVICES));
    let published: Arc<Mutex<Vec<Option<Instant>>>> = Arc::default();
    let memory = Arc::new(MemoryCluster::new());
    {
        let published = Arc::clone(&published);
        memory.set_listener(move |_, events| {
            let now = Instant::now();
            let mut published = published.lock().unwrap();
            for event in events {
                let seq = event
                    .object
                    .metadata()
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SEQ))
                    .and_then(|s| s.parse::<usize>().ok());
                if let Some(seq) = seq {
                    if published.len() <= seq {
                        published.resize(seq + 1, None);
                    }
                    published[seq].get_or_insert(now);
                }
            }
        });
    }
    let cluster = KubeCluster::new(memory);
    let mut pod_feeder = cluster.feeder::<Pod>(None);
    let mut service_feeder = cluster.feeder::<Service>(None);
    let mut slice_feeder = cluster.feeder::<EndpointSlice>(None);
    let mut node_feeder = cluster.feeder::<Node>(None);
    let start = Instant::now();
    pod_feeder.replace(pods.iter().cloned());
    service_feeder.replace(services);
    slice_feeder.replace(slices);
    node_feeder.replace(nodes);
    println!(
        "initial lists: {} pods, {SERVICES} services and slices in {:.2?}; synced: {}",
        pods.len(),
        start.elapsed(),
        cluster.is_synced()
    );
    View {
        cluster,
        pods: pod_feeder,
        objects: pods,
        published,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn one_at_a_time(view: &mut View, first: usize) -> usize {
    let events: Vec<_> = (first..first + EVENTS)
        .map(|s| event(&view.objects, s))
        .collect();
    let start = Instant::now();
    for event in events {
        view.pods.handle(event);
    }
    let elapsed = start.elapsed();
    println!(
        "one at a time:   {EVENTS} events in {elapsed:.2?}: {:.0} events/s ({:.1} µs/event)",
        EVENTS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64
    );
    first + EVENTS
}

fn as_delivered(view: View, first: usize) -> (View, usize) {
    let View {
        cluster,
        pods,
        objects,
        published,
    } = view;
    let events: Vec<Result<Event<Pod>, watcher::Error>> = (first..first + EVENTS)
        .map(|s| Ok(event(&objects, s)))
        .collect();
    let start = Instant::now();
    // `run` consumes the feeder; a new one takes over the same scope afterwards (its
    // first list is not needed to stay synced for this measurement).
    runtime().block_on(pods.run(stream::iter(events)));
    let elapsed = start.elapsed();
    println!(
        "as delivered:    {EVENTS} events in {elapsed:.2?}: {:.0} events/s ({:.1} µs/event)",
        EVENTS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64
    );
    (View::resumed(cluster, objects, published), first + EVENTS)
}

/// Offers events at `rate` per second for `seconds`; prints the delay percentiles.
fn at_rate(view: View, first: usize, rate: u32, seconds: u32) -> (View, usize) {
    let count = (rate * seconds) as usize;
    let View {
        cluster,
        pods,
        objects,
        published,
    } = view;
    let events: Vec<Event<Pod>> = (first..first + count).map(|s| event(&objects, s)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let producer = {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let interval = Duration::from_secs(1) / rate;
            let start = Instant::now();
            for (i, event) in events.into_iter().enumerate() {
                let due = start + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                sent.lock().unwrap().push(Instant::now());
                let _ = tx.send(Ok::<_, watcher::Error>(event));
            }
        })
    };
    let feed = stream::poll_fn(move |cx| rx.poll_recv(cx));
    runtime().block_on(pods.run(feed));
    producer.join().unwrap();
    let sent = sent.lock().unwrap();
    let mut delays: Vec<Duration> = {
        let published = published.lock().unwrap();
        (0..count)
            .map(|i| {
                let at = published[first + i].expect("every event was published");
                at.saturating_duration_since(sent[i])
            })
            .collect()
    };
    delays.sort();
    println!(
        "at {rate} events/s for {seconds} s: delay p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    drop(sent);
    (View::resumed(cluster, objects, published), first + count)
}

/// A request to the moved pod's Service is routed by the last event: the endpoint still
/// lists the pod's old address, which no longer matches the pod, so it is not a candidate
/// any more (kube-apiserver's check of endpoints against pods), and the other nine are.
fn check_routing(view: &View, last: &Event<Pod>, old_ip: &str) {
    let Event::Apply(pod) = last else {
        unreachable!()
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap();
    let name = pod.metadata.name.as_deref().unwrap();
    let service = name.rsplit_once('-').unwrap().0;
    let path = format!("/api/v1/namespaces/{namespace}/services/{service}:http/proxy/");
    let Route::Proxy(request) = ProxyRequest::route(
        &http::Method::GET,
        &path.parse::<http::Uri>().unwrap(),
        &http::HeaderMap::new(),
    ) else {
        panic!("a proxy path")
    };
    let options = ResolveOptions::default();
    let target = resolve(&*view.cluster.view(), &request, &options).expect("resolves");
    let addresses: Vec<String> = target
        .candidates
        .iter()
        .filter_map(|c| match &c.host {
            Host::Ip(ip) => Some(ip.to_string()),
            Host::Name(_) => None,
        })
        .collect();
    let routed = !addresses.iter().any(|a| a == old_ip) && addresses.len() == 9;
    println!(
        "routing check: {path} no longer routes to {name}'s old address {old_ip} ({} candidates left): {routed}",
        addresses.len()
    );
    assert!(routed, "the last event routes requests: {addresses:?}");
}

fn main() {
    let mut view = view();
    let mut next = 0;
    next = one_at_a_time(&mut view, next);
    let (view, next) = as_delivered(view, next);
    let (view, next) = at_rate(view, next, 5_000, 4);
    let (view, next) = at_rate(view, next, 20_000, 2);
    let _ = next;
    // The final `replace` restored the listed pods; apply one more event and route by it.
    let mut view = view;
    let last = event(&view.objects, 1);
    let old_ip = synthetic::ip(1);
    view.pods.handle(last.clone());
    check_routing(&view, &last, &old_ip);
}
