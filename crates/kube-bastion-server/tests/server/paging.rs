//! Paged lists over a 1,000-pod file: `limit` and `continue` give every pod exactly once,
//! with `remainingItemCount`; bad tokens are 400 with upstream's texts; a token whose
//! snapshot is gone is 410 with a fresh token; kubectl's chunked lists follow the tokens.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::live::{ClusterFile, pod};
use crate::support::{TempDir, fixture, get, kubectl, run_ok};

/// 1,000 pods over three namespaces; every third one labelled `tier=front`.
fn thousand(extra: &str) -> String {
    (0..1000)
        .map(|i| {
            let namespace = ["alpha", "beta", "gamma"][i % 3];
            let tier = if i % 3 == 0 { "front" } else { "back" };
            pod(
                &format!("pod-{i:04}"),
                namespace,
                &[("tier", tier)],
                "n1",
                extra,
            )
        })
        .collect()
}

/// Follows `path` (which has a query) page by page: the items' `ns/name`, and each
/// page's metadata.
async fn pages(server: &crate::support::Server, path: &str) -> (Vec<String>, Vec<Value>) {
    let mut names = Vec::new();
    let mut metas = Vec::new();
    let mut token = String::new();
    loop {
        let url = if token.is_empty() {
            path.to_owned()
        } else {
            format!("{path}&continue={token}")
        };
        let reply = get(server, &url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let list = reply.json();
        for item in list["items"].as_array().unwrap() {
            let meta = &item["metadata"];
            names.push(format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap(),
                meta["name"].as_str().unwrap()
            ));
        }
        metas.push(list["metadata"].clone());
        match list["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_owned(),
            None => return (names, metas),
        }
        assert!(metas.len() < 1000, "no end");
    }
}

#[tokio::test]
async fn limit_and_continue_give_every_pod_exactly_once() {
    let file = ClusterFile::new("paging", &thousand(""));
    let server = file.serve(&[]);
    let (names, metas) = pages(&server, "/api/v1/pods?limit=77").await;
    assert_eq!(names.len(), 1000);
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        1000,
        "duplicates"
    );
    assert_eq!(metas.len(), 13);
    // Every page has the first page's resourceVersion, and on all but the last, the count
    // of what is left.
    let rv = metas[0]["resourceVersion"].clone();
    for (i, meta) in metas.iter().enumerate() {
        assert_eq!(meta["resourceVersion"], rv);
        if i + 1 < metas.len() {
            let left = 1000 - 77 * (i + 1);
            assert_eq!(meta["remainingItemCount"], left, "page {i}: {meta}");
        } else {
            assert!(meta.get("remainingItemCount").is_none(), "{meta}");
            assert!(meta.get("continue").is_none(), "{meta}");
        }
    }
    // The vector row "continue token format".
    let token = get(&server, "/api/v1/pods?limit=2").await.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_owned();
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
    assert_eq!(
        decoded,
        format!(
            r#"{{"v":"meta.k8s.io/v1","rv":{},"start":"alpha/pod-0003\u0000"}}"#,
            rv.as_str().unwrap()
        )
    );
    // One namespace; and with a selector (no remainingItemCount, as upstream).
    let (beta, metas) = pages(&server, "/api/v1/namespaces/beta/pods?limit=100").await;
    assert_eq!(beta.len(), 333);
    assert!(beta.iter().all(|n| n.starts_with("beta/")));
    assert_eq!(metas[0]["remainingItemCount"], 233);
    let (front, metas) = pages(&server, "/api/v1/pods?limit=50&labelSelector=tier%3Dfront").await;
    assert_eq!(front.len(), 334);
    assert!(front.iter().all(|n| n.starts_with("alpha/")));
    assert!(metas.iter().all(|m| m.get("remainingItemCount").is_none()));
    // kubectl lists in chunks (Table pages) and prints every pod.
    let dir = TempDir::new("paging-kubectl");
    let out = run_ok(kubectl(&server.url, dir.path()).args([
        "get",
        "pods",
        "-A",
        "--chunk-size=90",
        "--no-headers",
    ]));
    assert_eq!(out.lines().count(), 1000, "{out}");
}

fn raw_token(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn bad_and_expired_continue_tokens() {
    let file = ClusterFile::new("paging-tokens", &thousand(""));
    let server = file.serve(&["--watch-cache-size", "8"]);
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("watch_protocol.json")).unwrap())
            .unwrap();
    let rows = vectors["rows"].as_array().unwrap();
    let expected = |name: &str| -> Value {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}"))["expected"]["body"]
            .clone()
    };
    for (row, token) in [
        (
            "invalid continue token: empty version",
            raw_token(r#"{"v":"","rv":1,"start":""}"#),
        ),
        (
            "invalid continue token: no start Key",
            raw_token(r#"{"v":"meta.k8s.io/v1","rv":1,"start":""}"#),
        ),
        (
            "invalid continue token: path traversal - parent",
            raw_token(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"../key"}"#),
        ),
    ] {
        let reply = get(&server, &format!("/api/v1/pods?limit=5&continue={token}")).await;
        assert_eq!(reply.status, 400, "{row}");
        assert_eq!(reply.json(), expected(row), "{row}");
    }
    let garbage = get(&server, "/api/v1/pods?limit=5&continue=%21%21").await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid continue token: ")
    );

    // A first page, then enough changes that its snapshot is no longer kept.
    let first = get(&server, "/api/v1/pods?limit=10").await.json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    for round in 0..3 {
        file.edit(&server, &thousand(&format!("round {round}")))
            .await;
    }
    let gone = get(&server, &format!("/api/v1/pods?limit=10&continue={token}")).await;
    assert_eq!(gone.status, 410);
    let body = gone.json();
    let row = expected("410 for an expired continue token");
    for field in ["kind", "apiVersion", "status", "reason", "code", "message"] {
        assert_eq!(body[field], row[field], "{field}");
    }
    // The fresh token continues where the old one pointed, from the current state.
    let fresh = body["metadata"]["continue"].as_str().unwrap();
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(fresh).unwrap()).unwrap();
    assert!(
        decoded.contains(r#""rv":-1"#) && decoded.contains("alpha/pod-0027"),
        "{decoded}"
    );
    let rest = get(&server, &format!("/api/v1/pods?limit=10&continue={fresh}"))
        .await
        .json();
    assert_eq!(rest["items"][0]["metadata"]["name"], "pod-0030");
    assert_eq!(
        rest["items"][0]["metadata"]["annotations"]["note"],
        "round 2"
    );
    // A continue with a resourceVersion is refused.
    let both = get(
        &server,
        &format!("/api/v1/pods?limit=10&continue={fresh}&resourceVersion=5"),
    )
    .await;
    assert_eq!(both.status, 400);
    assert_eq!(
        both.json()["message"],
        "specifying resource version is not allowed when using continue"
    );
}
