//! Failover, passive health, the attempt cap and the final error.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use kube_bastion::test_util::ManualClock;
use kube_bastion::{BalancePolicy, Balancer, BalancerConfig, ConcurrencyLimit, EjectionConfig};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_among_three_costs_no_client_an_error_and_is_ejected() {
    let a = Backend::start("a", Duration::ZERO).await;
    let b = Backend::start("b", Duration::ZERO).await;
    let dead = closed_port().await;
    let balancer = Balancer::new(BalancerConfig::default().with_seed(11));
    let proxy = proxy(
        cluster(
            &[a.addr.port(), dead, b.addr.port()],
            &ServiceSpec::default(),
        ),
        &balancer,
    )
    .await;
    let client = client();
    for i in 0..1_000 {
        let answer = get(&client, proxy).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    assert_eq!(a.hits() + b.hits(), 1_000);
    let state = balancer
        .endpoint(&service_key(), loopback(dead))
        .expect("state of the dead endpoint");
    eprintln!(
        "dead endpoint among three, 1,000 requests: {} + {} served, {state:?}",
        a.hits(),
        b.hits()
    );
    assert!(state.ejected, "{state:?}");
    assert_eq!(balancer.ejected_endpoints(&service_key()), 1);
    // Ejected after the configured five failures in a row, then left alone.
    assert_eq!(
        state.consecutive_failures,
        EjectionConfig::default().consecutive_failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_endpoint_comes_back_after_its_backoff() {
    let clock = ManualClock::new();
    let mut ejection = EjectionConfig::default();
    ejection.consecutive_failures = 2;
    ejection.base_ejection_time = Duration::from_secs(10);
    let config = BalancerConfig::default()
        .with_policy(BalancePolicy::RoundRobin)
        .with_seed(1)
        .with_ejection(ejection);
    let balancer = Balancer::with_clock(config, Arc::new(clock.clone()));
    let a = Backend::start("a", Duration::ZERO).await;
    let down = closed_port().await;
    let proxy = proxy(
        cluster(&[a.addr.port(), down], &ServiceSpec::default()),
        &balancer,
    )
    .await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, proxy).await.status, 200);
    }
    assert!(
        balancer
            .endpoint(&service_key(), loopback(down))
            .unwrap()
            .ejected
    );

    // It comes back up; while its ejection lasts it gets nothing.
    let revived = Backend::start_on(down, "revived").await;
    for _ in 0..10 {
        assert_eq!(get(&client, proxy).await.status, 200);
    }
    assert_eq!(revived.hits(), 0);

    // After the backoff it is tried again and, answering, takes its turns again.
    clock.advance(Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(get(&client, proxy).await.status, 200);
    }
    assert!(
        revived.hits() >= 9,
        "revived endpoint served {}",
        revived.hits()
    );
    let state = balancer.endpoint(&service_key(), loopback(down)).unwrap();
    assert!(
        !state.ejected && state.consecutive_failures == 0,
        "{state:?}"
    );
    assert_eq!(balancer.ejected_endpoints(&service_key()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_dead_is_503_naming_how_many_were_tried() {
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push(closed_port().await);
    }
    let balancer = Balancer::new(BalancerConfig::default().with_seed(4));
    let proxy = proxy(cluster(&ports, &ServiceSpec::default()), &balancer).await;
    let answer = get(&client(), proxy).await;
    assert_eq!(answer.status, 503);
    let (code, reason, message) = answer.status_body();
    assert_eq!((code, reason.as_deref()), (503, Some("ServiceUnavailable")));
    assert!(
        message.starts_with("error trying to reach service: dial tcp 127.0.0.1:"),
        "{message}"
    );
    assert!(message.ends_with("(tried 3 of 3 endpoints)"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_cap_bounds_failover() {
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.push(closed_port().await);
    }
    let balancer = Balancer::new(BalancerConfig::default().with_max_attempts(2).with_seed(4));
    let proxy = proxy(cluster(&ports, &ServiceSpec::default()), &balancer).await;
    let answer = get(&client(), proxy).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.status_body().2.ends_with("(tried 2 of 5 endpoints)"),
        "{}",
        answer.body
    );
    // Exactly two endpoints saw a failure.
    let failed: Vec<u32> = ports
        .iter()
        .filter_map(|&p| balancer.endpoint(&service_key(), loopback(p)))
        .map(|s| s.consecutive_failures)
        .collect();
    assert_eq!(failed, [1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_fails_over_on_refusal_but_is_never_sent_twice() {
    // Refused connection: nothing left, the POST goes to the live endpoint with its body.
    let live = Backend::start("live", Duration::ZERO).await;
    let dead = closed_port().await;
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::RoundRobin)
            .with_seed(1),
    );
    let proxy = proxy(
        cluster(&[dead, live.addr.port()], &ServiceSpec::default()),
        &balancer,
    )
    .await;
    let answer = call(&client(), proxy, Method::POST, "order=1").await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "live")
    );

    // The exchange breaks after the request left: a POST is not re-sent, even with retries
    // of idempotent requests on.
    let (first, first_seen) = hanging_up_backend().await;
    let (second, second_seen) = hanging_up_backend().await;
    let mut config = BalancerConfig::default().with_seed(1);
    config.retry_idempotent_on_reset = true;
    let balancer = Balancer::new(config);
    let proxy = self::proxy(
        cluster(&[first, second], &ServiceSpec::default()),
        &balancer,
    )
    .await;
    let answer = call(&client(), proxy, Method::POST, "order=2").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let seen = first_seen.load(Ordering::SeqCst) + second_seen.load(Ordering::SeqCst);
    assert_eq!(seen, 1, "the POST reached {seen} endpoints");
    assert!(
        answer.status_body().2.ends_with("(tried 1 of 2 endpoints)"),
        "{}",
        answer.body
    );

    // A GET may be retried (the option is on): both endpoints see it once.
    let answer = get(&client(), proxy).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let seen = first_seen.load(Ordering::SeqCst) + second_seen.load(Ordering::SeqCst);
    assert_eq!(seen, 3);
    assert!(
        answer.status_body().2.ends_with("(tried 2 of 2 endpoints)"),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_is_not_retried_after_a_reset_by_default() {
    let (first, first_seen) = hanging_up_backend().await;
    let (second, second_seen) = hanging_up_backend().await;
    let balancer = Balancer::new(BalancerConfig::default().with_seed(1));
    let proxy = proxy(
        cluster(&[first, second], &ServiceSpec::default()),
        &balancer,
    )
    .await;
    let answer = get(&client(), proxy).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        first_seen.load(Ordering::SeqCst) + second_seen.load(Ordering::SeqCst),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_cap_is_503_with_a_clear_message() {
    let slow = Backend::start("slow", Duration::from_millis(400)).await;
    let balancer =
        Balancer::new(BalancerConfig::default().with_concurrency_limit(ConcurrencyLimit::new(1)));
    let proxy = proxy(
        cluster(&[slow.addr.port()], &ServiceSpec::default()),
        &balancer,
    )
    .await;
    let first = tokio::spawn(async move { get(&client(), proxy).await });
    // Wait until the first request holds the endpoint's only slot.
    while balancer
        .endpoint(&service_key(), slow.addr)
        .is_none_or(|s| s.in_flight == 0)
    {
        tokio::task::yield_now().await;
    }
    let second = get(&client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)), proxy).await;
    assert_eq!(second.status, 503);
    let (_, reason, message) = second.status_body();
    assert_eq!(reason.as_deref(), Some("ServiceUnavailable"));
    assert!(
        message.contains("is at its limit of 1 concurrent requests"),
        "{message}"
    );
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        balancer
            .endpoint(&service_key(), slow.addr)
            .unwrap()
            .in_flight,
        0
    );
}
