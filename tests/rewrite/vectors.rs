//! Every row of `html_rewrite.json`, `url_rewrite.json`, `content_encoding.json` and the
//! prefix rows of `upgradeaware_handler.json` (the upgrade and 301 `Location` rows of that
//! file need the engine and live in the end-to-end module).

use std::collections::BTreeSet;
use std::io::{Read, Write};

use http_body_util::BodyExt;
use kube_bastion::test_util::{RewriteContext, rewrite_response};
use serde_json::Value;

use crate::html_events::{events, triples};
use crate::{bodies, response, rewrite_html, upstream};

pub(crate) fn rows(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match serde_json::from_str(&text) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("{path}: expected an array, got {other:?}"),
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string {key} in {v}"))
}

/// `host[:port]` of an absolute URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default()
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// The context a vector row describes: upstream's transport (scheme, host, pathPrepend), the
/// backend URL the proxy requested and the Host header it sent.
fn row_ctx(input: &Value) -> RewriteContext {
    let Some(transport) = input.get("transport") else {
        // The conformance row: only the request line is given.
        let request = s(input, "request");
        let path = request.split_whitespace().nth(1).expect("request path");
        let prefix = RewriteContext::derive_prefix(path, "/");
        return RewriteContext::new(prefix, "10.0.0.1:80", "apiserver:6443")
            .with_options(upstream());
    };
    let backend = authority(s(input, "backend_request_url"));
    let request_host = s(input, "request_host_header");
    let request_host = if request_host.starts_with('<') {
        backend
    } else {
        request_host
    };
    RewriteContext::new(s(transport, "path_prepend"), backend, request_host)
        .with_public_origin(s(transport, "scheme"), s(transport, "host"))
        .with_options(upstream())
}

/// Rows whose bytes differ from upstream's because upstream re-serializes every start tag
/// (lowercase names, double quotes, `=""`, no space before `/>`) and we keep source bytes
/// outside the values we rewrite. Their parsed form is asserted equal instead; this list is
/// documented in docs/compatibility.md and must not grow silently.
const BYTE_DIFFERENCES: &[&str] = &[
    "image",
    "abs but same host",
    "uppercase tag and attr normalized",
    "single quoted attribute",
    "boolean attribute gets empty value",
    "self-closing kept",
];

#[tokio::test]
async fn html_rewrite_rows() {
    let rows = rows("html_rewrite.json");
    assert!(rows.len() >= 20, "vector file shrank: {}", rows.len());
    let mut differing = BTreeSet::new();
    for row in &rows {
        let name = s(row, "name");
        let input = &row["input"];
        assert_eq!(s(input, "response_content_type"), "text/html", "{name}");
        let body = input
            .get("body")
            .or_else(|| input.get("backend_body"))
            .and_then(Value::as_str)
            .expect("body");
        let expected = s(&row["expected"], "body");
        let ctx = row_ctx(input);
        let got = rewrite_html(&ctx, body).await;
        if got != expected {
            assert_eq!(
                triples(&got),
                triples(expected),
                "{name}: (tag, attribute, value) triples differ"
            );
            assert_eq!(
                events(&got),
                events(expected),
                "{name}: parsed result differs\n got: {got}\nwant: {expected}"
            );
            differing.insert(name.to_owned());
        }
        // The same page in 3-byte chunks gives the same bytes.
        let resp = response(
            &[("content-type", "text/html")],
            bodies::split(body.as_bytes(), 3),
        );
        let chunked = rewrite_response(&ctx, resp)
            .expect("no Location")
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            chunked,
            got.as_bytes(),
            "{name}: chunking changed the output"
        );
    }
    let documented: BTreeSet<String> = BYTE_DIFFERENCES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        differing, documented,
        "rows whose bytes differ from upstream's"
    );
}

#[tokio::test]
async fn url_rewrite_rows() {
    let rows = rows("url_rewrite.json");
    assert!(rows.len() >= 20, "vector file shrank: {}", rows.len());
    for row in &rows {
        let name = s(row, "name");
        let input = &row["input"];
        let ctx = row_ctx(input);
        if let Some(location) = input.get("response_Location").and_then(Value::as_str) {
            let status = input["response_status"].as_u64().expect("status") as u16;
            let resp = http::Response::builder()
                .status(status)
                .header("location", location)
                .header("content-type", "text/html")
                .body(bodies::chunks(["<a href=\"/x\">"]))
                .expect("response");
            let out = rewrite_response(&ctx, resp).expect("parsable Location");
            assert_eq!(out.status().as_u16(), status, "{name}");
            assert_eq!(
                out.headers()["location"],
                s(&row["expected"], "Location"),
                "{name}"
            );
            // With a Location, upstream skips HTML rewriting.
            assert!(!out.body().is_rewriting(), "{name}");
        } else {
            let url = s(input, "url");
            let got = ctx.rewrite_url(url).expect("parsable");
            assert_eq!(got, s(&row["expected"], "rewritten"), "{name}");
        }
    }
}

fn plain_body(description: &str) -> Vec<u8> {
    // "long body test x4097 (57358 bytes)" stands for the text repeated 4097 times.
    if let Some((text, rest)) = description.split_once(" x") {
        let times: usize = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("repeat count");
        let body = text.repeat(times).into_bytes();
        if let Some(len) = rest
            .split_once('(')
            .and_then(|(_, l)| l.split_whitespace().next())
        {
            assert_eq!(body.len().to_string(), len, "{description}");
        }
        body
    } else {
        description.as_bytes().to_vec()
    }
}

pub(crate) fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        "deflate" => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("deflate");
            e.finish().expect("deflate")
        }
        other => panic!("no encoder for {other}"),
    }
}

pub(crate) fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip output"),
        "deflate" => flate2::read::DeflateDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid raw deflate output"),
        other => panic!("no decoder for {other}"),
    };
    out
}

#[tokio::test]
async fn content_encoding_rows() {
    let rows = rows("content_encoding.json");
    assert!(!rows.is_empty());
    let ctx = crate::ctx().with_options(upstream());
    for row in &rows {
        let input = &row["input"];
        let expected = &row["expected"];
        let coding = s(input, "Content-Encoding");
        if let Some(plain) = input.get("body_plain").and_then(Value::as_str) {
            let plain = plain_body(plain);
            let encoded = encode(coding, &plain);
            for chunk in [encoded.len(), 7, 1024] {
                let resp = response(
                    &[
                        ("content-type", "text/html"),
                        ("content-encoding", coding),
                        ("content-length", &encoded.len().to_string()),
                    ],
                    bodies::split(&encoded, chunk),
                );
                let out = rewrite_response(&ctx, resp).expect("no Location");
                assert_eq!(
                    out.headers()["content-encoding"],
                    s(expected, "re_encoded_with")
                );
                assert!(out.headers().get("content-length").is_none());
                let bytes = out.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(
                    expected["round_trip_equal"],
                    Value::Bool(true),
                    "row expects a round trip"
                );
                assert_eq!(decode(coding, &bytes), plain, "{coding}, chunks of {chunk}");
            }
        } else {
            // An encoding we cannot rewrite through passes untouched.
            assert_eq!(expected["passed_through"], Value::Bool(true));
            let body = b"\x1b\x03\x00garbage-that-is-not-html".to_vec();
            let resp = response(
                &[
                    ("content-type", s(input, "content_type")),
                    ("content-encoding", coding),
                    ("content-length", &body.len().to_string()),
                ],
                bodies::chunks([body.clone()]),
            );
            let out = rewrite_response(&ctx, resp).expect("no Location");
            assert!(!out.body().is_rewriting());
            assert_eq!(out.headers()["content-length"], body.len().to_string());
            let bytes = out.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(bytes, body);
        }
    }
}

#[test]
fn upgradeaware_prefix_rows() {
    let mut seen = 0;
    for row in rows("upgradeaware_handler.json") {
        let name = s(&row, "name");
        if !name.starts_with("defaultProxyTransport") {
            continue;
        }
        seen += 1;
        let input = &row["input"];
        let expected = &row["expected"];
        let incoming = s(input, "incoming_request_url");
        let prefix =
            RewriteContext::derive_prefix(path_of(incoming), path_of(s(input, "location")));
        assert_eq!(prefix, s(expected, "path_prepend"), "{name}");
        // The transport scheme/host are the incoming absolute URL's; links to the backend
        // then move under that origin.
        let (scheme, _) = incoming.split_once("://").expect("absolute");
        assert_eq!(scheme, s(expected, "transport_scheme"), "{name}");
        assert_eq!(authority(incoming), s(expected, "transport_host"), "{name}");
        let ctx = RewriteContext::new(prefix, authority(s(input, "location")), "")
            .with_public_origin(scheme, authority(incoming));
        assert_eq!(
            ctx.rewrite_url("/x?y=1").expect("parsable"),
            format!(
                "{}://{}{}/x?y=1",
                s(expected, "transport_scheme"),
                s(expected, "transport_host"),
                s(expected, "path_prepend")
            ),
            "{name}"
        );
    }
    assert_eq!(seen, 3);
}
