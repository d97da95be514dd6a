//! The cost of choosing an endpoint (the balancer's first choice) among 10, 1,000 and
//! 100,000 candidates for every policy, plus a full request's accounting (choice, start,
//! completion). The choice must stay flat in the candidate count. One more row per size
//! measures the worst case for the balancer's position map: a different list allocation
//! (same endpoints) at every choice, as when a deny CIDR makes resolution copy the list.
//!
//! `cargo bench --locked --bench balance -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kube_bastion::core::{
    AppProtocol, Candidate, EndpointState, Host, Scheme, ServiceInfo, Target, TransportKind,
};
use kube_bastion::{BalancePolicy, Balancer, BalancerConfig};

fn target(n: u32) -> Target {
    Target {
        scheme: Scheme::Http,
        scheme_explicit: false,
        protocol: AppProtocol::Http,
        transport: TransportKind::Generic,
        candidates: (0..n)
            .map(|i| Candidate {
                host: Host::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
                port: Some(8080),
                pod: Some(format!("web-{i}").into()),
                state: EndpointState::Ready,
            })
            .collect(),
        service: Some(ServiceInfo {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            client_ip_affinity_seconds: None,
            balancer: None,
            forward_identity: false,
        }),
        tls_server_name: None,
    }
}

fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/choose");
    for n in [10u32, 1_000, 100_000] {
        let target = target(n);
        for policy in BalancePolicy::ALL {
            let balancer =
                Balancer::new(BalancerConfig::default().with_policy(policy).with_seed(1));
            // Steady state: state exists for (almost) every endpoint, as after a while in
            // production; without this the first picks of a large list measure allocation.
            for _ in 0..5 * n {
                black_box(balancer.choose(&target, None));
            }
            group.bench_with_input(
                BenchmarkId::new(policy.as_str(), n),
                &target,
                |b, target| b.iter(|| balancer.choose(black_box(target), None)),
            );
        }
        // The list changes at every choice: two allocations of the same endpoints, in turn.
        // Every choice rebinds the Service's position map and checks its samples by address.
        let twin = Target {
            candidates: target.candidates.iter().cloned().collect(),
            ..target.clone()
        };
        let lists = [&target, &twin];
        let balancer = Balancer::new(BalancerConfig::default().with_seed(1));
        for i in 0..5 * n as usize {
            black_box(balancer.choose(lists[i % 2], None));
        }
        let mut turn = 0usize;
        group.bench_function(
            BenchmarkId::new("peak-ewma-new-list-every-choice", n),
            |b| {
                b.iter(|| {
                    turn += 1;
                    balancer.choose(black_box(lists[turn % 2]), None)
                })
            },
        );
        // Baselines measured in the same run: kube-apiserver's choice at best (one random
        // index, no state), and the same reading the chosen candidate's address, the memory
        // access any choice pays at least once.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |len: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % len as u64) as usize
        };
        group.bench_with_input(
            BenchmarkId::new("baseline-random-index", n),
            &target,
            |b, target| b.iter(|| black_box(next(target.candidates.len()))),
        );
        group.bench_with_input(
            BenchmarkId::new("baseline-read-one-candidate", n),
            &target,
            |b, target| {
                b.iter(|| {
                    let candidate = &target.candidates[next(target.candidates.len())];
                    black_box((&candidate.host, candidate.port))
                })
            },
        );
    }
    group.finish();
}

fn request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("balance/request");
    let target = target(1_000);
    let large = self::target(100_000);
    for policy in [BalancePolicy::Random, BalancePolicy::PeakEwma] {
        // The same among 100,000 candidates: the start fetches the chosen endpoint's state,
        // which the choice did not touch.
        let balancer = Balancer::new(BalancerConfig::default().with_policy(policy).with_seed(1));
        for _ in 0..500_000 {
            runtime
                .block_on(balancer.choose_and_complete(&large, None))
                .expect("candidate");
        }
        group.bench_function(
            BenchmarkId::new(policy.as_str(), "choose+start+complete/100000"),
            |b| {
                b.iter(|| {
                    runtime
                        .block_on(balancer.choose_and_complete(black_box(&large), None))
                        .expect("candidate");
                })
            },
        );

        let balancer = Balancer::new(BalancerConfig::default().with_policy(policy).with_seed(1));
        let affinity = ServiceInfo {
            client_ip_affinity_seconds: Some(10_800),
            ..target.service.clone().expect("service")
        };
        let sticky = Target {
            service: Some(affinity),
            ..target.clone()
        };
        group.bench_function(
            BenchmarkId::new(policy.as_str(), "choose+start+complete"),
            |b| {
                b.iter(|| {
                    runtime
                        .block_on(balancer.choose_and_complete(black_box(&target), None))
                        .expect("candidate");
                })
            },
        );
        let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        group.bench_function(
            BenchmarkId::new(policy.as_str(), "client-ip-affinity"),
            |b| b.iter(|| balancer.choose(black_box(&sticky), client)),
        );
    }
    group.finish();
}

criterion_group!(benches, choose, request);
criterion_main!(benches);
