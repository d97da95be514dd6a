//! Flags and files: errors are one line with a non-zero exit, never a panic.

use std::process::Command;

use crate::support::{BIN, TempDir, fixture};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        // Outside a pod even when the tests run in one: no in-cluster configuration.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_failure(args: &[&str], needle: &str) {
    let (code, _, stderr) = run(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?} printed: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_flags_fail_with_one_line() {
    assert_one_line_failure(&["--no-such-flag"], "--no-such-flag");
    assert_one_line_failure(&["--listen", "nowhere"], "--listen");
    assert_one_line_failure(
        &["--destination-allow", "10.0.0.0/99"],
        "--destination-allow",
    );
    assert_one_line_failure(&["--balancer", "fastest"], "fastest");
    assert_one_line_failure(&["--kubelet-preferred-address-types", "Nope"], "Nope");
    assert_one_line_failure(&["--tls-cert-file", "x.pem"], "--tls-private-key-file");
    // The demo has no Roles or bindings to authorize by.
    assert_one_line_failure(
        &["--authorization-mode", "RBAC"],
        "the demo cluster has none",
    );
}

#[test]
fn bad_files_fail_with_one_line() {
    let dir = TempDir::new("cli");
    let bad_yaml = dir.join("bad.yaml");
    std::fs::write(
        &bad_yaml,
        "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n",
    )
    .unwrap();
    assert_one_line_failure(&["--cluster", bad_yaml.to_str().unwrap()], "bad.yaml");
    assert_one_line_failure(&["--cluster", "/nonexistent/cluster.yaml"], "cluster.yaml");
    let bad_tokens = dir.join("tokens.csv");
    std::fs::write(&bad_tokens, "only-a-token\n").unwrap();
    assert_one_line_failure(
        &[
            "--token-auth-file",
            bad_tokens.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "at least 3 columns",
    );
    let not_pem = dir.join("cert.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let p = not_pem.to_str().unwrap();
    assert_one_line_failure(
        &["--tls-cert-file", p, "--tls-private-key-file", p],
        "cert.pem",
    );
    assert_one_line_failure(
        &[
            "--cluster",
            fixture("cluster.yaml").to_str().unwrap(),
            "--kubelet-certificate-authority",
            p,
        ],
        "--kubelet-certificate-authority",
    );
}

/// A second server on the address of a per-core server fails as it would on any taken
/// address, although the first one's sockets let others with `SO_REUSEPORT` share it.
#[test]
fn a_taken_address_fails_with_one_line_in_either_shape() {
    let per_core = ["--runtime", "per-core", "--worker-threads", "2"];
    let first = crate::support::Server::demo(&per_core);
    let addr = first.url.trim_start_matches("http://").to_owned();
    for shape in [&per_core[..], &[]] {
        let network = crate::support::demo_network();
        let mut args = vec![
            "--listen",
            addr.as_str(),
            "--demo-network",
            network.as_str(),
        ];
        args.extend_from_slice(shape);
        assert_one_line_failure(&args, &format!("cannot listen on {addr}"));
    }
}

#[test]
fn help_explains_every_flag() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--listen",
        "--cluster",
        "--destination-allow",
        "--destination-deny",
        "--tls-cert-file",
        "--tls-private-key-file",
        "--token-auth-file",
        "--kubelet-certificate-authority",
        "--kubelet-client-certificate",
        "--kubelet-client-key",
        "--kubelet-preferred-address-types",
        "--max-connection-bytes-per-sec",
        "--balancer",
        "--proxy-rewrite",
        "resolve",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn resolve_prints_candidates_redirects_and_errors() {
    let (code, stdout, _) = run(&[
        "resolve",
        "/api/v1/namespaces/demo/services/echo:80/proxy/hi?x=1",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["action"], "forward");
    assert_eq!(v["pathAndQuery"], "/hi?x=1");
    assert_eq!(v["target"]["scheme"], "http");
    assert_eq!(v["target"]["transport"], "generic");
    assert_eq!(v["target"]["candidates"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["target"]["candidates"][0]["url"],
        "http://127.0.0.11:8080/hi?x=1"
    );

    let (code, stdout, _) = run(&["resolve", "/api/v1/nodes/node-1/proxy"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["action"], "redirect");
    assert_eq!(v["location"], "/api/v1/nodes/node-1/proxy/");

    let (code, stdout, _) = run(&["resolve", "--method", "POST", "/api/v1/nodes/node-1/proxy"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["action"], "forward");
    assert_eq!(v["target"]["transport"], "kubelet");
    assert_eq!(v["target"]["scheme"], "https");

    let (code, stdout, _) = run(&["resolve", "/api/v1/namespaces/demo/pods/nope/proxy/"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["action"], "error");
    assert_eq!(v["status"]["code"], 404);
    assert_eq!(v["status"]["message"], "pods \"nope\" not found");

    let (code, _, stderr) = run(&["resolve", "/api/v1/namespaces/demo/pods"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a proxy path"));
}

/// In a pod (`KUBERNETES_SERVICE_HOST` set) without `--cluster` or `--kubeconfig`, the
/// server takes the in-cluster configuration rather than the demo; here there is no service
/// account token, so it says so and exits. A missing `--kubeconfig` file is one error line,
/// and the two sources exclude each other.
#[test]
fn live_cluster_configuration_errors() {
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("in-cluster configuration"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    assert_one_line_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        "--kubeconfig /nonexistent/kubeconfig",
    );
    let (code, _, stderr) = run(&["--kubeconfig", "k", "--cluster", "c"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
