//! Two servers, the real binary twice: A serves a cluster file (and the watch API), B runs
//! with `--kubeconfig` pointing at A and proxies to the backends listed in A's file. Edits
//! of A's file reach B's routing; B is not ready until A has answered its lists; B keeps
//! serving its last view while A is down, relists when A is back and follows later edits.
//!
//! The delays printed are measured from the file edit (A's poll interval, 20 ms, included)
//! or from A's start; the assertions allow far more than the 2 s they are expected to be,
//! since these machines are shared.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get as route_get;

use crate::live::ClusterFile;
use crate::support::{Server, TempDir, get};

/// How long any one change may take to reach B before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// A loopback backend at `ip:port` answering every path with `name`.
pub(crate) async fn backend(
    ip: &str,
    port: u16,
    name: &'static str,
) -> tokio::task::JoinHandle<()> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind backend");
    let app = Router::new().fallback(route_get(move || async move { name }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// A free loopback port (bound, then released).
pub(crate) fn free_port(ip: &str) -> u16 {
    StdListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cluster file: pods `pods` (name, IP), a Service `web` (port `service_port`, named
/// `http`, target port `port`) and one EndpointSlice listing `endpoints` (pod names).
fn cluster(pods: &[(&str, &str)], endpoints: &[&str], service_port: u16, port: u16) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
    for (name, ip) in pods {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n\
             spec:\n  containers:\n  - name: app\n    ports:\n    - {{name: http, containerPort: {port}}}\n\
             status:\n  phase: Running\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n"
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
         spec:\n  ports:\n  - {{name: http, port: {service_port}, targetPort: {port}}}\n"
    ));
    let endpoints: String = endpoints
        .iter()
        .map(|name| {
            let ip = pods.iter().find(|(n, _)| n == name).unwrap().1;
            format!(
                "\n- addresses: [{ip}]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, namespace: shop, name: {name}}}"
            )
        })
        .collect();
    out.push_str(&format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
         namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\n\
         ports:\n- {{name: http, port: {port}}}\nendpoints:{}\n",
        if endpoints.is_empty() {
            " []".to_owned()
        } else {
            endpoints
        }
    ));
    out
}

/// A kubeconfig pointing at `http://127.0.0.1:<port>` without credentials.
fn kubeconfig(dir: &TempDir, port: u16) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: a\n  context: {{cluster: a, user: a}}\ncurrent-context: a\n\
             users:\n- name: a\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Polls `check` every 10 ms until it holds; returns how long that took since `start`;
/// fails after [`LIMIT`].
async fn delay_until<F, Fut>(what: &str, b: &Server, start: Instant, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            let delay = start.elapsed();
            println!("two servers: {what}: {delay:?}");
            return delay;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{what}: not within {LIMIT:?}\nB:\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn body_of(server: &Server, path: &str) -> (u16, String) {
    let reply = get(server, path).await;
    (reply.status, reply.body)
}

/// Reads one counter of B's `/metrics`.
async fn metric(server: &Server, line_prefix: &str) -> u64 {
    get(server, "/metrics")
        .await
        .body
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_follows_another_through_its_watch_api() {
    let net = 100 + std::process::id() % 100;
    let ips = [
        format!("127.{net}.77.1"),
        format!("127.{net}.77.2"),
        format!("127.{net}.77.3"),
    ];
    let port = free_port(&ips[0]);
    let _backends = [
        backend(&ips[0], port, "web-1").await,
        backend(&ips[1], port, "web-2").await,
        backend(&ips[2], port, "web-3").await,
    ];
    let pod1 = ("web-1", ips[0].as_str());
    let pod2 = ("web-2", ips[1].as_str());
    let pod3 = ("web-3", ips[2].as_str());

    let a_port = free_port("127.0.0.1");
    let a_listen = format!("127.0.0.1:{a_port}");
    let file = ClusterFile::new("two-servers", &cluster(&[pod1], &["web-1"], 80, port));
    let dir = TempDir::new("two-servers-kubeconfig");
    let config = kubeconfig(&dir, a_port);

    // B first: A is not there, so B is not ready and refuses proxy requests with 503.
    let b = Server::start(&[
        "--kubeconfig",
        &config,
        "--destination-allow",
        "127.0.0.0/8",
    ]);
    let pod_path = |name: &str| format!("/api/v1/namespaces/shop/pods/{name}:{port}/proxy/");
    let service_path =
        |service_port: u16| format!("/api/v1/namespaces/shop/services/web:{service_port}/proxy/");
    assert_eq!(get(&b, "/readyz").await.status, 500);
    let refused = get(&b, &pod_path("web-1")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("not synced"), "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));

    // A comes up: B lists, becomes ready and proxies.
    let cluster_args = ["--cluster", file.arg(), "--cluster-poll-interval-ms", "20"];
    let started = Instant::now();
    let a = Server::start_with_listen(&cluster_args, &a_listen);
    delay_until("B ready after A started", &b, started, || async {
        get(&b, "/readyz").await.status == 200
    })
    .await;
    assert_eq!(
        body_of(&b, &pod_path("web-1")).await,
        (200, "web-1".to_owned())
    );
    assert_eq!(
        body_of(&b, &service_path(80)).await,
        (200, "web-1".to_owned())
    );
    let listed = get(&b, "/api/v1/namespaces/shop/pods").await.json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "B's API lists A's pods"
    );

    // `resolve` answers from the live view too.
    let resolved = std::process::Command::new(crate::support::BIN)
        .args([
            "resolve",
            "--kubeconfig",
            &config,
            "--destination-allow",
            "127.0.0.0/8",
        ])
        .arg(service_path(80))
        .output()
        .expect("run resolve");
    let stdout = String::from_utf8_lossy(&resolved.stdout);
    assert!(
        resolved.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let decision: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        decision["target"]["candidates"][0]["url"],
        format!("http://{}:{port}/", ips[0]),
        "{stdout}"
    );

    // A new pod (and endpoint) becomes reachable through B.
    let edited = Instant::now();
    file.edit(&a, &cluster(&[pod1, pod2], &["web-1", "web-2"], 80, port))
        .await;
    delay_until("new pod reachable through B", &b, edited, || async {
        body_of(&b, &pod_path("web-2")).await == (200, "web-2".to_owned())
    })
    .await;

    // A removed endpoint stops receiving traffic: 20 Service requests in a row all reach
    // the remaining one.
    let edited = Instant::now();
    file.edit(&a, &cluster(&[pod1, pod2], &["web-2"], 80, port))
        .await;
    delay_until(
        "removed endpoint gets no more traffic",
        &b,
        edited,
        || async {
            for _ in 0..20 {
                if body_of(&b, &service_path(80)).await != (200, "web-2".to_owned()) {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // A Service port change is followed.
    let edited = Instant::now();
    file.edit(&a, &cluster(&[pod1, pod2], &["web-2"], 81, port))
        .await;
    delay_until("service port change followed", &b, edited, || async {
        body_of(&b, &service_path(81)).await == (200, "web-2".to_owned())
    })
    .await;
    assert_ne!(
        get(&b, &service_path(80)).await.status,
        200,
        "the old port is gone"
    );

    // A goes away: B keeps serving its last view and stays ready.
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        body_of(&b, &service_path(81)).await,
        (200, "web-2".to_owned())
    );
    assert_eq!(get(&b, "/readyz").await.status, 200);

    // Meanwhile A's file changes; A comes back (new resource versions): B relists and sees
    // the change.
    std::fs::write(
        &file.path,
        cluster(&[pod2, pod3], &["web-2", "web-3"], 81, port),
    )
    .unwrap();
    let relists = |kind: &'static str| {
        let b = &b;
        async move {
            metric(
                b,
                &format!("kube_bastion_cluster_relists_total{{kind=\"{kind}\"}} "),
            )
            .await
        }
    };
    let kinds = ["Pod", "Service", "EndpointSlice", "Node", "Namespace"];
    let mut before = Vec::new();
    for kind in kinds {
        before.push(relists(kind).await);
    }
    let restarted = Instant::now();
    let a = Server::start_with_listen(&cluster_args, &a_listen);
    delay_until(
        "B relisted every kind after A restarted",
        &b,
        restarted,
        || async {
            for (kind, before) in kinds.iter().zip(&before) {
                if relists(kind).await <= *before {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(
        body_of(&b, &pod_path("web-3")).await,
        (200, "web-3".to_owned())
    );
    assert_eq!(
        get(&b, &pod_path("web-1")).await.status,
        404,
        "deleted while B was not watching"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = body_of(&b, &service_path(81)).await;
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    assert!(
        seen.contains("web-3"),
        "the relisted slice routes to the new pod: {seen:?}"
    );

    // And later edits are followed.
    let edited = Instant::now();
    file.edit(&a, &cluster(&[pod3], &["web-3"], 81, port)).await;
    delay_until("edit after A's restart followed", &b, edited, || async {
        get(&b, &pod_path("web-2")).await.status == 404
    })
    .await;
    assert_eq!(
        body_of(&b, &service_path(81)).await,
        (200, "web-3".to_owned())
    );
    let metrics = get(&b, "/metrics").await.body;
    assert!(
        metrics.contains("kube_bastion_cluster_synced{kind=\"EndpointSlice\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_bastion_cluster_events_total{kind=\"Pod\",type=\"apply\"}"),
        "{metrics}"
    );
}

/// `--watch-namespace`: B watches only the namespaces it is given (its Namespace watcher by
/// `metadata.name`), and follows them; pods elsewhere are not found through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_restricted_server_sees_only_its_namespaces() {
    let net = 100 + std::process::id() % 100;
    let ip = format!("127.{net}.78.1");
    let port = free_port(&ip);
    let _backend = backend(&ip, port, "web-1").await;
    let pod = |ns: &str, name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             status:\n  phase: Running\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n"
        )
    };
    let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n\
                      ---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n";
    let file = ClusterFile::new(
        "two-servers-ns",
        &format!(
            "{namespaces}{}{}",
            pod("shop", "web-1"),
            pod("other", "web-1")
        ),
    );
    let a = file.serve(&[]);
    let a_port: u16 = a.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = TempDir::new("two-servers-ns-kubeconfig");
    let config = kubeconfig(&dir, a_port);
    let b = Server::start(&[
        "--kubeconfig",
        &config,
        "--watch-namespace",
        "shop",
        "--destination-allow",
        "127.0.0.0/8",
    ]);
    delay_until("B ready", &b, Instant::now(), || async {
        get(&b, "/readyz").await.status == 200
    })
    .await;
    let path = |ns: &str, name: &str| format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/");
    assert_eq!(
        body_of(&b, &path("shop", "web-1")).await,
        (200, "web-1".to_owned())
    );
    assert_eq!(get(&b, &path("other", "web-1")).await.status, 404);
    let names: Vec<String> = get(&b, "/api/v1/namespaces").await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["shop"], "only the watched namespace");

    let edited = Instant::now();
    file.edit(
        &a,
        &format!(
            "{namespaces}{}{}{}",
            pod("shop", "web-1"),
            pod("shop", "web-2"),
            pod("other", "web-3")
        ),
    )
    .await;
    delay_until("a new pod in the watched namespace", &b, edited, || async {
        get(&b, &path("shop", "web-2")).await.status == 200
    })
    .await;
    assert_eq!(get(&b, &path("other", "web-3")).await.status, 404);
}
