//! How requests spread over endpoints under each policy.

use std::time::Duration;

use kube_bastion::{BalancePolicy, Balancer, BalancerConfig};

use crate::harness::*;

async fn three_backends(delays: [u64; 3]) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (i, delay) in delays.into_iter().enumerate() {
        backends.push(Backend::start(&format!("b{i}"), Duration::from_millis(delay)).await);
    }
    backends
}

fn ports(backends: &[Backend]) -> Vec<u16> {
    backends.iter().map(|b| b.addr.port()).collect()
}

/// Sends `total` GETs from `workers` concurrent clients; every answer must be a 200.
async fn load(proxy: std::net::SocketAddr, workers: usize, total: usize) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..total / workers {
                let answer = get(&client, proxy).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn hits(backends: &[Backend]) -> Vec<usize> {
    backends.iter().map(Backend::hits).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_endpoint_exactly_its_turn() {
    let backends = three_backends([0, 0, 0]).await;
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::RoundRobin)
            .with_seed(1),
    );
    let proxy = proxy(
        cluster(&ports(&backends), &ServiceSpec::default()),
        &balancer,
    )
    .await;
    load(proxy, 1, 300).await;
    assert_eq!(hits(&backends), [100, 100, 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_uniformly() {
    let backends = three_backends([0, 0, 0]).await;
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::Random)
            .with_seed(7),
    );
    let proxy = proxy(
        cluster(&ports(&backends), &ServiceSpec::default()),
        &balancer,
    )
    .await;
    load(proxy, 1, 600).await;
    // Binomial(600, 1/3): mean 200, sigma 11.5; bound: within 5 sigma.
    let hits = hits(&backends);
    eprintln!("random, 600 sequential requests: {hits:?}");
    assert!(hits.iter().all(|&n| (142..=258).contains(&n)), "{hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_peak_ewma_spread_concurrent_load() {
    for policy in [BalancePolicy::LeastRequest, BalancePolicy::PeakEwma] {
        let backends = three_backends([2, 2, 2]).await;
        let balancer = Balancer::new(BalancerConfig::default().with_policy(policy).with_seed(3));
        let proxy = proxy(
            cluster(&ports(&backends), &ServiceSpec::default()),
            &balancer,
        )
        .await;
        load(proxy, 6, 600).await;
        // Equal endpoints under 6 concurrent clients: every endpoint carries a fair part;
        // bound: at least 15 % each (a third is 33 %).
        let hits = hits(&backends);
        eprintln!("{policy}, 600 requests from 6 clients: {hits:?}");
        assert_eq!(hits.iter().sum::<usize>(), 600);
        assert!(hits.iter().all(|&n| n >= 90), "{policy}: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_under_15_percent_to_a_ten_times_slower_endpoint() {
    // 40 ms against 4 ms.
    let backends = three_backends([40, 4, 4]).await;
    let balancer = Balancer::new(BalancerConfig::default().with_seed(5));
    assert_eq!(balancer.config().policy, BalancePolicy::PeakEwma);
    let proxy = proxy(
        cluster(&ports(&backends), &ServiceSpec::default()),
        &balancer,
    )
    .await;
    load(proxy, 4, 400).await;
    let hits = hits(&backends);
    eprintln!("peak-ewma, 400 requests from 4 clients, 40 ms vs 4 ms: {hits:?}");
    assert_eq!(hits.iter().sum::<usize>(), 400);
    assert!(
        hits[0] * 100 < 400 * 15,
        "slow endpoint got {} of 400: {hits:?}",
        hits[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_annotation_overrides_the_configured_policy() {
    let backends = three_backends([0, 0, 0]).await;
    // Configured: Random; the Service asks for round-robin.
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::Random)
            .with_seed(9),
    );
    let spec = ServiceSpec {
        balancer: Some("round-robin"),
        ..ServiceSpec::default()
    };
    let proxy = proxy(cluster(&ports(&backends), &spec), &balancer).await;
    load(proxy, 1, 90).await;
    assert_eq!(hits(&backends), [30, 30, 30]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_endpoints_serve_only_when_no_ready_one_is_left() {
    let backends = three_backends([0, 0, 0]).await;
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::Random)
            .with_seed(2),
    );
    let all = ports(&backends);
    let spec = ServiceSpec {
        terminating: vec![all[1], all[2]],
        ..ServiceSpec::default()
    };
    let proxy = proxy(cluster(&all, &spec), &balancer).await;
    load(proxy, 1, 50).await;
    assert_eq!(hits(&backends), [50, 0, 0]);

    // The ready one is gone from the cluster: the terminating ones serve.
    let spec = ServiceSpec {
        terminating: vec![all[1], all[2]],
        ..ServiceSpec::default()
    };
    let proxy = self::proxy(cluster(&all[1..], &spec), &balancer).await;
    load(proxy, 1, 50).await;
    let hits = hits(&backends);
    assert_eq!(hits[0], 50);
    assert!(hits[1] > 5 && hits[2] > 5, "{hits:?}");
}
