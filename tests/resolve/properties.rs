//! Property tests: resolution never panics on any cluster content or id, and the
//! authorization name and namespace are exactly what resolution used.

use http::{HeaderMap, Method, Uri};
use kube_bastion_core::go::quote as go_quote;
use kube_bastion_core::policy::parse_ip_lenient;
use kube_bastion_core::{
    ClusterView, Host, MemoryCluster, ProxyRequest, ResolveOptions, ResourceKind, Route, TargetId,
    parse_objects, resolve,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

use crate::common::encode_segment;

pub(crate) const NAMES: &[&str] = &["a", "b", "web", "x-1", "https"];
pub(crate) const NAMESPACES: &[&str] = &["ns1", "ns2"];
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "fd00::1",
    "127.0.0.1",
    "",
    "1",
    "010.000.000.001",
    "::ffff:127.0.0.1",
    "169.254.169.254",
    "255.255.255.255",
    "node.example",
    "fe80::1%eth0",
];
const PORT_NAMES: &[&str] = &["", "http", "web", "p"];
pub(crate) const ID_PORTS: &[&str] = &[
    "",
    "80",
    "+80",
    "080",
    "8080",
    "http",
    "-1",
    "0",
    "99999999999999999999",
    "web",
    "p",
    "10250",
];

fn port_number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(80i64),
        Just(8080),
        Just(0),
        Just(-1),
        Just(70000),
        Just(10250),
        any::<i32>().prop_map(i64::from)
    ]
}

fn opt_bool() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), Just(json!(true)), Just(json!(false))]
}

pub(crate) fn pod_strategy() -> impl Strategy<Value = Value> {
    (
        select(NAMESPACES),
        select(NAMES),
        prop::collection::vec(select(IPS), 0..3),
        prop::collection::vec(
            prop::collection::vec((select(PORT_NAMES), port_number()), 0..3),
            0..3,
        ),
    )
        .prop_map(|(ns, name, ips, containers)| {
            let containers: Vec<Value> = containers
                .into_iter()
                .enumerate()
                .map(|(i, ports)| {
                    let ports: Vec<Value> = ports
                        .into_iter()
                        .map(|(n, p)| {
                            if n.is_empty() {
                                json!({"containerPort": p})
                            } else {
                                json!({"name": n, "containerPort": p})
                            }
                        })
                        .collect();
                    json!({"name": format!("c{i}"), "image": "x", "ports": ports})
                })
                .collect();
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"containers": containers},
                "status": {"podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()},
            })
        })
}

pub(crate) fn service_strategy() -> impl Strategy<Value = Value> {
    (
        select(NAMESPACES),
        select(NAMES),
        prop::collection::vec((select(PORT_NAMES), port_number(), prop::option::of(select(&["http", "https", "kubernetes.io/h2c", "x"][..]))), 0..3),
        any::<bool>(),
    )
        .prop_map(|(ns, name, ports, affinity)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(n, p, app)| json!({"name": n, "port": p, "appProtocol": app}))
                .collect();
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": ports, "sessionAffinity": if affinity { "ClientIP" } else { "None" }},
            })
        })
}

fn target_ref() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (select(NAMESPACES), select(NAMES))
            .prop_map(|(ns, n)| json!({"kind": "Pod", "namespace": ns, "name": n})),
        select(NAMES).prop_map(|n| json!({"kind": "Pod", "name": n})),
    ]
}

pub(crate) fn slice_strategy() -> impl Strategy<Value = Value> {
    (
        select(NAMESPACES),
        select(NAMES),
        0u8..4,
        select(&["IPv4", "IPv6", "FQDN"][..]),
        prop::collection::vec((select(PORT_NAMES), prop::option::of(port_number())), 0..3),
        prop::collection::vec((select(IPS), opt_bool(), opt_bool(), opt_bool(), target_ref()), 0..4),
    )
        .prop_map(|(ns, service, n, family, ports, endpoints)| {
            let ports: Vec<Value> = ports.into_iter().map(|(name, port)| json!({"name": name, "port": port})).collect();
            let endpoints: Vec<Value> = endpoints
                .into_iter()
                .map(|(ip, ready, serving, terminating, target)| {
                    let mut e = json!({"addresses": [ip],
                        "conditions": {"ready": ready, "serving": serving, "terminating": terminating}});
                    if !target.is_null() {
                        e["targetRef"] = target;
                    }
                    e
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{service}-{n}"), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": family, "ports": ports, "endpoints": endpoints,
            })
        })
}

pub(crate) fn endpoints_strategy() -> impl Strategy<Value = Value> {
    (
        select(NAMESPACES),
        select(NAMES),
        prop::collection::vec(
            (
                prop::collection::vec((select(IPS), target_ref()), 0..3),
                prop::collection::vec((select(IPS), target_ref()), 0..2),
                prop::collection::vec((select(PORT_NAMES), port_number()), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(ns, name, subsets)| {
            let address = |(ip, target): (&str, Value)| {
                let mut a = json!({"ip": ip});
                if !target.is_null() {
                    a["targetRef"] = target;
                }
                a
            };
            let subsets: Vec<Value> = subsets
                .into_iter()
                .map(|(ready, not_ready, ports)| {
                    json!({
                        "addresses": ready.into_iter().map(address).collect::<Vec<_>>(),
                        "notReadyAddresses": not_ready.into_iter().map(address).collect::<Vec<_>>(),
                        "ports": ports.into_iter().map(|(n, p)| json!({"name": n, "port": p})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": subsets})
        })
}

pub(crate) fn node_strategy() -> impl Strategy<Value = Value> {
    (
        select(NAMES),
        prop::collection::vec((select(&["Hostname", "InternalIP", "ExternalIP", "InternalDNS", "Other"][..]), select(IPS)), 0..3),
        prop::option::of(port_number()),
    )
        .prop_map(|(name, addresses, port)| {
            let addresses: Vec<Value> = addresses.into_iter().map(|(t, a)| json!({"type": t, "address": a})).collect();
            let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"addresses": addresses}});
            if let Some(port) = port {
                node["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
            }
            node
        })
}

fn cluster_strategy() -> impl Strategy<Value = MemoryCluster> {
    (
        prop::collection::vec(pod_strategy(), 0..6),
        prop::collection::vec(service_strategy(), 0..4),
        prop::collection::vec(slice_strategy(), 0..4),
        prop::collection::vec(endpoints_strategy(), 0..3),
        prop::collection::vec(node_strategy(), 0..3),
    )
        .prop_map(|(pods, services, slices, endpoints, nodes)| {
            let mut items = pods;
            items.extend(services);
            items.extend(slices);
            items.extend(endpoints);
            items.extend(nodes);
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
            MemoryCluster::from_objects(
                parse_objects(&list.to_string()).expect("generated objects load"),
            )
        })
}

fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (select(&["", "http:", "https:", "ftp:", "HTTP:"][..]), select(NAMES), select(ID_PORTS))
            .prop_map(|(scheme, name, port)| {
                if port.is_empty() && scheme.is_empty() { name.to_owned() } else { format!("{scheme}{name}:{port}") }
            }),
        1 => "[ -~]{0,12}",
        1 => any::<String>(),
    ]
}

/// Checks what a successful resolution used against the request's authorization attributes.
fn check_target(
    view: &dyn ClusterView,
    request: &ProxyRequest,
    target: &kube_bastion_core::Target,
) {
    let attributes = request.attributes();
    let id = TargetId::parse(&attributes.name).expect("a resolved id is valid");
    let namespace = attributes.namespace.as_deref();
    assert!(!target.candidates.is_empty());
    match request.kind() {
        ResourceKind::Pod => {
            let pod = view
                .pod(namespace.expect("namespaced"), id.name())
                .expect("the authorized pod exists");
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ips.as_ref())
                .and_then(|ips| ips.first())
                .map(|p| p.ip.as_str());
            assert_eq!(
                target.candidates[0].host,
                Host::Ip(parse_ip_lenient(ip.expect("ip")).expect("parsed"))
            );
            assert_eq!(target.candidates[0].pod.as_deref(), Some(id.name()));
        }
        ResourceKind::Service => {
            let info = target.service.as_ref().expect("service info");
            assert_eq!(Some(info.namespace.as_str()), namespace);
            assert_eq!(info.name, id.name());
            for candidate in &target.candidates {
                let pod = view
                    .pod(&info.namespace, candidate.pod.as_deref().expect("pod"))
                    .expect("pod exists");
                let Host::Ip(ip) = candidate.host else {
                    panic!("services resolve to IPs")
                };
                let ips = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ips.clone())
                    .unwrap_or_default();
                assert!(
                    ips.iter().any(|p| parse_ip_lenient(&p.ip) == Some(ip)),
                    "{candidate:?}"
                );
                assert!(ResolveOptions::default().policy.allows(ip));
            }
        }
        ResourceKind::Node => {
            assert_eq!(namespace, None);
            let node = view.node(id.name()).expect("the authorized node exists");
            let addresses = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.clone())
                .unwrap_or_default();
            let used = target.tls_server_name.as_deref().expect("node address");
            assert!(
                addresses.iter().any(|a| a.address == used),
                "{used} is an address of {}",
                id.name()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn resolution_never_panics_and_uses_the_authorized_object(
        cluster in cluster_strategy(),
        kind in select(&["pods", "services", "nodes"][..]),
        namespace in select(NAMESPACES),
        id in id_strategy(),
    ) {
        let path = match kind {
            "nodes" => format!("/api/v1/nodes/{}/proxy/x", encode_segment(&id)),
            _ => format!("/api/v1/namespaces/{namespace}/{kind}/{}/proxy/x", encode_segment(&id)),
        };
        let uri: Uri = path.parse().expect("encoded path");
        let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) else {
            return Ok(()); // an id the router does not take as one segment
        };
        let attributes = request.attributes();
        prop_assert_eq!(attributes.namespace.as_deref(), request.namespace());
        prop_assert_eq!(attributes.name.as_str(), request.raw_id());
        let view = cluster.snapshot();
        match resolve(&*view, &request, &ResolveOptions::default()) {
            Ok(target) => check_target(&*view, &request, &target),
            Err(status) => {
                prop_assert!(matches!(status.code(), 400 | 404 | 500 | 503), "{:?}", status);
                if status.code() == 404 {
                    let name = TargetId::parse(&attributes.name).expect("valid").name().to_owned();
                    let quoted = go_quote(&name);
                    prop_assert!(status.message().ends_with(&format!("{quoted} not found")), "{}", status.message());
                }
            }
        }
    }
}
