//! Streaming with backpressure: 1 GiB each way with bounded proxy memory, and server-sent
//! events reaching the client before the backend finishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::harness::*;

const CHUNK: usize = 64 * 1024;
const TOTAL: u64 = 1 << 30;

fn gib_stream() -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>>> {
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    let n = TOTAL / CHUNK as u64;
    StreamBody::new(futures_util::stream::iter(
        (0..n).map(move |_| Ok(Frame::data(chunk.clone()))),
    ))
}

/// Samples this process's resident memory until dropped; returns the peak in KiB.
struct PeakRss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { peak, task }
    }
    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed).max(rss_kib())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_streams_with_bounded_memory() {
    // Upload sink: counts bytes, answers the count. Download source: 1 GiB of chunks.
    let backend = backend_with(None, |req: Request<Incoming>| async move {
        if req.method() == http::Method::POST {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    n += d.len() as u64;
                }
            }
            http::Response::new(full(n.to_string()))
        } else {
            http::Response::new(gib_stream().boxed())
        }
    })
    .await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "big", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "big", backend.port(), "/data")
    );
    let client = client();

    // Warm up allocator arenas and pools with a small exchange each way.
    let (status, _, _) = send(Request::post(&uri).body(full(vec![0u8; CHUNK])).unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    let baseline = rss_kib();
    let sampler = PeakRss::start();

    let res = client
        .request(Request::post(&uri).body(gib_stream().boxed()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let counted = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(counted, TOTAL.to_string());

    let res = client
        .request(Request::get(&uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            received += d.len() as u64;
        }
    }
    assert_eq!(received, TOTAL);

    let peak = sampler.stop();
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    // The whole process (client, proxy and backend) stays within 16 MiB of its baseline
    // while 2 GiB pass through the proxy.
    eprintln!("resident memory growth while streaming 2 GiB: {growth_mib:.1} MiB");
    assert!(
        growth_mib < 16.0,
        "resident memory grew by {growth_mib:.1} MiB"
    );
}

#[tokio::test]
async fn server_sent_events_arrive_before_the_response_ends() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let backend = backend_with(None, move |_req: Request<Incoming>| {
        let release_rx = release_rx.clone();
        async move {
            let rx = release_rx.lock().await.take();
            let frames = futures_util::stream::unfold((0u8, rx), |(n, rx)| async move {
                match n {
                    0 => Some((
                        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"data: one\n\n"))),
                        (1, rx),
                    )),
                    1 => {
                        // The second event is only written once the client has the first.
                        if let Some(rx) = rx {
                            let _ = rx.await;
                        }
                        Some((
                            Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))),
                            (2, None),
                        ))
                    }
                    _ => None,
                }
            });
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(frames).boxed())
                .unwrap()
        }
    })
    .await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "sse", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "sse", backend.port(), "/events")
    );
    let res = client()
        .request(Request::get(&uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let first = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("the first event is delivered while the backend is still writing")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "data: one\n\n");
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: two\n\n");
}
