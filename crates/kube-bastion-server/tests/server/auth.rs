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

#[test]
fn kubectl_with_a_token_over_https() {
    // kubectl only sends credentials over TLS.
    let dir = TempDir::new("auth-kubectl");
    let (cert, key) = crate::support::serving_cert(&dir);
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "s3cret-token,alice,1001\n").unwrap();
    let server = Server::demo(&[
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
    ]);
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
