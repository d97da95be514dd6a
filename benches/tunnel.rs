//! Upgraded-connection throughput: 32 MiB pushed through an upgraded connection, directly
//! to a loopback backend, through a bare TCP relay (the floor for any user-space proxy: the
//! same two extra socket hops, no HTTP) and through the proxy (pods/proxy, the backend over
//! plain TCP and over TLS), in the same run. The backend answers the upgrade with `101`, reads until the
//! client half-closes, then answers `done` and closes, so each iteration covers the upgrade
//! handshake, the whole transfer and the half-close propagation.
//!
//! Before the timings the bench prints the CPU time the whole process (client, proxy and
//! backend) spends per 32 MiB on each path, from `/proc/self/task/*/schedstat` (Linux only):
//! unlike wall time it hardly depends on what else runs on the machine, and it is what bounds
//! the throughput once the cores are busy.
//!
//! `cargo bench --locked --bench tunnel -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube_bastion::UpgradeOptions;
use kube_bastion::{DestinationPolicy, MemoryCluster, PeerAddr, ProxyConfig, ProxyService};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const TOTAL: usize = 32 << 20;
const CHUNK: usize = 64 << 10;

/// The backend: `101`, then read to end of stream, then `done`.
async fn serve_backend<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let mut head = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: bench\r\n\r\n";
    if io.write_all(answer).await.is_err() {
        return;
    }
    loop {
        match io.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = io.write_all(b"done").await;
    let _ = io.shutdown().await;
}

async fn backend(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_backend(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_backend(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["bench.example".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A bare relay to `to`: every accepted connection is copied both ways to a fresh connection
/// to `to` with tokio's `copy_bidirectional` ([`CHUNK`] buffers). No HTTP, no policy: what
/// the two extra loopback hops and copies of any user-space proxy cost on this machine.
async fn relay(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            client.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut backend = TcpStream::connect(to).await.unwrap();
                backend.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut backend,
                    CHUNK,
                    CHUNK,
                )
                .await;
            });
        }
    });
    addr
}

async fn proxy() -> SocketAddr {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: x\nstatus:\n  podIP: 127.0.0.1\n";
    let cluster = Arc::new(MemoryCluster::from_yaml(yaml).unwrap());
    let config = ProxyConfig::builder(cluster)
        .destination_policy(DestinationPolicy::kube_default().allow_loopback())
        .upgrade_options(UpgradeOptions::default().allow_protocol("bench"))
        .build()
        .unwrap();
    let service = ProxyService::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let mut service = service.clone();
                    async move {
                        Ok::<_, Infallible>(tower::Service::call(&mut service, req).await.unwrap())
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// One iteration: upgrade at `path` on `addr`, push [`TOTAL`] bytes, half-close, wait for
/// `done`.
async fn push(addr: SocketAddr, path: &str, payload: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: bench\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(payload.len());
        tcp.write_all(&payload[..n]).await.unwrap();
        left -= n;
    }
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.ends_with(b"done"));
}

/// Run time of every thread of this process so far, where `/proc` tells it.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Prints the CPU and wall time per iteration of each case, over `rounds` iterations.
fn cpu_report(rt: &Runtime, cases: &[(&str, SocketAddr, &str)], payload: &[u8], rounds: u32) {
    for (name, addr, path) in cases {
        // One iteration first, so connection setup and lazy initialisation do not count.
        rt.block_on(push(*addr, path, payload));
        let (Some(cpu0), wall0) = (cpu_time(), Instant::now()) else {
            return;
        };
        for _ in 0..rounds {
            rt.block_on(push(*addr, path, payload));
        }
        let wall = wall0.elapsed() / rounds;
        let Some(cpu) = cpu_time().map(|t| (t - cpu0) / rounds) else {
            return;
        };
        println!(
            "cpu per 32 MiB: {name:<22} {:>6.1} ms CPU, {:>6.1} ms wall ({:.2} cores busy)",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() / wall.as_secs_f64(),
        );
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt: &Runtime = &rt;
    let (plain, tls, proxy) = rt.block_on(async {
        (
            backend(None).await,
            backend(Some(acceptor())).await,
            proxy().await,
        )
    });
    let relay = rt.block_on(relay(plain));
    let payload = vec![0x42u8; CHUNK];
    let via_plain = format!(
        "/api/v1/namespaces/default/pods/web:{}/proxy/",
        plain.port()
    );
    let via_tls = format!(
        "/api/v1/namespaces/default/pods/https:web:{}/proxy/",
        tls.port()
    );
    // Only under `cargo bench`: `cargo test --benches` runs each case once, as a smoke test.
    if std::env::args().any(|arg| arg == "--bench") {
        cpu_report(
            rt,
            &[
                ("direct", plain, "/"),
                ("bare_relay_baseline", relay, "/"),
                ("proxy_plain_backend", proxy, &via_plain),
                ("proxy_tls_backend", proxy, &via_tls),
            ],
            &payload,
            16,
        );
    }

    let mut group = c.benchmark_group("tunnel_32MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(push(plain, "/", &payload)))
    });
    group.bench_function("bare_relay_baseline", |b| {
        b.iter(|| rt.block_on(push(relay, "/", &payload)))
    });
    group.bench_function("proxy_plain_backend", |b| {
        b.iter(|| rt.block_on(push(proxy, &via_plain, &payload)))
    });
    group.bench_function("proxy_tls_backend", |b| {
        b.iter(|| rt.block_on(push(proxy, &via_tls, &payload)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
