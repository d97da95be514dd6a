//! `kube-bastion`: a small custom apiserver that embeds the kube-bastion proxy exactly as a
//! user would (an axum router with the proxy layer in front of it), with an embedded demo
//! cluster, read-only discovery/get/list, static token authentication, Prometheus metrics,
//! hot-reloaded cluster files and graceful shutdown.
//!
//! Run `kube-bastion --help` for the flags.

mod api;
mod audit;
mod auth;
mod authz;
mod cli;
mod connection;
mod demo;
mod item;
mod limit;
mod live;
mod memory;
mod metrics;
mod proxy;
mod reload;
mod resolve_cmd;
mod runtime;
mod serve;
mod store;
mod watch_hub;
mod webhook;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube_bastion::Shutdown;
use tracing_subscriber::EnvFilter;

use crate::cli::{Command, LogFormat, ServeArgs};
use crate::metrics::Metrics;
use crate::runtime::Shape;
use crate::store::Store;

fn main() -> ExitCode {
    let cli = cli::parse();
    match cli.command {
        Some(Command::Resolve(args)) => match resolve_cmd::run(&args) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(err) => fail(&err),
        },
        None => {
            init_tracing(cli.serve.log_format);
            let shape = Shape::choose(
                cli.serve.runtime,
                cli.serve.worker_threads,
                std::thread::available_parallelism().ok(),
            );
            let runtime = match shape.main_runtime() {
                Ok(runtime) => runtime,
                Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
            };
            match runtime.block_on(run(cli.serve, shape)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
    }
}

/// Prints one error line and returns the failure exit code.
fn fail(message: &str) -> ExitCode {
    let line = message.lines().collect::<Vec<_>>().join("; ");
    eprintln!("kube-bastion: error: {line}");
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: ServeArgs, shape: Shape) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let authentication = auth::layer(&args, &metrics).await?;
    let authorization = authz::from_args(&args, &metrics).await?;
    let audit = audit::start(&args.audit, metrics.audit_dropped())?;
    let tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(serve::load_tls(
            cert,
            key,
            args.client_ca_file.as_deref(),
            args.requestheader_client_ca_file.as_deref(),
        )?),
        _ => None,
    };
    let kube_config = live::client_config(&args.source, !args.clusters.is_empty()).await?;
    let demo_mode = args.clusters.is_empty() && kube_config.is_none();
    if demo_mode && authorization.rbac.is_some() {
        return Err(
            "--authorization-mode RBAC reads Roles and bindings from --cluster files \
                    or from a live cluster (--kubeconfig, or the in-cluster configuration); \
                    the demo cluster has none"
                .to_owned(),
        );
    }
    let demo = demo_mode.then(|| args.demo.addresses());
    if demo_mode && !args.listen.ip().is_loopback() && !args.demo_allow_remote {
        return Err(format!(
            "--listen {}: the demo cluster serves anyone who connects, without \
             authentication; it listens on loopback only unless --demo-allow-remote is given",
            args.listen
        ));
    }
    let store = if let Some(addresses) = demo {
        let created = SystemTime::now();
        let objects = demo::objects(&addresses, created)?;
        demo::start(addresses, created).await?;
        Arc::new(Store::new(objects, args.watch.cache_size()))
    } else if let Some(config) = kube_config {
        let store = Arc::new(Store::new(Vec::new(), args.watch.cache_size()));
        let (cluster, rbac) = live::start(
            config,
            &args.source,
            store.cluster(),
            authorization.rbac.clone(),
        )?;
        store.set_live(cluster, rbac);
        store
    } else {
        let objects = reload::load_files(&args.clusters).map_err(|e| format!("--cluster {e}"))?;
        tracing::info!(
            objects = objects.len(),
            files = args.clusters.len(),
            "cluster loaded"
        );
        Arc::new(Store::new(objects, args.watch.cache_size()))
    };
    let tunnels = Shutdown::new();
    let balancer = proxy::balancer(&args);
    let authorizer = match &audit {
        Some(_) => audit::authorizer(Arc::clone(&authorization.authorizer)),
        None => Arc::clone(&authorization.authorizer),
    };
    // One proxy layer per listener: each per-core worker has its own backend pool.
    let proxies = (0..shape.listeners())
        .map(|_| {
            proxy::layer(
                &args,
                store.source(),
                demo.as_ref(),
                tunnels.clone(),
                balancer.clone(),
                Arc::clone(&authorizer),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let listeners = runtime::bind(args.listen, shape.listeners()).await?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let client = serve::client_address(local);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{client}");

    let app = api::router(api::ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        server_address: client.to_string(),
        balancer,
        bookmark_interval: args.watch.bookmark_interval(),
    });
    // The in-flight limit wraps the read-only API only: the proxy layer answers its own
    // requests in front of it (long-running, exempt as in kube-apiserver). Per-core
    // workers get clones of this router: one limit for all of them.
    let app = limit::in_flight(app, args.limits.max_requests_inflight);
    if !args.clusters.is_empty() {
        tokio::spawn(reload::watch(
            args.clusters.clone(),
            args.poll_interval(),
            store.clone(),
            metrics.clone(),
            authorization.rbac.clone(),
        ));
    }

    // Before the address is announced: a client may stop the server as soon as it knows it.
    let stop_signal = serve::shutdown_signal();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kube-bastion serving on {base}");
    if demo_mode {
        let _ = writeln!(out, "{}", demo::banner(&base, tls.is_some()));
    } else if store.live().is_some() {
        let _ = writeln!(
            out,
            "cluster: live, {} (ready once the initial lists are in)",
            if args.source.watch_namespaces.is_empty() {
                "every namespace".to_owned()
            } else {
                format!("namespaces {}", args.source.watch_namespaces.join(", "))
            }
        );
    } else {
        let _ = writeln!(
            out,
            "cluster files: {} (re-read when they change)",
            args.clusters
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(address = %local, tls = tls.is_some(), demo = demo_mode, "listening");

    let grace = Duration::from_secs(args.shutdown_grace_period);
    let signal = {
        let tunnels = tunnels.clone();
        let store = store.clone();
        async move {
            stop_signal.await;
            // Watches last up to an hour: end them now (their clients re-watch elsewhere),
            // so they do not hold the shutdown for the whole grace period.
            store.close_watches();
            // Upgraded connections left hyper's hands: the library's switch refuses new
            // upgrades and closes open tunnels at the end of the grace period.
            tunnels.trigger(grace);
        }
    };
    tokio::spawn(memory::watch());
    // The layers wrap the whole router, not each of its routes (`Router::layer`): a proxy
    // request never reaches axum's routing, and nothing on its way is boxed. The audit
    // layers sit around authentication (to see its 401s) and inside it (to see the user);
    // without an audit log they are left out of the stack, not merely idle. One stack per
    // listener, each with its own proxy layer.
    let metrics_layer = metrics::MetricsLayer::new(metrics.clone());
    let limits = args.limits.listener();
    let serving = runtime::Serving {
        tls,
        grace,
        limits,
        permits: serve::permits(&limits),
        stats: metrics.connections(),
        tunnels: tunnels.clone(),
    };
    let served = match &audit {
        Some((log, _)) => {
            let (outer, inner) = audit::layers(log);
            let apps = proxies
                .into_iter()
                .map(|proxy| {
                    tower::ServiceBuilder::new()
                        .layer(metrics_layer.clone())
                        .layer(outer.clone())
                        .layer(authentication.clone())
                        .layer(inner.clone())
                        .layer(proxy)
                        .service(app.clone())
                })
                .collect();
            runtime::serve(shape, listeners, apps, serving, signal).await
        }
        None => {
            let apps = proxies
                .into_iter()
                .map(|proxy| {
                    tower::ServiceBuilder::new()
                        .layer(metrics_layer.clone())
                        .layer(authentication.clone())
                        .layer(proxy)
                        .service(app.clone())
                })
                .collect();
            runtime::serve(shape, listeners, apps, serving, signal).await
        }
    };
    if tunnels.open_tunnels() > 0 {
        tracing::info!(
            open = tunnels.open_tunnels(),
            "waiting for upgraded connections"
        );
        if tokio::time::timeout(grace, tunnels.drained())
            .await
            .is_err()
        {
            tracing::warn!("upgraded connections still open after the grace period");
        }
    }
    if let Some((_, writer)) = audit {
        // Writes what is queued; events of connections still open are dropped.
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
    }
    served
}
