//! Unit tests of the balancer: deterministic (seeded choices, a hand-driven clock).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube_bastion_core::{
    AppProtocol, Candidate, EndpointState, Host, Scheme, ServiceInfo, Target, TransportKind,
};

use super::limit::OverloadReason;
use super::*;

const PORT: u16 = 8080;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn addr(n: u32) -> SocketAddr {
    SocketAddr::new(ip(n), PORT)
}

fn candidate(n: u32, state: EndpointState) -> Candidate {
    Candidate {
        host: Host::Ip(ip(n)),
        port: Some(PORT),
        pod: None,
        state,
    }
}

fn ready(ids: impl IntoIterator<Item = u32>) -> Vec<Candidate> {
    ids.into_iter()
        .map(|n| candidate(n, EndpointState::Ready))
        .collect()
}

fn service_info(name: &str) -> ServiceInfo {
    ServiceInfo {
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        client_ip_affinity_seconds: None,
        balancer: None,
    }
}

fn target(candidates: Vec<Candidate>) -> Target {
    Target {
        scheme: Scheme::Http,
        scheme_explicit: false,
        protocol: AppProtocol::Http,
        transport: TransportKind::Generic,
        candidates: candidates.into(),
        service: Some(service_info("web")),
        tls_server_name: None,
    }
}

fn key() -> ServiceKey {
    ServiceKey::new("default", "web", "http")
}

/// Requests in flight on endpoint `n` of the test Service (which must have state).
fn in_flight_on(balancer: &Balancer, n: u32) -> u32 {
    balancer
        .endpoint(&key(), addr(n))
        .expect("endpoint state")
        .in_flight
}

fn balancer(config: BalancerConfig) -> (Balancer, ManualClock) {
    let clock = ManualClock::new();
    (Balancer::with_clock(config, Arc::new(clock.clone())), clock)
}

fn config(policy: BalancePolicy) -> BalancerConfig {
    BalancerConfig::default().with_policy(policy).with_seed(42)
}

/// Runs `f` inside a current-thread runtime (starting a handle is async).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// First choice of one plan, started and completed at once as a success.
fn pick_and_complete(balancer: &Balancer, target: &Target, client: Option<IpAddr>) -> usize {
    let attempt = balancer.plan(target, client).next().expect("a candidate");
    let index = attempt.index();
    block_on(attempt.start()).expect("no cap").success();
    index
}

fn first_pick(balancer: &Balancer, target: &Target) -> usize {
    balancer
        .plan(target, None)
        .next()
        .expect("a candidate")
        .index()
}

fn counts(picks: impl IntoIterator<Item = usize>, n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for index in picks {
        counts[index] += 1;
    }
    counts
}

#[test]
fn random_is_uniform_within_seven_sigma() {
    let (balancer, _) = balancer(config(BalancePolicy::Random));
    let target = target(ready(1..=3));
    let draws = 30_000;
    let counts = counts((0..draws).map(|_| first_pick(&balancer, &target)), 3);
    // Binomial(30000, 1/3): sigma = 81.6; 7 sigma = 571.
    for count in &counts {
        assert!((9_429..=10_571).contains(count), "{counts:?}");
    }
}

#[test]
fn round_robin_takes_turns_exactly() {
    let (balancer, _) = balancer(config(BalancePolicy::RoundRobin));
    let target = target(ready(1..=3));
    let picks: Vec<usize> = (0..9).map(|_| first_pick(&balancer, &target)).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn least_request_keeps_in_flight_counts_level() {
    let (balancer, _) = balancer(config(BalancePolicy::LeastRequest));
    let target = target(ready(1..=3));
    let mut held = Vec::new();
    for _ in 0..300 {
        let attempt = balancer.plan(&target, None).next().unwrap();
        held.push(block_on(attempt.start()).unwrap());
    }
    let in_flight: Vec<u32> = (1..=3).map(|n| in_flight_on(&balancer, n)).collect();
    assert_eq!(in_flight.iter().sum::<u32>(), 300);
    let spread = in_flight.iter().max().unwrap() - in_flight.iter().min().unwrap();
    // The most loaded endpoint is only chosen on a tie, so the spread stays tiny.
    assert!(spread <= 2, "{in_flight:?}");
    drop(held);
    for n in 1..=3 {
        assert_eq!(in_flight_on(&balancer, n), 0);
    }
}

#[test]
fn least_request_never_picks_a_busy_endpoint_over_idle_ones() {
    let (balancer, _) = balancer(config(BalancePolicy::LeastRequest));
    let target = target(ready(1..=3));
    // Make endpoint 0 busy with five long requests: hold every request until it has five,
    // then let the others finish.
    let mut held = Vec::new();
    for _ in 0..1_000 {
        let attempt = balancer.plan(&target, None).next().unwrap();
        held.push((attempt.index(), block_on(attempt.start()).unwrap()));
        if held.iter().filter(|(index, _)| *index == 0).count() == 5 {
            break;
        }
    }
    held.retain(|(index, _)| *index == 0);
    assert_eq!(held.len(), 5);
    let counts = counts(
        (0..300).map(|_| pick_and_complete(&balancer, &target, None)),
        3,
    );
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!(counts[1] > 100 && counts[2] > 100, "{counts:?}");
}

#[test]
fn peak_ewma_sends_little_to_a_ten_times_slower_endpoint() {
    let (balancer, clock) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready(1..=3));
    let latency = |index: usize| Duration::from_millis(if index == 0 { 20 } else { 2 });
    let mut counts = [0usize; 3];
    for _ in 0..3_000 {
        let attempt = balancer.plan(&target, None).next().unwrap();
        let index = attempt.index();
        let handle = block_on(attempt.start()).unwrap();
        clock.advance(latency(index));
        handle.success();
        counts[index] += 1;
    }
    // Sequential requests: the slow endpoint only wins when its estimate has decayed
    // below its peers'; bound: under 5 %.
    assert!(counts[0] < 150, "{counts:?}");
    assert!(counts[1] > 1_000 && counts[2] > 1_000, "{counts:?}");
    let slow = balancer.endpoint(&key(), addr(1)).unwrap().latency.unwrap();
    let fast = balancer.endpoint(&key(), addr(2)).unwrap().latency.unwrap();
    assert!(slow > fast * 5, "{slow:?} vs {fast:?}");
}

#[test]
fn peak_ewma_spreads_concurrent_load_over_equal_endpoints() {
    let (balancer, _) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready(1..=4));
    let mut held = Vec::new();
    for _ in 0..400 {
        let attempt = balancer.plan(&target, None).next().unwrap();
        held.push(block_on(attempt.start()).unwrap());
    }
    let in_flight: Vec<u32> = (1..=4).map(|n| in_flight_on(&balancer, n)).collect();
    // Equal (unmeasured) latency: the cost is driven by the in-flight count alone.
    assert!(
        in_flight.iter().all(|&n| (90..=110).contains(&n)),
        "{in_flight:?}"
    );
}

#[test]
fn same_seed_same_choices() {
    for policy in BalancePolicy::ALL {
        let run = || {
            let (balancer, _) = balancer(config(policy));
            let target = target(ready(1..=50));
            (0..200)
                .map(|_| pick_and_complete(&balancer, &target, None))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run(), "{policy}");
    }
}

#[test]
fn annotation_overrides_the_configured_policy_and_bad_values_fall_back() {
    let (balancer, _) = balancer(config(BalancePolicy::Random));
    let mut target = target(ready(1..=3));
    target.service.as_mut().unwrap().balancer = Some("round-robin".into());
    let picks: Vec<usize> = (0..6).map(|_| first_pick(&balancer, &target)).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    assert_eq!(
        balancer.plan(&target, None).policy(),
        Some(BalancePolicy::RoundRobin)
    );

    target.service.as_mut().unwrap().balancer = Some("fastest-please".into());
    assert_eq!(
        balancer.plan(&target, None).policy(),
        Some(BalancePolicy::Random)
    );
    target.service.as_mut().unwrap().balancer = None;
    assert_eq!(
        balancer.plan(&target, None).policy(),
        Some(BalancePolicy::Random)
    );
}

#[test]
fn attempts_are_distinct_and_capped() {
    let target = target(ready(1..=5));
    for (max, expected) in [(0, 1), (1, 1), (3, 3), (5, 5), (10, 5)] {
        for policy in BalancePolicy::ALL {
            let (balancer, _) = balancer(config(policy).with_max_attempts(max));
            let mut indices: Vec<usize> = balancer.plan(&target, None).map(|a| a.index()).collect();
            assert_eq!(indices.len(), expected, "{policy} max {max}");
            indices.sort_unstable();
            indices.dedup();
            assert_eq!(
                indices.len(),
                expected,
                "{policy} max {max}: repeated candidate"
            );
        }
    }
}

#[test]
fn serving_terminating_endpoints_only_after_every_ready_one() {
    let mut candidates = ready(1..=3);
    candidates.extend([4, 5].map(|n| candidate(n, EndpointState::ServingTerminating)));
    let target = target(candidates);
    for policy in BalancePolicy::ALL {
        let (balancer, _) = balancer(config(policy).with_max_attempts(5));
        for _ in 0..50 {
            let order: Vec<usize> = balancer.plan(&target, None).map(|a| a.index()).collect();
            assert!(order[..3].iter().all(|&i| i < 3), "{policy}: {order:?}");
            assert!(order[3..].iter().all(|&i| i >= 3), "{policy}: {order:?}");
        }
    }
    // Nothing ready: terminating endpoints serve.
    let target = self::target(
        [7, 8]
            .map(|n| candidate(n, EndpointState::ServingTerminating))
            .to_vec(),
    );
    let (balancer, _) = balancer(config(BalancePolicy::Random));
    let counts = counts((0..100).map(|_| first_pick(&balancer, &target)), 2);
    assert!(counts[0] > 20 && counts[1] > 20, "{counts:?}");
}

fn ejection(consecutive: u32, base_secs: u64) -> EjectionConfig {
    EjectionConfig {
        consecutive_failures: consecutive,
        base_ejection_time: Duration::from_secs(base_secs),
        max_ejection_time: Duration::from_secs(base_secs * 4),
        ..EjectionConfig::default()
    }
}

/// One request where every attempt that lands on `dead` fails to connect and fails over.
/// Returns the endpoint that served it (if any) and every index attempted.
fn request_with_dead(
    balancer: &Balancer,
    target: &Target,
    dead: &[usize],
) -> (Option<usize>, Vec<usize>) {
    let mut attempts = balancer.plan(target, None);
    let mut attempted = Vec::new();
    while let Some(attempt) = attempts.next() {
        attempted.push(attempt.index());
        let handle = block_on(attempt.start()).unwrap();
        if dead.contains(&attempt.index()) {
            handle.connect_failed();
            if !attempts.may_retry(FailureKind::Connect, &Method::POST, false) {
                return (None, attempted);
            }
        } else {
            handle.success();
            return (Some(attempt.index()), attempted);
        }
    }
    (None, attempted)
}

#[test]
fn a_failing_endpoint_is_ejected_retried_after_backoff_and_returns_on_success() {
    let (balancer, clock) =
        balancer(config(BalancePolicy::RoundRobin).with_ejection(ejection(3, 10)));
    let target = target(ready(1..=3));
    // Endpoint 0 refuses connections: every request still succeeds through failover.
    for _ in 0..30 {
        assert!(request_with_dead(&balancer, &target, &[0]).0.is_some());
    }
    let dead = balancer.endpoint(&key(), addr(1)).unwrap();
    assert!(dead.ejected, "{dead:?}");
    assert_eq!(dead.consecutive_failures, 3);
    assert_eq!(dead.ejections, 1);
    assert_eq!(dead.ejected_for, Duration::from_secs(10));
    assert_eq!(balancer.ejected_endpoints(&key()), 1);
    // While ejected it is never the first choice.
    for _ in 0..100 {
        assert_ne!(first_pick(&balancer, &target), 0);
    }

    // After the backoff it is tried again; still failing, it is ejected for twice as long.
    clock.advance(Duration::from_secs(10));
    let mut retried = false;
    for _ in 0..3 {
        let (served, attempted) = request_with_dead(&balancer, &target, &[0]);
        assert!(served.is_some());
        retried |= attempted.contains(&0);
    }
    assert!(retried);
    let again = balancer.endpoint(&key(), addr(1)).unwrap();
    assert!(again.ejected);
    assert_eq!(again.ejections, 2);
    assert_eq!(again.ejected_for, Duration::from_secs(20));

    // It recovers: after the next backoff, one success brings it back for good.
    clock.advance(Duration::from_secs(20));
    let counts = counts(
        (0..30).filter_map(|_| request_with_dead(&balancer, &target, &[]).0),
        3,
    );
    assert_eq!(counts, [10, 10, 10]);
    let back = balancer.endpoint(&key(), addr(1)).unwrap();
    assert!(!back.ejected);
    assert_eq!(back.consecutive_failures, 0);
    assert_eq!(balancer.ejected_endpoints(&key()), 0);
}

#[test]
fn never_more_than_the_configured_share_is_ejected_and_ejected_ones_are_a_last_resort() {
    let (balancer, _) = balancer(
        config(BalancePolicy::Random)
            .with_ejection(ejection(1, 60))
            .with_max_attempts(4),
    );
    let target = target(ready(1..=4));
    // Everything is down.
    for _ in 0..50 {
        assert_eq!(request_with_dead(&balancer, &target, &[0, 1, 2, 3]).0, None);
    }
    // 50 % of 4.
    assert_eq!(balancer.ejected_endpoints(&key()), 2);
    let ejected = (1..=4)
        .filter(|&n| balancer.endpoint(&key(), addr(n)).unwrap().ejected)
        .count();
    assert_eq!(ejected, 2);
    // Healthy ones come first, ejected ones are still tried when nothing else is left.
    let order: Vec<usize> = balancer.plan(&target, None).map(|a| a.index()).collect();
    assert_eq!(order.len(), 4);
    let is_ejected = |i: usize| {
        balancer
            .endpoint(&key(), addr(i as u32 + 1))
            .unwrap()
            .ejected
    };
    assert!(!is_ejected(order[0]) && !is_ejected(order[1]), "{order:?}");
    assert!(is_ejected(order[2]) && is_ejected(order[3]), "{order:?}");
}

#[test]
fn server_errors_eject_only_when_configured() {
    for eject_on_5xx in [false, true] {
        let mut ejection = ejection(2, 30);
        ejection.eject_on_5xx = eject_on_5xx;
        let (balancer, _) = balancer(config(BalancePolicy::RoundRobin).with_ejection(ejection));
        let target = target(ready(1..=2));
        for _ in 0..4 {
            let attempt = balancer.plan(&target, None).next().unwrap();
            let mut handle = block_on(attempt.start()).unwrap();
            let status = if attempt.index() == 0 { 503 } else { 200 };
            handle.response_head(http::StatusCode::from_u16(status).unwrap());
            drop(handle); // body end
        }
        let first = balancer.endpoint(&key(), addr(1)).unwrap();
        assert_eq!(first.ejected, eject_on_5xx, "{first:?}");
        assert!(!balancer.endpoint(&key(), addr(2)).unwrap().ejected);
    }
}

#[test]
fn client_ip_affinity_holds_while_used_and_expires_after_the_timeout() {
    let (balancer, clock) =
        balancer(config(BalancePolicy::RoundRobin).with_ejection(ejection(1, 30)));
    let mut target = target(ready(1..=3));
    target.service.as_mut().unwrap().client_ip_affinity_seconds = Some(60);
    let alice = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let bob = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));

    let sticky = pick_and_complete(&balancer, &target, alice);
    for _ in 0..20 {
        // Others rotate; alice stays, each use renewing her timeout.
        pick_and_complete(&balancer, &target, bob);
        clock.advance(Duration::from_secs(59));
        assert_eq!(pick_and_complete(&balancer, &target, alice), sticky);
    }
    assert_eq!(balancer.affinity_clients(&key()), 2);

    // Silent for longer than the timeout: her next request is balanced afresh.
    clock.advance(Duration::from_secs(61));
    let rotation: Vec<usize> = (0..3).map(|_| first_pick(&balancer, &target)).collect();
    let expected_next = (rotation[2] + 1) % 3;
    assert_eq!(pick_and_complete(&balancer, &target, alice), expected_next);

    // Her endpoint fails: she moves, and sticks to the new one.
    let current = expected_next;
    let mut attempts = balancer.plan(&target, alice);
    let first = attempts.next().unwrap();
    assert_eq!(first.index(), current);
    block_on(first.start()).unwrap().connect_failed();
    let second = attempts.next().unwrap();
    assert_ne!(second.index(), current);
    block_on(second.start()).unwrap().success();
    for _ in 0..5 {
        assert_eq!(pick_and_complete(&balancer, &target, alice), second.index());
    }
}

#[test]
fn affinity_is_ignored_without_client_ip_session_affinity() {
    let (balancer, _) = balancer(config(BalancePolicy::RoundRobin));
    let target = target(ready(1..=3));
    let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let picks: Vec<usize> = (0..3)
        .map(|_| pick_and_complete(&balancer, &target, client))
        .collect();
    assert_eq!(picks, [0, 1, 2]);
    assert_eq!(balancer.affinity_clients(&key()), 0);
}

#[test]
fn retry_rules_follow_idempotency_and_the_option() {
    let target = target(ready(1..=3));
    for retry_on_reset in [false, true] {
        let mut config = config(BalancePolicy::Random);
        config.retry_idempotent_on_reset = retry_on_reset;
        let (balancer, _) = balancer(config);
        let mut attempts = balancer.plan(&target, None);
        attempts.next();
        assert!(attempts.may_retry(FailureKind::Connect, &Method::POST, false));
        assert!(!attempts.may_retry(FailureKind::BeforeResponseHead, &Method::POST, true));
        assert!(!attempts.may_retry(FailureKind::BeforeResponseHead, &Method::DELETE, true));
        assert!(!attempts.may_retry(FailureKind::BeforeResponseHead, &Method::GET, false));
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                attempts.may_retry(FailureKind::BeforeResponseHead, &method, true),
                retry_on_reset
            );
        }
        attempts.next();
        attempts.next();
        assert_eq!(attempts.tried(), 3);
        assert!(!attempts.may_retry(FailureKind::Connect, &Method::GET, true));
        assert!(attempts.next().is_none());
    }
}

#[test]
fn the_final_error_names_how_many_endpoints_were_tried() {
    let (balancer, _) = balancer(config(BalancePolicy::Random).with_max_attempts(2));
    let target = target(ready(1..=3));
    let mut attempts = balancer.plan(&target, None);
    while attempts.next().is_some() {}
    assert_eq!(
        attempts.exhausted_message(&"dial tcp 10.0.0.1:8080: connect: connection refused"),
        "error trying to reach service: dial tcp 10.0.0.1:8080: connect: connection refused \
         (tried 2 of 3 endpoints)"
    );
    // One candidate: kube-apiserver's text, unchanged.
    let single = self::target(ready([9]));
    let mut attempts = balancer.plan(&single, None);
    while attempts.next().is_some() {}
    assert_eq!(
        attempts.exhausted_message(&"boom"),
        "error trying to reach service: boom"
    );
}

#[test]
fn targets_without_a_service_are_tried_in_order_without_state() {
    let (balancer, _) = balancer(config(BalancePolicy::Random).with_max_attempts(5));
    let mut target = target(ready(1..=3));
    target.service = None;
    let order: Vec<usize> = balancer.plan(&target, None).map(|a| a.index()).collect();
    assert_eq!(order, [0, 1, 2]);
    let attempt = balancer.plan(&target, None).next().unwrap();
    let handle = block_on(attempt.start()).unwrap();
    assert_eq!(handle.endpoint(), None);
    handle.connect_failed();
    assert_eq!(balancer.tracked_endpoints(), 0);
    assert_eq!(balancer.tracked_services(), 0);
}

#[test]
fn handles_account_in_flight_and_latency_until_completion() {
    let (balancer, clock) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready([1]));
    let attempt = balancer.plan(&target, None).next().unwrap();
    let handle = block_on(attempt.start()).unwrap();
    assert_eq!(handle.endpoint(), Some(addr(1)));
    assert_eq!(balancer.endpoint(&key(), addr(1)).unwrap().in_flight, 1);
    clock.advance(Duration::from_millis(40));
    handle.success();
    let snapshot = balancer.endpoint(&key(), addr(1)).unwrap();
    assert_eq!(snapshot.in_flight, 0);
    let close = |a: Option<Duration>, ms: u64| {
        a.is_some_and(|a| a.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1))
    };
    assert!(close(snapshot.latency, 40), "{snapshot:?}");
    assert_eq!(snapshot.idle, Some(Duration::from_millis(40)));
    // A higher sample replaces the estimate at once (peak).
    let handle = block_on(balancer.plan(&target, None).next().unwrap().start()).unwrap();
    clock.advance(Duration::from_millis(100));
    handle.success();
    assert!(close(
        balancer.endpoint(&key(), addr(1)).unwrap().latency,
        100
    ));
    // A lower one pulls it down gradually.
    let handle = block_on(balancer.plan(&target, None).next().unwrap().start()).unwrap();
    clock.advance(Duration::from_millis(10));
    handle.success();
    let latency = balancer.endpoint(&key(), addr(1)).unwrap().latency.unwrap();
    assert!(
        latency < Duration::from_millis(100) && latency > Duration::from_millis(90),
        "{latency:?}"
    );
}

#[test]
fn an_upgrade_samples_latency_at_its_101_not_at_the_tunnel_end() {
    let (balancer, clock) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready([1]));
    let mut handle = block_on(balancer.plan(&target, None).next().unwrap().start()).unwrap();
    clock.advance(Duration::from_millis(5));
    handle.response_head(http::StatusCode::SWITCHING_PROTOCOLS);
    // The tunnel stays open for an hour: in flight all along, latency unchanged.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(balancer.endpoint(&key(), addr(1)).unwrap().in_flight, 1);
    handle.success();
    let snapshot = balancer.endpoint(&key(), addr(1)).unwrap();
    assert_eq!(snapshot.in_flight, 0);
    let latency = snapshot.latency.unwrap();
    assert!(
        latency.abs_diff(Duration::from_millis(5)) < Duration::from_micros(1),
        "{latency:?}"
    );
}

#[test]
fn state_stays_bounded_while_endpoints_churn() {
    let (balancer, _) = balancer(config(BalancePolicy::PeakEwma));
    let mut high_water = 0;
    for round in 0..1_000u32 {
        // Every round, a new set of ten endpoints (a rolling update that never ends).
        let target = target(ready(round * 10..round * 10 + 10));
        for _ in 0..20 {
            pick_and_complete(&balancer, &target, None);
            high_water = high_water.max(balancer.tracked_endpoints());
        }
    }
    // At most the current set and the one before it.
    assert!(high_water <= 20, "high water {high_water}");
    let last = target(ready(9_990..10_000));
    for _ in 0..10 {
        pick_and_complete(&balancer, &last, None);
    }
    assert!(
        balancer.tracked_endpoints() <= 10,
        "{}",
        balancer.tracked_endpoints()
    );
    assert_eq!(balancer.tracked_services(), 1);
}

#[test]
fn state_stays_bounded_under_a_shrinking_and_growing_list() {
    let (balancer, _) = balancer(config(BalancePolicy::LeastRequest));
    for round in 0..500u32 {
        let size = 1 + (round % 7) * 5;
        let target = target(ready((round..round + size).map(|n| n % 40)));
        for _ in 0..10 {
            pick_and_complete(&balancer, &target, None);
        }
    }
    assert!(
        balancer.tracked_endpoints() <= 40,
        "{}",
        balancer.tracked_endpoints()
    );
}

#[test]
fn the_balancer_wide_bound_caps_state_and_idle_services_are_forgotten() {
    let mut config = config(BalancePolicy::Random);
    config.max_tracked_endpoints = 50;
    let (balancer, clock) = balancer(config);
    let big = target(ready(0..1_000));
    for _ in 0..5_000 {
        pick_and_complete(&balancer, &big, None);
        assert!(balancer.tracked_endpoints() <= 50);
    }

    // Many Services, then silence.
    for n in 0..200 {
        let mut target = target(ready([n]));
        target.service = Some(service_info(&format!("svc-{n}")));
        pick_and_complete(&balancer, &target, None);
    }
    assert!(balancer.tracked_services() > 200);
    clock.advance(balancer.config().service_idle_timeout + Duration::from_secs(1));
    assert!(balancer.sweep() > 200);
    assert_eq!(balancer.tracked_services(), 0);
    assert_eq!(balancer.tracked_endpoints(), 0);
}

#[test]
fn idle_services_with_requests_in_flight_are_kept() {
    let (balancer, clock) = balancer(config(BalancePolicy::Random));
    let target = target(ready([1]));
    let handle = block_on(balancer.plan(&target, None).next().unwrap().start()).unwrap();
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(balancer.sweep(), 0);
    handle.success();
    assert_eq!(balancer.sweep(), 1);
}

#[test]
fn concurrency_cap_steers_away_and_refuses_when_full() {
    let (balancer, _) = balancer(
        config(BalancePolicy::LeastRequest).with_concurrency_limit(ConcurrencyLimit::new(1)),
    );
    let target = target(ready(1..=2));
    let first = balancer.plan(&target, None).next().unwrap();
    let held = block_on(first.start()).unwrap();
    for _ in 0..20 {
        let attempt = balancer.plan(&target, None).next().unwrap();
        assert_ne!(attempt.index(), first.index());
    }
    let second = balancer.plan(&target, None).next().unwrap();
    let _held_too = block_on(second.start()).unwrap();
    let third = balancer.plan(&target, None).next().unwrap();
    let refused = block_on(third.start()).unwrap_err();
    assert_eq!(refused.reason(), OverloadReason::QueueFull);
    assert!(
        refused
            .to_string()
            .contains("is at its limit of 1 concurrent requests"),
        "{refused}"
    );
    drop(held);
    assert!(block_on(balancer.plan(&target, None).next().unwrap().start()).is_ok());
}

#[test]
fn choice_is_o1_on_large_lists() {
    // Not a timing test: with 100,000 candidates and no state, a choice must not create
    // state for more than the endpoints it actually picked.
    let (balancer, _) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready(0..100_000));
    for _ in 0..100 {
        first_pick(&balancer, &target);
    }
    assert!(balancer.tracked_endpoints() <= 100);
}

#[test]
fn futures_and_handles_cross_threads() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
    send_sync::<RequestHandle>();
    let (balancer, _) = balancer(config(BalancePolicy::PeakEwma));
    let target = target(ready([1]));
    let attempt = balancer.plan(&target, None).next().unwrap();
    let start = attempt.start();
    send(&start);
}

#[test]
fn an_endpoint_that_leaves_and_returns_starts_afresh() {
    let (balancer, _) = balancer(config(BalancePolicy::RoundRobin).with_ejection(ejection(10, 30)));
    let all = target(ready(1..=3));
    // Endpoint 1 fails a few times (below the ejection threshold).
    for _ in 0..6 {
        request_with_dead(&balancer, &all, &[0]);
    }
    let failures = balancer
        .endpoint(&key(), addr(1))
        .unwrap()
        .consecutive_failures;
    assert!((1..10).contains(&failures), "{failures}");
    // It leaves the cluster view: its state is dropped once the sweep walked the list.
    let without = target(ready(2..=3));
    for _ in 0..10 {
        pick_and_complete(&balancer, &without, None);
    }
    assert!(balancer.endpoint(&key(), addr(1)).is_none());
    assert_eq!(balancer.tracked_endpoints(), 2);
    // It comes back at the same address (same position): fresh state, found again.
    for _ in 0..6 {
        pick_and_complete(&balancer, &all, None);
    }
    let back = balancer.endpoint(&key(), addr(1)).unwrap();
    assert_eq!(back.consecutive_failures, 0);
    assert_eq!(balancer.tracked_endpoints(), 3);
}

#[test]
fn state_follows_the_address_when_the_list_is_reordered_or_rebuilt() {
    let (balancer, _) = balancer(config(BalancePolicy::LeastRequest));
    let first = target(ready(1..=4));
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(block_on(balancer.plan(&first, None).next().unwrap().start()).unwrap());
    }
    let before: Vec<u32> = (1..=4).map(|n| in_flight_on(&balancer, n)).collect();
    assert_eq!(before.iter().sum::<u32>(), 8);
    // A new list (a new allocation) with the same endpoints in reverse order, plus a fifth:
    // the state is found by address, whatever position the list gives it.
    let reversed = target(ready([5, 4, 3, 2, 1]));
    let mut chosen = [0u32; 5];
    for _ in 0..20 {
        let attempt = balancer.plan(&reversed, None).next().unwrap();
        chosen[attempt.index()] += 1;
        held.push(block_on(attempt.start()).unwrap());
    }
    assert_eq!(
        balancer.endpoint(&key(), addr(5)).unwrap().in_flight,
        chosen[0]
    );
    for n in 1..=4u32 {
        assert_eq!(
            in_flight_on(&balancer, n),
            before[n as usize - 1] + chosen[5 - n as usize],
            "endpoint {n}"
        );
    }
    // And LeastRequest evened the load out: the newcomer caught up with the others.
    let in_flight: Vec<u32> = (1..=5).map(|n| in_flight_on(&balancer, n)).collect();
    let others_min = in_flight[..4].iter().min().unwrap();
    assert!(in_flight[4] + 1 >= *others_min, "{in_flight:?}");
    let spread = in_flight.iter().max().unwrap() - in_flight.iter().min().unwrap();
    assert!(spread <= 3, "{in_flight:?}");
    // Going back to the first list (and to a copy of it) finds the same state again.
    let copy = target(ready(1..=4));
    for list in [&first, &copy, &first] {
        let attempt = balancer.plan(list, None).next().unwrap();
        let handle = block_on(attempt.start()).unwrap();
        let n = attempt.index() as u32 + 1;
        assert_eq!(handle.endpoint(), Some(addr(n)));
        held.push(handle);
    }
    let total: u32 = (1..=5).map(|n| in_flight_on(&balancer, n)).sum();
    assert_eq!(total, 31);
    drop(held);
    for n in 1..=5 {
        assert_eq!(in_flight_on(&balancer, n), 0);
    }
}

#[test]
fn a_departed_endpoint_still_in_flight_never_shares_counts_with_a_newcomer() {
    let (balancer, _) = balancer(config(BalancePolicy::RoundRobin));
    let old = target(ready(1..=2));
    let attempt = balancer.plan(&old, None).next().unwrap();
    assert_eq!(attempt.index(), 0);
    let long = block_on(attempt.start()).unwrap();
    assert_eq!(long.endpoint(), Some(addr(1)));
    // Endpoint 1 leaves while its request is in flight; endpoints 3 to 5 arrive. Many
    // choices later its state is dropped, and newcomers take slots.
    let new = target(ready(2..=5));
    for _ in 0..100 {
        pick_and_complete(&balancer, &new, None);
    }
    assert!(balancer.endpoint(&key(), addr(1)).is_none());
    assert_eq!(balancer.tracked_endpoints(), 4);
    // Requests in flight on the newcomers are theirs alone.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(block_on(balancer.plan(&new, None).next().unwrap().start()).unwrap());
    }
    for n in 2..=5 {
        assert_eq!(in_flight_on(&balancer, n), 1);
    }
    // The departed endpoint's request ends: nobody else's count moves.
    long.success();
    for n in 2..=5 {
        assert_eq!(in_flight_on(&balancer, n), 1);
    }
    drop(held);
    // Its slot is reused later without carrying anything over.
    let again = target(ready(6..=9));
    for _ in 0..200 {
        pick_and_complete(&balancer, &again, None);
    }
    assert_eq!(balancer.tracked_endpoints(), 4);
    for n in 6..=9 {
        let state = balancer.endpoint(&key(), addr(n)).unwrap();
        assert_eq!(state.in_flight, 0);
        assert!(!state.ejected);
    }
}

#[test]
fn a_new_list_per_request_is_balanced_like_a_shared_one() {
    // Resolution copies the list when a deny CIDR filters it: every request then brings a
    // new allocation. Choices must still see the state (LeastRequest keeps levels even).
    let (balancer, _) = balancer(config(BalancePolicy::LeastRequest));
    let mut held = Vec::new();
    for _ in 0..300 {
        let fresh = target(ready(1..=3));
        let attempt = balancer.plan(&fresh, None).next().unwrap();
        held.push(block_on(attempt.start()).unwrap());
    }
    let in_flight: Vec<u32> = (1..=3).map(|n| in_flight_on(&balancer, n)).collect();
    assert_eq!(in_flight.iter().sum::<u32>(), 300);
    let spread = in_flight.iter().max().unwrap() - in_flight.iter().min().unwrap();
    assert!(spread <= 2, "{in_flight:?}");
}

#[test]
fn the_same_address_twice_in_one_list_shares_one_state() {
    let (balancer, _) = balancer(config(BalancePolicy::RoundRobin));
    let target = target(ready([1, 2, 1]));
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(block_on(balancer.plan(&target, None).next().unwrap().start()).unwrap());
    }
    assert_eq!(balancer.tracked_endpoints(), 2);
    assert_eq!(balancer.endpoint(&key(), addr(1)).unwrap().in_flight, 4);
    assert_eq!(balancer.endpoint(&key(), addr(2)).unwrap().in_flight, 2);
}

#[test]
fn an_attempt_started_after_its_service_was_forgotten_keeps_no_state() {
    let (balancer, clock) = balancer(config(BalancePolicy::Random));
    let target = target(ready(1..=3));
    let attempt = balancer.plan(&target, None).next().unwrap();
    assert_eq!(balancer.tracked_endpoints(), 1);
    clock.advance(balancer.config().service_idle_timeout + Duration::from_secs(1));
    assert_eq!(balancer.sweep(), 1);
    assert_eq!(balancer.tracked_endpoints(), 0);
    // The late start still accounts the request, on state nobody keeps.
    let handle = block_on(attempt.start()).unwrap();
    assert_eq!(handle.endpoint(), Some(addr(attempt.index() as u32 + 1)));
    handle.success();
    assert_eq!(balancer.tracked_endpoints(), 0);
    assert_eq!(balancer.tracked_services(), 0);
}
