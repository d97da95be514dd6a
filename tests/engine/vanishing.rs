//! A Service whose endpoints all vanish and come back, under the same bounded load as
//! `faults.rs`: 503 while they are gone, serving again within a second of their return.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube_bastion::{BalancerConfig, EndpointSnapshot, ServiceKey};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::faults::*;
use crate::harness::*;

/// A hyper HTTP/1.1 backend answering `200 ok` that can be killed: aborting the handle
/// drops the listener and every connection task with it.
fn start_endpoint(listener: TcpListener, served: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            connections.spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    served.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(Response::new(full("ok"))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
            // Reap finished connections so the set does not grow with the load.
            while connections.try_join_next().is_some() {}
        }
    })
}

#[tokio::test]
async fn a_vanished_service_is_503_and_serves_again_within_a_second_of_its_return() {
    // Default balancing: at most half the endpoints (here one of three) may be ejected.
    vanish_and_return(BalancerConfig::default(), 1).await;
}

#[tokio::test]
async fn a_vanished_service_serves_again_within_a_second_even_with_every_endpoint_ejected() {
    // Every endpoint may be ejected: all three are when they return, each for 30 s, and the
    // proxy must still dial them rather than answer 503 without trying.
    let mut balancing = BalancerConfig::default();
    balancing.ejection.max_ejection_percent = 100;
    vanish_and_return(balancing, 3).await;
}

/// Three endpoints serve, all vanish (503 for every request), then return on the same
/// addresses: the first 200 must come within a second. `ejected` endpoints are expected
/// to be ejected when they return.
async fn vanish_and_return(balancing: BalancerConfig, ejected: usize) {
    count_panics();
    let served = Arc::new(AtomicUsize::new(0));
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut endpoints: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|l| start_endpoint(l, served.clone()))
        .collect();
    let mut docs = pods();
    docs.push(service_yaml(
        "ns",
        "svc",
        80,
        None,
        &[
            ("a", "127.0.0.1", addrs[0].port()),
            ("b", "127.0.0.1", addrs[1].port()),
            ("c", "127.0.0.1", addrs[2].port()),
        ],
    ));
    let config = config(&docs)
        .response_header_timeout(Some(Duration::from_millis(300)))
        .balancing(balancing)
        .build()
        .unwrap();
    let proxy = serve_proxy(config.clone()).await;
    let uri = format!("http://{proxy}/api/v1/namespaces/ns/services/svc:http/proxy/up");

    // Up: every request served, and the proxy pools connections to all three.
    let outcomes = load(client(), &uri).await;
    println!("service up: {}", tally(&outcomes));
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Outcome::Complete(StatusCode::OK, _, body) if body == "ok"),
            "{outcome:?}"
        );
    }
    assert_eq!(served.load(Ordering::Relaxed), REQUESTS);

    // Vanish: listeners dropped, open connections closed, every address refuses.
    for endpoint in endpoints.drain(..) {
        endpoint.abort();
        let _ = endpoint.await;
    }
    for addr in &addrs {
        let refused = TcpStream::connect(addr).await.expect_err("nothing listens");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let outcomes = load(client(), &uri).await;
    println!("service gone: {}", tally(&outcomes));
    let mut refused_everywhere = 0;
    for outcome in &outcomes {
        let message = status_answer(outcome, 503, Some("ServiceUnavailable"));
        assert!(
            message.starts_with("error trying to reach service: ")
                && message.ends_with(" of 3 endpoints)"),
            "{message}"
        );
        if message.starts_with("error trying to reach service: dial tcp 127.0.0.1:")
            && message.ends_with("(tried 3 of 3 endpoints)")
        {
            refused_everywhere += 1;
        }
    }
    // A request may find a pooled connection whose close the proxy has not seen yet
    // ("connection closed before message completed"); the rest dial and are refused.
    assert!(
        refused_everywhere >= REQUESTS * 9 / 10,
        "{refused_everywhere} of {REQUESTS} refused by all three endpoints"
    );
    let key = ServiceKey::new("ns", "svc", "http");
    let health: Vec<EndpointSnapshot> = addrs
        .iter()
        .map(|a| {
            config
                .balancer()
                .endpoint(&key, *a)
                .expect("endpoint state")
        })
        .collect();
    println!("endpoint state while gone: {health:#?}");
    assert_eq!(
        health.iter().filter(|h| h.ejected).count(),
        ejected,
        "{health:#?}"
    );

    // Back on the same addresses.
    let mut listeners = Vec::new();
    for addr in &addrs {
        listeners.push(
            TcpListener::bind(addr)
                .await
                .expect("the address is free again"),
        );
    }
    let back = Instant::now();
    let endpoints: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|l| start_endpoint(l, served.clone()))
        .collect();
    let poller = client();
    let mut tries = 0;
    let recovered = loop {
        tries += 1;
        let outcome = exchange(&poller, &uri).await;
        if matches!(&outcome, Outcome::Complete(StatusCode::OK, _, body) if body == "ok") {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still no 200 five seconds after the endpoints returned ({tries} tries); last: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("first 200 {recovered:?} after the endpoints returned ({tries} tries)");
    // Ejection and backoff may keep an endpoint out of rotation for a while, but must not
    // keep the whole Service unavailable once its endpoints answer again.
    assert!(
        recovered < Duration::from_secs(1),
        "the proxy answered 200 only {recovered:?} after the endpoints returned"
    );
    // And it stays up: the next load is served in full.
    let outcomes = load(client(), &uri).await;
    println!("service back: {}", tally(&outcomes));
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Outcome::Complete(StatusCode::OK, _, body) if body == "ok"),
            "{outcome:?}"
        );
    }
    let health: Vec<Option<EndpointSnapshot>> = addrs
        .iter()
        .map(|a| config.balancer().endpoint(&key, *a))
        .collect();
    println!("endpoint state once back: {health:#?}");
    assert_still_healthy(proxy).await;
    for endpoint in endpoints {
        endpoint.abort();
    }
}
