//! The embedded demo cluster: real in-process backends on loopback addresses, registered as
//! Pods, Services, EndpointSlices, Endpoints and a Node of namespace `demo`.
//!
//! | object | address | what it serves |
//! |---|---|---|
//! | pods `echo-0..2`, service `echo` (port `http` 80 → 8080, balanced round-robin by annotation) | `.11`-`.13`:8080 | which pod answered and what it received |
//! | pod `web-0`, service `web` (port `http` 80 → 8080) | `.21`:8080 | a page with absolute links, `/login` redirect, a cookie, a WebSocket at `/ws` |
//! | pod `secure-0`, service `secure` (port `https` 443 → 8443, `appProtocol: https`) | `.31`:8443 | JSON over TLS |
//! | node `node-1` (kubelet port 10250) | `.41`:10250 | a kubelet face over TLS: `/healthz`, `/pods`, `/configz` |
//!
//! Addresses are in the `--demo-network` /24 (default `127.0.0.0/24`). Loopback is not a
//! destination kube-apiserver would dial, so the demo allows it explicitly.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use kube_bastion::BALANCER_ANNOTATION;
use kube_bastion::Object;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::serve;

mod apps;

use apps::{echo_app, kubelet_app, secure_app, web_app};

/// The namespace of every demo object.
pub(crate) const NAMESPACE: &str = "demo";
/// The demo node's name.
pub(crate) const NODE: &str = "node-1";
const ECHO_PODS: [&str; 3] = ["echo-0", "echo-1", "echo-2"];
/// Largest request body the echo app reads (it reports the size of anything larger).
const ECHO_BODY_LIMIT: usize = 1 << 20;

/// Where the demo's backends listen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DemoAddresses {
    echo: [Ipv4Addr; 3],
    web: Ipv4Addr,
    secure: Ipv4Addr,
    kubelet: Ipv4Addr,
}

impl DemoAddresses {
    /// Every address and port a demo backend listens on: all the demo's destination
    /// policy admits (loopback is otherwise refused, as kube-apiserver refuses it).
    pub(crate) fn endpoints(&self) -> [SocketAddr; 6] {
        let [e0, e1, e2] = self.echo;
        [
            SocketAddr::from((e0, 8080)),
            SocketAddr::from((e1, 8080)),
            SocketAddr::from((e2, 8080)),
            SocketAddr::from((self.web, 8080)),
            SocketAddr::from((self.secure, 8443)),
            SocketAddr::from((self.kubelet, 10250)),
        ]
    }

    /// The addresses in the /24 `network`.
    pub(crate) fn new(network: Ipv4Net) -> Self {
        let [a, b, c, _] = network.addr().octets();
        let host = |d| Ipv4Addr::new(a, b, c, d);
        DemoAddresses {
            echo: [host(11), host(12), host(13)],
            web: host(21),
            secure: host(31),
            kubelet: host(41),
        }
    }
}

fn meta(name: &str, namespace: Option<&str>, labels: Value, created: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "labels": labels,
        "creationTimestamp": created,
        "uid": format!("demo-{name}"),
        "resourceVersion": "1",
    });
    if let Some(ns) = namespace {
        meta["namespace"] = Value::from(ns);
    }
    meta
}

fn pod(
    name: &str,
    app: &str,
    ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    port: (&str, u16),
    created: &str,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(name, Some(NAMESPACE), json!({"app": app}), created),
        "spec": {
            "nodeName": NODE,
            "containers": [{
                "name": app,
                "image": format!("kube-bastion.local/demo-{app}:{}", env!("CARGO_PKG_VERSION")),
                "ports": [{"name": port.0, "containerPort": port.1, "protocol": "TCP"}],
            }],
        },
        "status": {
            "phase": "Running",
            "hostIP": node_ip.to_string(),
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": created,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": app,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "image": format!("kube-bastion.local/demo-{app}:{}", env!("CARGO_PKG_VERSION")),
                "imageID": "",
                "state": {"running": {"startedAt": created}},
            }],
        },
    })
}

/// A Service with one port, its EndpointSlice and its Endpoints object.
fn service(
    name: &str,
    cluster_ip: &str,
    port: (&str, u16, u16),
    app_protocol: Option<&str>,
    pods: &[(&str, Ipv4Addr)],
    created: &str,
) -> [Value; 3] {
    let (port_name, service_port, target_port) = port;
    let mut service_port_json = json!({
        "name": port_name, "port": service_port, "targetPort": target_port, "protocol": "TCP",
    });
    let mut slice_port = json!({"name": port_name, "port": target_port, "protocol": "TCP"});
    if let Some(proto) = app_protocol {
        service_port_json["appProtocol"] = Value::from(proto);
        slice_port["appProtocol"] = Value::from(proto);
    }
    let target_ref = |pod: &str| json!({"kind": "Pod", "namespace": NAMESPACE, "name": pod});
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, Some(NAMESPACE), json!({"app": name}), created),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "selector": {"app": name},
            "ports": [service_port_json],
        },
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta(
            &format!("{name}-demo"),
            Some(NAMESPACE),
            json!({"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "kube-bastion-demo"}),
            created,
        ),
        "addressType": "IPv4",
        "endpoints": pods.iter().map(|(pod, ip)| json!({
            "addresses": [ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": NODE,
            "targetRef": target_ref(pod),
        })).collect::<Vec<_>>(),
        "ports": [slice_port],
    });
    let mut endpoint_port = json!({"name": port_name, "port": target_port, "protocol": "TCP"});
    if let Some(proto) = app_protocol {
        endpoint_port["appProtocol"] = Value::from(proto);
    }
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta(name, Some(NAMESPACE), json!({"app": name}), created),
        "subsets": [{
            "addresses": pods.iter().map(|(pod, ip)| json!({
                "ip": ip.to_string(), "nodeName": NODE, "targetRef": target_ref(pod),
            })).collect::<Vec<_>>(),
            "ports": [endpoint_port],
        }],
    });
    [service, slice, endpoints]
}

fn timestamp(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The demo cluster's objects as JSON documents (the shape `kubectl get -o json` writes).
pub(crate) fn documents(addresses: &DemoAddresses, created: SystemTime) -> Vec<Value> {
    let created = timestamp(created);
    let node_ip = addresses.kubelet;
    let mut docs = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(NAMESPACE, None, json!({"kubernetes.io/metadata.name": NAMESPACE}), &created),
        "status": {"phase": "Active"},
    })];
    for (name, ip) in ECHO_PODS.iter().zip(addresses.echo) {
        docs.push(pod(name, "echo", ip, node_ip, ("http", 8080), &created));
    }
    docs.push(pod(
        "web-0",
        "web",
        addresses.web,
        node_ip,
        ("http", 8080),
        &created,
    ));
    docs.push(pod(
        "secure-0",
        "secure",
        addresses.secure,
        node_ip,
        ("https", 8443),
        &created,
    ));
    let echo_pods: Vec<(&str, Ipv4Addr)> = ECHO_PODS.iter().copied().zip(addresses.echo).collect();
    let mut echo = service(
        "echo",
        "10.96.0.10",
        ("http", 80, 8080),
        None,
        &echo_pods,
        &created,
    );
    // Round-robin (chosen per Service by annotation) makes the balancing demo show every pod
    // in turn; the server-wide default is --balancer.
    echo[0]["metadata"]["annotations"] = json!({ BALANCER_ANNOTATION: "round-robin" });
    docs.extend(echo);
    docs.extend(service(
        "web",
        "10.96.0.20",
        ("http", 80, 8080),
        None,
        &[("web-0", addresses.web)],
        &created,
    ));
    docs.extend(service(
        "secure",
        "10.96.0.30",
        ("https", 443, 8443),
        Some("https"),
        &[("secure-0", addresses.secure)],
        &created,
    ));
    docs.push(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta(NODE, None, json!({
            "kubernetes.io/hostname": NODE,
            "kubernetes.io/os": "linux",
            "node-role.kubernetes.io/demo": "",
        }), &created),
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node_ip.to_string()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {
                "architecture": std::env::consts::ARCH,
                "bootID": "", "machineID": "", "systemUUID": "",
                "containerRuntimeVersion": "in-process://kube-bastion",
                "kernelVersion": "", "kubeProxyVersion": "",
                "kubeletVersion": format!("v1.35.0+kube-bastion-demo"),
                "operatingSystem": std::env::consts::OS,
                "osImage": "kube-bastion demo",
            },
        },
    }));
    docs
}

/// Decodes one JSON document of a kind the cluster model keeps.
pub(crate) fn decode(doc: Value) -> Result<Object, String> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let wrap = |e: serde_json::Error| format!("{kind}: {e}");
    Ok(match kind.as_str() {
        "Pod" => Object::Pod(serde_json::from_value(doc).map_err(wrap)?),
        "Service" => Object::Service(serde_json::from_value(doc).map_err(wrap)?),
        "Endpoints" => Object::Endpoints(serde_json::from_value(doc).map_err(wrap)?),
        "EndpointSlice" => Object::EndpointSlice(serde_json::from_value(doc).map_err(wrap)?),
        "Node" => Object::Node(serde_json::from_value(doc).map_err(wrap)?),
        "Namespace" => Object::Namespace(serde_json::from_value(doc).map_err(wrap)?),
        other => return Err(format!("unsupported kind {other:?}")),
    })
}

/// The demo cluster's objects.
pub(crate) fn objects(
    addresses: &DemoAddresses,
    created: SystemTime,
) -> Result<Vec<Object>, String> {
    documents(addresses, created)
        .into_iter()
        .map(decode)
        .collect()
}

/// Binds every backend listener and starts serving. Fails with a readable message when an
/// address is taken.
pub(crate) async fn start(addresses: DemoAddresses, created: SystemTime) -> Result<(), String> {
    let bind = |ip: Ipv4Addr, port: u16| async move {
        let addr = SocketAddr::from((ip, port));
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("demo backend cannot listen on {addr}: {e} (try --demo-network)"))
    };
    let mut started = Vec::new();
    for (name, ip) in ECHO_PODS.iter().zip(addresses.echo) {
        started.push((bind(ip, 8080).await?, None, echo_app(name, ip)));
    }
    started.push((bind(addresses.web, 8080).await?, None, web_app()));
    let secure_tls = self_signed(&["secure.demo.svc", &addresses.secure.to_string()], None)?;
    started.push((
        bind(addresses.secure, 8443).await?,
        Some(secure_tls),
        secure_app(),
    ));
    let kubelet_tls = self_signed(
        &[NODE, &addresses.kubelet.to_string()],
        Some((&format!("system:node:{NODE}"), "system:nodes")),
    )?;
    let pods: Vec<Pod> = objects(&addresses, created)?
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    started.push((
        bind(addresses.kubelet, 10250).await?,
        Some(kubelet_tls),
        kubelet_app(pods),
    ));
    for (listener, tls, app) in started {
        let limits = serve::Limits::default();
        tokio::spawn(serve::serve(
            listener,
            tls,
            app,
            std::future::pending(),
            Duration::ZERO,
            limits,
            serve::permits(&limits),
            Arc::default(),
        ));
    }
    Ok(())
}

/// A TLS acceptor with a fresh self-signed certificate for `names` (DNS names or IPs),
/// optionally with a subject common name and organization.
fn self_signed(names: &[&str], subject: Option<(&str, &str)>) -> Result<TlsAcceptor, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
    if let Some((cn, org)) = subject {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
    }
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = serve::tls_config(vec![cert.der().clone()], key, None)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What to print at startup: the address, the loopback notice and five commands.
pub(crate) fn banner(base: &str, insecure_tls: bool) -> String {
    let k = if insecure_tls { " -k" } else { "" };
    let kubectl_tls = if insecure_tls {
        " --insecure-skip-tls-verify"
    } else {
        ""
    };
    format!(
        "\
The demo cluster (namespace {NAMESPACE}) runs in this process on loopback addresses.
Loopback destinations are allowed for the demo's own backends only (their addresses and ports);
kube-apiserver would refuse them. The demo listens on loopback unless --demo-allow-remote.

Try:
  # 1. a pod, by IP and container port: the echo app says what it received
  curl -s{k} '{base}/api/v1/namespaces/demo/pods/echo-0:8080/proxy/hello?from=curl'
  # 2. a service by port name, over HTTPS chosen by the port's appProtocol
  kubectl --server {base}{kubectl_tls} get --raw '/api/v1/namespaces/demo/services/secure:https/proxy/status'
  # 3. a node: the kubelet port, over TLS
  kubectl --server {base}{kubectl_tls} get --raw '/api/v1/nodes/node-1/proxy/healthz'
  # 4. balancing across the three echo pods (round-robin, set by the Service's annotation)
  for i in 1 2 3 4 5 6; do curl -s{k} '{base}/api/v1/namespaces/demo/services/echo:80/proxy/whoami'; done
  # 5. a WebSocket through the proxy (the app greets, then closes because of ?once)
  curl -s{k} --include --no-buffer --max-time 5 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: a3ViZS1iYXN0aW9uLWRlbW8=' '{base}/api/v1/namespaces/demo/services/web:http/proxy/ws?once'

Also: kubectl --server {base}{kubectl_tls} get pods,services,nodes -n demo
      open {base}/api/v1/namespaces/demo/services/web:http/proxy/ in a browser
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_decode_as_kubernetes_objects() {
        let addresses = DemoAddresses::new("127.0.0.0/24".parse().unwrap());
        let objects = objects(&addresses, SystemTime::now()).unwrap();
        let pods = objects
            .iter()
            .filter(|o| matches!(o, Object::Pod(_)))
            .count();
        let slices = objects
            .iter()
            .filter(|o| matches!(o, Object::EndpointSlice(_)))
            .count();
        assert_eq!((pods, slices), (5, 3));
        let node = objects.iter().find_map(|o| match o {
            Object::Node(n) => Some(n),
            _ => None,
        });
        let port = node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.daemon_endpoints.as_ref())
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port);
        assert_eq!(port, Some(10250));
    }

    #[test]
    fn addresses_follow_the_network() {
        let a = DemoAddresses::new("127.5.6.0/24".parse().unwrap());
        assert_eq!(a.echo[2], Ipv4Addr::new(127, 5, 6, 13));
        assert_eq!(a.kubelet, Ipv4Addr::new(127, 5, 6, 41));
    }

    #[test]
    fn banner_has_five_commands() {
        let text = banner("http://127.0.0.1:8080", false);
        let commands = text
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("curl ")
                    || l.trim_start().starts_with("kubectl ")
                    || l.trim_start().starts_with("for ")
            })
            .count();
        assert_eq!(commands, 5);
    }
}
