//! Every row of `proxyable_ip.json`: the lenient parser, the kube rule, and the same address
//! as a pod IP, a node address and a service endpoint.

use std::net::IpAddr;

use kube_bastion_core::policy::{is_global_unicast, parse_ip_lenient};
use kube_bastion_core::{DestinationPolicy, Host, ResolveOptions};
use serde_json::{Value, json};

use crate::common::{
    assert_status, cluster, node, node_path, pod, pod_path, resolve_path, service, service_path,
};
use crate::support::data::vector_rows;

/// Resolves `ip` as a pod IP: `Some(true)` allowed, `Some(false)` 400 address not allowed.
fn as_pod_ip(ip: &str) -> bool {
    let cluster = cluster(vec![pod("ns", "p", &[ip], json!([]))]);
    let result = resolve_path(
        &*cluster.snapshot(),
        &pod_path("ns", "p:80"),
        &ResolveOptions::default(),
    );
    match result {
        Ok(target) => {
            assert_eq!(
                target.candidates[0].host,
                Host::Ip(parse_ip_lenient(ip).expect("parsed"))
            );
            true
        }
        Err(_) => {
            assert_status(&result, 400, Some("BadRequest"), "address not allowed");
            false
        }
    }
}

/// Resolves `ip` as the only endpoint of a service whose pod has that IP.
fn as_service_endpoint(ip: &str) -> bool {
    let cluster = cluster(vec![
        pod("ns", "p", &[ip], json!([])),
        service("ns", "s", json!([{"port": 80}])),
        json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "s", "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p"}}],
                         "ports": [{"port": 80}]}],
        }),
    ]);
    let result = resolve_path(
        &*cluster.snapshot(),
        &service_path("ns", "s"),
        &ResolveOptions::default(),
    );
    match result {
        Ok(_) => true,
        Err(_) => {
            assert_status(
                &result,
                503,
                Some("ServiceUnavailable"),
                r#"no endpoints available for service "s""#,
            );
            false
        }
    }
}

/// Resolves `ip` as a node's InternalIP; `None` when it is not an IP literal (a host name).
fn as_node_address(ip: &str) -> Option<bool> {
    let cluster = cluster(vec![node(
        "n",
        json!([{"type": "InternalIP", "address": ip}]),
        0,
    )]);
    let result = resolve_path(
        &*cluster.snapshot(),
        &node_path("n"),
        &ResolveOptions::default(),
    );
    match result {
        Ok(target) => match target.candidates[0].host {
            Host::Ip(_) => Some(true),
            Host::Name(_) => None,
        },
        Err(status) if status.message() == "no addresses for hostname" => None,
        Err(_) => {
            assert_status(&result, 400, Some("BadRequest"), "address not allowed");
            Some(false)
        }
    }
}

#[test]
fn proxyable_ip_vectors() {
    let rows = vector_rows("proxyable_ip.json");
    assert!(rows.len() >= 38, "the vector file shrank");
    let policy = DestinationPolicy::kube_default();
    let mut stricter_than_endpoints_validation = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let expected = &row["expected"];
        let input = &row["input"];
        if let Some(hostname) = input.get("hostname") {
            // TestIsProxyableHostname: the caller resolved the name, the policy judges.
            let ips: Vec<IpAddr> = input["resolved"]
                .as_array()
                .expect("resolved")
                .iter()
                .map(|v| v.as_str().expect("ip").parse().expect("ip"))
                .collect();
            let outcome = policy.check_resolved(&ips);
            match expected.as_str().expect("expected") {
                "ok" => assert!(outcome.is_ok(), "row {i} {hostname}"),
                text => {
                    let status = outcome.expect_err("refused");
                    assert_eq!(status.code(), 400, "row {i}");
                    assert!(
                        text.contains(status.message()),
                        "row {i}: {text} / {}",
                        status.message()
                    );
                }
            }
            continue;
        }
        let text = input.as_str().expect("input");
        let parsed = parse_ip_lenient(text);
        let allowed = parsed.is_some_and(|ip| policy.allows(ip));
        if let Some(proxyable) = expected.get("proxyable") {
            // TestIsProxyableIP rows.
            assert_eq!(allowed, proxyable == &Value::Bool(true), "row {i} {text:?}");
            continue;
        }
        assert_eq!(
            parsed.is_some(),
            expected["parses"] == true,
            "row {i} {text:?}"
        );
        if let Some(normalized) = expected["normalized"].as_str() {
            assert_eq!(parsed.expect("parsed").to_string(), normalized, "row {i}");
            assert_eq!(
                is_global_unicast(parsed.expect("parsed")),
                expected["pod_or_node_proxy_allowed"] == true
            );
        }
        let kube_rule = expected["pod_or_node_proxy_allowed"] == true;
        assert_eq!(allowed, kube_rule, "row {i} {text:?}");
        assert_eq!(as_pod_ip(text), kube_rule, "row {i} {text:?} as a pod IP");
        if let Some(node_allowed) = as_node_address(text) {
            assert_eq!(
                node_allowed, kube_rule,
                "row {i} {text:?} as a node address"
            );
        } else {
            // Not an IP literal for the system resolver (leading zeros, garbage): the caller
            // resolves it as a name, as upstream does.
            assert!(text.parse::<IpAddr>().is_err(), "row {i} {text:?}");
        }
        // Services: upstream only has Endpoints validation; we apply the kube rule too.
        assert_eq!(
            as_service_endpoint(text),
            kube_rule,
            "row {i} {text:?} as a service endpoint"
        );
        if expected["endpoints_validation_allowed"] == true && !kube_rule {
            stricter_than_endpoints_validation.push(text.to_owned());
        }
        // The 2018 rule is history: where it allowed what the current rule refuses, we refuse.
        if expected["legacy_2018_isProxyableIP_allowed"] == true && !kube_rule {
            assert!(!allowed, "row {i}");
        }
    }
    // These are the rows docs/compatibility.md lists as refused on services/proxy although
    // upstream's Endpoints validation would let them through.
    assert_eq!(
        stricter_than_endpoints_validation,
        ["255.255.255.255", "ff01::", "ff0e::1"]
    );
}
