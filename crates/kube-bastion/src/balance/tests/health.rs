//! Health, affinity, accounting and the bounds of the balancer's state.

use super::*;

pub(super) fn ejection(consecutive: u32, base_secs: u64) -> EjectionConfig {
    EjectionConfig {
        consecutive_failures: consecutive,
        base_ejection_time: Duration::from_secs(base_secs),
        max_ejection_time: Duration::from_secs(base_secs * 4),
        ..EjectionConfig::default()
    }
}

/// One request where every attempt that lands on `dead` fails to connect and fails over.
/// Returns the endpoint that served it (if any) and every index attempted.
pub(super) fn request_with_dead(
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
