//! Streaming: chunk boundaries anywhere give the same bytes, output flows before the input
//! ends, memory stays flat on a 100 MiB page, broken compressed bodies end cleanly.

use std::io::Write;

use bytes::Bytes;
use futures_util::FutureExt;
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use kube_bastion::RewriteBodyError;
use kube_bastion::test_util::{RewrittenBody, rewrite_response};

use crate::vectors::{decode, encode};
use crate::{PREFIX, bodies, collect_lossy, ctx, response};

/// A page exercising tags, attributes (quoted, unquoted, entities), comments, script text,
/// srcset and meta refresh, so that chunk boundaries fall everywhere interesting.
const PAGE: &str = r##"<!DOCTYPE html>
<html manifest="/app.manifest"><head profile="/p">
<meta http-equiv="refresh" content="30; url=/reload">
<link rel=stylesheet href=/s.css><script src='/a.js'></script>
<script>var u = "<a href='/not-a-link'>";</script>
<!-- <a href="/commented"> -->
</head><body background="/bg.png">
<a href="/x?a=1&amp;b=2#frag">x</a> <a HREF=/y>y</a> <a href="rel">r</a>
<img src="/i.png" srcset="/i.png 1x, /i2.png 2x" longdesc="/d" usemap="#m">
<form action="/post"><input type=image src="/btn.png" formaction="/go"><button formaction="/b"></button></form>
<iframe src="//10.1.2.3:8080/frame"></iframe><video poster="/p.jpg" src="/v.mp4"></video>
<a href="http://10.1.2.3:8080/abs">abs</a> <a href="https://example.com/ext">ext</a>
<object data="/o" classid="/c" codebase="/cb" usemap="/u"></object><q cite="/q">q</q>
</body></html>
"##;

async fn rewrite_chunks(headers: &[(&str, &str)], data: &[u8], chunk: usize) -> Bytes {
    let out = rewrite_response(&ctx(), response(headers, bodies::split(data, chunk)))
        .expect("no Location");
    assert!(out.body().is_rewriting());
    out.into_body().collect().await.expect("body").to_bytes()
}

#[tokio::test]
async fn chunk_boundaries_do_not_change_the_output() {
    let html = [("content-type", "text/html")];
    let whole = rewrite_chunks(&html, PAGE.as_bytes(), PAGE.len()).await;
    let text = std::str::from_utf8(&whole).expect("utf-8");
    // Spot checks that the page really was rewritten.
    for needle in [
        "manifest=\"/api/v1/namespaces/ns/services/svc/proxy/app.manifest\"",
        "href=\"/api/v1/namespaces/ns/services/svc/proxy/x?a=1&amp;b=2#frag\"",
        "HREF=\"/api/v1/namespaces/ns/services/svc/proxy/y\"",
        "src=\"/api/v1/namespaces/ns/services/svc/proxy/frame\"",
        "href=\"/api/v1/namespaces/ns/services/svc/proxy/abs\"",
        "content=\"30; url=/api/v1/namespaces/ns/services/svc/proxy/reload\"",
        "var u = \"<a href='/not-a-link'>\";",
        "<!-- <a href=\"/commented\"> -->",
        "href=\"rel\"",
        "href=\"https://example.com/ext\"",
        "usemap=\"#m\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    for chunk in (1..=17).chain([64, 100, 333]) {
        let got = rewrite_chunks(&html, PAGE.as_bytes(), chunk).await;
        assert_eq!(got, whole, "chunks of {chunk} bytes");
    }
    // Compressed, with compressed-chunk boundaries anywhere: same page after decoding.
    for coding in ["gzip", "deflate"] {
        let encoded = encode(coding, PAGE.as_bytes());
        let headers = [("content-type", "text/html"), ("content-encoding", coding)];
        for chunk in [1, 2, 5, 13, encoded.len()] {
            let got = rewrite_chunks(&headers, &encoded, chunk).await;
            assert_eq!(decode(coding, &got), whole, "{coding} in chunks of {chunk}");
        }
    }
}

#[tokio::test]
async fn first_bytes_leave_before_the_backend_finishes() {
    for coding in ["identity", "gzip"] {
        let (tx, body) = bodies::channel();
        let mut headers = vec![("content-type", "text/html")];
        if coding != "identity" {
            headers.push(("content-encoding", coding));
        }
        let mut out = rewrite_response(&ctx(), response(&headers, body))
            .expect("no Location")
            .into_body();
        let first_part = b"<html><body><a href=\"/first\">first</a>";
        // A gzip stream made of a sync-flushed first part, then the rest later.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let first_wire = if coding == "gzip" {
            gz.write_all(first_part).expect("gzip");
            gz.flush().expect("gzip");
            std::mem::take(gz.get_mut())
        } else {
            first_part.to_vec()
        };
        tx.send(Ok(first_wire.into())).await.expect("send");
        // The backend has not finished (the sender is alive), yet a frame is ready.
        let frame = out
            .frame()
            .now_or_never()
            .expect("output ready before the input ends")
            .expect("a frame")
            .expect("no error");
        let data = frame.into_data().expect("data");
        let text = if coding == "gzip" {
            let mut d = flate2::write::GzDecoder::new(Vec::new());
            d.write_all(&data).expect("decodable prefix");
            d.flush().expect("flush");
            String::from_utf8(d.get_ref().clone()).expect("utf-8")
        } else {
            String::from_utf8(data.to_vec()).expect("utf-8")
        };
        assert!(
            text.contains(&format!("<a href=\"{PREFIX}/first\">")),
            "{coding}: {text}"
        );
        assert!(!out.is_end_stream());
        // Finish the backend body; the rest follows.
        let rest: &[u8] = b"<a href=\"/second\">2</a></body></html>";
        let rest_wire = if coding == "gzip" {
            gz.write_all(rest).expect("gzip");
            gz.finish().expect("gzip")
        } else {
            rest.to_vec()
        };
        tx.send(Ok(rest_wire.into())).await.expect("send");
        drop(tx);
        let tail = out.collect().await.expect("body").to_bytes();
        let mut all = data.to_vec();
        all.extend_from_slice(&tail);
        let all = if coding == "gzip" {
            decode("gzip", &all)
        } else {
            all
        };
        assert_eq!(
            String::from_utf8(all).expect("utf-8"),
            format!(
                "<html><body><a href=\"{PREFIX}/first\">first</a><a href=\"{PREFIX}/second\">2</a></body></html>"
            )
        );
    }
}

/// Resident set size of this process, in bytes (Linux).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS")
        * 1024
}

#[tokio::test]
async fn hundred_mib_page_streams_with_flat_memory() {
    const TOTAL: usize = 100 << 20;
    let unit = bodies::text_unit();
    let body = bodies::generated(TOTAL, 64 << 10, &unit);
    let out = rewrite_response(&ctx(), response(&[("content-type", "text/html")], body))
        .expect("no Location");
    let mut body = out.into_body();
    let before = rss();
    let mut peak = before;
    let (mut frames, mut bytes, mut links) = (0usize, 0usize, 0usize);
    let needle = format!("href=\"{PREFIX}/item/1\"");
    while let Some(frame) = body.frame().await {
        let data = frame.expect("no error").into_data().expect("data");
        bytes += data.len();
        // Count rewritten links in frames that happen to contain whole units.
        links += std::str::from_utf8(&data)
            .map(|t| t.matches(needle.as_str()).count())
            .unwrap_or(0);
        frames += 1;
        if frames % 32 == 0 {
            peak = peak.max(rss());
        }
    }
    let units = TOTAL.div_ceil(unit.len());
    assert!(
        bytes > TOTAL,
        "rewritten output is longer than the input: {bytes}"
    );
    assert!(
        links > units / 2,
        "links were rewritten: {links} of ~{units}"
    );
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 48 << 20,
        "memory grew by {} MiB while streaming a 100 MiB page",
        growth >> 20
    );
}

fn gzip_of(html: &str) -> Vec<u8> {
    encode("gzip", html.as_bytes())
}

async fn rewrite_gzip_wire(wire: Vec<u8>) -> (Vec<u8>, Option<RewriteBodyError>) {
    let out = rewrite_response(
        &ctx(),
        response(
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            bodies::split(&wire, 16),
        ),
    )
    .expect("no Location");
    collect_lossy(out.into_body()).await
}

#[tokio::test]
async fn corrupt_compressed_bodies_end_with_a_body_error() {
    let good = gzip_of("<a href=\"/x\">x</a>");
    // Not gzip at all.
    let (_, err) = rewrite_gzip_wire(b"this is not gzip at all, just text".to_vec()).await;
    assert!(err.expect("error").is_rewrite());
    // Corrupt deflate data after a valid header.
    let mut corrupt = good.clone();
    for b in corrupt.iter_mut().skip(10).take(8) {
        *b = 0xff;
    }
    let (_, err) = rewrite_gzip_wire(corrupt).await;
    assert!(err.expect("error").is_rewrite());
    // Truncated.
    let (_, err) = rewrite_gzip_wire(good[..good.len() - 6].to_vec()).await;
    assert!(err.expect("error").is_rewrite());
    // Bad checksum.
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0x55;
    let (_, err) = rewrite_gzip_wire(bad_crc).await;
    assert!(err.expect("error").is_rewrite());
    // Trailing garbage after the member.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage!");
    let (_, err) = rewrite_gzip_wire(trailing).await;
    assert!(err.expect("error").is_rewrite());
    // Two members (as Go's multistream reader): fine.
    let mut two = good.clone();
    two.extend_from_slice(&gzip_of("<img src=\"/i\">"));
    let (out, err) = rewrite_gzip_wire(two).await;
    assert!(err.is_none());
    assert_eq!(
        decode("gzip", &out),
        format!("<a href=\"{PREFIX}/x\">x</a><img src=\"{PREFIX}/i\">").as_bytes()
    );
    // Corrupt raw deflate.
    let out = rewrite_response(
        &ctx(),
        response(
            &[
                ("content-type", "text/html"),
                ("content-encoding", "deflate"),
            ],
            bodies::chunks([vec![0xffu8; 64]]),
        ),
    )
    .expect("no Location");
    let (_, err) = collect_lossy(out.into_body()).await;
    let err = err.expect("error");
    assert!(err.is_rewrite() && !err.is_backend());
    assert!(
        err.to_string()
            .starts_with("error rewriting the response body")
    );
}

#[tokio::test]
async fn after_an_error_the_body_ends() {
    let out = rewrite_response(
        &ctx(),
        response(
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            bodies::chunks([b"not gzip".to_vec(), gzip_of("<p>")]),
        ),
    )
    .expect("no Location");
    let mut body = out.into_body();
    let mut errors = 0;
    while let Some(frame) = body.frame().await {
        assert!(frame.is_err(), "no data from a body that is not gzip");
        errors += 1;
    }
    assert_eq!(errors, 1);
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn backend_errors_and_trailers_are_relayed() {
    let (tx, body) = bodies::channel();
    let out = rewrite_response(&ctx(), response(&[("content-type", "text/html")], body))
        .expect("no Location");
    tx.send(Ok(Bytes::from_static(b"<a href=\"/x\">")))
        .await
        .expect("send");
    tx.send(Err(std::io::Error::other("backend reset")))
        .await
        .expect("send");
    drop(tx);
    let (data, err) = collect_lossy(out.into_body()).await;
    assert_eq!(data, format!("<a href=\"{PREFIX}/x\">").as_bytes());
    assert!(err.expect("error").is_backend());

    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("value"));
    let body = bodies::chunks(["<a href=\"/x\">"]).with_trailers(trailers.clone());
    let out = rewrite_response(&ctx(), response(&[("content-type", "text/html")], body))
        .expect("no Location");
    let collected = out.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(
        collected.to_bytes(),
        format!("<a href=\"{PREFIX}/x\">").as_bytes()
    );
}

#[tokio::test]
async fn empty_compressed_body_stays_empty() {
    let out = rewrite_response(
        &ctx(),
        response(
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            bodies::chunks([Bytes::new()]),
        ),
    )
    .expect("no Location");
    let (data, err) = collect_lossy(out.into_body()).await;
    assert!(err.is_none());
    assert!(data.is_empty());
}

#[test]
fn rewritten_body_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<RewrittenBody<bodies::Chunks>>();
    check::<RewrittenBody<http_body_util::Full<Bytes>>>();
}
