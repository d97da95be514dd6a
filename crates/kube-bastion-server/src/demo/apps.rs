//! The demo's backend apps: echo pods, a web app with a WebSocket, an HTTPS service and a
//! kubelet face.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{ECHO_BODY_LIMIT, NODE};

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn header_map(headers: &HeaderMap) -> Value {
    let mut map = BTreeMap::<String, Value>::new();
    for (name, value) in headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::from(text));
            }
        }
    }
    Value::Object(map.into_iter().collect())
}

#[derive(Clone, Debug)]
struct EchoState {
    pod: &'static str,
    ip: Ipv4Addr,
}

/// The echo app: `/whoami` answers the pod name; anything else a JSON description of the
/// request as received.
pub(super) fn echo_app(pod: &'static str, ip: Ipv4Addr) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|State(s): State<EchoState>| async move { format!("{}\n", s.pod) }),
        )
        .fallback(any(echo))
        .with_state(EchoState { pod, ip })
}

async fn echo(State(state): State<EchoState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, ECHO_BODY_LIMIT).await;
    let (body_text, body_bytes) = match &bytes {
        Ok(b) => (
            String::from_utf8_lossy(b).into_owned(),
            Value::from(b.len()),
        ),
        Err(_) => (
            String::new(),
            Value::from(format!("more than {ECHO_BODY_LIMIT}")),
        ),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "pod": state.pod,
            "podIP": state.ip.to_string(),
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "headers": header_map(&parts.headers),
            "body": body_text,
            "bodyBytes": body_bytes,
        }),
    )
}

const WEB_INDEX: &str = r#"<!doctype html>
<html>
<head>
  <title>kube-bastion demo web app</title>
  <link rel="stylesheet" href="/static/app.css">
  <script src="/static/app.js"></script>
</head>
<body>
  <h1>Hello from web-0</h1>
  <p>Every link on this page is absolute. Through the proxy they still work, because the
     proxy rewrites them under its prefix.</p>
  <img src="/static/logo.svg" alt="logo" width="64">
  <ul>
    <li><a href="/about">About</a></li>
    <li><a href="/login">Log in</a> (redirects, and sets a cookie with Path=/)</li>
    <li><a href="/whoami">Who am I?</a></li>
  </ul>
  <form action="/login" method="post"><button type="submit">Log in with a POST</button></form>
  <p>WebSocket: <code id="ws">not connected</code></p>
</body>
</html>
"#;

const WEB_JS: &str = r#"// Served at /static/app.js. Opens the page's WebSocket relative to the page, so it
// works behind the proxy prefix too.
window.addEventListener("load", () => {
  const base = location.pathname.replace(/\/[^/]*$/, "/");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "ws");
  ws.onopen = () => ws.send("hello from the browser");
  ws.onmessage = (m) => { document.getElementById("ws").textContent = m.data; };
});
"#;

const WEB_CSS: &str = "body { font-family: sans-serif; margin: 2em; }\n";
const WEB_LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" rx="12" fill="#326ce5"/></svg>
"##;

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The web app: absolute links, a redirect, a cookie and a WebSocket.
pub(super) fn web_app() -> Router {
    Router::new()
        .route("/", get(|| async { html(WEB_INDEX.to_owned()) }))
        .route(
            "/about",
            get(|| async {
                html(r#"<!doctype html><html><body><h1>About</h1><p>web-0, a demo app.</p><a href="/">Home</a></body></html>
"#.to_owned())
            }),
        )
        .route("/whoami", get(|| async { "web-0\n" }))
        .route("/static/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], WEB_JS) }))
        .route("/static/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], WEB_CSS) }))
        .route("/static/logo.svg", get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], WEB_LOGO) }))
        .route("/login", get(login).post(login))
        .route("/welcome", get(welcome))
        .route("/ws", get(websocket))
}

async fn login() -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, "/welcome"),
            (header::SET_COOKIE, "session=demo-session; Path=/; HttpOnly"),
        ],
        "",
    )
        .into_response()
}

async fn welcome(headers: HeaderMap) -> Response {
    let cookie = headers
        .get(header::COOKIE)
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .unwrap_or_else(|| "(none)".to_owned());
    let cookie = cookie
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    html(format!(
        "<!doctype html><html><body><h1>Welcome</h1><p>Cookie received: <code>{cookie}</code></p>\
         <a href=\"/\">Home</a></body></html>\n"
    ))
}

/// `/ws`: a WebSocket that greets, then echoes every message. With `?once` in the query
/// it closes right after the greeting (handy for `curl`).
async fn websocket(mut request: Request) -> Response {
    let headers = request.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
    else {
        return (StatusCode::BAD_REQUEST, "this endpoint speaks WebSocket\n").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let query = request.uri().query().unwrap_or("").to_owned();
    let once = query
        .split('&')
        .any(|p| p == "once" || p.starts_with("once="));
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let greeting = format!("connected to web-0 (query: {query:?})");
        if ws.send(Message::text(greeting)).await.is_err() {
            return;
        }
        if once {
            let _ = ws.close(None).await;
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(text) => Message::text(format!("echo: {}", text.as_str())),
                Message::Binary(data) => Message::Binary(data),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(_) => break,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// The HTTPS app.
pub(super) fn secure_app() -> Router {
    Router::new().fallback(any(|request: Request| async move {
        json_response(
            StatusCode::OK,
            &json!({
                "pod": "secure-0",
                "tls": true,
                "method": request.method().as_str(),
                "path": request.uri().path(),
                "query": request.uri().query().unwrap_or(""),
                "httpVersion": format!("{:?}", request.version()),
            }),
        )
    }))
}

/// The kubelet face of `node-1`.
pub(super) fn kubelet_app(pods: Vec<Pod>) -> Router {
    let pod_list = json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods,
    });
    let pod_list = Bytes::from(serde_json::to_vec_pretty(&pod_list).unwrap_or_default());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/pods",
            get(move || {
                let body = pod_list.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/configz",
            get(|| async {
                json_response(
                    StatusCode::OK,
                    &json!({"kubeletconfig": {"kind": "KubeletConfiguration", "nodeName": NODE, "port": 10250}}),
                )
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
}
