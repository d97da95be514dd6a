//! The webhook clients against a real loopback HTTP server speaking TokenReview and
//! SubjectAccessReview JSON, driven by `tests/vectors/authz_webhook_sar.json` (facts from
//! upstream's tests) where its rows apply to proxy requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use serde_json::{Value, json};

use super::subject_access_review::{ResourceRequest, decide, review, spec};
use super::*;
use crate::{Attributes, Authentication, Authenticator, Authorizer, Decision, UserInfo};

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/authz_webhook_sar.json"
    );
    let text = std::fs::read_to_string(path).expect("the vectors file");
    let doc: Value = serde_json::from_str(&text).expect("vectors JSON");
    doc["rows"].as_array().expect("rows").clone()
}

fn row(name: &str) -> Value {
    vectors()
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no vector row {name:?}"))
}

/// One request the test webhook received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// What the test webhook answers: an HTTP status and a body, from the request's JSON.
type Reply = Arc<dyn Fn(&Value) -> (u16, Value) + Send + Sync>;

/// A loopback webhook: decodes every request as the k8s-openapi review its path names,
/// records it and answers with the current [`Reply`].
struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    reply: Arc<Mutex<Reply>>,
    delay: Arc<Mutex<Duration>>,
    dir: PathBuf,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kube-bastion-webhook-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Webhook {
    async fn start(reply: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let reply: Arc<Mutex<Reply>> = Arc::new(Mutex::new(Arc::new(reply)));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let state = (
            Arc::clone(&received),
            Arc::clone(&reply),
            Arc::clone(&delay),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (received, reply, delay) = state.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body.collect().await.map(|b| b.to_bytes());
                                let bytes = bytes.unwrap_or_default();
                                let body: Value =
                                    serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                // The body must decode as the real review type.
                                let decodes = if parts.uri.path().contains("authoriz")
                                    || parts.uri.path().contains("subjectaccessreviews")
                                {
                                    serde_json::from_slice::<SubjectAccessReview>(&bytes).is_ok()
                                } else {
                                    serde_json::from_slice::<TokenReview>(&bytes).is_ok()
                                };
                                received.lock().unwrap().push(Received {
                                    path: parts.uri.path().to_owned(),
                                    authorization: parts
                                        .headers
                                        .get(http::header::AUTHORIZATION)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned),
                                    body: body.clone(),
                                });
                                let wait = *delay.lock().unwrap();
                                tokio::time::sleep(wait).await;
                                let reply = Arc::clone(&reply.lock().unwrap());
                                let (code, answer) = if decodes {
                                    reply(&body)
                                } else {
                                    (400, json!({"kind": "Status", "code": 400}))
                                };
                                let mut response = http::Response::new(Full::new(Bytes::from(
                                    serde_json::to_vec(&answer).unwrap(),
                                )));
                                *response.status_mut() = http::StatusCode::from_u16(code).unwrap();
                                response.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
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
        Webhook {
            addr,
            received,
            reply,
            delay,
            dir: temp_dir(),
        }
    }

    fn answer(&self, reply: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static) {
        *self.reply.lock().unwrap() = Arc::new(reply);
    }

    fn calls(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }

    /// A kubeconfig whose server is `url`, with a client token.
    fn kubeconfig(&self, name: &str, url: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: hook\n  cluster:\n    server: {url}\n\
                 users:\n- name: bastion\n  user:\n    token: client-token\n\
                 contexts:\n- name: hook\n  context:\n    cluster: hook\n    user: bastion\n\
                 current-context: hook\n"
            ),
        )
        .expect("write kubeconfig");
        path
    }

    /// A client of `/<path>` on this server through a webhook configuration file, with
    /// fast retries.
    async fn client(&self, path: &str) -> WebhookClient {
        let url = format!("http://{}{path}", self.addr);
        let file = self.kubeconfig("webhook.yaml", &url);
        WebhookClient::from_webhook_config_file(&file)
            .await
            .expect("webhook client")
            .retries(5, Duration::from_millis(1))
    }
}

fn authenticated(username: &str) -> (u16, Value) {
    (
        200,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": {
                "authenticated": true,
                "user": {
                    "username": username,
                    "uid": "42",
                    "groups": ["devs"],
                    "extra": {"scopes": ["a", "b"]}
                }
            }
        }),
    )
}

fn unauthenticated() -> (u16, Value) {
    (
        200,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "status": {"authenticated": false}}),
    )
}

fn sar(allowed: bool, denied: bool, reason: &str) -> (u16, Value) {
    (
        200,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "status": {"allowed": allowed, "denied": denied, "reason": reason}}),
    )
}

fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::get("/api/v1/namespaces/shop/pods/web:8080/proxy/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn user_parts(name: &str) -> http::request::Parts {
    let mut parts = parts(&[]);
    parts.extensions.insert(UserInfo::new(
        name,
        "7",
        vec!["devs".to_owned(), "system:authenticated".to_owned()],
    ));
    parts
}

fn attributes(name: &str) -> Attributes {
    Attributes {
        verb: "get",
        api_group: "",
        api_version: "v1",
        resource: "pods",
        subresource: "proxy",
        namespace: Some("shop".to_owned()),
        name: name.to_owned(),
        upgrade: false,
    }
}

fn user_of(authentication: Authentication) -> UserInfo {
    match authentication {
        Authentication::User(user) => user,
        other => panic!("expected a user, got {other:?}"),
    }
}

#[tokio::test]
async fn token_review_bodies_match_the_vectors() {
    let webhook = Webhook::start(|_| authenticated("somebody")).await;
    for name in [
        "TokenReview request body",
        "TokenReview request carries context audiences",
    ] {
        let row = row(name);
        let token = row["input"]["token"].as_str().unwrap();
        let audiences: Vec<String> = row["input"]["requestAudiences"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let authn = TokenReviewAuthenticator::new(
            webhook.client("/authenticate").await,
            TokenReviewOptions::default().audiences(audiences),
        );
        let header = format!("Bearer {token}");
        let found = authn
            .authenticate(&parts(&[("authorization", &header)]))
            .await;
        assert_eq!(user_of(found).name, "somebody", "{name}");
        let received = webhook.last();
        assert_eq!(received.body, row["expected"]["requestBody"], "{name}");
        assert_eq!(received.path, "/authenticate");
        // The kubeconfig's credentials authenticate this server to the webhook.
        assert_eq!(
            received.authorization.as_deref(),
            Some("Bearer client-token")
        );
    }
}

#[test]
fn token_review_answers_map_as_upstream() {
    for name in [
        "TokenReview: unauthenticated shouldn't even include extra provided info.",
        "TokenReview: good audience",
        "TokenReview: backend returns non-intersecting audiences -> unauthenticated",
    ] {
        let row = row(name);
        let audiences: Vec<String> = row["input"]["requestAudiences"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let status = serde_json::from_value(row["input"]["responseStatus"].clone()).unwrap();
        let answer = token_review::answer(status, &audiences).expect("no error");
        let expected = &row["expected"];
        match answer {
            token_review::Answer::User(user) => {
                assert_eq!(expected["authenticated"], true, "{name}");
                assert_eq!(user.name, expected["user"]["name"].as_str().unwrap());
                assert!(user.groups.contains(&"system:authenticated".to_owned()));
            }
            token_review::Answer::Unauthenticated(_) => {
                assert_eq!(expected["authenticated"], false, "{name}");
            }
        }
    }
}

#[tokio::test]
async fn an_authenticated_token_is_its_user() {
    let webhook = Webhook::start(|_| authenticated("alice")).await;
    let authn = TokenReviewAuthenticator::new(
        webhook.client("/authenticate").await,
        TokenReviewOptions::default(),
    );
    let user = user_of(
        authn
            .authenticate(&parts(&[("authorization", "bearer alice-token")]))
            .await,
    );
    assert_eq!(user.name, "alice");
    assert_eq!(user.uid, "42");
    assert_eq!(user.groups, ["devs", "system:authenticated"]);
    assert_eq!(user.extra["scopes"], ["a", "b"]);
    assert_eq!(webhook.last().body["spec"]["token"], "alice-token");
    // The WebSocket bearer subprotocol carries a token the same way (base64url("ws-token")).
    let user = user_of(
        authn
            .authenticate(&parts(&[(
                "sec-websocket-protocol",
                "base64url.bearer.authorization.k8s.io.d3MtdG9rZW4, v4.channel.k8s.io",
            )]))
            .await,
    );
    assert_eq!(user.name, "alice");
    assert_eq!(webhook.last().body["spec"]["token"], "ws-token");
}

#[tokio::test]
async fn requests_without_a_bearer_token_are_not_the_webhooks() {
    let webhook = Webhook::start(|_| authenticated("alice")).await;
    let authn = TokenReviewAuthenticator::new(
        webhook.client("/authenticate").await,
        TokenReviewOptions::default(),
    );
    for headers in [
        vec![],
        vec![("authorization", "Basic YWxpY2U6cHc=")],
        vec![("authorization", "Bearer ")],
        vec![("sec-websocket-protocol", "v4.channel.k8s.io")],
    ] {
        assert_eq!(
            authn.authenticate(&parts(&headers)).await,
            Authentication::NoCredentials,
            "{headers:?}"
        );
    }
    assert!(matches!(
        authn
            .authenticate(&parts(&[("authorization", "Bearer x")]))
            .await,
        Authentication::User(_)
    ));
    assert_eq!(webhook.calls(), 1, "only the bearer token was sent");
}

#[tokio::test]
async fn token_answers_are_cached_under_a_digest_of_the_token() {
    let token = "a-secret-token-nobody-should-see";
    let webhook = Webhook::start(move |body| {
        if body["spec"]["token"] == token {
            authenticated("alice")
        } else {
            unauthenticated()
        }
    })
    .await;
    let authn = TokenReviewAuthenticator::new(
        webhook.client("/authenticate").await,
        TokenReviewOptions::default(),
    );
    let header = format!("Bearer {token}");
    for _ in 0..3 {
        let user = user_of(
            authn
                .authenticate(&parts(&[("authorization", &header)]))
                .await,
        );
        assert_eq!(user.name, "alice");
    }
    // Unauthenticated answers are cached too.
    for _ in 0..2 {
        assert!(matches!(
            authn
                .authenticate(&parts(&[("authorization", "Bearer wrong")]))
                .await,
            Authentication::Invalid(_)
        ));
    }
    assert_eq!(webhook.calls(), 2);
    assert_eq!(
        authn.stats(),
        WebhookStats {
            hits: 3,
            misses: 2,
            errors: 0
        }
    );
    // The cache holds digests: no key is, starts with or contains the token.
    let keys = authn.inner_cache_keys();
    assert_eq!(keys.len(), 2);
    for key in &keys {
        assert!(
            !key.windows(8)
                .any(|w| token.as_bytes().windows(8).any(|t| t == w)),
            "a key holds token bytes"
        );
    }
    assert!(keys.contains(&cache::key([&b"\0token"[..], token.as_bytes()])));
    assert!(!format!("{authn:?}").contains(token));
}

#[tokio::test]
async fn token_answers_expire_and_audiences_are_part_of_the_key() {
    let webhook = Webhook::start(|_| authenticated("alice")).await;
    let client = webhook.client("/authenticate").await;
    let short = TokenReviewAuthenticator::new(
        client.clone(),
        TokenReviewOptions::default().cache_ttl(Duration::from_millis(50)),
    );
    let head = parts(&[("authorization", "Bearer t")]);
    user_of(short.authenticate(&head).await);
    user_of(short.authenticate(&head).await);
    assert_eq!(webhook.calls(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    user_of(short.authenticate(&head).await);
    assert_eq!(webhook.calls(), 2, "the entry expired");
    let uncached = TokenReviewAuthenticator::new(
        client,
        TokenReviewOptions::default().cache_ttl(Duration::ZERO),
    );
    user_of(uncached.authenticate(&head).await);
    user_of(uncached.authenticate(&head).await);
    assert_eq!(webhook.calls(), 4, "a zero TTL caches nothing");
    assert_ne!(
        cache::key([&b"api"[..], b"\0token", b"t"]),
        cache::key([&b"\0token"[..], b"t"])
    );
}

#[tokio::test]
async fn token_webhook_failures_refuse_and_are_not_cached() {
    let webhook = Webhook::start(|_| (500, json!({"kind": "Status"}))).await;
    let authn = TokenReviewAuthenticator::new(
        webhook.client("/authenticate").await,
        TokenReviewOptions::default(),
    );
    let head = parts(&[("authorization", "Bearer t0k3n")]);
    let expect = |name: &str| row(name)["expected"].clone();

    let failed = expect("TokenReview cache/retry: t0k3n, 500 error, retries and fails");
    let found = authn.authenticate(&head).await;
    assert!(matches!(found, Authentication::Invalid(_)), "{found:?}");
    assert_eq!(
        webhook.calls() as u64,
        failed["webhookCalls"].as_u64().unwrap()
    );

    let not_retried = expect("TokenReview cache/retry: t0k3n, 404 error, fails (but no retry)");
    webhook.answer(|_| (404, json!({})));
    let before = webhook.calls();
    assert!(matches!(
        authn.authenticate(&head).await,
        Authentication::Invalid(_)
    ));
    assert_eq!(
        (webhook.calls() - before) as u64,
        not_retried["webhookCalls"].as_u64().unwrap()
    );

    // Errors were not cached: the next answer is asked for, and then cached.
    webhook.answer(|_| authenticated("alice"));
    user_of(authn.authenticate(&head).await);
    let cached = expect(
        "TokenReview cache/retry: t0k3n, 500 response, disallowed, but never called because previous 200 response was cached",
    );
    webhook.answer(|_| (500, json!({})));
    let before = webhook.calls();
    user_of(authn.authenticate(&head).await);
    assert_eq!(
        (webhook.calls() - before) as u64,
        cached["webhookCalls"].as_u64().unwrap()
    );
    assert_eq!(cached["authenticated"], true);
    let stats = authn.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 3, 2));

    // An answer reporting an error is refused and not cached either.
    webhook.answer(|_| {
        (
            200,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "status": {"authenticated": false, "error": "backend down"}}),
        )
    });
    let other = parts(&[("authorization", "Bearer other")]);
    for _ in 0..2 {
        assert!(matches!(
            authn.authenticate(&other).await,
            Authentication::Invalid(_)
        ));
    }
    assert_eq!(authn.stats().errors, 4);
}

#[tokio::test]
async fn an_unreachable_or_slow_token_webhook_is_never_a_user() {
    // A port nothing listens on: connection refused, retried, then refused.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let webhook = Webhook::start(|_| authenticated("alice")).await;
    let file = webhook.kubeconfig("down.yaml", &format!("http://{closed}/authenticate"));
    let client = WebhookClient::from_webhook_config_file(&file)
        .await
        .unwrap()
        .retries(3, Duration::from_millis(1));
    let authn = TokenReviewAuthenticator::new(client, TokenReviewOptions::default());
    let head = parts(&[("authorization", "Bearer t")]);
    assert!(matches!(
        authn.authenticate(&head).await,
        Authentication::Invalid(_)
    ));
    assert_eq!(authn.stats().errors, 1);

    *webhook.delay.lock().unwrap() = Duration::from_millis(500);
    let slow = TokenReviewAuthenticator::new(
        webhook
            .client("/authenticate")
            .await
            .timeout(Duration::from_millis(50)),
        TokenReviewOptions::default(),
    );
    assert!(matches!(
        slow.authenticate(&head).await,
        Authentication::Invalid(_)
    ));
    assert_eq!(webhook.calls(), 1, "a timeout is not retried");
}

#[test]
fn subject_access_review_bodies_match_the_vectors() {
    let mut checked = 0;
    for row in vectors() {
        let attributes = &row["input"]["attributes"];
        // The proxy sends resource requests only, as authorization.k8s.io/v1, without
        // selectors.
        if attributes["resourceRequest"] != true
            || row["input"]["subjectAccessReviewVersion"].is_string()
            || attributes.get("fieldSelector").is_some()
        {
            continue;
        }
        let text = |key: &str| attributes[key].as_str().unwrap_or_default();
        let user = &attributes["user"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let info = UserInfo::new(
            user["name"].as_str().unwrap_or_default(),
            user["uid"].as_str().unwrap_or_default(),
            strings(&user["groups"]),
        );
        let request = ResourceRequest {
            namespace: text("namespace"),
            verb: text("verb"),
            group: text("apiGroup"),
            version: text("apiVersion"),
            resource: text("resource"),
            subresource: text("subresource"),
            name: text("name"),
        };
        let body = serde_json::to_value(review(spec(&request, Some(&info)))).unwrap();
        assert_eq!(body, row["expected"]["requestBody"], "{}", row["name"]);
        checked += 1;
    }
    assert_eq!(checked, 3, "the resource request rows");
}

#[test]
fn answers_decide_as_upstream() {
    let mut checked = 0;
    for row in vectors() {
        let Some(response) = row["input"].get("responseBody") else {
            continue;
        };
        let answer: SubjectAccessReview =
            serde_json::from_value(response.clone()).expect("a SubjectAccessReview");
        let decision = decide(&answer.status.unwrap_or_default(), "alice");
        let expected = &row["expected"];
        let reason = expected["reason"].as_str().unwrap();
        match expected["decision"].as_str().unwrap() {
            "Allow" => assert_eq!(decision, Decision::Allow, "{}", row["name"]),
            "Deny" => {
                let error = expected["error"].as_str().unwrap_or_default();
                let shown = [error, reason]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                assert_eq!(decision, Decision::deny("alice", shown), "{}", row["name"]);
            }
            "NoOpinion" => assert_eq!(
                decision,
                Decision::NoOpinion {
                    reason: reason.to_owned()
                },
                "{}",
                row["name"]
            ),
            other => panic!("decision {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[tokio::test]
async fn proxy_requests_are_reviewed_as_kube_apiserver_reviews_them() {
    let webhook = Webhook::start(|body| {
        if body["spec"]["user"] == "bob" {
            sar(true, false, "")
        } else {
            sar(false, true, "blocked by policy")
        }
    })
    .await;
    let authz = WebhookAuthorizer::new(
        webhook.client("/authorize").await,
        WebhookAuthorizerOptions::default(),
    );
    // The vector row's request, built by the proxy's own parser.
    let expected =
        row("SAR: pods/proxy name is the raw proxy id")["expected"]["requestBody"].clone();
    let uri = http::Uri::from_static("/api/v1/namespaces/default/pods/https:web:8443/proxy/x");
    let crate::Route::Proxy(request) =
        crate::ProxyRequest::route(&http::Method::GET, &uri, &http::HeaderMap::new())
    else {
        panic!("not a proxy route")
    };
    let attrs = request.attributes();
    let mut head = http::Request::get(uri).body(()).unwrap().into_parts().0;
    head.extensions.insert(UserInfo::new("bob", "", vec![]));
    assert_eq!(authz.authorize(&attrs, &head).await, Decision::Allow);
    assert_eq!(webhook.last().body, expected);
    assert_eq!(webhook.last().path, "/authorize");

    let alice = user_parts("alice");
    assert_eq!(
        authz.authorize(&attributes("web:8080"), &alice).await,
        Decision::deny("alice", "blocked by policy")
    );
    let body = webhook.last().body;
    assert_eq!(body["spec"]["uid"], "7");
    assert_eq!(
        body["spec"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    let status = attributes("web:8080").forbidden("alice", "blocked by policy");
    assert_eq!(
        status.message(),
        "pods \"web:8080\" is forbidden: User \"alice\" cannot get resource \"pods/proxy\" \
         in API group \"\" in the namespace \"shop\": blocked by policy"
    );
}

#[tokio::test]
async fn authorizer_retries_and_caches_as_upstream() {
    let webhook = Webhook::start(|_| (429, json!({}))).await;
    let authz = WebhookAuthorizer::new(
        webhook.client("/authorize").await,
        WebhookAuthorizerOptions::default(),
    );
    let alice = user_parts("alice");
    let bob = user_parts("bob");
    let attrs = attributes("web:8080");
    let allows = |body: &Value| sar(body["spec"]["user"] == "alice", false, "");
    // (row, server status, who asks, a decision that allows?)
    let steps: [(&str, u16, &http::request::Parts); 5] = [
        ("429s retry", 429, &alice),
        ("404 doesnt retry", 404, &alice),
        ("alice successful request", 200, &alice),
        ("alice cached request", 500, &alice),
        ("bob unauthorized cached request", 500, &bob),
    ];
    for (name, code, who) in steps {
        if name == "alice cached request" {
            // Upstream's "bob failed request" comes before: a refusal that is cached.
            webhook.answer(allows);
            let before = webhook.calls();
            let decision = authz.authorize(&attrs, &bob).await;
            assert!(
                matches!(decision, Decision::NoOpinion { .. }),
                "{decision:?}"
            );
            assert_eq!(webhook.calls() - before, 1);
        }
        let expected = row(name)["expected"].clone();
        match code {
            200 => webhook.answer(allows),
            code => webhook.answer(move |_| (code, json!({}))),
        }
        let before = webhook.calls();
        let decision = authz.authorize(&attrs, who).await;
        assert_eq!(
            (webhook.calls() - before) as u64,
            expected["webhookCalls"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            decision == Decision::Allow,
            expected["authorized"].as_bool().unwrap(),
            "{name}: {decision:?}"
        );
    }
    assert_eq!(
        authz.stats(),
        WebhookStats {
            hits: 2,
            misses: 4,
            errors: 2
        }
    );
}

#[tokio::test]
async fn failures_decide_by_the_failure_policy_and_are_not_cached() {
    let webhook = Webhook::start(|_| (500, json!({}))).await;
    let client = webhook
        .client("/authorize")
        .await
        .retries(2, Duration::from_millis(1));
    let alice = user_parts("alice");
    let attrs = attributes("web:8080");

    let lenient = WebhookAuthorizer::new(client.clone(), WebhookAuthorizerOptions::default());
    for _ in 0..2 {
        match lenient.authorize(&attrs, &alice).await {
            Decision::NoOpinion { reason } => {
                assert_eq!(
                    reason,
                    "webhook authorization failed: the webhook answered HTTP 500"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(webhook.calls(), 4, "two attempts each, nothing cached");
    assert_eq!(lenient.stats().errors, 2);

    let strict = WebhookAuthorizer::new(
        client.timeout(Duration::from_millis(50)),
        WebhookAuthorizerOptions::default().failure_policy(FailurePolicy::Deny),
    );
    *webhook.delay.lock().unwrap() = Duration::from_millis(500);
    assert_eq!(
        strict.authorize(&attrs, &alice).await,
        Decision::deny(
            "alice",
            "webhook authorization failed: the webhook did not answer in time"
        )
    );
    assert_eq!(
        row("failure policy Deny: webhook error")["expected"]["decision"],
        "Deny"
    );

    // Connection refused.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let file = webhook.kubeconfig("down.yaml", &format!("http://{closed}/authorize"));
    let down = WebhookClient::from_webhook_config_file(&file)
        .await
        .unwrap()
        .retries(2, Duration::from_millis(1));
    let authz = WebhookAuthorizer::new(down, WebhookAuthorizerOptions::default());
    assert_eq!(
        authz.authorize(&attrs, &alice).await,
        Decision::NoOpinion {
            reason: "webhook authorization failed: the webhook could not be reached".to_owned()
        }
    );
}

#[tokio::test]
async fn cache_entries_are_per_spec_and_skip_large_requests() {
    let webhook = Webhook::start(|_| sar(true, false, "")).await;
    let authz = WebhookAuthorizer::new(
        webhook.client("/authorize").await,
        WebhookAuthorizerOptions::default(),
    );
    let attrs = attributes("web:8080");
    assert_eq!(
        authz.authorize(&attrs, &user_parts("alice")).await,
        Decision::Allow
    );
    assert_eq!(
        authz.authorize(&attrs, &user_parts("alice")).await,
        Decision::Allow
    );
    assert_eq!(webhook.calls(), 1);
    // Same attributes, another user: another entry (the row's sharesCacheEntry: false).
    assert_eq!(
        row("cache key = JSON of the whole SAR spec")["expected"]["sharesCacheEntry"],
        false
    );
    assert_eq!(
        authz.authorize(&attrs, &user_parts("bob")).await,
        Decision::Allow
    );
    assert_eq!(webhook.calls(), 2);
    // Requester-controlled attributes of 10,000 bytes or more are never cached.
    let long = attributes(&"x".repeat(10_000));
    for _ in 0..2 {
        assert_eq!(
            authz.authorize(&long, &user_parts("alice")).await,
            Decision::Allow
        );
    }
    assert_eq!(webhook.calls(), 4);
    assert_eq!(authz.stats().hits, 1);
    // Zero TTLs cache nothing.
    let uncached = WebhookAuthorizer::new(
        webhook.client("/authorize").await,
        WebhookAuthorizerOptions::default()
            .authorized_ttl(Duration::ZERO)
            .unauthorized_ttl(Duration::ZERO),
    );
    uncached.authorize(&attrs, &user_parts("alice")).await;
    uncached.authorize(&attrs, &user_parts("alice")).await;
    assert_eq!(webhook.calls(), 6);
}

#[tokio::test]
async fn delegated_kubeconfigs_post_to_the_review_apis() {
    let webhook = Webhook::start(|body| {
        if body["kind"] == "TokenReview" {
            authenticated("alice")
        } else {
            sar(true, false, "")
        }
    })
    .await;
    let file = webhook.kubeconfig("kubeconfig", &format!("http://{}/prefix/", webhook.addr));
    let authn = TokenReviewAuthenticator::new(
        WebhookClient::from_kubeconfig_file(&file, TOKEN_REVIEWS_PATH)
            .await
            .unwrap(),
        TokenReviewOptions::default(),
    );
    user_of(
        authn
            .authenticate(&parts(&[("authorization", "Bearer t")]))
            .await,
    );
    assert_eq!(
        webhook.last().path,
        "/prefix/apis/authentication.k8s.io/v1/tokenreviews"
    );
    let authz = WebhookAuthorizer::new(
        WebhookClient::from_kubeconfig_file(&file, SUBJECT_ACCESS_REVIEWS_PATH)
            .await
            .unwrap(),
        WebhookAuthorizerOptions::default(),
    );
    assert_eq!(
        authz.authorize(&attributes("web"), &user_parts("a")).await,
        Decision::Allow
    );
    assert_eq!(
        webhook.last().path,
        "/prefix/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
}

#[tokio::test]
async fn bad_kubeconfig_files_are_reported_with_their_path() {
    let dir = temp_dir();
    let missing = dir.join("missing.yaml");
    let error = WebhookClient::from_webhook_config_file(&missing)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("missing.yaml"), "{error}");
    let garbage = dir.join("garbage.yaml");
    std::fs::write(&garbage, "clusters: [[[").unwrap();
    let error = WebhookClient::from_webhook_config_file(&garbage)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("garbage.yaml"), "{error}");
    let no_context = dir.join("no-context.yaml");
    std::fs::write(
        &no_context,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: http://127.0.0.1:1\n",
    )
    .unwrap();
    assert!(
        WebhookClient::from_webhook_config_file(&no_context)
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(dir);
}
