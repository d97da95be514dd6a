//! The proxy layer, configured from the command line: this is the library embedded exactly
//! as a user embeds it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use kube_bastion::Authorizer;
use kube_bastion::RewriteOptions;
use kube_bastion::core::ClusterSource;
use kube_bastion::{BalancePolicy, Balancer, BalancerConfig};
use kube_bastion::{
    ClientIdentity, HostHeader, PoolOptions, ProxyConfig, ProxyLayer, Roots, TlsOptions,
};
use kube_bastion::{Shutdown, UpgradeOptions};

use crate::cli::{BalancerName, HostHeaderName, ServeArgs};
use crate::demo::DemoAddresses;

fn read(path: &std::path::Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

/// The TLS options of `--kubelet-*` and `--proxy-*` flags; files are read and checked now
/// so that a bad file stops the server at startup with one line.
fn tls_options(args: &ServeArgs) -> Result<TlsOptions, String> {
    let mut tls = TlsOptions::default();
    if let Some(path) = &args.kubelet_certificate_authority {
        let pem = read(path, "--kubelet-certificate-authority")?;
        let roots = Roots::from_pem(&pem)
            .map_err(|e| format!("--kubelet-certificate-authority {}: {e}", path.display()))?;
        tls.kubelet_ca = Some(roots);
    }
    if let (Some(cert), Some(key)) = (&args.kubelet_client_certificate, &args.kubelet_client_key) {
        let cert_pem = read(cert, "--kubelet-client-certificate")?;
        let key_pem = read(key, "--kubelet-client-key")?;
        let identity = ClientIdentity::from_pem(&cert_pem, &key_pem)
            .map_err(|e| format!("--kubelet-client-certificate/--kubelet-client-key: {e}"))?;
        tls.kubelet_client = Some(identity);
    }
    if args.proxy.verify_backend_tls {
        tls.verify_backends = true;
        if let Some(path) = &args.proxy.backend_ca {
            let pem = read(path, "--proxy-backend-ca")?;
            tls.roots = Roots::from_pem(&pem)
                .map_err(|e| format!("--proxy-backend-ca {}: {e}", path.display()))?;
        }
    }
    Ok(tls)
}

/// Upgrade options of the `--max-connection-bytes-per-sec` and `--proxy-*upgrade*` flags;
/// tunnels obey `shutdown`.
fn upgrade_options(args: &ServeArgs, shutdown: Shutdown) -> UpgradeOptions {
    let p = &args.proxy;
    let mut options = UpgradeOptions::default()
        .max_bytes_per_sec(args.max_connection_bytes_per_sec)
        .idle_timeout(seconds(p.upgrade_idle_timeout))
        .reject_forwarding_redirects(p.reject_redirects)
        .shutdown(shutdown);
    for protocol in &p.upgrade_protocols {
        options = options.allow_protocol(protocol.clone());
    }
    options
}

/// The balancer of the `--balancer*` flags.
pub(crate) fn balancer(args: &ServeArgs) -> Balancer {
    let policy = match args.balancer {
        BalancerName::Random => BalancePolicy::Random,
        BalancerName::RoundRobin => BalancePolicy::RoundRobin,
        BalancerName::LeastRequest => BalancePolicy::LeastRequest,
        BalancerName::PeakEwma => BalancePolicy::PeakEwma,
    };
    let mut config = BalancerConfig::default()
        .with_policy(policy)
        .with_max_attempts(args.balancer_max_attempts);
    config.retry_idempotent_on_reset = args.balancer_retry_idempotent;
    config.ejection.consecutive_failures = args.balancer_eject_after;
    config.ejection.eject_on_5xx = args.balancer_eject_on_5xx;
    Balancer::new(config)
}

/// Rewriting options of `--proxy-rewrite` and `--proxy-rewrite-extras`.
fn rewrite_options(args: &ServeArgs) -> RewriteOptions {
    let p = &args.proxy;
    let mut options = RewriteOptions::default();
    options.enabled = p.rewrite;
    options.srcset_and_meta_refresh = p.rewrite_extras;
    options.content_location = p.rewrite_extras;
    options.set_cookie_path = p.rewrite_extras;
    options
}

/// Builds the proxy layer. `demo` is given for the demo cluster only (its backends are the
/// only loopback destinations admitted); `shutdown`
/// is the switch that closes upgraded connections when the server stops; `balancer` keeps
/// endpoint state (shared with `/metrics`).
pub(crate) fn layer(
    args: &ServeArgs,
    cluster: Arc<dyn ClusterSource>,
    demo: Option<&DemoAddresses>,
    shutdown: Shutdown,
    balancer: Balancer,
    authorizer: Arc<dyn Authorizer>,
) -> Result<ProxyLayer, String> {
    let p = &args.proxy;
    let mut builder = ProxyConfig::builder(cluster)
        .authorizer(authorizer)
        .resolve_options(args.resolution.resolve_options(demo))
        .tls(tls_options(args)?)
        .connect_timeout(Duration::from_secs(p.connect_timeout.max(1)))
        .response_header_timeout(seconds(p.response_header_timeout))
        .body_idle_timeout(seconds(p.body_idle_timeout))
        .pool(PoolOptions {
            idle_timeout: Duration::from_secs(p.pool_idle_timeout),
            max_idle_per_endpoint: p.pool_max_idle,
            ..PoolOptions::default()
        })
        .host_header(match p.host_header {
            HostHeaderName::Client => HostHeader::Client,
            HostHeaderName::Target => HostHeader::Target,
        })
        .rewrite_options(rewrite_options(args))
        .upgrade_options(upgrade_options(args, shutdown))
        .balancer(balancer)
        .authorize_upgrades_as_create(p.upgrades_as_create)
        .peer_addr(|parts| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        });
    for name in &p.strip_headers {
        builder = builder.strip_header(name.clone());
    }
    // The front proxies' identity headers never reach a backend, whatever their names
    // (the authentication layer removes them first; this is the second line).
    if args.requestheader_client_ca_file.is_some() {
        for name in args
            .requestheader_username_headers
            .iter()
            .chain(&args.requestheader_group_headers)
        {
            builder = builder.strip_header(name.clone());
        }
        for prefix in &args.requestheader_extra_headers_prefix {
            builder = builder.strip_header_prefix(prefix.as_str());
        }
    }
    builder = builder.forwarded_prefix(p.forwarded_prefix);
    let config = builder
        .build()
        .map_err(|e| format!("proxy configuration: {e}"))?;
    Ok(ProxyLayer::new(config))
}
