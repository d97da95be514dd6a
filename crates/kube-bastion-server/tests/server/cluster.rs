//! `--cluster` files: resolution over a realistic fixture as the spec says, the API over
//! it, and hot reload (including a bad file keeping the last good state).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{BIN, Server, TempDir, eventually, fixture, get, kubectl, run_ok};

/// `kube-bastion resolve --cluster fixture [extra...] path`: (action, status message,
/// candidate URLs with state, the whole JSON).
fn resolve(extra: &[&str], path: &str) -> (String, String, Vec<String>, Value) {
    let fixture = fixture("cluster.yaml");
    let output = Command::new(BIN)
        // Outside a pod even when the tests run in one: no in-cluster configuration.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .arg("resolve")
        .arg("--cluster")
        .arg(&fixture)
        .args(extra)
        .arg(path)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&output.stderr)));
    let urls = v["target"]["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c["url"].as_str().unwrap(),
                        c["state"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (
        v["action"].as_str().unwrap().to_owned(),
        v["status"]["message"].as_str().unwrap_or("").to_owned(),
        urls,
        v,
    )
}

#[test]
fn pods_resolve_by_first_port_named_port_and_primary_family() {
    let (action, _, urls, _) = resolve(
        &[],
        "/api/v1/namespaces/shop/pods/frontend-7d9f8-abcde/proxy/",
    );
    assert_eq!(action, "forward");
    // First declared container port, primary (first) pod IP of a dual-stack pod.
    assert_eq!(urls, ["http://10.244.1.10:8080/ ready"]);
    // A named container port (upstream leaves this as a TODO).
    let (_, _, urls, _) = resolve(
        &[],
        "/api/v1/namespaces/shop/pods/frontend-7d9f8-abcde:metrics/proxy/m",
    );
    assert_eq!(urls, ["http://10.244.1.10:9090/m ready"]);
    // The first container that declares ports, skipping a sidecar without ports.
    let (_, _, urls, _) = resolve(&[], "/api/v1/namespaces/shop/pods/cart-0/proxy/x");
    assert_eq!(urls, ["http://10.244.1.20:8443/x ready"]);
    let (_, _, urls, _) = resolve(&[], "/api/v1/namespaces/default/pods/ipv6-only/proxy/");
    assert_eq!(urls, ["http://[fd00:10:244:3::7]:80/ ready"]);
    let (action, message, _, v) =
        resolve(&[], "/api/v1/namespaces/default/pods/pending-pod/proxy/");
    assert_eq!(
        (action.as_str(), message.as_str()),
        ("error", "address not allowed")
    );
    assert_eq!(v["status"]["code"], 400);
}

#[test]
fn services_use_ready_endpoints_by_port_name_or_number() {
    let path = "/api/v1/namespaces/shop/services/frontend:http/proxy/";
    let (action, _, urls, v) = resolve(&[], path);
    assert_eq!(action, "forward");
    assert_eq!(v["target"]["tlsServerName"], "frontend.shop.svc");
    // Ready endpoints of both families; never the not-ready one, and the terminating one
    // only when nothing is ready.
    for url in [
        "http://10.244.1.10:8080/ ready",
        "http://10.244.2.11:8080/ ready",
        "http://[fd00:10:244:1::a]:8080/ ready",
        "http://[fd00:10:244:2::b]:8080/ ready",
    ] {
        assert!(
            urls.contains(&url.to_owned()),
            "{url} missing from {urls:?}"
        );
    }
    assert!(
        !urls
            .iter()
            .any(|u| u.contains("10.244.2.12") || u.contains("10.244.1.13")),
        "{urls:?}"
    );
    // Port number → port name through the Service (9090 is `metrics`).
    let (_, _, urls, _) = resolve(&[], "/api/v1/namespaces/shop/services/frontend:9090/proxy/");
    assert!(
        urls.contains(&"http://10.244.1.10:9090/ ready".to_owned()),
        "{urls:?}"
    );
    let (_, message, _, v) = resolve(&[], "/api/v1/namespaces/shop/services/frontend:81/proxy/");
    assert_eq!(message, "no service port 81 found for service \"frontend\"");
    assert_eq!(v["status"]["code"], 503);
    // Omitting the port only works for an unnamed port.
    let (_, message, _, _) = resolve(&[], "/api/v1/namespaces/shop/services/cart/proxy/");
    assert_eq!(message, "no endpoints available for service \"cart\"");
    let (_, _, urls, _) = resolve(
        &[],
        "/api/v1/namespaces/monitoring/services/prometheus/proxy/graph",
    );
    assert_eq!(urls, ["http://10.244.3.5:9090/graph ready"]);
    // Hand-written endpoints without a pod reference are not proxyable (upstream rule).
    let (_, message, _, _) = resolve(
        &[],
        "/api/v1/namespaces/default/services/kubernetes:https/proxy/",
    );
    assert_eq!(
        message,
        "no endpoints available for service \"kubernetes:https\""
    );
    // Bare /proxy on GET is a 301 after resolution succeeded.
    let (action, _, _, v) = resolve(&[], "/api/v1/namespaces/shop/services/frontend:http/proxy");
    assert_eq!(action, "redirect");
    assert_eq!(
        v["location"],
        "/api/v1/namespaces/shop/services/frontend:http/proxy/"
    );
    // A deny CIDR removes candidates.
    let (_, _, urls, _) = resolve(&["--destination-deny", "10.244.1.0/24"], path);
    assert!(!urls.iter().any(|u| u.contains("10.244.1.10")), "{urls:?}");
    assert!(urls.iter().any(|u| u.contains("10.244.2.11")), "{urls:?}");
}

#[test]
fn service_app_protocol_chooses_https_unless_the_id_names_a_scheme() {
    let (_, _, urls, v) = resolve(&[], "/api/v1/namespaces/shop/services/cart:https/proxy/");
    assert_eq!(urls, ["https://10.244.1.20:8443/ ready"]);
    assert_eq!(v["target"]["schemeExplicit"], false);
    let (_, _, urls, _) = resolve(
        &[],
        "/api/v1/namespaces/shop/services/http:cart:https/proxy/",
    );
    assert_eq!(urls, ["http://10.244.1.20:8443/ ready"]);
}

#[test]
fn nodes_follow_address_preference_and_kubelet_port() {
    // Default preference: Hostname first, resolved at dial time, kubelet transport.
    let (_, _, urls, v) = resolve(&[], "/api/v1/nodes/worker-1/proxy/pods");
    assert_eq!(urls, ["https://worker-1:10250/pods ready"]);
    assert_eq!(v["target"]["transport"], "kubelet");
    assert_eq!(v["target"]["candidates"][0]["resolveAtDial"], true);
    let (_, _, urls, _) = resolve(
        &["--kubelet-preferred-address-types", "InternalIP,ExternalIP"],
        "/api/v1/nodes/worker-1/proxy/pods",
    );
    assert_eq!(urls, ["https://10.0.0.11:10250/pods ready"]);
    // Preference order beats the node's list order; the daemon endpoint port is used.
    let (_, _, urls, _) = resolve(&[], "/api/v1/nodes/worker-2/proxy/pods");
    assert_eq!(urls, ["https://10.0.0.12:10255/pods ready"]);
    // Another port: the generic transport and the requested (default http) scheme.
    let (_, _, urls, v) = resolve(&[], "/api/v1/nodes/worker-2:8080/proxy/pods");
    assert_eq!(urls, ["http://10.0.0.12:8080/pods ready"]);
    assert_eq!(v["target"]["transport"], "generic");
    let (_, message, _, _) = resolve(&[], "/api/v1/nodes/worker-9/proxy/pods");
    assert_eq!(message, "nodes \"worker-9\" not found");
}

#[tokio::test]
async fn kubectl_lists_the_fixture() {
    let fixture = fixture("cluster.yaml");
    let server = Server::start(&["--cluster", fixture.to_str().unwrap()]);
    let dir = TempDir::new("kubectl-fixture");
    let pods = run_ok(kubectl(&server.url, dir.path()).args(["get", "pods", "-A"]));
    for needle in [
        "frontend-7d9f8-abcde",
        "prometheus-0",
        "CrashLoopBackOff",
        "Terminating",
        "Pending",
    ] {
        assert!(pods.contains(needle), "{needle} missing:\n{pods}");
    }
    assert!(
        pods.contains("10.244.1.10,fd00:10:244:1::a"),
        "dual-stack IPs:\n{pods}"
    );
    let nodes = run_ok(kubectl(&server.url, dir.path()).args(["get", "nodes"]));
    assert!(nodes.contains("NotReady,SchedulingDisabled"), "{nodes}");
    assert!(nodes.contains("Hostname=worker-1"), "{nodes}");
    let svc = run_ok(kubectl(&server.url, dir.path()).args(["get", "svc", "-n", "shop"]));
    assert!(
        svc.contains("80/TCP,9090/TCP") && svc.contains("http,metrics"),
        "{svc}"
    );
    let slices = get(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
    )
    .await;
    assert_eq!(slices.json()["kind"], "EndpointSliceList");
    assert_eq!(slices.json()["items"].as_array().unwrap().len(), 3);
}

/// A backend answering with `name` on every path.
async fn backend(name: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn one_pod_cluster(pod: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: live\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: {}\nstatus:\n  podIPs:\n  - ip: {}\n",
        addr.port(),
        addr.ip()
    )
}

/// Replaces a file atomically (write then rename), as editors and `kubectl ... > tmp && mv`
/// do, so the poller never sees a half-written file.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn cluster_files_reload_and_bad_files_keep_the_last_good_state() {
    let first = backend("first").await;
    let second = backend("second").await;
    let dir = TempDir::new("reload");
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, one_pod_cluster("app-1", first)).unwrap();
    let server = Server::start(&[
        "--cluster",
        file.to_str().unwrap(),
        "--destination-allow",
        "127.0.0.0/8",
        "--cluster-poll-interval-ms",
        "50",
    ]);
    let reply = get(&server, "/api/v1/namespaces/live/pods/app-1/proxy/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "first"));

    // A new pod appears and the old one is gone.
    replace_file(&file, &one_pod_cluster("app-2", second));
    let reloaded = eventually(Duration::from_secs(20), || async {
        let r = get(&server, "/api/v1/namespaces/live/pods/app-2/proxy/").await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert_eq!(reloaded.as_deref(), Some("second"));
    let gone = get(&server, "/api/v1/namespaces/live/pods/app-1/proxy/").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["message"], "pods \"app-1\" not found");

    // A broken file is reported and the last good state stays.
    replace_file(&file, "apiVersion: v1\nkind: Pod\nmetadata: [broken\n");
    let reported = eventually(Duration::from_secs(20), || async {
        server
            .stderr()
            .contains("cluster file rejected")
            .then_some(())
    })
    .await;
    assert!(reported.is_some(), "no error logged:\n{}", server.stderr());
    let still = get(&server, "/api/v1/namespaces/live/pods/app-2/proxy/").await;
    assert_eq!((still.status, still.body.as_str()), (200, "second"));
    let metrics = get(&server, "/metrics").await.body;
    assert!(
        metrics.contains("kube_bastion_cluster_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}
