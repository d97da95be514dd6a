//! Header rules: `Location` errors, `Content-Location`, `Set-Cookie` paths, `Refresh`, the
//! HTML gate (media type, coding, status) and the switches.

use http_body_util::BodyExt;
use kube_bastion::ResourceKind;
use kube_bastion::RewriteOptions;
use kube_bastion::test_util::{RewriteContext, rewrite_response};

use crate::{PREFIX, bodies, ctx, response, rewrite_html};

#[test]
fn unparsable_location_is_upstreams_500() {
    let resp = http::Response::builder()
        .status(302)
        .header("location", "http://[bad/x")
        .body(bodies::chunks(Vec::<Vec<u8>>::new()))
        .expect("response");
    let status = rewrite_response(&ctx(), resp).expect_err("Location does not parse");
    assert_eq!(status.code(), 500);
    assert_eq!(status.reason(), Some("InternalError"));
    assert_eq!(
        status.message(),
        r#"Internal error occurred: error trying to parse Location header: parse "http://[bad/x": missing ']' in host"#
    );
}

#[test]
fn location_on_any_status_and_empty_location_ignored() {
    let resp = response(
        &[("location", "/created/1"), ("content-type", "text/html")],
        bodies::chunks(["<a href=\"/x\">"]),
    );
    let out = rewrite_response(&ctx(), resp).expect("parses");
    assert_eq!(out.headers()["location"], format!("{PREFIX}/created/1"));
    assert!(
        !out.body().is_rewriting(),
        "Location present: HTML left alone"
    );

    let resp = response(
        &[("location", ""), ("content-type", "text/html")],
        bodies::chunks(["<a href=\"/x\">"]),
    );
    let out = rewrite_response(&ctx(), resp).expect("empty Location is ignored");
    assert_eq!(out.headers()["location"], "");
    assert!(out.body().is_rewriting());
}

#[test]
fn location_naming_the_request_host_keeps_its_origin() {
    let resp = response(
        &[("location", "https://apiserver:6443/login")],
        bodies::empty(),
    );
    let out = rewrite_response(&ctx(), resp).expect("parses");
    assert_eq!(
        out.headers()["location"],
        format!("https://apiserver:6443{PREFIX}/login")
    );
}

#[test]
fn content_location_set_cookie_and_refresh() {
    let resp = response(
        &[
            ("content-location", "/doc/1"),
            ("set-cookie", "sid=abc; Path=/; HttpOnly"),
            ("set-cookie", "theme=dark"),
            ("set-cookie", "x=1; path=/app/"),
            ("set-cookie", &format!("y=2; Path={PREFIX}/z")),
            ("refresh", "5; url=/next"),
        ],
        bodies::empty(),
    );
    let out = rewrite_response(&ctx(), resp).expect("parses");
    let h = out.headers();
    assert_eq!(h["content-location"], format!("{PREFIX}/doc/1"));
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 4);
    assert_eq!(
        cookies[0],
        format!("sid=abc; Path={PREFIX}/; HttpOnly").as_str()
    );
    assert_eq!(cookies[1], "theme=dark");
    assert_eq!(cookies[2], format!("x=1; path={PREFIX}/app/").as_str());
    assert_eq!(cookies[3], format!("y=2; Path={PREFIX}/z").as_str());
    assert_eq!(h["refresh"], format!("5; url={PREFIX}/next"));

    // Upstream's behaviour: none of those headers is touched.
    let resp = response(
        &[
            ("content-location", "/doc/1"),
            ("set-cookie", "sid=abc; Path=/"),
            ("refresh", "5; url=/next"),
        ],
        bodies::empty(),
    );
    let out =
        rewrite_response(&ctx().with_options(RewriteOptions::upstream()), resp).expect("parses");
    assert_eq!(out.headers()["content-location"], "/doc/1");
    assert_eq!(out.headers()["set-cookie"], "sid=abc; Path=/");
    assert_eq!(out.headers()["refresh"], "5; url=/next");
}

#[tokio::test]
async fn srcset_and_meta_refresh_are_an_option() {
    let page = r#"<img src="/a.png" srcset="/a.png 1x, /a@2x.png 2x"><meta http-equiv="Refresh" content="0; URL=/home">"#;
    let ours = rewrite_html(&ctx(), page).await;
    assert_eq!(
        ours,
        format!(
            r#"<img src="{PREFIX}/a.png" srcset="{PREFIX}/a.png 1x, {PREFIX}/a@2x.png 2x"><meta http-equiv="Refresh" content="0; URL={PREFIX}/home">"#
        )
    );
    let upstream = rewrite_html(&ctx().with_options(RewriteOptions::upstream()), page).await;
    assert_eq!(
        upstream,
        format!(
            r#"<img src="{PREFIX}/a.png" srcset="/a.png 1x, /a@2x.png 2x"><meta http-equiv="Refresh" content="0; URL=/home">"#
        )
    );
}

#[tokio::test]
async fn html_gate_media_type_and_status() {
    let page = "<a href=\"/x\">x</a>";
    for (content_type, rewritten) in [
        ("text/html", true),
        ("text/html; charset=utf-8", true),
        ("  text/html ;q=1", true),
        ("Text/HTML", false),
        ("application/xhtml+xml", false),
        ("text/plain", false),
        ("text/htmlx", false),
    ] {
        let resp = response(
            &[("content-type", content_type), ("content-length", "18")],
            bodies::chunks([page]),
        );
        let out = rewrite_response(&ctx(), resp).expect("no Location");
        assert_eq!(out.body().is_rewriting(), rewritten, "{content_type}");
        assert_eq!(
            out.headers().contains_key("content-length"),
            !rewritten,
            "{content_type}"
        );
        let body = out.into_body().collect().await.expect("body").to_bytes();
        let expected = if rewritten {
            format!("<a href=\"{PREFIX}/x\">x</a>")
        } else {
            page.to_owned()
        };
        assert_eq!(body, expected.as_bytes(), "{content_type}");
    }
    // No Content-Type, 204 and 304: nothing to rewrite, Content-Length kept.
    let out = rewrite_response(&ctx(), response(&[], bodies::chunks([page]))).expect("ok");
    assert!(!out.body().is_rewriting());
    for status in [204, 304] {
        let resp = http::Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .header("content-length", "18")
            .body(bodies::chunks([page]))
            .expect("response");
        let out = rewrite_response(&ctx(), resp).expect("ok");
        assert!(!out.body().is_rewriting(), "{status}");
        assert_eq!(out.headers()["content-length"], "18");
    }
}

#[test]
fn switches_turn_everything_off() {
    let headers = [("location", "http://[bad"), ("content-type", "text/html")];
    // Master switch off: not even an unparsable Location is looked at.
    let out = rewrite_response(
        &ctx().with_options(RewriteOptions::disabled()),
        response(&headers, bodies::chunks(["<a href=\"/x\">"])),
    )
    .expect("untouched");
    assert_eq!(out.headers()["location"], "http://[bad");
    assert!(!out.body().is_rewriting());

    // Per kind.
    let mut options = RewriteOptions::default();
    options.set_kind(ResourceKind::Node, false);
    for (kind, active) in [
        (ResourceKind::Pod, true),
        (ResourceKind::Service, true),
        (ResourceKind::Node, false),
    ] {
        let ctx = RewriteContext::new(PREFIX, "10.1.2.3:8080", "h")
            .with_kind(kind)
            .with_options(options.clone());
        assert_eq!(ctx.is_active(), active, "{kind:?}");
        let resp = response(&[("location", "/login")], bodies::empty());
        let out = rewrite_response(&ctx, resp).expect("parses");
        let expected = if active {
            format!("{PREFIX}/login")
        } else {
            "/login".to_owned()
        };
        assert_eq!(out.headers()["location"], expected.as_str(), "{kind:?}");
    }

    // HTML off, headers still rewritten.
    let mut options = RewriteOptions::default();
    options.html = false;
    let out = rewrite_response(
        &ctx().with_options(options),
        response(
            &[("content-type", "text/html"), ("content-location", "/a")],
            bodies::chunks(["<a href=\"/x\">"]),
        ),
    )
    .expect("ok");
    assert!(!out.body().is_rewriting());
    assert_eq!(out.headers()["content-location"], format!("{PREFIX}/a"));
}
