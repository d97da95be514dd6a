//! The balancer's state stays bounded; choices stay O(1); handles cross threads.

use super::health::{ejection, request_with_dead};
use super::*;

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
