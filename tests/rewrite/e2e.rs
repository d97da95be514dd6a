//! End to end through the real proxy on 127.0.0.1: a small web app behind `services/proxy`
//! whose absolute links, redirect and cookie all stay under the proxy prefix, and whose
//! rewritten links work when followed through the proxy.

use std::io::{Read, Write};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::html_events::triples;
use crate::support::net::{TestBody, backend_with, client, empty, full, get, send, serve_proxy};
use crate::support::objects::{config, pod_yaml, service_yaml};
use crate::support::status::status_of;

const PREFIX: &str = "/api/v1/namespaces/default/services/web:http/proxy";

fn page(backend: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html><head><title>app</title>
<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js"></script>
</head><body>
<a href="/about">About</a> <a href="http://{backend}/abs?x=1&amp;y=2">abs</a>
<a href="settings">relative</a> <a href="https://example.com/">external</a>
<img src="/static/logo.png" srcset="/static/logo.png 1x, /static/logo@2x.png 2x">
<form action="/login" method="post"><input name="user"><button formaction="/login?remember=1">go</button></form>
</body></html>
"#
    )
}

/// The app: `/` (HTML with a session cookie), `/gz` (the same page gzip-encoded),
/// `/private` (302 to `/login`), `POST /login` (echoes the cookie it got), and any other
/// path answers `path=<path>`.
async fn app(req: Request<Incoming>, backend: String) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let cookie = req
        .headers()
        .get("cookie")
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned());
    let html = |body: Vec<u8>| {
        Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("content-length", body.len())
    };
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/") => html(page(&backend).into_bytes())
            .header("set-cookie", "session=s3cr3t; Path=/; HttpOnly")
            .body(full(page(&backend)))
            .expect("response"),
        ("GET", "/gz") => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(page(&backend).as_bytes()).expect("gzip");
            let body = gz.finish().expect("gzip");
            html(body.clone())
                .header("content-encoding", "gzip")
                .body(full(body))
                .expect("response")
        }
        // A gzip label on a body that is not gzip.
        ("GET", "/not-gzip") => html(b"this is not gzip at all".to_vec())
            .header("content-encoding", "gzip")
            .body(full("this is not gzip at all"))
            .expect("response"),
        // Valid gzip for the first 64 KiB of a page, then a corrupt checksum.
        ("GET", "/breaks-late") => {
            let page = "<p><a href=\"/x\">x</a></p>".repeat(4096);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
            gz.write_all(page.as_bytes()).expect("gzip");
            let mut body = gz.finish().expect("gzip");
            let n = body.len();
            body[n - 8] ^= 0x55;
            html(body.clone())
                .header("content-encoding", "gzip")
                .body(full(body))
                .expect("response")
        }
        ("GET", "/private") => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/login")
            .body(empty())
            .expect("response"),
        ("GET" | "POST", "/login") => Response::builder()
            .header("content-type", "text/plain")
            .body(full(format!(
                "login method={} query={} cookie={}",
                req.method(),
                query.unwrap_or_default(),
                cookie.unwrap_or_default()
            )))
            .expect("response"),
        _ => Response::builder()
            .header("content-type", "text/plain")
            .body(full(format!("path={path}")))
            .expect("response"),
    }
}

async fn start() -> std::net::SocketAddr {
    let backend_addr = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let for_handler = backend_addr.clone();
    let backend = backend_with(None, move |req| {
        let me = for_handler.get().cloned().unwrap_or_default();
        app(req, me)
    })
    .await;
    let _ = backend_addr.set(backend.to_string());
    let docs = [
        pod_yaml("default", "web-0", "127.0.0.1"),
        service_yaml(
            "default",
            "web",
            80,
            None,
            &[("web-0", "127.0.0.1", backend.port())],
        ),
    ];
    serve_proxy(config(&docs).build().expect("config")).await
}

/// The URL attributes of a page that point at the app (not `https://example.com`).
fn app_links(html: &str) -> Vec<(String, String, String)> {
    triples(html)
        .into_iter()
        .filter(|(_, attr, _)| {
            matches!(
                attr.as_str(),
                "href" | "src" | "action" | "formaction" | "srcset"
            )
        })
        .filter(|(_, _, value)| !value.starts_with("https://example.com") && value != "settings")
        .collect()
}

#[tokio::test]
async fn a_web_app_works_through_the_proxy() {
    let proxy = start().await;

    let (status, headers, body) = get(proxy, &format!("{PREFIX}/")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers.get("content-length").is_none(),
        "rewritten body is chunked"
    );
    assert_eq!(
        headers["set-cookie"],
        format!("session=s3cr3t; Path={PREFIX}/; HttpOnly").as_str()
    );
    let html = String::from_utf8(body.to_vec()).expect("utf-8");

    let links = app_links(&html);
    assert_eq!(links.len(), 8, "{links:?}");
    for (tag, attr, value) in &links {
        if attr == "srcset" {
            assert_eq!(
                value,
                &format!("{PREFIX}/static/logo.png 1x, {PREFIX}/static/logo@2x.png 2x")
            );
            for candidate in value.split(", ") {
                let url = candidate.split(' ').next().unwrap_or_default();
                let (status, _, body) = get(proxy, url).await;
                assert_eq!(status, StatusCode::OK, "{url}");
                assert_eq!(body, format!("path={}", &url[PREFIX.len()..]).as_bytes());
            }
            continue;
        }
        assert!(
            value.starts_with(&format!("{PREFIX}/")),
            "<{tag} {attr}={value}> escapes the proxy"
        );
        // Following it through the proxy reaches the app at the original path.
        let uri = format!("http://{proxy}{value}");
        let method = if attr == "action" || attr == "formaction" {
            "POST"
        } else {
            "GET"
        };
        let (status, _, body) = send(
            Request::builder()
                .method(method)
                .uri(&uri)
                .header("cookie", "session=s3cr3t")
                .body(empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let body = String::from_utf8_lossy(&body);
        let backend_path = value[PREFIX.len()..].split('?').next().unwrap_or_default();
        if backend_path == "/login" {
            assert!(body.starts_with("login method=POST"), "{body}");
            assert!(body.ends_with("cookie=session=s3cr3t"), "{body}");
        } else {
            assert_eq!(body, format!("path={backend_path}"), "{uri}");
        }
    }
    assert!(
        html.contains(&format!("href=\"{PREFIX}/abs?x=1&amp;y=2\"")),
        "{html}"
    );
    // Relative and foreign links are left alone.
    assert!(html.contains("<a href=\"settings\">"));
    assert!(html.contains("<a href=\"https://example.com/\">"));

    // The redirect to /login stays under the prefix, and following it works.
    let (status, headers, _) = get(proxy, &format!("{PREFIX}/private")).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers["location"].to_str().expect("ascii").to_owned();
    assert_eq!(location, format!("{PREFIX}/login"));
    let (status, _, body) = get(proxy, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(b"login method=GET"));
}

#[tokio::test]
async fn a_gzip_page_is_rewritten_and_stays_gzip() {
    let proxy = start().await;
    let (status, headers, body) = send(
        Request::get(format!("http://{proxy}{PREFIX}/gz"))
            .header("accept-encoding", "gzip")
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(headers.get("content-length").is_none());
    let mut html = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut html)
        .expect("valid gzip");
    let links = app_links(&html);
    assert_eq!(links.len(), 8);
    assert!(
        links.iter().all(|(_, _, v)| v.starts_with(PREFIX)),
        "{links:?}"
    );
}

#[tokio::test]
async fn the_bare_proxy_redirect_is_not_rewritten_again() {
    // upgradeaware_handler.json "empty location path, GET/HEAD": 301 to the path plus `/`,
    // produced by the proxy itself (never prefixed twice).
    let proxy = start().await;
    for method in ["GET", "HEAD"] {
        let (status, headers, _) = send(
            Request::builder()
                .method(method)
                .uri(format!("http://{proxy}{PREFIX}"))
                .body(empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{method}");
        assert_eq!(
            headers["location"],
            format!("{PREFIX}/").as_str(),
            "{method}"
        );
    }
}

#[tokio::test]
async fn redirects_on_upgrade_requests_are_never_relayed() {
    // upgradeaware_handler.json "upgrade, backend answers 300/302/307": the client gets an
    // error Status, never the redirect (not relayed, not followed, no Location).
    let rows = crate::vectors::rows("upgradeaware_handler.json");
    let mut seen = 0;
    for row in rows {
        let Some(backend_status) = row["input"]["backend_status"].as_u64() else {
            continue;
        };
        seen += 1;
        let location = row["input"]["backend_Location"]
            .as_str()
            .expect("location")
            .to_owned();
        let backend = backend_with(None, move |_req: Request<Incoming>| {
            let location = location.clone();
            async move {
                Response::builder()
                    .status(backend_status as u16)
                    .header("location", location)
                    .body(empty())
                    .expect("response")
            }
        })
        .await;
        let docs = [service_yaml(
            "default",
            "web",
            80,
            None,
            &[("web-0", "127.0.0.1", backend.port())],
        )];
        let proxy = serve_proxy(config(&docs).build().expect("config")).await;
        let (status, headers, body) = send(
            Request::get(format!("http://{proxy}{PREFIX}/ws"))
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(empty())
                .expect("request"),
        )
        .await;
        assert!(!status.is_redirection(), "{backend_status}: {status}");
        assert!(headers.get("location").is_none(), "{backend_status}");
        let (code, _, message) = status_of(&body);
        assert_eq!(u64::from(status.as_u16()), code);
        assert!(
            !message.contains("example.com"),
            "{backend_status}: the redirect target leaked: {message}"
        );
    }
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn rewriting_can_be_switched_off_per_kind() {
    let backend = backend_with(None, |req: Request<Incoming>| async move {
        let _ = req;
        Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/login")
            .body(full(Bytes::new()))
            .expect("response")
    })
    .await;
    let docs = [
        pod_yaml("default", "web-0", "127.0.0.1"),
        service_yaml(
            "default",
            "web",
            80,
            None,
            &[("web-0", "127.0.0.1", backend.port())],
        ),
    ];
    let mut options = kube_bastion::RewriteOptions::default();
    options.set_kind(kube_bastion::ResourceKind::Service, false);
    let proxy = serve_proxy(
        config(&docs)
            .rewrite_options(options)
            .build()
            .expect("config"),
    )
    .await;
    let (status, headers, _) = get(proxy, &format!("{PREFIX}/private")).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "/login");

    let proxy = serve_proxy(config(&docs).rewrite(false).build().expect("config")).await;
    let (_, headers, _) = get(proxy, &format!("{PREFIX}/private")).await;
    assert_eq!(headers["location"], "/login");

    let proxy = serve_proxy(config(&docs).build().expect("config")).await;
    let (_, headers, _) = get(proxy, &format!("{PREFIX}/private")).await;
    assert_eq!(headers["location"], format!("{PREFIX}/login").as_str());
}

/// A gzip-labelled body that is not gzip cannot be rewritten from its first byte: the
/// client gets a complete 500 Status (kube-apiserver answers rewrite errors with 500), not
/// a closed connection.
#[tokio::test]
async fn a_body_that_is_not_gzip_is_a_complete_500() {
    let proxy = start().await;
    let (status, headers, body) = get(proxy, &format!("{PREFIX}/not-gzip")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("content-encoding").is_none());
    let (code, reason, message) = status_of(&body);
    assert_eq!(code, 500);
    assert_eq!(reason, None);
    assert!(
        message.starts_with("error rewriting the response body: "),
        "{message}"
    );
    // The proxy is fine afterwards.
    assert_eq!(get(proxy, &format!("{PREFIX}/")).await.0, StatusCode::OK);
}

/// A body that breaks after rewritten bytes went out keeps its 200 head and ends with an
/// error: the client sees an incomplete body, never a truncated body passed off as whole.
#[tokio::test]
async fn a_body_that_breaks_after_the_first_bytes_ends_in_an_error() {
    use http_body_util::BodyExt as _;
    let proxy = start().await;
    let res = client()
        .request(
            Request::get(format!("http://{proxy}{PREFIX}/breaks-late"))
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("a response head");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    let mut received = 0;
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(received > 0, "data came before the error");
    assert!(
        error.is_some(),
        "the body ended cleanly after {received} bytes"
    );
}
