//! Helpers: start the real `kube-bastion` binary, talk HTTP to it, run real clients.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_kube-bastion");

/// A directory of this package's test fixtures.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/server/fixtures")
        .join(name)
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kube-bastion-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback /24 no other test of this run uses, for the demo backends.
pub(crate) fn demo_network() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("127.{}.{}.0/24", 100 + std::process::id() % 100, n)
}

/// A running `kube-bastion` process, killed on drop.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    pub(crate) url: String,
    /// Everything printed on stdout up to and including the startup banner.
    pub(crate) banner: String,
    stderr: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the binary with `args` plus `--listen 127.0.0.1:0`, and waits until it prints
    /// its address.
    pub(crate) fn start(args: &[&str]) -> Server {
        Self::start_with_listen(args, "127.0.0.1:0")
    }

    /// Starts the demo on its own loopback network.
    pub(crate) fn demo(extra: &[&str]) -> Server {
        let network = demo_network();
        let mut args = vec!["--demo-network", network.as_str()];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    pub(crate) fn start_with_listen(args: &[&str], listen: &str) -> Server {
        let mut child = Command::new(BIN)
            // Outside a pod even when the tests run in one: no in-cluster configuration.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kube-bastion");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let err_buf = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err_buf
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let mut banner = String::new();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                banner.push_str(&line);
                banner.push('\n');
                // The banner ends with a blank line (demo), the cluster-files line or the
                // live-cluster line.
                if !sent
                    && banner.contains("serving on ")
                    && (line.starts_with("cluster files:")
                        || line.starts_with("cluster: live")
                        || line.contains("in a browser"))
                {
                    let _ = tx.send(banner.clone());
                    sent = true;
                }
            }
            if !sent {
                let _ = tx.send(banner);
            }
        });
        let banner = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(url) = banner
            .lines()
            .find_map(|l| l.strip_prefix("kube-bastion serving on "))
            .map(str::to_owned)
        else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("server did not start; stderr:\n{}", stderr.lock().unwrap());
        };
        Server {
            child,
            url,
            banner,
            stderr,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit (up to `limit`), returning its exit status.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal with `kill`.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP request (plain HTTP only).
pub(crate) async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.expect("request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `path` on `server`.
pub(crate) async fn get(server: &Server, path: &str) -> Reply {
    request("GET", &format!("{}{path}", server.url), &[], "").await
}

/// A `kubectl` command isolated from the machine's kubeconfig and cache.
pub(crate) fn kubectl(server_url: &str, cache: &Path) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", cache.join("no-kubeconfig"))
        .env("HOME", cache)
        .args(["--server", server_url, "--cache-dir"])
        .arg(cache.join("cache"))
        .stdin(Stdio::null());
    cmd
}

/// Runs `script` with `python3 -c` and `args`, returning its stdout; panics with its stderr
/// when it fails (the Python `kubernetes` client comes from `scripts/test-deps`).
pub(crate) fn python(script: &str, args: &[&str]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(script).args(args))
}

/// Runs a command, returning stdout on success and panicking with stderr otherwise.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let output: Output = cmd.output().expect("run command");
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit` (a liveness
/// bound, not a speed assertion).
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A self-signed serving certificate for 127.0.0.1 and localhost: (cert path, key path).
pub(crate) fn serving_cert(dir: &TempDir) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// A CA: its PEM file in `dir` and its issuer.
pub(crate) fn ca(dir: &TempDir, tag: &str) -> (PathBuf, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{tag} CA"));
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(&format!("{tag}-ca.crt"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, rcgen::Issuer::new(params, key))
}

/// A client certificate for `cn` in `orgs` signed by `issuer`: (cert path, key path).
pub(crate) fn leaf(
    dir: &TempDir,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
    orgs: &[&str],
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    let paths = (
        dir.join(&format!("{cn}.crt")),
        dir.join(&format!("{cn}.key")),
    );
    std::fs::write(&paths.0, cert.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    paths
}

/// A WebSocket client connection.
pub(crate) type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket through `server` to the demo's `web` Service (`/ws`), checks the 101,
/// and returns the connection with the greeting the backend sends first.
pub(crate) async fn web_socket(server: &Server) -> (WebSocket, String) {
    use futures_util::StreamExt as _;
    let url = format!(
        "{}/api/v1/namespaces/demo/services/web:http/proxy/ws",
        server.url.replacen("http://", "ws://", 1)
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    let greeting = ws.next().await.unwrap().unwrap().into_text().unwrap();
    (ws, greeting.to_string())
}
