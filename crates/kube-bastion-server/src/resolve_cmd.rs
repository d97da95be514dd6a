//! `kube-bastion resolve`: what the proxy would do with one request, as JSON, without
//! sending anything. The command-line face of "unit-test proxy path resolution".

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Uri, header};
use kube_bastion::core::{
    AppProtocol, ClusterSnapshot, ClusterView, EndpointState, Host, MemoryCluster, Plan,
    ProxyRequest, ResolveOptions, Route, Status, Target, TransportKind, resolve,
};
use serde_json::{Value, json};

use crate::cli::ResolveArgs;
use crate::{demo, live, reload};

/// What the proxy would answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Forwarded or redirected: the JSON to print.
    Proceed(Value),
    /// Answered with an error Status: the JSON to print.
    Refuse(Value),
}

fn transport_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Generic => "generic",
        TransportKind::Kubelet => "kubelet",
    }
}

fn protocol_name(protocol: AppProtocol) -> &'static str {
    match protocol {
        AppProtocol::Http => "http",
        AppProtocol::H2c => "h2c",
    }
}

fn status_json(status: &Status) -> Value {
    serde_json::from_slice(&status.to_json()).unwrap_or(Value::Null)
}

fn target_json(target: &Target, path_and_query: &str) -> Value {
    let scheme = target.scheme;
    let candidates: Vec<Value> = target
        .candidates
        .iter()
        .map(|c| {
            let (host, resolve_at_dial) = match &c.host {
                Host::Ip(ip) => (ip.to_string(), false),
                Host::Name(name) => (name.clone(), true),
            };
            json!({
                "url": format!("{scheme}://{}{path_and_query}", c.authority()),
                "host": host,
                "port": c.dial_port(scheme),
                "portExplicit": c.port.is_some(),
                "resolveAtDial": resolve_at_dial,
                "pod": c.pod.as_deref(),
                "state": match c.state {
                    EndpointState::Ready => "ready",
                    EndpointState::ServingTerminating => "serving-terminating",
                },
            })
        })
        .collect();
    let service = target.service.as_ref().map(|s| {
        json!({
            "namespace": s.namespace,
            "name": s.name,
            "portName": s.port_name,
            "clientIPAffinitySeconds": s.client_ip_affinity_seconds,
            "balancer": s.balancer,
        })
    });
    json!({
        "scheme": scheme.as_str(),
        "schemeExplicit": target.scheme_explicit,
        "protocol": protocol_name(target.protocol),
        "transport": transport_name(target.transport),
        "tlsServerName": target.tls_server_name,
        "service": service,
        "candidates": candidates,
    })
}

/// Decides what the proxy would do with `method` on `path` against `view`.
pub(crate) fn decide(
    view: &dyn ClusterView,
    options: &ResolveOptions,
    method: &Method,
    path: &str,
    upgrade: bool,
) -> Result<Outcome, String> {
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    let mut headers = HeaderMap::new();
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let Route::Proxy(request) = ProxyRequest::route(method, &uri, &headers) else {
        return Err(format!(
            "{path:?} is not a proxy path (expected /api/v1/namespaces/NS/pods|services/ID/proxy/... \
             or /api/v1/nodes/ID/proxy/...)"
        ));
    };
    let attributes = request.attributes();
    let mut out = json!({
        "request": {
            "method": method.as_str(),
            "resource": request.kind().resource(),
            "namespace": request.namespace(),
            "name": request.raw_id(),
            "upgrade": request.is_upgrade(),
        },
        "authorization": {
            "verb": attributes.verb,
            "apiGroup": attributes.api_group,
            "apiVersion": attributes.api_version,
            "resource": attributes.resource,
            "subresource": attributes.subresource,
            "namespace": attributes.namespace,
            "name": attributes.name,
        },
    });
    let refuse = |mut out: Value, status: &Status| {
        out["action"] = Value::from("error");
        out["status"] = status_json(status);
        Ok(Outcome::Refuse(out))
    };
    if let Err(status) = request.check() {
        return refuse(out, &status);
    }
    let target = match resolve(view, &request, options) {
        Ok(target) => target,
        Err(status) => return refuse(out, &status),
    };
    match request.plan() {
        Plan::Redirect { location } => {
            out["action"] = Value::from("redirect");
            out["code"] = Value::from(301);
            out["location"] = Value::from(location);
        }
        Plan::Forward {
            path_and_query,
            forwarded_uri,
        } => {
            out["action"] = Value::from("forward");
            out["pathAndQuery"] = Value::from(path_and_query.clone());
            out["forwardedUri"] = Value::from(forwarded_uri);
            out["target"] = target_json(&target, &path_and_query);
        }
    }
    Ok(Outcome::Proceed(out))
}

/// Runs the subcommand: prints the JSON and returns the exit code.
/// How long `resolve` waits for a live cluster's initial lists.
const LIVE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The live cluster's view, once its initial lists are in, when `--kubeconfig` is given (or
/// the process runs in a pod without `--cluster`).
fn live_snapshot(args: &ResolveArgs) -> Result<Option<Arc<ClusterSnapshot>>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let Some(config) = live::client_config(&args.source, !args.clusters.is_empty()).await?
        else {
            return Ok(None);
        };
        let (cluster, _) = live::start(config, &args.source, Arc::new(MemoryCluster::new()), None)?;
        tokio::time::timeout(LIVE_SYNC_TIMEOUT, cluster.ready())
            .await
            .map_err(|_| {
                format!(
                    "the live cluster did not answer its initial lists within {}s",
                    LIVE_SYNC_TIMEOUT.as_secs()
                )
            })?;
        Ok(Some(cluster.snapshot()))
    })
}

pub(crate) fn run(args: &ResolveArgs) -> Result<i32, String> {
    let method: Method = args
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("invalid method {:?}", args.method))?;
    let (snapshot, demo) = if let Some(snapshot) = live_snapshot(args)? {
        (snapshot, None)
    } else if args.clusters.is_empty() {
        let addresses = args.demo.addresses();
        let objects = demo::objects(&addresses, SystemTime::now())?;
        (
            Arc::new(ClusterSnapshot::from_objects(objects)),
            Some(addresses),
        )
    } else {
        let objects = reload::load_files(&args.clusters)?;
        (Arc::new(ClusterSnapshot::from_objects(objects)), None)
    };
    let options = args.resolution.resolve_options(demo.as_ref());
    let outcome = decide(&*snapshot, &options, &method, &args.path, args.upgrade)?;
    let (value, code) = match outcome {
        Outcome::Proceed(v) => (v, 0),
        Outcome::Refuse(v) => (v, 1),
    };
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    // A closed stdout (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    Ok(code)
}
