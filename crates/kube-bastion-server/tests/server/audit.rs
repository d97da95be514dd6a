//! `--audit-log-path`: one `audit.k8s.io/v1` Event per line for every proxy request, read
//! back with a strict mirror of the upstream type; no token, no body in the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::{Server, TempDir, eventually, request};

const TOKEN: &str = "s3cret-token";
const WRONG_TOKEN: &str = "wrong-token-value";
const BODY: &str = "payload-that-must-not-be-logged";

/// `audit.k8s.io/v1` `Event`, every field of the Go type, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Fields read only through Debug are still checked by parsing.
struct Event {
    kind: String,
    api_version: String,
    level: String,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: UserInfo,
    impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", default)]
    source_ips: Vec<String>,
    #[serde(default)]
    user_agent: String,
    object_ref: Option<ObjectReference>,
    response_status: Option<Status>,
    request_object: Option<serde_json::Value>,
    response_object: Option<serde_json::Value>,
    request_received_timestamp: MicroTime,
    stage_timestamp: MicroTime,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct UserInfo {
    #[serde(default)]
    username: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ObjectReference {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    resource_version: String,
    #[serde(default)]
    subresource: String,
}

/// `meta/v1` `Status` (as an audit event carries it: no kind or apiVersion).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Status {
    metadata: serde_json::Map<String, serde_json::Value>,
    status: Option<String>,
    message: Option<String>,
    reason: Option<String>,
    details: Option<serde_json::Value>,
    code: i32,
}

fn object(resource: &str, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        resource: resource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        api_version: "v1".to_owned(),
        subresource: "proxy".to_owned(),
        ..ObjectReference::default()
    }
}

fn alice() -> UserInfo {
    UserInfo {
        username: "alice".to_owned(),
        uid: "1001".to_owned(),
        groups: vec![
            "developers".to_owned(),
            "viewers".to_owned(),
            "system:authenticated".to_owned(),
        ],
        ..UserInfo::default()
    }
}

/// The demo with a token file and an audit log under `dir` (in a directory the server
/// creates), plus `extra` flags.
fn audited_server(dir: &TempDir, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{TOKEN},alice,1001,\"developers,viewers\"\n"),
    )
    .unwrap();
    let log = dir.join("audit/audit.log");
    let mut args = vec![
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::demo(&args), log)
}

/// Waits until the log holds `count` lines, then parses every one of them.
async fn events(log: &Path, count: usize) -> (String, Vec<Event>) {
    let text = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        (text.lines().count() >= count).then_some(text)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "fewer than {count} audit lines:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    let events = text
        .lines()
        .map(|line| {
            serde_json::from_str::<Event>(line)
                .unwrap_or_else(|e| panic!("not an audit.k8s.io/v1 Event ({e}): {line}"))
        })
        .collect();
    (text, events)
}

/// The events of one audit ID, in file order.
fn of<'a>(events: &'a [Event], id: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.audit_id == id).collect()
}

fn micro(text_line: &str, field: &str) -> bool {
    // `"2026-12-07T10:00:00.123456Z"`: RFC 3339, UTC, six fractional digits.
    let Some(start) = text_line.find(&format!("\"{field}\":\"")) else {
        return false;
    };
    let value = &text_line[start + field.len() + 4..][..27];
    value.len() == 27 && value.as_bytes()[19] == b'.' && value.ends_with('Z')
}

#[tokio::test]
async fn every_proxy_request_writes_metadata_events_without_credentials() {
    let dir = TempDir::new("audit");
    let (server, log) = audited_server(&dir, &[]);
    let url = |p: &str| format!("{}{p}", server.url);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [
        ("Authorization", bearer.as_str()),
        ("User-Agent", "audit-test/1"),
    ];

    // 1. GET to a pod.
    let get = request(
        "GET",
        &url("/api/v1/namespaces/demo/pods/echo-0:8080/proxy/hello?from=audit"),
        &auth,
        "",
    )
    .await;
    assert_eq!(get.status, 200, "{}", get.body);
    let get_id = get.header("audit-id").expect("Audit-Id header").to_owned();
    // 2. POST with a body, through a service.
    let post = request(
        "POST",
        &url("/api/v1/namespaces/demo/services/echo:80/proxy/submit"),
        &auth,
        BODY,
    )
    .await;
    assert_eq!(post.status, 200, "{}", post.body);
    assert!(post.body.contains(BODY), "{}", post.body);
    let post_id = post.header("audit-id").unwrap().to_owned();
    // 3. A pod that does not exist: the proxy's 404.
    let missing = request(
        "GET",
        &url("/api/v1/namespaces/demo/pods/nope/proxy/"),
        &auth,
        "",
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let missing_id = missing.header("audit-id").unwrap().to_owned();
    // 4. No token, then a wrong one: 401, one event each.
    let anonymous = request("GET", &url("/api/v1/nodes/node-1/proxy/"), &[], "").await;
    assert_eq!(anonymous.status, 401);
    let anonymous_id = anonymous.header("audit-id").unwrap().to_owned();
    let wrong_bearer = format!("Bearer {WRONG_TOKEN}");
    let wrong = request(
        "DELETE",
        &url("/api/v1/namespaces/demo/pods/echo-1:8080/proxy/x"),
        &[("Authorization", wrong_bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let wrong_id = wrong.header("audit-id").unwrap().to_owned();
    // 5. A WebSocket upgrade.
    let mut ws_request = format!(
        "{}/api/v1/namespaces/demo/services/web:http/proxy/ws?room=7",
        server.url.replacen("http://", "ws://", 1)
    )
    .into_client_request()
    .unwrap();
    ws_request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(ws_request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    let ws_id = response.headers()["audit-id"].to_str().unwrap().to_owned();
    let greeting = ws.next().await.unwrap().unwrap();
    assert!(greeting.into_text().unwrap().contains("connected to web-0"));
    ws.send(Message::text("bye")).await.unwrap();
    let _ = ws.close(None).await;
    // 6. Not a proxy request: not audited.
    let list = request("GET", &url("/api/v1/namespaces/demo/pods"), &auth, "").await;
    assert_eq!(list.status, 200);
    assert!(list.header("audit-id").is_none());

    // Two lines for each of the three ordinary requests and the upgrade, one per 401.
    let (text, events) = events(&log, 10).await;
    for secret in [TOKEN, WRONG_TOKEN, BODY, "Bearer"] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the audit log:\n{text}"
        );
    }
    for line in text.lines() {
        assert!(micro(line, "requestReceivedTimestamp"), "{line}");
        assert!(micro(line, "stageTimestamp"), "{line}");
    }
    assert_eq!(events.len(), 10, "{text}");
    for e in &events {
        assert_eq!(
            (e.kind.as_str(), e.api_version.as_str(), e.level.as_str()),
            ("Event", "audit.k8s.io/v1", "Metadata")
        );
        assert_eq!(e.source_ips, ["127.0.0.1"], "{e:?}");
        assert!(e.request_object.is_none() && e.response_object.is_none());
        assert!(e.impersonated_user.is_none());
        assert!(
            e.stage_timestamp.0 >= e.request_received_timestamp.0,
            "{e:?}"
        );
    }

    // (id, verb, object, uri, final stage, code) of the authenticated requests.
    let authenticated = [
        (
            &get_id,
            "get",
            object("pods", "demo", "echo-0:8080"),
            "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/hello?from=audit",
            "ResponseComplete",
            200,
        ),
        (
            &post_id,
            "create",
            object("services", "demo", "echo:80"),
            "/api/v1/namespaces/demo/services/echo:80/proxy/submit",
            "ResponseComplete",
            200,
        ),
        (
            &missing_id,
            "get",
            object("pods", "demo", "nope"),
            "/api/v1/namespaces/demo/pods/nope/proxy/",
            "ResponseComplete",
            404,
        ),
        (
            &ws_id,
            "get",
            object("services", "demo", "web:http"),
            "/api/v1/namespaces/demo/services/web:http/proxy/ws?room=7",
            "ResponseStarted",
            101,
        ),
    ];
    for (id, verb, object, uri, last, code) in authenticated {
        let pair = of(&events, id);
        assert_eq!(pair.len(), 2, "{id}: {pair:?}");
        let (first, second) = (pair[0], pair[1]);
        assert_eq!(first.stage, "RequestReceived", "{first:?}");
        assert!(first.response_status.is_none(), "{first:?}");
        assert!(first.annotations.is_empty(), "{first:?}");
        assert_eq!(second.stage, last, "{second:?}");
        assert_eq!(
            second.response_status.as_ref().unwrap().code,
            code,
            "{second:?}"
        );
        assert_eq!(
            second
                .annotations
                .get("authorization.k8s.io/decision")
                .map(String::as_str),
            Some("allow"),
            "{second:?}"
        );
        for e in pair {
            assert_eq!(e.verb, verb);
            assert_eq!(e.user, alice());
            assert_eq!(e.object_ref.as_ref(), Some(&object));
            assert_eq!(e.request_uri, uri);
            assert_eq!(
                e.request_received_timestamp,
                first.request_received_timestamp
            );
        }
        if !uri.contains("/ws") {
            assert_eq!(first.user_agent, "audit-test/1");
        }
    }
    for (id, verb, object) in [
        (&anonymous_id, "get", object("nodes", "", "node-1")),
        (&wrong_id, "delete", object("pods", "demo", "echo-1:8080")),
    ] {
        let one = of(&events, id);
        assert_eq!(one.len(), 1, "{id}: {one:?}");
        let e = one[0];
        assert_eq!(e.stage, "ResponseStarted");
        assert_eq!(e.user, UserInfo::default());
        assert_eq!(e.verb, verb);
        assert_eq!(e.object_ref.as_ref(), Some(&object));
        let status = e.response_status.as_ref().unwrap();
        assert_eq!(status.code, 401);
        assert_eq!(status.reason.as_deref(), Some("Unauthorized"));
        assert!(e.annotations.is_empty());
    }

    // The log file is private, and nothing was dropped.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let metrics = request("GET", &url("/metrics"), &auth, "").await;
    assert!(
        metrics
            .body
            .contains("kube_bastion_audit_events_dropped_total 0"),
        "{}",
        metrics.body
    );
}

/// A denied request: RequestReceived, then ResponseComplete with 403 and the
/// `forbid` decision.
#[tokio::test]
async fn denied_requests_carry_the_decision() {
    let dir = TempDir::new("audit-deny");
    let (server, log) = audited_server(&dir, &["--authorization-mode", "AlwaysDeny"]);
    let bearer = format!("Bearer {TOKEN}");
    let reply = request(
        "PUT",
        &format!("{}/api/v1/namespaces/demo/pods/echo-2/proxy/", server.url),
        &[("Authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let (_, events) = events(&log, 2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].stage, "RequestReceived");
    assert_eq!(events[1].stage, "ResponseComplete");
    assert_eq!(events[1].verb, "update");
    assert_eq!(events[1].user, alice());
    assert_eq!(events[1].response_status.as_ref().unwrap().code, 403);
    assert_eq!(
        events[1]
            .annotations
            .get("authorization.k8s.io/decision")
            .map(String::as_str),
        Some("forbid")
    );
}

/// Without `--audit-log-path` the audit layers are not in the stack: proxy answers (a
/// backend's, a refusal) carry no `Audit-Id`.
#[tokio::test]
async fn without_an_audit_log_nothing_is_audited() {
    let server = Server::demo(&[]);
    let url = |p: &str| format!("{}{p}", server.url);
    let get = request(
        "GET",
        &url("/api/v1/namespaces/demo/pods/echo-0:8080/proxy/hello"),
        &[],
        "",
    )
    .await;
    assert_eq!(get.status, 200, "{}", get.body);
    assert!(get.header("audit-id").is_none());
    let missing = request(
        "GET",
        &url("/api/v1/namespaces/demo/pods/nope/proxy/"),
        &[],
        "",
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.header("audit-id").is_none());
}
