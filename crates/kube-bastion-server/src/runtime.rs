//! How the server's work is spread over threads (`--runtime`, `--worker-threads`).
//!
//! [`Shape::MultiThread`] and [`Shape::CurrentThread`] run everything on one tokio
//! runtime with one listener. [`Shape::PerCore`] is nginx's worker shape: each worker
//! thread runs its own current-thread runtime, accepts on its own listening socket
//! (`SO_REUSEPORT` on the same address, the kernel spreading new connections over them)
//! and proxies through its own backend connection pool, so a request is served from
//! accept to response on one thread without waking another. The main thread keeps a
//! current-thread runtime for the rest: signals, cluster-file reloads, live-cluster
//! watchers, the demo backends, the memory watcher. What the workers share (the store,
//! the balancer, metrics, authentication, authorization, the audit log, the connection
//! cap) is shared through `Arc`s.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use kube_bastion::Shutdown;
use tokio::net::TcpListener;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::cli::RuntimeName;
use crate::connection::ConnectionStats;
use crate::serve::{Limits, Stack};

/// The runtime shape the flags and the machine call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Everything on the main thread (tokio's current-thread runtime).
    CurrentThread,
    /// One multi-thread runtime with this many workers (`None`: one per CPU).
    MultiThread(Option<usize>),
    /// This many worker threads, each with its own runtime, listener and proxy.
    PerCore(NonZeroUsize),
}

impl Shape {
    /// The shape of `--runtime` and `--worker-threads`, for `cpus` usable CPUs (`None`:
    /// unknown).
    pub(crate) fn choose(
        runtime: RuntimeName,
        worker_threads: Option<usize>,
        cpus: Option<NonZeroUsize>,
    ) -> Shape {
        match runtime {
            RuntimeName::MultiThread => match worker_threads {
                Some(0) => Shape::CurrentThread,
                // One usable CPU (affinity or a cgroup quota, as `available_parallelism`
                // reads them): the current-thread runtime, which costs less per request than
                // a one-worker multi-thread runtime handing every connection to another
                // thread.
                None if cpus.is_some_and(|n| n.get() == 1) => Shape::CurrentThread,
                threads => Shape::MultiThread(threads),
            },
            RuntimeName::PerCore => Shape::PerCore(
                worker_threads
                    .and_then(NonZeroUsize::new)
                    .or(cpus)
                    .unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// The runtime of the main thread.
    pub(crate) fn main_runtime(self) -> std::io::Result<Runtime> {
        let mut builder = match self {
            Shape::CurrentThread | Shape::PerCore(_) => Builder::new_current_thread(),
            Shape::MultiThread(threads) => {
                let mut builder = Builder::new_multi_thread();
                if let Some(n) = threads {
                    builder.worker_threads(n);
                }
                builder
            }
        };
        builder.enable_all().build()
    }

    /// How many listeners (and proxy layers) the shape serves with.
    pub(crate) fn listeners(self) -> usize {
        match self {
            Shape::PerCore(n) => n.get(),
            Shape::CurrentThread | Shape::MultiThread(_) => 1,
        }
    }
}

/// Binds `count` listeners to `addr`: one as ever, or several sharing the address with
/// `SO_REUSEPORT` (unix only). Port 0 picks one port for all of them.
pub(crate) async fn bind(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, String> {
    let error = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let first = TcpListener::bind(addr).await.map_err(error)?;
    if count == 1 {
        return Ok(vec![first]);
    }
    // The plain bind above fails as ever when the address is taken, even by a process
    // that set `SO_REUSEPORT` itself (sharing it would split its traffic with ours); it
    // also picked the port for port 0. All the shared sockets must set the option before
    // binding, so it makes way for them.
    let local = first.local_addr().map_err(error)?;
    drop(first);
    (0..count)
        .map(|_| reuse_port_listener(local).map_err(error))
        .collect()
}

/// A listener on `addr` that other sockets with `SO_REUSEPORT` may share.
#[cfg(unix)]
fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does.
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(not(unix))]
fn reuse_port_listener(_: SocketAddr) -> std::io::Result<TcpListener> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "--runtime per-core needs SO_REUSEPORT, which only unix systems have",
    ))
}

/// What every worker serves with, besides its listener and its app.
#[derive(Clone)]
pub(crate) struct Serving {
    /// The TLS acceptor, if the server speaks HTTPS.
    pub(crate) tls: Option<TlsAcceptor>,
    /// What in-flight requests get at shutdown.
    pub(crate) grace: Duration,
    /// The connection limits.
    pub(crate) limits: Limits,
    /// The connection cap, shared by every listener ([`crate::serve::permits`]).
    pub(crate) permits: Arc<Semaphore>,
    /// The connection counters.
    pub(crate) stats: Arc<ConnectionStats>,
    /// The tunnel switch: a worker keeps its runtime, which runs its tunnels, until they
    /// end.
    pub(crate) tunnels: Shutdown,
}

impl Serving {
    /// [`crate::serve::serve`] of `app` on `listener` with these settings.
    async fn serve<S: Stack>(
        self,
        listener: TcpListener,
        app: S,
        shutdown: impl Future<Output = ()>,
    ) {
        crate::serve::serve(
            listener,
            self.tls,
            app,
            shutdown,
            self.grace,
            self.limits,
            self.permits,
            self.stats,
        )
        .await;
    }
}

/// Serves `apps` on `listeners` in `shape`: the one stack on the one listener of a shared
/// runtime (multi-thread or current-thread), or one worker per listener (per-core, see
/// [`serve_per_core`]). Returns once serving has stopped and drained.
pub(crate) async fn serve<S: Stack>(
    shape: Shape,
    mut listeners: Vec<TcpListener>,
    mut apps: Vec<S>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    if let Shape::PerCore(_) = shape {
        return serve_per_core(listeners, apps, serving, shutdown).await;
    }
    let (Some(listener), Some(app)) = (listeners.pop(), apps.pop()) else {
        return Err("no listener to serve on".to_owned());
    };
    serving.serve(listener, app, shutdown).await;
    Ok(())
}

/// Serves each of `apps` on its own worker thread, with its own current-thread runtime, on
/// the listener of the same index, until `shutdown` completes; then every worker stops
/// accepting, drains its connections and tunnels within the grace period, and ends.
/// Returns once all the workers have ended: `Err` if one failed to start or ended early.
pub(crate) async fn serve_per_core<S: Stack>(
    listeners: Vec<TcpListener>,
    apps: Vec<S>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (stop, stopped) = watch::channel(false);
    let mut threads = Vec::new();
    let mut ended = FuturesUnordered::new();
    let mut failure = None;
    for (index, (listener, app)) in listeners.into_iter().zip(apps).enumerate() {
        // The listener moves to the worker's runtime: out of this one's reactor first.
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(err) => {
                failure = Some(format!("worker {index}: {err}"));
                break;
            }
        };
        let (done, end) = oneshot::channel();
        let (serving, stopped) = (serving.clone(), stopped.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let _ = done.send(worker(index, listener, app, serving, stopped));
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                failure = Some(format!("cannot start worker {index}: {err}"));
                break;
            }
        }
        ended.push(async move {
            // A worker that panicked dropped its sender without a word.
            end.await
                .unwrap_or_else(|_| Err(format!("worker {index} panicked")))
        });
    }
    if failure.is_none() {
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            // A worker that ends before the shutdown failed (no connection ends a worker).
            Some(result) = ended.next() => {
                failure = Some(result.err().unwrap_or_else(|| "a worker ended".to_owned()));
            }
        }
    }
    let _ = stop.send(true);
    while let Some(result) = ended.next().await {
        if let (Err(err), None) = (result, &failure) {
            failure = Some(err);
        }
    }
    // Each has sent its result: what is left of them is the thread's own exit.
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    failure.map_or(Ok(()), Err)
}

/// One worker thread: serves `app` on `listener` until `stopped` turns true, then waits
/// for the tunnels its runtime runs (closed at the end of the grace period).
fn worker<S: Stack>(
    index: usize,
    listener: std::net::TcpListener,
    app: S,
    serving: Serving,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    let _span = tracing::info_span!("worker", index).entered();
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("worker {index}: cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        // `into_std` left the listener non-blocking, as `from_std` needs.
        let listener = TcpListener::from_std(listener)
            .map_err(|e| format!("worker {index}: cannot register the listener: {e}"))?;
        let shutdown = async move {
            // The sender gone (the main thread ended) stops the worker too.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let (grace, tunnels) = (serving.grace, serving.tunnels.clone());
        serving.serve(listener, app, shutdown).await;
        // Tunnels are tasks of this runtime: they end with it. The main thread triggered
        // the switch before stopping the workers, so they are closed within the grace
        // period.
        let _ = tokio::time::timeout(grace, tunnels.drained()).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn the_flags_and_the_cpus_choose_the_shape() {
        use RuntimeName::{MultiThread, PerCore};
        let per_core = |n| Shape::PerCore(NonZeroUsize::new(n).unwrap());
        for (runtime, threads, usable, shape) in [
            (MultiThread, None, cpus(4), Shape::MultiThread(None)),
            (MultiThread, None, cpus(1), Shape::CurrentThread),
            (MultiThread, None, None, Shape::MultiThread(None)),
            (MultiThread, Some(0), cpus(4), Shape::CurrentThread),
            (MultiThread, Some(3), cpus(1), Shape::MultiThread(Some(3))),
            (PerCore, None, cpus(4), per_core(4)),
            (PerCore, Some(2), cpus(4), per_core(2)),
            (PerCore, Some(0), cpus(3), per_core(3)),
            (PerCore, None, None, per_core(1)),
        ] {
            assert_eq!(
                Shape::choose(runtime, threads, usable),
                shape,
                "{runtime:?} {threads:?} {usable:?}"
            );
            let listeners = match shape {
                Shape::PerCore(n) => n.get(),
                _ => 1,
            };
            assert_eq!(shape.listeners(), listeners);
        }
    }

    /// Port 0: every listener gets the one port the first picked, and each accepts.
    #[cfg(unix)]
    #[tokio::test]
    async fn listeners_share_one_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).await.unwrap();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(addrs.len(), 3);
        assert_ne!(addrs[0].port(), 0);
        assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
        // Every connection lands on one of them.
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(tokio::net::TcpStream::connect(addrs[0]).await.unwrap());
        }
        let mut accepted = 0;
        for listener in &listeners {
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
            {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
    }
}
