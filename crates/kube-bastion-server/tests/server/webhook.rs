//! TokenReview and SubjectAccessReview webhooks (`--authentication-token-webhook-config-file`,
//! `--authorization-mode Webhook` with `--authorization-webhook-config-file`): a webhook
//! server in the test process decides who a token is and whether a proxy request may pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use serde_json::{Value, json};

use crate::support::{BIN, Server, TempDir, request};

/// The test webhook: counts the reviews it answers and keeps the last SubjectAccessReview.
struct Hook {
    addr: SocketAddr,
    token_reviews: Arc<AtomicUsize>,
    access_reviews: Arc<AtomicUsize>,
    last_access_review: Arc<Mutex<Value>>,
}

/// The TokenReview answer: `alice-token` is alice, `carol-token` carol, anything else
/// unauthenticated.
fn token_review(review: &TokenReview) -> Value {
    let user = match review.spec.token.as_deref() {
        Some("alice-token") => Some(("alice", "devs")),
        Some("carol-token") => Some(("carol", "contractors")),
        _ => None,
    };
    match user {
        Some((name, group)) => json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {"authenticated": true,
                       "user": {"username": name, "uid": "1", "groups": [group]}}
        }),
        None => json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {"authenticated": false}
        }),
    }
}

/// The SubjectAccessReview answer: alice may, carol is denied with a reason, anyone else
/// gets no opinion.
fn access_review(review: &SubjectAccessReview) -> Value {
    let status = match review.spec.user.as_deref() {
        Some("alice") => json!({"allowed": true}),
        Some("carol") => json!({"allowed": false, "denied": true, "reason": "carol is on leave"}),
        _ => json!({"allowed": false}),
    };
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "status": status})
}

impl Hook {
    /// Starts the webhook; `status` is what it answers with (200: the reviews above).
    async fn start(status: u16) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = Hook {
            addr: listener.local_addr().unwrap(),
            token_reviews: Arc::default(),
            access_reviews: Arc::default(),
            last_access_review: Arc::new(Mutex::new(Value::Null)),
        };
        let state = (
            Arc::clone(&hook.token_reviews),
            Arc::clone(&hook.access_reviews),
            Arc::clone(&hook.last_access_review),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (tokens, accesses, last) = state.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                                let answer = match path.as_str() {
                                    "/authenticate" => {
                                        tokens.fetch_add(1, Ordering::SeqCst);
                                        serde_json::from_slice::<TokenReview>(&bytes)
                                            .ok()
                                            .map(|r| token_review(&r))
                                    }
                                    "/authorize" => {
                                        accesses.fetch_add(1, Ordering::SeqCst);
                                        *last.lock().unwrap() =
                                            serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                        serde_json::from_slice::<SubjectAccessReview>(&bytes)
                                            .ok()
                                            .map(|r| access_review(&r))
                                    }
                                    _ => None,
                                };
                                let (code, answer) = match answer {
                                    Some(_) if status != 200 => (status, json!({})),
                                    Some(answer) => (200, answer),
                                    None => (400, json!({})),
                                };
                                let mut response =
                                    http::Response::new(Full::new(Bytes::from(answer.to_string())));
                                *response.status_mut() = http::StatusCode::from_u16(code).unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        hook
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.token_reviews.load(Ordering::SeqCst),
            self.access_reviews.load(Ordering::SeqCst),
        )
    }
}

/// A webhook configuration file (a kubeconfig) whose server is `url`.
fn webhook_config(dir: &TempDir, name: &str, url: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: hook\n  cluster:\n    server: {url}\n\
             users:\n- name: bastion\n  user: {{}}\n\
             contexts:\n- name: hook\n  context:\n    cluster: hook\n    user: bastion\n\
             current-context: hook\n"
        ),
    )
    .unwrap();
    path
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

const POD: &str = "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/x";

fn forbidden(user: &str, reason: &str) -> String {
    format!(
        "pods \"echo-0:8080\" is forbidden: User \"{user}\" cannot get resource \"pods/proxy\" \
         in API group \"\" in the namespace \"demo\": {reason}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_authenticate_and_authorize_proxy_requests() {
    let hook = Hook::start(200).await;
    let dir = TempDir::new("webhook");
    let authn = webhook_config(
        &dir,
        "authn.yaml",
        &format!("http://{}/authenticate", hook.addr),
    );
    let authz = webhook_config(
        &dir,
        "authz.yaml",
        &format!("http://{}/authorize", hook.addr),
    );
    let server = Server::demo(&[
        "--authentication-token-webhook-config-file",
        authn.to_str().unwrap(),
        "--authorization-mode",
        "Webhook",
        "--authorization-webhook-config-file",
        authz.to_str().unwrap(),
    ]);
    let url = format!("{}{POD}", server.url);
    let bearer = |token: &str| format!("Bearer {token}");

    // A token the webhook accepts reaches the pod; the token is not forwarded.
    let alice = bearer("alice-token");
    let reply = request("GET", &url, &[("Authorization", &alice)], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echoed = reply.json();
    assert_eq!(echoed["pod"], "echo-0");
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    assert_eq!(hook.counts(), (1, 1));
    // The review kube-apiserver would send for this request.
    let review = hook.last_access_review.lock().unwrap().clone();
    assert_eq!(
        review["spec"],
        json!({
            "user": "alice", "uid": "1", "groups": ["devs", "system:authenticated"],
            "resourceAttributes": {"namespace": "demo", "verb": "get", "version": "v1",
                                   "resource": "pods", "subresource": "proxy",
                                   "name": "echo-0:8080"}
        })
    );

    // The same request again: both answers come from the caches.
    let reply = request("GET", &url, &[("Authorization", &alice)], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(hook.counts(), (1, 1), "answered from the caches");

    // A token the webhook does not know: 401, kube-apiserver's Status.
    for _ in 0..2 {
        let reply = request("GET", &url, &[("Authorization", &bearer("nobody"))], "").await;
        assert_eq!(reply.status, 401);
        let status = reply.json();
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["message"], "Unauthorized");
    }
    assert_eq!(hook.counts(), (2, 1), "the refusal is cached too");
    // No token at all: 401 without asking.
    assert_eq!(request("GET", &url, &[], "").await.status, 401);
    assert_eq!(hook.counts(), (2, 1));

    // Denied by the webhook: 403 with kube-apiserver's message and the webhook's reason.
    let reply = request(
        "GET",
        &url,
        &[("Authorization", &bearer("carol-token"))],
        "",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let status = reply.json();
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["message"], forbidden("carol", "carol is on leave"));
    assert_eq!(status["details"]["kind"], "pods");
    assert_eq!(hook.counts(), (3, 2));

    // The caches' counters on /metrics (this request's token is a fifth authentication
    // answer, the third from the cache; /metrics is not authorized by the webhook).
    let metrics = request(
        "GET",
        &format!("{}/metrics", server.url),
        &[("Authorization", &alice)],
        "",
    )
    .await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    for (webhook, hit, miss) in [("authentication", 3, 3), ("authorization", 1, 2)] {
        for (result, n) in [("hit", hit), ("miss", miss), ("error", 0)] {
            let line = format!(
                "kube_bastion_webhook_requests_total{{webhook=\"{webhook}\",result=\"{result}\"}} {n}\n"
            );
            assert!(metrics.body.contains(&line), "{line} in\n{}", metrics.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_never_lets_a_request_through() {
    let dir = TempDir::new("webhook-down");
    // Authentication: nothing listens where the webhook should be.
    let down = webhook_config(
        &dir,
        "down.yaml",
        &format!("http://{}/authenticate", closed_port()),
    );
    let server = Server::demo(&[
        "--authentication-token-webhook-config-file",
        down.to_str().unwrap(),
    ]);
    let url = format!("{}{POD}", server.url);
    let reply = request("GET", &url, &[("Authorization", "Bearer alice-token")], "").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.json()["message"], "Unauthorized");
    drop(server);

    // Authorization: the webhook answers 500 to everything; the token file authenticates.
    let hook = Hook::start(500).await;
    let authz = webhook_config(
        &dir,
        "authz.yaml",
        &format!("http://{}/authorize", hook.addr),
    );
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001\n").unwrap();
    let server = Server::demo(&[
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--authorization-mode",
        "Webhook",
        "--authorization-webhook-config-file",
        authz.to_str().unwrap(),
    ]);
    let url = format!("{}{POD}", server.url);
    let reply = request("GET", &url, &[("Authorization", "Bearer alice-token")], "").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(
        reply.json()["message"],
        forbidden(
            "alice",
            "webhook authorization failed: the webhook answered HTTP 500"
        )
    );
    assert_eq!(hook.counts(), (0, 5), "a 500 is retried up to 5 attempts");
    // Errors are not cached: the next request asks again.
    let reply = request("GET", &url, &[("Authorization", "Bearer alice-token")], "").await;
    assert_eq!(reply.status, 403);
    assert_eq!(hook.counts(), (0, 10));
}

fn start_error(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} started");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_webhook_settings_fail_at_startup() {
    let dir = TempDir::new("webhook-flags");
    let missing = dir.join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let error = start_error(&["--authentication-token-webhook-config-file", missing]);
    assert!(
        error.contains("--authentication-token-webhook-config-file")
            && error.contains("missing.yaml"),
        "{error}"
    );
    let garbage = dir.join("garbage.yaml");
    std::fs::write(&garbage, "clusters: [[[").unwrap();
    let error = start_error(&[
        "--authorization-mode",
        "Webhook",
        "--authorization-kubeconfig",
        garbage.to_str().unwrap(),
    ]);
    assert!(
        error.contains("--authorization-kubeconfig") && error.contains("garbage.yaml"),
        "{error}"
    );
    let error = start_error(&["--authorization-mode", "Webhook"]);
    assert!(
        error.contains("--authorization-webhook-config-file"),
        "{error}"
    );
    let good = webhook_config(&dir, "authz.yaml", "http://127.0.0.1:1/authorize");
    let error = start_error(&[
        "--authorization-mode",
        "Webhook",
        "--authorization-webhook-config-file",
        good.to_str().unwrap(),
        "--authorization-kubeconfig",
        good.to_str().unwrap(),
    ]);
    assert!(error.contains("--authorization-kubeconfig"), "{error}");
    let error = start_error(&[
        "--authorization-webhook-config-file",
        good.to_str().unwrap(),
    ]);
    assert!(error.contains("Webhook"), "{error}");
    let error = start_error(&["--authentication-token-webhook-cache-ttl", "2 minutes"]);
    assert!(error.contains("2 minutes"), "{error}");
}
