//! `error_responses.json`, the rows about routing, ids, `dryRun`, the 301, authentication and
//! the Status body format. (Lookup rows, 404 and 503, belong to the resolution tests.)

use kube_bastion_core::{Plan, ResourceKind, Status};

use crate::{pct, proxy, s, support::data::vector_rows};

fn kind_of(resource: &str) -> ResourceKind {
    match resource {
        "pods" => ResourceKind::Pod,
        "services" => ResourceKind::Service,
        "nodes" => ResourceKind::Node,
        other => panic!("unknown resource {other}"),
    }
}

fn path_for(kind: ResourceKind, id: &str) -> String {
    match kind {
        ResourceKind::Node => format!("/api/v1/nodes/{}/proxy/x", pct(id, false)),
        other => format!(
            "/api/v1/namespaces/ns/{}/{}/proxy/x",
            other.resource(),
            pct(id, false)
        ),
    }
}

/// The key order `body_format` announces, e.g. `{kind:Status, ..., details?, code}`.
fn announced_keys(body_format: &str) -> Vec<String> {
    let inner =
        &body_format[body_format.find('{').expect("{") + 1..body_format.rfind('}').expect("}")];
    inner
        .split(", ")
        .map(|field| {
            field
                .split(':')
                .next()
                .unwrap_or("")
                .trim_end_matches('?')
                .to_owned()
        })
        .collect()
}

#[test]
fn bad_id_rows() {
    let rows = vector_rows("error_responses.json");
    let mut seen = 0;
    for row in rows
        .iter()
        .filter(|r| s(r, "condition") == "id fails SplitSchemeNamePort")
    {
        let kind = kind_of(s(row, "resource"));
        // Ids chosen to exercise Go's %q: plain, quote, backslash, control, non-printable.
        for (id, quoted) in [
            ("a:b:c:d", r#""a:b:c:d""#),
            ("ftp:web:80", r#""ftp:web:80""#),
            ("HTTPS:web:443", r#""HTTPS:web:443""#),
            (":web", r#"":web""#),
            ("x\"y:z:w:v", r#""x\"y:z:w:v""#),
            ("a\\b::", r#""a\\b::""#),
            ("t\tab:\u{7f}:x:y", r#""t\tab:\x7f:x:y""#),
            ("\u{200b}:\u{a0}:é:ü", r#""\u200b:\u00a0:é:ü""#),
        ] {
            let status = proxy("GET", &path_for(kind, id), "")
                .target_id()
                .expect_err("invalid id");
            assert_eq!(
                u64::from(status.code()),
                row["code"].as_u64().expect("code")
            );
            assert_eq!(status.reason(), row["reason"].as_str());
            assert_eq!(
                status.message(),
                s(row, "message").replace("\"<id>\"", quoted),
                "{id:?}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 3, "one row per resource");
}

#[test]
fn dry_run_row() {
    let rows = vector_rows("error_responses.json");
    let row = rows
        .iter()
        .find(|r| s(r, "condition") == "dryRun query parameter present")
        .expect("dryRun row");
    for query in [
        "dryRun",
        "dryRun=",
        "dryRun=All",
        "a=1&dryRun=All",
        "dry%52un=x",
    ] {
        for method in ["GET", "POST", "DELETE", "OPTIONS"] {
            let status = proxy(method, "/api/v1/namespaces/ns/services/s/proxy/x", query)
                .check()
                .expect_err("dryRun");
            assert_eq!(
                u64::from(status.code()),
                row["code"].as_u64().expect("code")
            );
            assert_eq!(status.reason(), row["reason"].as_str());
            assert_eq!(status.message(), s(row, "message"));
        }
    }
}

#[test]
fn empty_subpath_row() {
    let rows = vector_rows("error_responses.json");
    let row = rows
        .iter()
        .find(|r| s(r, "condition") == "empty subpath with GET/HEAD")
        .expect("301 row");
    assert_eq!(row["code"].as_u64(), Some(301));
    for (query, suffix) in [("", ""), ("a=1&b=%2F", "?a=1&b=%2F")] {
        for method in ["GET", "HEAD"] {
            let plan = proxy(method, "/api/v1/namespaces/ns/pods/web/proxy", query).plan();
            assert_eq!(
                plan,
                Plan::Redirect {
                    location: format!("/api/v1/namespaces/ns/pods/web/proxy/{suffix}")
                }
            );
        }
    }
}

#[test]
fn unauthenticated_row() {
    let rows = vector_rows("error_responses.json");
    let row = rows
        .iter()
        .find(|r| s(r, "condition") == "unauthenticated")
        .expect("401 row");
    let status = Status::unauthorized(s(row, "message"));
    assert_eq!(
        u64::from(status.code()),
        row["code"].as_u64().expect("code")
    );
    assert_eq!(status.reason(), row["reason"].as_str());
    assert_eq!(status.message(), s(row, "message"));
    assert_eq!(
        String::from_utf8(status.to_json()).expect("utf-8"),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
    );
}

/// Every row with a JSON body: a Status with that code, reason and message serializes with
/// the announced keys in the announced order (optional ones only when set).
#[test]
fn status_body_format_of_every_json_row() {
    let rows = vector_rows("error_responses.json");
    let mut checked = 0;
    for row in &rows {
        let body_format = s(row, "body_format");
        if !body_format.starts_with("application/json") {
            continue;
        }
        let code = u16::try_from(row["code"].as_u64().expect("numeric code")).expect("u16");
        let reason = row["reason"].as_str().filter(|r| !r.is_empty());
        let status = Status::new(code, reason, s(row, "message"));
        let text = String::from_utf8(status.to_json()).expect("utf-8");
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let announced = announced_keys(body_format);
        let expected: Vec<&str> = announced
            .iter()
            .map(String::as_str)
            .filter(|k| match *k {
                "reason" => reason.is_some(),
                "details" => false,
                _ => true,
            })
            .collect();
        let object = json.as_object().expect("object");
        assert_eq!(object.len(), expected.len(), "{text}");
        // Present in the announced order (first occurrences are the top-level keys here).
        let positions: Vec<usize> = expected
            .iter()
            .map(|k| {
                text.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("{k} in {text}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["metadata"], serde_json::json!({}));
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["code"], u64::from(code));
        assert_eq!(json["message"], s(row, "message"));
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
}
