//! Front proxies (`--requestheader-*`): who may name the user in `X-Remote-*` headers, that
//! those headers never reach a backend, the identity a Service asks for with
//! `kube-bastion.io/forward-identity`, and `X-Forwarded-Prefix` — on ordinary requests and
//! on upgrades.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::live::ClusterFile;
use crate::support::{Server, TempDir, ca, leaf, serving_cert};
use crate::two_servers::free_port;

/// A backend that answers every request with the headers it received, as JSON
/// (`{"name": ["value", ...]}`); an upgrade request gets the same body with status 400, which
/// the proxy relays (it never relays a non-101 answer below 400 on an upgrade).
fn echo_backend(ip: &str, port: u16) {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let listener = std::net::TcpListener::bind(addr).expect("bind backend");
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().fallback(|request: Request| async move {
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in request.headers() {
                    headers
                        .entry(name.as_str().to_owned())
                        .or_default()
                        .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                }
                let status = if request.headers().contains_key("upgrade") {
                    http::StatusCode::BAD_REQUEST
                } else {
                    http::StatusCode::OK
                };
                let response: Response = (
                    status,
                    [("content-type", "application/json")],
                    serde_json::to_string(&headers).unwrap(),
                )
                    .into_response();
                response
            });
            let _ = axum::serve(listener, app).await;
        });
    });
}

/// The cluster: pod `web-1` at `ip:port`, Services `plain` and `ident` (annotated to receive
/// the caller's identity) in front of it, and RBAC: user `alice` may get and create through
/// every proxy of the namespace, group `clients` may only get.
fn cluster(ip: &str, port: u16) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n\
         status:\n  phase: Running\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n"
    );
    for (name, annotations) in [
        ("plain", ""),
        (
            "ident",
            "\n  annotations:\n    kube-bastion.io/forward-identity: \"true\"",
        ),
    ] {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop{annotations}\n\
             spec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
             namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
             ports:\n- {{name: http, port: {port}}}\nendpoints:\n- addresses: [{ip}]\n  \
             conditions: {{ready: true}}\n  targetRef: {{kind: Pod, namespace: shop, name: web-1}}\n"
        ));
    }
    for (role, verbs, subjects) in [
        (
            "proxy-get",
            "[get]",
            "[{kind: User, name: alice}, {kind: Group, name: clients}]",
        ),
        ("proxy-create", "[create]", "[{kind: User, name: alice}]"),
    ] {
        out.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {role}\n  namespace: shop\n\
             rules:\n- apiGroups: [\"\"]\n  resources: [pods/proxy, services/proxy]\n  verbs: {verbs}\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {role}\n  namespace: shop\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}\n\
             subjects: {subjects}\n"
        ));
    }
    out
}

/// Everything a test needs: the server, the certificates and the backend's port.
struct Setup {
    dir: TempDir,
    _file: ClusterFile,
    server: Server,
    serving_ca: PathBuf,
    port: u16,
}

impl Setup {
    /// A server over TLS with a client CA and a front-proxy CA (allowed names
    /// `front-proxy` and `aggregator`), RBAC, and certificates for `front-proxy` and
    /// `other-proxy` (front-proxy CA) and `carol` in group `clients` (client CA).
    fn new(tag: &str, extra: &[&str]) -> Setup {
        let net = 100 + std::process::id() % 100;
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let ip = format!("127.{net}.83.{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let port = free_port(&ip);
        echo_backend(&ip, port);
        let dir = TempDir::new(tag);
        let (serving, serving_key) = serving_cert(&dir);
        let (client_ca, client_issuer) = ca(&dir, "client");
        let (proxy_ca, proxy_issuer) = ca(&dir, "front-proxy");
        leaf(&dir, &proxy_issuer, "front-proxy", &[]);
        leaf(&dir, &proxy_issuer, "other-proxy", &[]);
        leaf(&dir, &client_issuer, "carol", &["clients"]);
        let file = ClusterFile::new(&format!("{tag}-cluster"), &cluster(&ip, port));
        let mut args = vec![
            "--tls-cert-file",
            serving.to_str().unwrap(),
            "--tls-private-key-file",
            serving_key.to_str().unwrap(),
            "--client-ca-file",
            client_ca.to_str().unwrap(),
            "--requestheader-client-ca-file",
            proxy_ca.to_str().unwrap(),
            "--requestheader-allowed-names",
            "front-proxy,aggregator",
            "--authorization-mode",
            "RBAC",
            "--destination-allow",
            "127.0.0.0/8",
        ];
        args.extend_from_slice(extra);
        let server = file.serve(&args);
        Setup {
            dir,
            _file: file,
            server,
            serving_ca: serving,
            port,
        }
    }

    /// curl `method path` with the client certificate of `identity` (none: no certificate)
    /// and `headers`: (status, body).
    fn curl(
        &self,
        method: &str,
        path: &str,
        identity: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "--http1.1",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--cacert")
        .arg(&self.serving_ca);
        if let Some(name) = identity {
            cmd.arg("--cert")
                .arg(self.dir.join(&format!("{name}.crt")))
                .arg("--key")
                .arg(self.dir.join(&format!("{name}.key")));
        }
        for (name, value) in headers {
            cmd.args(["-H", &format!("{name}: {value}")]);
        }
        let output = cmd
            .arg(format!("{}{path}", self.server.url))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (
            code.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "curl {path}: {out} {}\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    self.server.stderr()
                )
            }),
            body.to_owned(),
        )
    }

    fn pod_path(&self, rest: &str) -> String {
        format!(
            "/api/v1/namespaces/shop/pods/web-1:{}/proxy{rest}",
            self.port
        )
    }
}

/// The headers a backend received, from the echo backend's JSON body.
fn received(body: &str) -> BTreeMap<String, Vec<String>> {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn assert_no_identity(headers: &BTreeMap<String, Vec<String>>) {
    let leaked: Vec<_> = headers
        .keys()
        .filter(|k| k.starts_with("x-remote-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "identity headers reached the backend: {headers:?}"
    );
}

/// The message of a 403 body.
fn forbidden_message(body: &str) -> String {
    let status: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    status["message"].as_str().unwrap_or_default().to_owned()
}

const SPOOF: [(&str, &str); 4] = [
    ("X-Remote-User", "alice"),
    ("X-Remote-Group", "system:masters"),
    ("X-Remote-Uid", "0"),
    ("X-Remote-Extra-Scopes", "all"),
];

/// (a), (d), (f): a front proxy with an allowed name is believed; the backend sees none of
/// its identity headers and gets the proxy prefix.
#[test]
fn a_trusted_front_proxy_names_the_user() {
    let s = Setup::new("rh-trusted", &[]);
    let (status, body) = s.curl(
        "GET",
        &s.pod_path("/hello"),
        Some("front-proxy"),
        &[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "dev"),
            ("X-Remote-Extra-Scopes", "read"),
            ("X-Forwarded-Prefix", "/evil"),
        ],
    );
    assert_eq!(status, 200, "{body}\n{}", s.server.stderr());
    let headers = received(&body);
    assert_no_identity(&headers);
    assert_eq!(
        headers.get("x-forwarded-prefix"),
        Some(&vec![format!(
            "/api/v1/namespaces/shop/pods/web-1:{}/proxy",
            s.port
        )]),
        "{headers:?}"
    );
    // alice may create; the user is whoever the front proxy names.
    let (status, body) = s.curl(
        "POST",
        &s.pod_path("/hello"),
        Some("front-proxy"),
        &[("X-Remote-User", "alice")],
    );
    assert_eq!(status, 200, "{body}");
    assert_no_identity(&received(&body));
    let (status, body) = s.curl(
        "GET",
        &s.pod_path("/hello"),
        Some("front-proxy"),
        &[("X-Remote-User", "bob"), ("X-Remote-Group", "clients")],
    );
    assert_eq!(status, 200, "bob in group clients may get: {body}");
    let (status, body) = s.curl(
        "POST",
        &s.pod_path("/hello"),
        Some("front-proxy"),
        &[("X-Remote-User", "bob"), ("X-Remote-Group", "clients")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        forbidden_message(&body).contains("User \"bob\" cannot create"),
        "{body}"
    );
}

/// (b): a certificate of the front-proxy CA whose name is not allowed is no front proxy,
/// and no user either (the client CA did not sign it).
#[test]
fn a_front_proxy_certificate_with_another_name_is_refused() {
    let s = Setup::new("rh-other-name", &[]);
    let (status, body) = s.curl("GET", &s.pod_path("/hello"), Some("other-proxy"), &SPOOF);
    assert_eq!(status, 401, "{body}");
    // Without identity headers it is no user either: the x509 authenticator checks its own
    // CA.
    let (status, body) = s.curl("GET", &s.pod_path("/hello"), Some("other-proxy"), &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = s.curl("GET", &s.pod_path("/hello"), Some("front-proxy"), &[]);
    assert_eq!(
        status, 401,
        "the front proxy's own certificate is no user: {body}"
    );
}

/// (c), (d): a plain client's identity headers are ignored and never forwarded.
#[test]
fn a_plain_clients_identity_headers_are_ignored() {
    let s = Setup::new("rh-plain", &[]);
    // carol (client CA, group clients) may get, not create: the spoofed alice changes
    // nothing.
    let (status, body) = s.curl("GET", &s.pod_path("/hello"), Some("carol"), &SPOOF);
    assert_eq!(status, 200, "{body}");
    assert_no_identity(&received(&body));
    let (status, body) = s.curl("POST", &s.pod_path("/hello"), Some("carol"), &SPOOF);
    assert_eq!(status, 403, "{body}");
    assert!(
        forbidden_message(&body).contains("User \"carol\" cannot create"),
        "{body}"
    );
    // No certificate at all: the headers are no credentials.
    let (status, body) = s.curl("GET", &s.pod_path("/hello"), None, &SPOOF);
    assert_eq!(status, 401, "{body}");
    // Upgrades lose them too.
    let (status, body) = s.curl(
        "GET",
        &s.pod_path("/ws"),
        Some("carol"),
        &[
            SPOOF[0],
            SPOOF[1],
            SPOOF[2],
            SPOOF[3],
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    let headers = received(&body);
    assert_no_identity(&headers);
    assert_eq!(headers["upgrade"], ["websocket"], "{headers:?}");
}

/// (e), (f): a Service annotated `kube-bastion.io/forward-identity: "true"` is told the
/// authenticated user, never the client's claim; on upgrades too; other Services are told
/// nothing. `--proxy-forwarded-prefix=false` turns the prefix off.
#[test]
fn an_annotated_service_receives_the_authenticated_identity() {
    let s = Setup::new("rh-ident", &[]);
    let ident = "/api/v1/namespaces/shop/services/ident:80/proxy/who";
    let plain = "/api/v1/namespaces/shop/services/plain:80/proxy/who";

    // carol claims to be alice: the Service hears carol.
    let (status, body) = s.curl("GET", ident, Some("carol"), &SPOOF);
    assert_eq!(status, 200, "{body}");
    let headers = received(&body);
    assert_eq!(headers["x-remote-user"], ["carol"], "{headers:?}");
    assert_eq!(
        headers["x-remote-group"],
        ["clients", "system:authenticated"],
        "{headers:?}"
    );
    assert!(!headers.contains_key("x-remote-uid"), "{headers:?}");
    assert!(
        !headers.contains_key("x-remote-extra-scopes"),
        "{headers:?}"
    );
    assert_eq!(
        headers["x-forwarded-prefix"],
        ["/api/v1/namespaces/shop/services/ident:80/proxy"]
    );

    // The front proxy's user, with its groups and extra attributes.
    let front_proxy = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "dev"),
        ("X-Remote-Extra-Example.com%2Fproject", "p1"),
    ];
    let (status, body) = s.curl("GET", ident, Some("front-proxy"), &front_proxy);
    assert_eq!(status, 200, "{body}");
    let headers = received(&body);
    assert_eq!(headers["x-remote-user"], ["alice"], "{headers:?}");
    assert_eq!(headers["x-remote-group"], ["dev", "system:authenticated"]);
    assert_eq!(headers["x-remote-extra-example.com%2fproject"], ["p1"]);

    // On the upgrade path as well.
    let mut upgrade = SPOOF.to_vec();
    upgrade.extend([("Connection", "Upgrade"), ("Upgrade", "websocket")]);
    let (status, body) = s.curl("GET", ident, Some("carol"), &upgrade);
    assert_eq!(status, 400, "{body}");
    let headers = received(&body);
    assert_eq!(headers["x-remote-user"], ["carol"], "{headers:?}");
    assert_eq!(
        headers["x-forwarded-prefix"],
        ["/api/v1/namespaces/shop/services/ident:80/proxy"]
    );

    // A Service without the annotation hears nothing.
    let (status, body) = s.curl("GET", plain, Some("front-proxy"), &front_proxy);
    assert_eq!(status, 200, "{body}");
    assert_no_identity(&received(&body));
}

/// `--proxy-forwarded-prefix=false`: no prefix is added, a client's passes as it is.
#[test]
fn the_forwarded_prefix_can_be_turned_off() {
    let s = Setup::new("rh-no-prefix", &["--proxy-forwarded-prefix=false"]);
    let (status, body) = s.curl("GET", &s.pod_path("/x"), Some("carol"), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        !received(&body).contains_key("x-forwarded-prefix"),
        "{body}"
    );
}

/// Bad files are named in the error.
#[test]
fn a_bad_requestheader_ca_file_is_a_clear_error() {
    let dir = TempDir::new("rh-bad-ca");
    let (cert, key) = serving_cert(&dir);
    let bad = dir.join("bad.crt");
    std::fs::write(&bad, "not a certificate").unwrap();
    let output = std::process::Command::new(crate::support::BIN)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["--listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(&cert)
        .arg("--tls-private-key-file")
        .arg(&key)
        .arg("--requestheader-client-ca-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--requestheader-client-ca-file") && stderr.contains("bad.crt"),
        "{stderr}"
    );
}
