//! Helpers shared by the resolution tests: request building, cluster building from JSON,
//! and Status assertions (the data files are read by `tests/support`).

use http::{HeaderMap, Method, Uri};
use kube_bastion_core::{
    ClusterView, MemoryCluster, ProxyRequest, ResolveOptions, Route, Status, Target, parse_objects,
    resolve,
};
use serde_json::{Value, json};

/// Percent-encodes everything in an id but unreserved characters and `:`, so that the
/// router decodes it back to exactly `id`.
pub(crate) fn encode_segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/api/v1/namespaces/{ns}/pods/{id}/proxy/`.
pub(crate) fn pod_path(namespace: &str, id: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}/proxy/",
        encode_segment(namespace),
        encode_segment(id)
    )
}

/// `/api/v1/namespaces/{ns}/services/{id}/proxy/`.
pub(crate) fn service_path(namespace: &str, id: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/services/{}/proxy/",
        encode_segment(namespace),
        encode_segment(id)
    )
}

/// `/api/v1/nodes/{id}/proxy/`.
pub(crate) fn node_path(id: &str) -> String {
    format!("/api/v1/nodes/{}/proxy/", encode_segment(id))
}

/// Routes a GET for `path`; panics when it is not a proxy route.
pub(crate) fn request(path: &str) -> ProxyRequest {
    let uri: Uri = path.parse().unwrap_or_else(|e| panic!("{path}: {e}"));
    match ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) {
        Route::Proxy(request) => request,
        Route::NotProxy => panic!("{path} is not a proxy route"),
    }
}

/// Routes `path` and resolves it against `view`.
pub(crate) fn resolve_path(
    view: &dyn ClusterView,
    path: &str,
    options: &ResolveOptions,
) -> Result<Target, Status> {
    resolve(view, &request(path), options)
}

/// A cluster from Kubernetes objects written as JSON, loaded through the same parser users
/// use (as one `kind: List` document).
pub(crate) fn cluster(objects: Vec<Value>) -> MemoryCluster {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let objects = parse_objects(&list.to_string()).expect("fixture objects load");
    MemoryCluster::from_objects(objects)
}

/// Asserts an error Status with this code, reason and message.
#[track_caller]
pub(crate) fn assert_status(
    result: &Result<Target, Status>,
    code: u16,
    reason: Option<&str>,
    message: &str,
) {
    match result {
        Ok(target) => panic!("expected {code} {message:?}, resolved {target:?}"),
        Err(status) => {
            assert_eq!(
                (status.code(), status.reason(), status.message()),
                (code, reason, message),
                "status"
            );
        }
    }
}

/// Asserts the Status matches a vector's `{code, reason, message}` object (an empty reason
/// means none).
#[track_caller]
pub(crate) fn assert_status_value(result: &Result<Target, Status>, expected: &Value) {
    let code = expected["code"].as_u64().expect("code") as u16;
    let reason = expected["reason"].as_str().filter(|r| !r.is_empty());
    let message = expected["message"].as_str().expect("message");
    assert_status(result, code, reason, message);
}

/// The location upstream's `ResourceLocation` returns for the first candidate, as Go's
/// `url.URL.String()` prints `{scheme, host}` (`//host` when the id named no scheme).
pub(crate) fn location(target: &Target) -> String {
    let scheme = if target.scheme_explicit {
        target.scheme.as_str()
    } else {
        ""
    };
    let authority = target
        .candidates
        .first()
        .map(|c| c.authority())
        .unwrap_or_default();
    if scheme.is_empty() {
        format!("//{authority}")
    } else {
        format!("{scheme}://{authority}")
    }
}

/// A Pod with these IPs and containers (`[{name, ports: [port | {containerPort, ...}]}]`).
pub(crate) fn pod(namespace: &str, name: &str, ips: &[&str], containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": containers},
        "status": {"podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()},
    })
}

/// Vector container lists write a port as a bare number or as a ContainerPort object.
pub(crate) fn containers(vector: &Value) -> Value {
    let list = vector.as_array().cloned().unwrap_or_default();
    Value::Array(
        list.into_iter()
            .map(|c| {
                let ports: Vec<Value> = c["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        if p.is_number() {
                            json!({"containerPort": p})
                        } else {
                            p
                        }
                    })
                    .collect();
                json!({"name": c["name"], "image": "example.com/app", "ports": ports})
            })
            .collect(),
    )
}

/// A Service with these ports.
pub(crate) fn service(namespace: &str, name: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": ports},
    })
}

/// An Endpoints object with these subsets.
pub(crate) fn endpoints(namespace: &str, name: &str, subsets: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": subsets,
    })
}

/// The EndpointSlices equivalent to an Endpoints object: one slice per subset, `addresses`
/// ready, `notReadyAddresses` neither ready nor serving; an Endpoints object with no subset
/// becomes one slice with no endpoint.
pub(crate) fn endpoints_as_slices(namespace: &str, name: &str, subsets: &Value) -> Vec<Value> {
    let subsets = subsets.as_array().cloned().unwrap_or_default();
    let slice = |index: usize, endpoints: Vec<Value>, ports: Value| {
        let v6 = endpoints
            .iter()
            .all(|e| e["addresses"][0].as_str().is_some_and(|a| a.contains(':')))
            && !endpoints.is_empty();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-{index}"),
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": if v6 { "IPv6" } else { "IPv4" },
            "endpoints": endpoints,
            "ports": ports,
        })
    };
    if subsets.is_empty() {
        return vec![slice(0, Vec::new(), json!([]))];
    }
    subsets
        .iter()
        .enumerate()
        .map(|(index, subset)| {
            let endpoint = |address: &Value, ready: bool| {
                let mut e = json!({
                    "addresses": [address["ip"]],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                });
                if !address["targetRef"].is_null() {
                    e["targetRef"] = address["targetRef"].clone();
                }
                e
            };
            let mut list: Vec<Value> = Vec::new();
            for a in subset["addresses"].as_array().into_iter().flatten() {
                list.push(endpoint(a, true));
            }
            for a in subset["notReadyAddresses"].as_array().into_iter().flatten() {
                list.push(endpoint(a, false));
            }
            slice(index, list, subset["ports"].clone())
        })
        .collect()
}

/// A Node with these addresses (`[{type, address}]`) and kubelet port (0: none).
pub(crate) fn node(name: &str, addresses: Value, kubelet_port: i64) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": addresses},
    });
    if kubelet_port != 0 {
        node["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": kubelet_port}});
    }
    node
}
