//! `--token-auth-file`: 401 Status without a valid bearer token, 200 with one.

use crate::support::{Server, TempDir, kubectl, request, run_ok};

fn token_server(dir: &TempDir) -> Server {
    let file = dir.join("tokens.csv");
    std::fs::write(
        &file,
        "s3cret-token,alice,1001,\"developers,viewers\"\nother-token,bob,1002\n",
    )
    .unwrap();
    Server::demo(&["--token-auth-file", file.to_str().unwrap()])
}

#[tokio::test]
async fn requests_need_a_valid_bearer_token() {
    let dir = TempDir::new("auth");
    let server = token_server(&dir);
    let url = |p: &str| format!("{}{p}", server.url);
    for (headers, expected) in [
        (vec![], 401),
        (vec![("Authorization", "Bearer wrong")], 401),
        (vec![("Authorization", "Basic czNjcmV0LXRva2Vu")], 401),
        (vec![("Authorization", "Bearer s3cret-token")], 200),
        (vec![("Authorization", "bearer other-token")], 200),
    ] {
        let reply = request("GET", &url("/api/v1/namespaces/demo/pods"), &headers, "").await;
        assert_eq!(reply.status, expected, "{headers:?}");
        if expected == 401 {
            let status = reply.json();
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "Unauthorized");
            assert_eq!(status["message"], "Unauthorized");
            assert_eq!(status["code"], 401);
        }
    }
    // Proxy routes are behind authentication too, and the token never reaches a backend.
    let proxied = "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/x";
    assert_eq!(request("GET", &url(proxied), &[], "").await.status, 401);
    let reply = request(
        "GET",
        &url(proxied),
        &[("Authorization", "Bearer s3cret-token")],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    let echoed = reply.json();
    assert_eq!(echoed["pod"], "echo-0");
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    // Health and version stay public, as with kube-apiserver's default RBAC.
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(
            request("GET", &url(path), &[], "").await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(request("GET", &url("/metrics"), &[], "").await.status, 401);
}

/// The demo over HTTPS with a token file holding `tokens` and `extra` flags: the server and
/// its (self-signed) serving certificate.
fn https_demo(dir: &TempDir, tokens: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let (cert, key) = crate::support::serving_cert(dir);
    let token_file = dir.join("tokens.csv");
    std::fs::write(&token_file, tokens).unwrap();
    let mut args = vec![
        "--token-auth-file",
        token_file.to_str().unwrap(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::demo(&args), cert)
}

#[test]
fn kubectl_with_a_token_over_https() {
    // kubectl only sends credentials over TLS.
    let dir = TempDir::new("auth-kubectl");
    let (server, cert) = https_demo(&dir, "s3cret-token,alice,1001\n", &[]);
    let ca = cert.to_str().unwrap();
    let out = run_ok(kubectl(&server.url, dir.path()).args([
        "--certificate-authority",
        ca,
        "--token",
        "s3cret-token",
        "get",
        "pods",
        "-n",
        "demo",
    ]));
    assert!(out.contains("echo-0"), "{out}");
    let raw = run_ok(kubectl(&server.url, dir.path()).args([
        "--certificate-authority",
        ca,
        "--token",
        "s3cret-token",
        "get",
        "--raw",
        "/api/v1/nodes/node-1/proxy/healthz",
    ]));
    assert_eq!(raw, "ok");
    let denied = kubectl(&server.url, dir.path())
        .args([
            "--certificate-authority",
            ca,
            "--token",
            "wrong",
            "get",
            "pods",
            "-n",
            "demo",
        ])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("provide credentials") || stderr.contains("Unauthorized"),
        "{stderr}"
    );
}

#[test]
fn websocket_clients_may_send_the_token_as_a_subprotocol() {
    let dir = TempDir::new("auth-ws");
    let server = token_server(&dir);
    let url = format!(
        "{}/api/v1/namespaces/demo/services/web:http/proxy/ws?once",
        server.url
    );
    let upgrade = |protocol: &str| {
        let output = std::process::Command::new("curl")
            .args(["-s", "--include", "--no-buffer", "--max-time", "10"])
            .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
            .args([
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGVzdGluZ3Rlc3Rpbmc=",
            ])
            .args(["-H", &format!("Sec-WebSocket-Protocol: {protocol}")])
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // base64url("s3cret-token"), kube-apiserver's bearer-token subprotocol.
    let accepted = upgrade("base64url.bearer.authorization.k8s.io.czNjcmV0LXRva2Vu");
    assert!(accepted.starts_with("HTTP/1.1 101"), "{accepted}");
    assert!(accepted.contains("connected to web-0"), "{accepted}");
    let refused = upgrade("base64url.bearer.authorization.k8s.io.d3Jvbmc");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

/// A CA and a client certificate it signed for `cn` in the organizations `orgs`, written
/// as `<tag>-ca.crt`, `<cn>.crt` and `<cn>.key` in `dir`: (CA path, cert path, key path).
fn client_cert(
    dir: &TempDir,
    tag: &str,
    cn: &str,
    orgs: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca_path, issuer) = crate::support::ca(dir, tag);
    let (cert, key) = crate::support::leaf(dir, &issuer, cn, orgs);
    (ca_path, cert, key)
}

/// `--client-ca-file`: kubectl with a certificate signed by that CA reaches a pod; without
/// credentials the same request is 401 (token users still connect); a certificate from
/// another CA fails the TLS handshake; health probes stay open.
#[test]
fn kubectl_with_a_client_certificate_over_https() {
    let dir = TempDir::new("auth-x509");
    let (client_ca, alice_cert, alice_key) = client_cert(&dir, "trusted", "alice", &["dev"]);
    let (_, mallory_cert, mallory_key) =
        client_cert(&dir, "untrusted", "mallory", &["system:masters"]);
    let (server, cert) = https_demo(
        &dir,
        "s3cret-token,bob,1002\n",
        &["--client-ca-file", client_ca.to_str().unwrap()],
    );
    let ca = cert.to_str().unwrap();
    let pod = "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/hello";
    let with_cert = |cert: &std::path::Path, key: &std::path::Path| {
        let mut cmd = kubectl(&server.url, dir.path());
        cmd.args([
            "--certificate-authority",
            ca,
            "--client-certificate",
            cert.to_str().unwrap(),
            "--client-key",
            key.to_str().unwrap(),
            "get",
            "--raw",
            pod,
        ]);
        cmd
    };
    let out = run_ok(&mut with_cert(&alice_cert, &alice_key));
    assert!(out.contains("/hello"), "{out}");

    // Without credentials (kubectl would prompt for a password here, so curl asks).
    let denied = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("{}{pod}", server.url))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&denied.stdout);
    assert!(
        body.ends_with("\n401") && body.contains("\"reason\":\"Unauthorized\""),
        "{body}"
    );

    let token = run_ok(kubectl(&server.url, dir.path()).args([
        "--certificate-authority",
        ca,
        "--token",
        "s3cret-token",
        "get",
        "--raw",
        pod,
    ]));
    assert!(
        token.contains("/hello"),
        "a token user still connects: {token}"
    );

    // Refused in the TLS handshake, never at the HTTP level. With TLS 1.3 the server checks
    // the client certificate after the client has finished its side of the handshake, so
    // kubectl reports either the alert (`certificate`, `tls`) or the closed connection it
    // then writes to (`broken pipe`, `connection reset`), whichever it sees first.
    let untrusted = with_cert(&mallory_cert, &mallory_key).output().unwrap();
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        ["certificate", "tls", "broken pipe", "connection reset"]
            .iter()
            .any(|s| stderr.contains(s))
            && !stderr.contains("Unauthorized")
            && !String::from_utf8_lossy(&untrusted.stdout).contains("/hello"),
        "the handshake fails: {stderr}"
    );

    let health = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert", ca])
        .arg(format!("{}/healthz", server.url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        "ok",
        "probes stay open"
    );
}

/// `--authorization-mode RBAC` over the cluster file's Roles and bindings: a user whose Role
/// allows `get` on `pods/proxy` for one pod id only reaches that pod; another pod, a
/// service, another verb and another user get upstream's 403 text; an edit of the file
/// that grants more is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_allows_exactly_what_the_bindings_grant() {
    use crate::live::ClusterFile;
    use crate::two_servers::{backend, free_port};

    let net = 100 + std::process::id() % 100;
    let ip = format!("127.{net}.79.1");
    let port = free_port(&ip);
    let _backend = backend(&ip, port, "web").await;
    let pod = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n\
             status:\n  phase: Running\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n"
        )
    };
    let rbac = |names: &str| {
        format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: proxy-web\n  namespace: shop\n\
             rules:\n- apiGroups: [\"\"]\n  resources: [pods/proxy]\n  verbs: [get]\n  resourceNames: [{names}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-web\n  namespace: shop\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: proxy-web}}\n\
             subjects:\n- {{kind: Group, name: dev}}\n"
        )
    };
    let service = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports: [{port: 80}]\n";
    let text = |names: &str| format!("{}{}{service}{}", pod("web-1"), pod("web-2"), rbac(names));
    let file = ClusterFile::new("auth-rbac", &text(&format!("\"web-1:{port}\"")));
    let dir = TempDir::new("auth-rbac-tokens");
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,1001,\"dev\"\nbob-token,bob,1002\n",
    )
    .unwrap();
    let server = file.serve(&[
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--authorization-mode",
        "RBAC",
        "--destination-allow",
        "127.0.0.0/8",
    ]);
    let call = |method: &'static str, path: String, token: &'static str| {
        let url = format!("{}{path}", server.url);
        async move {
            request(
                method,
                &url,
                &[("authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
        }
    };
    let pod_path = |name: &str| format!("/api/v1/namespaces/shop/pods/{name}:{port}/proxy/");

    let allowed = call("GET", pod_path("web-1"), "alice-token").await;
    assert_eq!((allowed.status, allowed.body.as_str()), (200, "web"));

    let forbidden = |resource: &str, id: &str, user: &str, verb: &str| {
        format!(
            "{resource} \"{id}\" is forbidden: User \"{user}\" cannot {verb} resource \"{resource}/proxy\" in API group \"\" in the namespace \"shop\""
        )
    };
    let other_pod = call("GET", pod_path("web-2"), "alice-token").await;
    assert_eq!(other_pod.status, 403);
    assert_eq!(
        other_pod.json()["message"],
        forbidden("pods", &format!("web-2:{port}"), "alice", "get")
    );
    let service_call = call(
        "GET",
        "/api/v1/namespaces/shop/services/web:80/proxy/".to_owned(),
        "alice-token",
    )
    .await;
    assert_eq!(
        service_call.json()["message"],
        forbidden("services", "web:80", "alice", "get")
    );
    let post = call("POST", pod_path("web-1"), "alice-token").await;
    assert_eq!(
        post.json()["message"],
        forbidden("pods", &format!("web-1:{port}"), "alice", "create")
    );
    let bob = call("GET", pod_path("web-1"), "bob-token").await;
    assert_eq!(
        bob.json()["message"],
        forbidden("pods", &format!("web-1:{port}"), "bob", "get")
    );

    // Granting web-2 in the file is followed at the next reload (the file is replaced by
    // rename; `/metrics` needs a token here, so the test polls the grant itself).
    let tmp = file.path.with_extension("tmp");
    std::fs::write(&tmp, text(&format!("\"web-1:{port}\", \"web-2:{port}\""))).unwrap();
    std::fs::rename(&tmp, &file.path).unwrap();
    let granted = crate::support::eventually(std::time::Duration::from_secs(30), || async {
        (call("GET", pod_path("web-2"), "alice-token").await.status == 200).then_some(())
    })
    .await;
    assert!(
        granted.is_some(),
        "the reloaded policy grants web-2:\n{}",
        server.stderr()
    );
}

/// `--kubelet-fine-grained-authorization` with RBAC: a user with `get nodes/proxy` reads the
/// kubelet's `/healthz` through the node proxy but may not open `/exec/...` (a GET, as a
/// WebSocket exec is) nor read `/stats` (which needs `nodes/stats`); a user who also has
/// `create nodes/proxy` may exec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_paths_are_authorized_as_the_kubelet_would() {
    use crate::live::ClusterFile;
    use crate::two_servers::{backend, free_port};

    let net = 100 + std::process::id() % 100;
    let ip = format!("127.{net}.81.1");
    let port = free_port(&ip);
    // A plain-HTTP backend on a port of the node other than the kubelet's (which the proxy
    // would speak TLS to); the kubelet paths are judged all the same.
    let _kubelet = backend(&ip, port, "kubelet").await;
    let rbac = |name: &str, verbs: &str, group: &str| {
        format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\n\
             rules: [{{apiGroups: [\"\"], resources: [nodes/proxy], verbs: [{verbs}]}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {name}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\n\
             subjects: [{{kind: Group, name: {group}}}]\n"
        )
    };
    let text = format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-1}}\n\
         status:\n  addresses: [{{type: InternalIP, address: {ip}}}]\n  \
         daemonEndpoints: {{kubeletEndpoint: {{Port: 10250}}}}\n{}{}",
        rbac("node-readers", "get", "dev"),
        rbac("node-operators", "get, create", "ops")
    );
    let file = ClusterFile::new("auth-kubelet", &text);
    let dir = TempDir::new("auth-kubelet-tokens");
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,1001,\"dev\"\ncarol-token,carol,1003,\"ops\"\n",
    )
    .unwrap();
    let server = file.serve(&[
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--authorization-mode",
        "RBAC",
        "--kubelet-fine-grained-authorization",
        "--destination-allow",
        "127.0.0.0/8",
    ]);
    let call = |path: &str, token: &str| {
        let url = format!("{}/api/v1/nodes/node-1:{port}/proxy{path}", server.url);
        let header = format!("Bearer {token}");
        async move { request("GET", &url, &[("authorization", &header)], "").await }
    };
    let health = call("/healthz", "alice-token").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "kubelet"),
        "{}",
        server.stderr()
    );
    let forbidden = |path: &str, verb: &str, sub: &str| {
        format!(
            "nodes \"node-1:{port}\" is forbidden: User \"alice\" cannot get resource \"nodes/proxy\" in API group \"\" \
             at the cluster scope: the kubelet path \"{path}\" needs \"{verb}\" on \"nodes/{sub}\" of node \"node-1\""
        )
    };
    let exec = call("/exec/shop/web-1/app?command=id", "alice-token").await;
    assert_eq!(exec.status, 403);
    assert_eq!(
        exec.json()["message"],
        forbidden("/exec/shop/web-1/app", "create", "proxy")
    );
    let stats = call("/stats/summary", "alice-token").await;
    assert_eq!(
        stats.json()["message"],
        forbidden("/stats/summary", "get", "stats")
    );
    let operator = call("/exec/shop/web-1/app?command=id", "carol-token").await;
    assert_eq!((operator.status, operator.body.as_str()), (200, "kubelet"));
}

const PYTHON_WITH_TOKEN: &str = r#"
import json, sys
from kubernetes import client
from kubernetes.client.rest import ApiException

def api(token):
    configuration = client.Configuration()
    configuration.host = sys.argv[1]
    configuration.ssl_ca_cert = sys.argv[2]
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.CoreV1Api(client.ApiClient(configuration))

out = {"pod": api(sys.argv[3]).connect_get_namespaced_pod_proxy_with_path(
    "echo-0:8080", "demo", "from-python", path2="from-python")}
for name, token in [("none", None), ("wrong", "wrong-token")]:
    try:
        api(token).connect_get_namespaced_pod_proxy_with_path("echo-0:8080", "demo", "x", path2="x")
        out[name] = 200
    except ApiException as e:
        out[name] = e.status
        out[name + "_body"] = json.loads(e.body)
print(json.dumps(out))
"#;

/// Python's official client with a bearer token reaches a pod through the server over
/// HTTPS; without a token, or with a wrong one, it gets kube-apiserver's 401 Status.
#[test]
fn python_client_with_a_token_over_https() {
    let dir = TempDir::new("auth-python");
    let (server, cert) = https_demo(&dir, "py-s3cret-token,alice,1001\n", &[]);
    let stdout = crate::support::python(
        PYTHON_WITH_TOKEN,
        &[&server.url, cert.to_str().unwrap(), "py-s3cret-token"],
    );
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let pod = out["pod"].as_str().unwrap();
    assert!(pod.contains("'path': '/from-python'"), "{out}");
    for refused in ["none", "wrong"] {
        assert_eq!(out[refused], 401, "{out}");
        assert_eq!(
            out[format!("{refused}_body")]["reason"],
            "Unauthorized",
            "{out}"
        );
        assert_eq!(
            out[format!("{refused}_body")]["message"],
            "Unauthorized",
            "{out}"
        );
    }
}
