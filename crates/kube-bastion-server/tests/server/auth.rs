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

/// A CA and a client certificate it signed for `cn` in the organizations `orgs`, written
/// as `<tag>-ca.crt`, `<tag>.crt` and `<tag>.key` in `dir`: (CA path, cert path, key path).
fn client_cert(
    dir: &TempDir,
    tag: &str,
    cn: &str,
    orgs: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{tag} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join(&format!("{tag}-ca.crt")),
        dir.join(&format!("{tag}.crt")),
        dir.join(&format!("{tag}.key")),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `--client-ca-file`: kubectl with a certificate signed by that CA reaches a pod; without
/// credentials the same request is 401 (token users still connect); a certificate from
/// another CA fails the TLS handshake; health probes stay open.
#[test]
fn kubectl_with_a_client_certificate_over_https() {
    let dir = TempDir::new("auth-x509");
    let (cert, key) = crate::support::serving_cert(&dir);
    let (client_ca, alice_cert, alice_key) = client_cert(&dir, "trusted", "alice", &["dev"]);
    let (_, mallory_cert, mallory_key) =
        client_cert(&dir, "untrusted", "mallory", &["system:masters"]);
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "s3cret-token,bob,1002\n").unwrap();
    let server = Server::demo(&[
        "--client-ca-file",
        client_ca.to_str().unwrap(),
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
    ]);
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

    let untrusted = with_cert(&mallory_cert, &mallory_key).output().unwrap();
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("tls"),
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
