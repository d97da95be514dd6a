//! ClientIP session affinity through the proxy.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use kube_bastion::test_util::ManualClock;
use kube_bastion::{BalancePolicy, Balancer, BalancerConfig};

use crate::harness::*;

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_sticks_to_its_endpoint_until_the_timeout() {
    let mut backends = Vec::new();
    for name in ["b0", "b1", "b2"] {
        backends.push(Backend::start(name, Duration::ZERO).await);
    }
    let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
    let clock = ManualClock::new();
    let config = BalancerConfig::default()
        .with_policy(BalancePolicy::RoundRobin)
        .with_seed(1);
    let balancer = Balancer::with_clock(config, Arc::new(clock.clone()));
    let spec = ServiceSpec {
        client_ip_timeout: Some(60),
        ..ServiceSpec::default()
    };
    let proxy = proxy(cluster(&ports, &spec), &balancer).await;
    let (alice, bob) = (client_from(from(2)), client_from(from(3)));

    // Round-robin would rotate; each address keeps its first endpoint instead, each use
    // renewing its timeout.
    let alice_first = get(&alice, proxy).await.body;
    let bob_first = get(&bob, proxy).await.body;
    assert_ne!(alice_first, bob_first);
    for _ in 0..10 {
        clock.advance(Duration::from_secs(50));
        assert_eq!(get(&alice, proxy).await.body, alice_first);
        assert_eq!(get(&bob, proxy).await.body, bob_first);
    }
    assert_eq!(balancer.affinity_clients(&service_key()), 2);

    // Alice is silent for longer than timeoutSeconds: her next request is balanced afresh
    // (the rotation's next turn) and sticks from then on.
    clock.advance(Duration::from_secs(61));
    // Turns so far: alice b0, bob b1. Bob's entry expired too: he takes b2, a new client
    // b0, so alice, balanced afresh, gets b1.
    assert_eq!(get(&bob, proxy).await.body, "b2");
    assert_eq!(get(&client_from(from(4)), proxy).await.body, "b0");
    let alice_now = get(&alice, proxy).await.body;
    assert_eq!((alice_first.as_str(), alice_now.as_str()), ("b0", "b1"));
    for _ in 0..5 {
        assert_eq!(get(&alice, proxy).await.body, alice_now);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_session_affinity_the_client_address_is_ignored() {
    let mut backends = Vec::new();
    for name in ["b0", "b1", "b2"] {
        backends.push(Backend::start(name, Duration::ZERO).await);
    }
    let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
    let balancer = Balancer::new(
        BalancerConfig::default()
            .with_policy(BalancePolicy::RoundRobin)
            .with_seed(1),
    );
    let proxy = proxy(cluster(&ports, &ServiceSpec::default()), &balancer).await;
    let alice = client_from(from(2));
    for _ in 0..30 {
        assert_eq!(get(&alice, proxy).await.status, 200);
    }
    assert_eq!(
        backends.iter().map(Backend::hits).collect::<Vec<_>>(),
        [10, 10, 10]
    );
    assert_eq!(balancer.affinity_clients(&service_key()), 0);
}
