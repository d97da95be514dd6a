//! Real clients through the proxy subresources: kubectl, `kubectl proxy` chained in front,
//! Python's official `kubernetes` client, and a WebSocket client.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, TempDir, get, kubectl, run_ok};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn kubectl_get_raw_reaches_pods_services_and_nodes() {
    let server = Server::demo(&[]);
    let dir = TempDir::new("kubectl-raw");
    let raw = |path: &str| run_ok(kubectl(&server.url, dir.path()).args(["get", "--raw", path]));

    let pod = json(&raw(
        "/api/v1/namespaces/demo/pods/echo-2:8080/proxy/some/path?x=1&y=z",
    ));
    assert_eq!(pod["pod"], "echo-2");
    assert_eq!(pod["path"], "/some/path");
    assert_eq!(pod["query"], "x=1&y=z");
    assert_eq!(
        pod["headers"]["x-forwarded-uri"],
        "/api/v1/namespaces/demo/pods/echo-2:8080/proxy/some/path"
    );

    // A service by port name and by service port number (80 → the port named http).
    let by_name = raw("/api/v1/namespaces/demo/services/echo:http/proxy/whoami");
    assert!(by_name.starts_with("echo-"), "{by_name}");
    let by_number = raw("/api/v1/namespaces/demo/services/echo:80/proxy/whoami");
    assert!(by_number.starts_with("echo-"), "{by_number}");
    // HTTPS chosen by appProtocol.
    let secure = json(&raw(
        "/api/v1/namespaces/demo/services/secure:https/proxy/s",
    ));
    assert_eq!(secure["tls"], true);
    assert_eq!(secure["path"], "/s");

    // A node's kubelet over TLS.
    assert_eq!(raw("/api/v1/nodes/node-1/proxy/healthz"), "ok");
    let pods = json(&raw("/api/v1/nodes/node-1/proxy/pods"));
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"].as_array().unwrap().len(), 5);

    // Errors are Status bodies kubectl understands.
    let missing = kubectl(&server.url, dir.path())
        .args([
            "get",
            "--raw",
            "/api/v1/namespaces/demo/services/echo:81/proxy/",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no service port 81 found for service"),
        "{stderr}"
    );
}

/// A `kubectl proxy --port=0` in front of the server, killed on drop.
struct KubectlProxy(std::process::Child, String);

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl_proxy(server: &Server, dir: &TempDir) -> KubectlProxy {
    let mut child = kubectl(&server.url, dir.path())
        .args(["proxy", "--port=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "unexpected kubectl proxy output {line:?}"
    );
    KubectlProxy(child, format!("http://{addr}"))
}

#[tokio::test]
async fn kubectl_proxy_chained_in_front() {
    let server = Server::demo(&[]);
    let dir = TempDir::new("kubectl-proxy");
    let front = kubectl_proxy(&server, &dir);
    let reply = crate::support::request(
        "GET",
        &format!(
            "{}/api/v1/namespaces/demo/services/echo:http/proxy/through?kubectl=proxy",
            front.1
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    let echoed = reply.json();
    assert!(echoed["pod"].as_str().unwrap().starts_with("echo-"));
    assert_eq!(echoed["path"], "/through");
    assert_eq!(echoed["query"], "kubectl=proxy");
    // The web app's absolute links come back under the proxy prefix, usable through the
    // chained proxy on its own port.
    let page = crate::support::request(
        "GET",
        &format!(
            "{}/api/v1/namespaces/demo/services/web:http/proxy/",
            front.1
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("/api/v1/namespaces/demo/services/web:http/proxy/static/app.js"),
        "{}",
        page.body
    );
    let script = crate::support::request(
        "GET",
        &format!(
            "{}/api/v1/namespaces/demo/services/web:http/proxy/static/app.js",
            front.1
        ),
        &[],
        "",
    )
    .await;
    assert!(script.body.contains("WebSocket"));
}

const PYTHON_CLIENT: &str = r#"
import json, sys
from kubernetes import client

configuration = client.Configuration()
configuration.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(configuration))
out = {
    "pod": api.connect_get_namespaced_pod_proxy_with_path("echo-0:8080", "demo", "from-python", path2="from-python"),
    "service": api.connect_get_namespaced_service_proxy_with_path("echo:http", "demo", "whoami", path2="whoami"),
    "service_post": api.connect_post_namespaced_service_proxy_with_path("echo:80", "demo", "posted", path2="posted"),
    "node": api.connect_get_node_proxy_with_path("node-1", "healthz", path2="healthz"),
    "pods": [p.metadata.name for p in api.list_namespaced_pod("demo").items],
}
print(json.dumps(out))
"#;

#[test]
fn python_kubernetes_client() {
    let server = Server::demo(&[]);
    let out = json(&crate::support::python(PYTHON_CLIENT, &[&server.url]));
    // The client hands back the body as text (Python's repr of the decoded JSON).
    assert!(
        out["pod"]
            .as_str()
            .unwrap()
            .contains("'path': '/from-python'"),
        "{out}"
    );
    assert!(
        out["pod"].as_str().unwrap().contains("'pod': 'echo-0'"),
        "{out}"
    );
    assert!(
        out["service"].as_str().unwrap().starts_with("echo-"),
        "{out}"
    );
    assert!(
        out["service_post"]
            .as_str()
            .unwrap()
            .contains("'method': 'POST'"),
        "{out}"
    );
    assert_eq!(out["node"], "ok");
    assert_eq!(out["pods"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn websocket_through_a_service_keeps_the_query() {
    let server = Server::demo(&[]);
    let url = format!(
        "{}/api/v1/namespaces/demo/services/web:http/proxy/ws?room=42",
        server.url.replacen("http://", "ws://", 1)
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    let greeting = ws.next().await.unwrap().unwrap();
    assert_eq!(
        greeting.into_text().unwrap().as_str(),
        "connected to web-0 (query: \"room=42\")"
    );
    ws.send(Message::text("ping me")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "echo: ping me"
    );
    let big = vec![7u8; 256 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &big[..]
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn destination_deny_applies_to_every_path() {
    let network = crate::support::demo_network();
    let denied = network.replace(".0/24", ".12/32");
    let server = Server::start(&["--demo-network", &network, "--destination-deny", &denied]);
    let pod = crate::support::get(&server, "/api/v1/namespaces/demo/pods/echo-1:8080/proxy/").await;
    assert_eq!(pod.status, 400);
    assert_eq!(pod.json()["message"], "address not allowed");
    // The service skips the denied endpoint instead of failing.
    for _ in 0..6 {
        let reply = crate::support::get(
            &server,
            "/api/v1/namespaces/demo/services/echo:http/proxy/whoami",
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_ne!(reply.body.trim(), "echo-1");
    }
}

#[tokio::test]
async fn kubelet_flags_reach_the_kubelet_transport() {
    let dir = TempDir::new("kubelet-flags");
    // A client identity is presented (the demo kubelet does not ask for one) ...
    let (cert, key) = crate::support::serving_cert(&dir);
    let server = Server::demo(&[
        "--kubelet-client-certificate",
        cert.to_str().unwrap(),
        "--kubelet-client-key",
        key.to_str().unwrap(),
    ]);
    let reply = crate::support::get(&server, "/api/v1/nodes/node-1/proxy/healthz").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    // ... and with a kubelet CA that did not sign the kubelet's certificate, verification
    // is on and fails: nothing reaches the kubelet.
    let strict = Server::demo(&["--kubelet-certificate-authority", cert.to_str().unwrap()]);
    let refused = crate::support::get(&strict, "/api/v1/nodes/node-1/proxy/healthz").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("error trying to reach service"),
        "{}",
        refused.body
    );
    // Any other port (`010250` is another port, by string) uses the generic transport,
    // unverified as upstream: the same kubelet answers.
    let other =
        crate::support::get(&strict, "/api/v1/nodes/https:node-1:010250/proxy/healthz").await;
    assert_eq!(other.status, 200, "{}", other.body);
}

#[tokio::test]
async fn web_app_redirect_and_cookie_stay_under_the_prefix() {
    let server = Server::demo(&[]);
    let prefix = "/api/v1/namespaces/demo/services/web:http/proxy";
    let login = crate::support::get(&server, &format!("{prefix}/login")).await;
    assert_eq!(login.status, 302);
    assert_eq!(
        login.header("location"),
        Some(format!("{prefix}/welcome").as_str())
    );
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains(&format!("Path={prefix}/")), "{cookie}");
    // Following the redirect with the cookie, through the proxy.
    let welcome = crate::support::request(
        "GET",
        &format!("{}{prefix}/welcome", server.url),
        &[("Cookie", "session=demo-session")],
        "",
    )
    .await;
    assert_eq!(welcome.status, 200);
    assert!(
        welcome.body.contains("session=demo-session"),
        "{}",
        welcome.body
    );
    assert!(
        welcome.body.contains(&format!("href=\"{prefix}/\"")),
        "{}",
        welcome.body
    );
}

#[tokio::test]
async fn current_thread_runtime_proxies_services_and_upgrades() {
    // `--worker-threads 0`: proxy, demo backends and the cluster watcher share one thread.
    let server = Server::demo(&["--worker-threads", "0"]);
    for _ in 0..3 {
        let reply = get(
            &server,
            "/api/v1/namespaces/demo/services/echo:http/proxy/one",
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], "/one");
    }
    let (_ws, greeting) = crate::support::web_socket(&server).await;
    assert!(greeting.starts_with("connected to web-"), "{greeting}");
}

/// `--runtime per-core`: two workers, each with its own listener, runtime and backend pool.
/// Twenty new connections are all proxied, the kernel spreads them over both workers, and
/// `/metrics` counts the requests of both; an upgrade works too.
#[tokio::test]
async fn per_core_workers_share_the_connections_and_the_metrics() {
    let server = Server::demo(&["--runtime", "per-core", "--worker-threads", "2"]);
    for n in 0..20 {
        // A new client per request: a new connection, which either worker may accept.
        let reply = get(
            &server,
            &format!("/api/v1/namespaces/demo/services/echo:http/proxy/n{n}"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["path"], format!("/n{n}"));
    }
    let metrics = get(&server, "/metrics").await.body;
    let line = "kube_bastion_requests_total{verb=\"get\",resource=\"services\",subresource=\"proxy\",code=\"200\"} 20\n";
    assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    // Each worker logs its requests under its own span: both had some (all 20 hashed onto
    // one listener would be a one in half a million chance).
    let both = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let log = server.stderr();
        let served = |worker: &str| {
            log.lines()
                .any(|l| l.contains(worker) && l.contains("/proxy/n"))
        };
        (served("worker{index=0}") && served("worker{index=1}")).then_some(())
    })
    .await;
    assert!(
        both.is_some(),
        "one worker served everything:\n{}",
        server.stderr()
    );
    let (_ws, greeting) = crate::support::web_socket(&server).await;
    assert!(greeting.starts_with("connected to web-"), "{greeting}");
}

/// A refused backend connection: the client gets kube-apiserver's 503 message, unchanged,
/// and the server's log line carries the cause chain (the address, connection refused).
#[tokio::test]
async fn a_refused_backend_is_logged_with_its_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = TempDir::new("refused");
    let cluster = dir.join("cluster.yaml");
    std::fs::write(
        &cluster,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: gone, namespace: ns}\n\
         spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 127.0.0.1}\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--cluster",
        cluster.to_str().unwrap(),
        "--destination-allow",
        "127.0.0.1/32",
    ]);
    let reply = get(
        &server,
        &format!("/api/v1/namespaces/ns/pods/gone:{port}/proxy/"),
    )
    .await;
    assert_eq!(reply.status, 503);
    let status = reply.json();
    assert_eq!(status["reason"], "ServiceUnavailable");
    let message = status["message"].as_str().unwrap();
    let expected = format!("error trying to reach service: dial tcp 127.0.0.1:{port}: ");
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.to_ascii_lowercase().contains("refused"),
        "{message}"
    );
    let logged = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        server
            .stderr()
            .lines()
            .find(|l| l.contains("backend unreachable"))
            .map(str::to_owned)
    })
    .await
    .expect("a log line for the refused backend");
    assert!(logged.contains(&format!("127.0.0.1:{port}")), "{logged}");
    assert!(logged.to_ascii_lowercase().contains("refused"), "{logged}");
    assert!(logged.contains("WARN"), "{logged}");
}
