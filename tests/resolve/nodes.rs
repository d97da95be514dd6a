//! `nodes/proxy` resolution: every row of `node_location.json`, plus address preference,
//! kubelet ports and host names.

use kube_bastion_core::{
    DestinationPolicy, Host, KubeletOptions, NodeAddressType, ResolveOptions, Scheme, TransportKind,
};
use serde_json::json;

use crate::common::{assert_status, assert_status_value, cluster, node, node_path, resolve_path};
use crate::support::data::vector_rows;

/// The kubelet client configuration of upstream's node storage test.
fn upstream_test_options() -> ResolveOptions {
    ResolveOptions {
        kubelet: KubeletOptions {
            preferred_address_types: vec![NodeAddressType::InternalIp],
            default_port: 10250,
        },
        ..ResolveOptions::default()
    }
}

#[test]
fn node_location_vectors() {
    let rows = vector_rows("node_location.json");
    assert!(rows.len() >= 16, "the vector file shrank");
    for (i, row) in rows.iter().enumerate() {
        let input = &row["input"];
        let id = input["id"].as_str().expect("id");
        let expected = &row["expected"];
        let mut objects = Vec::new();
        if !input["node"].is_null() {
            let spec = &input["node"];
            objects.push(node(
                spec["name"].as_str().expect("name"),
                spec["addresses"].clone(),
                spec["kubeletEndpointPort"].as_i64().unwrap_or(0),
            ));
        }
        let cluster = cluster(objects);
        let options = if expected["with_default_preference"] == true {
            ResolveOptions::default()
        } else {
            upstream_test_options()
        };
        let result = resolve_path(&*cluster.snapshot(), &node_path(id), &options);
        let context = format!("row {i} ({id})");
        if expected["error"] == true {
            // Upstream's test only asserts an error; ours is the address check.
            assert_status(&result, 400, Some("BadRequest"), "address not allowed");
            continue;
        }
        if expected["error"].is_object() {
            assert_status_value(&result, &expected["error"]);
            continue;
        }
        let target = result.unwrap_or_else(|e| panic!("{context}: {e:?}"));
        assert_eq!(target.candidates.len(), 1, "{context}");
        let candidate = &target.candidates[0];
        let host = expected["host"].as_str().expect("host");
        let (want_host, want_port) = host.rsplit_once(':').expect("host:port");
        // `node0:010250` is dialed at 10250 (Go parses the leading zero away); we carry the
        // port as a number, so compare numerically.
        assert_eq!(
            candidate.port,
            Some(want_port.parse::<u16>().expect("port")),
            "{context}"
        );
        match &candidate.host {
            Host::Ip(ip) => assert_eq!(ip.to_string(), want_host, "{context}"),
            Host::Name(name) => {
                assert_eq!(name, want_host, "{context}");
                assert!(
                    expected["dns_check"].is_string(),
                    "{context}: a name needs a DNS check"
                );
            }
        }
        match expected["scheme"].as_str() {
            Some("https") => assert_eq!(target.scheme, Scheme::Https, "{context}"),
            Some("") => assert!(
                target.scheme == Scheme::Http && !target.scheme_explicit,
                "{context}"
            ),
            Some(other) => panic!("{context}: scheme {other}"),
            None => {}
        }
        if let Some(prefix) = expected["effective_url_prefix"].as_str() {
            assert_eq!(
                format!("{}://{}", target.scheme, candidate.authority()),
                prefix,
                "{context}"
            );
        }
        let kubelet_port = input["node"]["kubeletEndpointPort"]
            .as_u64()
            .unwrap_or(10250);
        match expected["transport"].as_str() {
            Some(t) if t.starts_with("kubelet") => {
                assert_eq!(target.transport, TransportKind::Kubelet, "{context}");
            }
            Some(t) if t.starts_with("generic") => {
                assert_eq!(target.transport, TransportKind::Generic, "{context}");
            }
            Some(other) => panic!("{context}: transport {other}"),
            None => {
                // Upstream's test rows: the kubelet port is the kubelet transport.
                let kubelet =
                    u64::from(candidate.port.unwrap_or(0)) == kubelet_port && !id.contains(':');
                assert_eq!(
                    target.transport == TransportKind::Kubelet,
                    kubelet,
                    "{context}"
                );
            }
        }
        if target.transport == TransportKind::Kubelet {
            assert_eq!(target.scheme, Scheme::Https, "{context}");
        }
        assert_eq!(
            target.tls_server_name.as_deref(),
            Some(want_host),
            "{context}"
        );
        assert_eq!(target.service, None);
    }
}

fn sample_nodes() -> kube_bastion_core::MemoryCluster {
    cluster(vec![
        node(
            "a",
            json!([
                {"type": "ExternalIP", "address": "203.0.113.11"},
                {"type": "InternalIP", "address": "10.0.0.11"},
                {"type": "InternalIP", "address": "10.0.0.111"},
                {"type": "InternalDNS", "address": "a.internal.example"},
                {"type": "Hostname", "address": "a"},
            ]),
            0,
        ),
        node(
            "b",
            json!([{"type": "InternalIP", "address": "fd00::b"}]),
            11250,
        ),
        node("none", json!([]), 0),
        node(
            "odd",
            json!([{"type": "InternalIP", "address": "10.0.0.15"}, {"type": "ExternalIP", "address": "203.0.113.15"}]),
            0,
        ),
        node(
            "zoned",
            json!([{"type": "InternalIP", "address": "fe80::1%eth0"}]),
            0,
        ),
        node("empty", json!([{"type": "Hostname", "address": ""}]), 0),
        node(
            "meta",
            json!([{"type": "ExternalIP", "address": "::ffff:169.254.169.254"}]),
            0,
        ),
        node(
            "weird-port",
            json!([{"type": "InternalIP", "address": "10.0.0.16"}]),
            70000,
        ),
    ])
}

fn options(types: &[NodeAddressType]) -> ResolveOptions {
    ResolveOptions {
        kubelet: KubeletOptions {
            preferred_address_types: types.to_vec(),
            default_port: 10250,
        },
        ..ResolveOptions::default()
    }
}

#[test]
fn preference_is_the_outer_loop() {
    use NodeAddressType::*;
    let cluster = sample_nodes();
    let view = cluster.snapshot();
    let host_of = |types: &[NodeAddressType]| {
        resolve_path(&*view, &node_path("a"), &options(types))
            .expect("resolves")
            .candidates[0]
            .host
            .clone()
    };
    assert_eq!(
        host_of(&[Hostname, InternalDns, InternalIp]),
        Host::Name("a".into())
    );
    assert_eq!(
        host_of(&[InternalDns, Hostname]),
        Host::Name("a.internal.example".into())
    );
    // The node lists ExternalIP first, but the preference decides; ties go to node order.
    assert_eq!(
        host_of(&[InternalIp, ExternalIp]),
        Host::Ip("10.0.0.11".parse().expect("ip"))
    );
    assert_eq!(
        host_of(&[ExternalDns, ExternalIp, InternalIp]),
        Host::Ip("203.0.113.11".parse().expect("ip"))
    );
}

#[test]
fn no_preferred_address_prints_the_list_as_go_does() {
    let cluster = sample_nodes();
    let view = cluster.snapshot();
    let result = resolve_path(&*view, &node_path("none"), &ResolveOptions::default());
    assert_status(
        &result,
        500,
        None,
        "no preferred addresses found; known addresses: []",
    );
    let result = resolve_path(
        &*view,
        &node_path("odd"),
        &options(&[NodeAddressType::Hostname]),
    );
    assert_status(
        &result,
        500,
        None,
        "no preferred addresses found; known addresses: [{InternalIP 10.0.0.15} {ExternalIP 203.0.113.15}]",
    );
}

#[test]
fn kubelet_port_and_other_ports() {
    let cluster = sample_nodes();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    let resolve = |id: &str| resolve_path(&*view, &node_path(id), &options);
    let target = resolve("b").expect("b");
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Https, TransportKind::Kubelet)
    );
    assert_eq!(target.candidates[0].authority(), "[fd00::b]:11250");
    let target = resolve("http:b:11250").expect("kubelet port, scheme ignored");
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Https, TransportKind::Kubelet)
    );
    let target = resolve("b:10250").expect("the default port is just another port here");
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Http, TransportKind::Generic)
    );
    let target = resolve("https:b:8443").expect("generic https");
    assert_eq!(
        (target.scheme, target.transport),
        (Scheme::Https, TransportKind::Generic)
    );
    assert_eq!(target.candidates[0].authority(), "[fd00::b]:8443");
    // A daemon endpoint port that is not a port falls back to the configured default.
    let target = resolve("weird-port").expect("weird-port");
    assert_eq!(target.candidates[0].port, Some(10250));
    for (id, port) in [("b:http", "http"), ("b:65536", "65536"), ("b:+80", "+80")] {
        assert_status(
            &resolve(id),
            503,
            Some("ServiceUnavailable"),
            &format!(r#"invalid port "{port}" for node "b""#),
        );
    }
}

#[test]
fn node_addresses_pass_the_policy() {
    let cluster = sample_nodes();
    let view = cluster.snapshot();
    let options = ResolveOptions::default();
    for id in ["zoned", "meta", "meta:8080"] {
        let result = resolve_path(&*view, &node_path(id), &options);
        assert_status(&result, 400, Some("BadRequest"), "address not allowed");
    }
    let result = resolve_path(&*view, &node_path("empty"), &options);
    assert_status(
        &result,
        400,
        Some("BadRequest"),
        "no addresses for hostname",
    );
    let deny = ResolveOptions {
        policy: DestinationPolicy::kube_default().deny("fd00::/8".parse().expect("cidr")),
        ..ResolveOptions::default()
    };
    let result = resolve_path(&*view, &node_path("b"), &deny);
    assert_status(&result, 400, Some("BadRequest"), "address not allowed");
    // Host names are judged by the caller once resolved.
    let policy = DestinationPolicy::kube_default();
    let ips = |list: &[&str]| {
        list.iter()
            .map(|s| s.parse().expect("ip"))
            .collect::<Vec<_>>()
    };
    assert!(
        policy
            .check_resolved(&ips(&["10.0.0.1", "2600::1"]))
            .is_ok()
    );
    let status = policy
        .check_resolved(&ips(&["10.0.0.1", "127.0.0.1"]))
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (400, "address not allowed")
    );
    let status = policy.check_resolved(&[]).unwrap_err();
    assert_eq!(
        (status.code(), status.reason(), status.message()),
        (400, Some("BadRequest"), "no addresses for hostname")
    );
}
