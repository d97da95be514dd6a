//! Command-line flags. Where kube-apiserver has a flag for the same concept, the flag has
//! kube-apiserver's name and meaning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod audit;
mod limits;
mod source;
mod webhook;

pub(crate) use audit::AuditArgs;
pub(crate) use limits::{LimitArgs, WatchArgs};
pub(crate) use source::SourceArgs;
pub(crate) use webhook::WebhookArgs;

use crate::demo::DemoAddresses;
use ipnet::{IpNet, Ipv4Net};
use kube_bastion::{DestinationPolicy, KubeletOptions, NodeAddressType, ResolveOptions};

/// `kube-bastion`: a small custom apiserver serving kube-apiserver's `pods/proxy`,
/// `services/proxy` and `nodes/proxy` subresources over an embedded demo cluster or your own
/// cluster files.
#[derive(Debug, Parser)]
#[command(
    name = "kube-bastion",
    version,
    about = "A custom apiserver serving kube-apiserver's pods/services/nodes proxy subresources.",
    long_about = "A custom apiserver serving kube-apiserver's pods/proxy, services/proxy and \
nodes/proxy subresources, plus read-only discovery, get and list, so kubectl and client \
libraries can talk to it.\n\nWithout --cluster it starts an embedded demo cluster whose \
backends listen on loopback addresses, and prints commands to try.",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print, as JSON, what the proxy would do with a request (the 301, the Status error, or
    /// the candidate endpoints with scheme and transport) without sending anything.
    ///
    /// Exits 0 when the request would be forwarded or redirected, 1 when it would be
    /// answered with an error Status.
    Resolve(ResolveArgs),
}

/// Flags of `kube-bastion resolve`.
#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// Cluster file (YAML or JSON as `kubectl get -o yaml` writes it). Repeatable. Without
    /// it, the embedded demo cluster's objects are used (with loopback destinations allowed).
    #[arg(long = "cluster", value_name = "FILE")]
    pub(crate) clusters: Vec<PathBuf>,
    /// HTTP method of the request.
    #[arg(long, default_value = "GET", value_name = "METHOD")]
    pub(crate) method: String,
    /// Treat the request as a WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`).
    #[arg(long)]
    pub(crate) upgrade: bool,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) resolution: ResolutionArgs,
    #[command(flatten)]
    pub(crate) demo: DemoArgs,
    /// The request path and optional query, e.g.
    /// `/api/v1/namespaces/demo/services/echo:http/proxy/hello?x=1`.
    #[arg(value_name = "PATH")]
    pub(crate) path: String,
}

/// Flags that change how targets are resolved (shared by the server and `resolve`).
#[derive(Debug, Args)]
pub(crate) struct ResolutionArgs {
    /// Also allow proxying to addresses in this CIDR, even ones kube-apiserver refuses
    /// (loopback, link-local, ...). Repeatable. Without allow and deny flags, only global
    /// unicast addresses are dialed, as in kube-apiserver.
    #[arg(long = "destination-allow", value_name = "CIDR")]
    pub(crate) destination_allow: Vec<IpNet>,
    /// Never proxy to addresses in this CIDR. Repeatable; deny wins over allow.
    #[arg(long = "destination-deny", value_name = "CIDR")]
    pub(crate) destination_deny: Vec<IpNet>,
    /// Also refuse the cloud metadata and host-agent addresses that are not link-local
    /// (AWS `fd00:ec2::254`, Azure `168.63.129.16`, Alibaba `100.100.100.200`, ...; the
    /// whole list is in docs/security.md), whatever --destination-allow says. Turn it on
    /// wherever the server runs on a cloud instance.
    #[arg(long = "destination-deny-cloud-metadata")]
    pub(crate) deny_cloud_metadata: bool,
    /// Comma-separated order of node address types used to reach kubelets
    /// (kube-apiserver's flag).
    #[arg(
        long = "kubelet-preferred-address-types",
        value_delimiter = ',',
        value_name = "TYPES",
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP",
        value_parser = parse_address_type
    )]
    pub(crate) kubelet_preferred_address_types: Vec<NodeAddressType>,
    /// Kubelet port used for nodes whose status has no daemon endpoint port.
    #[arg(long = "kubelet-port", default_value_t = 10250, value_name = "PORT")]
    pub(crate) kubelet_port: u16,
}

/// Flags of the embedded demo cluster.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The /24 loopback network the demo's backends listen on (hosts .11-.13, .21, .31, .41).
    #[arg(long = "demo-network", default_value = "127.0.0.0/24", value_name = "CIDR",
          value_parser = parse_demo_network)]
    pub(crate) demo_network: Ipv4Net,
}

impl DemoArgs {
    /// Where the demo's backends listen.
    pub(crate) fn addresses(&self) -> DemoAddresses {
        DemoAddresses::new(self.demo_network)
    }
}

/// Load balancing policy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BalancerName {
    /// A uniformly random endpoint (kube-apiserver's behaviour).
    Random,
    /// Endpoints in turn.
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Power of two choices on in-flight requests weighted by peak latency (default).
    PeakEwma,
}

/// Runtime shapes (`--runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuntimeName {
    /// One multi-thread runtime, one listener (or the current-thread runtime, see
    /// --worker-threads).
    MultiThread,
    /// One current-thread runtime and one `SO_REUSEPORT` listener per worker thread.
    PerCore,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of the server.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address and port to listen on. kubectl's default server is localhost:8080.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub(crate) listen: SocketAddr,
    /// Cluster file with Pods, Services, Endpoints, EndpointSlices, Nodes and Namespaces
    /// (YAML, multi-document YAML, JSON or `kind: List`, as `kubectl get -o yaml` writes
    /// them). Repeatable. Replaces the demo cluster. Files are re-read when they change; a
    /// bad file is reported and the last good state kept.
    #[arg(long = "cluster", value_name = "FILE")]
    pub(crate) clusters: Vec<PathBuf>,
    /// How often cluster files are checked for changes, in milliseconds.
    #[arg(long = "cluster-poll-interval-ms", default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) cluster_poll_interval_ms: u64,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) resolution: ResolutionArgs,
    #[command(flatten)]
    pub(crate) demo: DemoArgs,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of HTTP.
    #[arg(
        long = "tls-cert-file",
        value_name = "FILE",
        requires = "tls_private_key_file"
    )]
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// PEM private key matching --tls-cert-file.
    #[arg(
        long = "tls-private-key-file",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub(crate) tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates (kube-apiserver's flag): a client may present
    /// a certificate signed by one of them, and is then the user of its subject's common
    /// name, in the groups of its organizations. Needs --tls-cert-file. A certificate from
    /// another CA fails the TLS handshake; clients without one still connect (tokens).
    #[arg(
        long = "client-ca-file",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub(crate) client_ca_file: Option<PathBuf>,
    /// PEM CA bundle of front proxies (kube-apiserver's flag): a client whose certificate
    /// chains to it (and, with --requestheader-allowed-names, has one of those common
    /// names) is trusted to name the user in the --requestheader-username-headers. Its
    /// certificate is never a user itself unless --client-ca-file also trusts it. Needs
    /// --tls-cert-file; the TLS listener then accepts certificates of either CA.
    #[arg(
        long = "requestheader-client-ca-file",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub(crate) requestheader_client_ca_file: Option<PathBuf>,
    /// Common names a front proxy's certificate may have, comma-separated; empty: any
    /// certificate signed by --requestheader-client-ca-file.
    #[arg(
        long = "requestheader-allowed-names",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub(crate) requestheader_allowed_names: Vec<String>,
    /// Request headers naming the user (the first non-empty wins), comma-separated.
    #[arg(
        long = "requestheader-username-headers",
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = "X-Remote-User"
    )]
    pub(crate) requestheader_username_headers: Vec<http::HeaderName>,
    /// Request headers whose values are the user's groups, comma-separated.
    #[arg(
        long = "requestheader-group-headers",
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = "X-Remote-Group"
    )]
    pub(crate) requestheader_group_headers: Vec<http::HeaderName>,
    /// Request header prefixes of the user's extra attributes, comma-separated.
    #[arg(
        long = "requestheader-extra-headers-prefix",
        value_name = "PREFIXES",
        value_delimiter = ',',
        default_value = "X-Remote-Extra-"
    )]
    pub(crate) requestheader_extra_headers_prefix: Vec<String>,
    /// With --token-auth-file or --client-ca-file: let requests without credentials through
    /// as `system:anonymous` (group `system:unauthenticated`) instead of answering 401.
    /// Credentials that are presented and invalid are refused either way.
    #[arg(long = "anonymous-auth")]
    pub(crate) anonymous_auth: bool,
    /// Authorizers of proxy requests, asked in order (kube-apiserver's flag): a
    /// comma-separated list of `AlwaysAllow`, `AlwaysDeny`, `RBAC` and `Webhook`. The first
    /// that allows or denies decides; when none does, the request is refused (403). RBAC
    /// reads Roles, ClusterRoles, RoleBindings and ClusterRoleBindings from the --cluster
    /// files; Webhook asks --authorization-webhook-config-file or
    /// --authorization-kubeconfig.
    #[arg(
        long = "authorization-mode",
        default_value = "AlwaysAllow",
        value_name = "MODES"
    )]
    pub(crate) authorization_mode: String,
    /// For `nodes/proxy`: also ask the authorizers what the kubelet itself asks for the
    /// forwarded path, with the requesting user (`/stats` needs `nodes/stats`, `/metrics`
    /// `nodes/metrics`, `/logs` `nodes/log`, `/pods` `nodes/pods` or `nodes/proxy`, ...),
    /// and require `create` on `nodes/proxy` for `/exec`, `/attach`, `/run`,
    /// `/portForward` and `/cri` whatever the method. Stricter than kube-apiserver, which lets
    /// `get nodes/proxy` open a WebSocket exec.
    #[arg(long = "kubelet-fine-grained-authorization")]
    pub(crate) kubelet_fine_grained_authorization: bool,
    /// kube-apiserver's static token file: CSV lines `token,user,uid,"group1,group2"`.
    /// With it every request except /healthz, /livez, /readyz and /version needs
    /// `Authorization: Bearer <token>` with a listed token, else 401.
    #[arg(long = "token-auth-file", value_name = "FILE")]
    pub(crate) token_auth_file: Option<PathBuf>,
    /// PEM CA bundle that kubelet serving certificates must chain to. Without it, kubelet
    /// certificates are not verified (kube-apiserver's behaviour).
    #[arg(long = "kubelet-certificate-authority", value_name = "FILE")]
    pub(crate) kubelet_certificate_authority: Option<PathBuf>,
    /// PEM client certificate presented to kubelets.
    #[arg(
        long = "kubelet-client-certificate",
        value_name = "FILE",
        requires = "kubelet_client_key"
    )]
    pub(crate) kubelet_client_certificate: Option<PathBuf>,
    /// PEM private key of --kubelet-client-certificate.
    #[arg(
        long = "kubelet-client-key",
        value_name = "FILE",
        requires = "kubelet_client_certificate"
    )]
    pub(crate) kubelet_client_key: Option<PathBuf>,
    /// Byte rate limit per direction of upgraded (WebSocket, SPDY) connections; 0 means
    /// unlimited (kube-apiserver's flag).
    #[arg(
        long = "max-connection-bytes-per-sec",
        default_value_t = 0,
        value_name = "BYTES"
    )]
    pub(crate) max_connection_bytes_per_sec: u64,
    /// How a Service endpoint is chosen. A Service's `kube-bastion.io/balancer` annotation
    /// overrides it.
    #[arg(long, value_enum, default_value_t = BalancerName::PeakEwma)]
    pub(crate) balancer: BalancerName,
    /// Most endpoints one request tries when connecting fails (first choice included).
    #[arg(long = "balancer-max-attempts", default_value_t = 3, value_name = "N")]
    pub(crate) balancer_max_attempts: usize,
    /// Also retry GET, HEAD and OPTIONS on another endpoint when the connection breaks
    /// before the response head.
    #[arg(long = "balancer-retry-idempotent-on-reset")]
    pub(crate) balancer_retry_idempotent: bool,
    /// Consecutive failures that eject an endpoint for a while; 0 turns ejection off.
    #[arg(
        long = "balancer-eject-after-failures",
        default_value_t = 5,
        value_name = "N"
    )]
    pub(crate) balancer_eject_after: u32,
    /// Count 5xx answers as endpoint failures for ejection.
    #[arg(long = "balancer-eject-on-5xx")]
    pub(crate) balancer_eject_on_5xx: bool,
    #[command(flatten)]
    pub(crate) proxy: ProxyArgs,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
    /// Allow the unauthenticated demo cluster on a --listen address other than loopback.
    /// Without it, the demo refuses to serve anyone but this machine.
    #[arg(long = "demo-allow-remote")]
    pub(crate) demo_allow_remote: bool,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(
        long = "shutdown-grace-period",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub(crate) shutdown_grace_period: u64,
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Worker threads of the async runtime. 0 runs everything on the main thread (tokio's
    /// current-thread runtime: one core, the least CPU per request). Default: one per CPU,
    /// or the current-thread runtime when only one CPU is usable (affinity, cgroup quota).
    /// With `--runtime per-core`, the number of workers (0 or unset: one per CPU).
    #[arg(long = "worker-threads", value_name = "N")]
    pub(crate) worker_threads: Option<usize>,
    /// How connections are spread over threads. `multi-thread`: one work-stealing runtime
    /// with --worker-threads workers and one listening socket. `per-core`: the workers are
    /// independent threads, each with its own current-thread runtime, listening socket
    /// (`SO_REUSEPORT` on the same address: the kernel spreads new connections over them)
    /// and backend connection pool, so a request never leaves the thread that accepted its
    /// connection; the main thread keeps signals, reloads and watchers. Less CPU per request
    /// with many client connections, but a connection stays on the worker that accepted it,
    /// so a few busy HTTP/2 connections (an aggregator in front) use a few cores at most.
    /// Unix only.
    #[arg(long, value_enum, default_value_t = RuntimeName::MultiThread, value_name = "SHAPE")]
    pub(crate) runtime: RuntimeName,
    #[command(flatten)]
    pub(crate) audit: AuditArgs,
    #[command(flatten)]
    pub(crate) webhook: WebhookArgs,
    // Last: a flattened group's help heading also covers the flags after it.
    #[command(flatten)]
    pub(crate) watch: WatchArgs,
}

/// Which `Host` header backends receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HostHeaderName {
    /// The `Host` the client sent (kube-apiserver's behaviour).
    Client,
    /// The backend's own address (as `kubectl proxy` and the aggregator do).
    Target,
}

/// Flags for the behaviours the proxy library makes configurable.
#[derive(Debug, Args)]
#[command(next_help_heading = "Proxy behaviour")]
pub(crate) struct ProxyArgs {
    /// TCP connect timeout to backends, in seconds.
    #[arg(
        long = "proxy-connect-timeout",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub(crate) connect_timeout: u64,
    /// Longest wait for a backend's response head, in seconds (answered 504 after it);
    /// 0 waits forever, as kube-apiserver does.
    #[arg(
        long = "proxy-response-header-timeout",
        default_value_t = 120,
        value_name = "SECONDS"
    )]
    pub(crate) response_header_timeout: u64,
    /// Longest silence between two response body chunks, in seconds; 0 disables it.
    #[arg(
        long = "proxy-body-idle-timeout",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub(crate) body_idle_timeout: u64,
    /// How long idle pooled backend connections are kept, in seconds.
    #[arg(
        long = "proxy-pool-idle-timeout",
        default_value_t = 90,
        value_name = "SECONDS"
    )]
    pub(crate) pool_idle_timeout: u64,
    /// Idle pooled connections kept per backend endpoint.
    #[arg(
        long = "proxy-pool-max-idle-per-endpoint",
        default_value_t = 128,
        value_name = "N"
    )]
    pub(crate) pool_max_idle: usize,
    /// Verify TLS certificates of pod and service backends (kube-apiserver does not). Uses
    /// --proxy-backend-ca when given, else the system roots.
    #[arg(long = "proxy-verify-backend-tls")]
    pub(crate) verify_backend_tls: bool,
    /// PEM CA bundle for --proxy-verify-backend-tls.
    #[arg(
        long = "proxy-backend-ca",
        value_name = "FILE",
        requires = "verify_backend_tls"
    )]
    pub(crate) backend_ca: Option<PathBuf>,
    /// The `Host` header backends receive.
    #[arg(long = "proxy-host-header", value_enum, default_value_t = HostHeaderName::Client)]
    pub(crate) host_header: HostHeaderName,
    /// Also remove this request header before forwarding (Authorization, Impersonate-* and
    /// X-Remote-* always are). Repeatable.
    #[arg(long = "proxy-strip-header", value_name = "NAME")]
    pub(crate) strip_headers: Vec<http::HeaderName>,
    /// Send backends `X-Forwarded-Prefix` with the proxy prefix
    /// (`/api/v1/namespaces/ns/pods/web:8080/proxy`; kube-apiserver does not);
    /// `--proxy-forwarded-prefix=false` turns it off.
    #[arg(long = "proxy-forwarded-prefix", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) forwarded_prefix: bool,
    /// Rewrite Location headers and HTML links back under the proxy prefix (as
    /// kube-apiserver does); `--proxy-rewrite=false` turns it off.
    #[arg(long = "proxy-rewrite", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub(crate) rewrite: bool,
    /// Also rewrite what kube-apiserver leaves alone: `srcset` and meta-refresh URLs,
    /// `Content-Location`, and absolute `Set-Cookie` paths; `--proxy-rewrite-extras=false`
    /// rewrites exactly what kube-apiserver does.
    #[arg(long = "proxy-rewrite-extras", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub(crate) rewrite_extras: bool,
    /// Allow this `Upgrade` protocol besides `websocket` and `SPDY/3.1`; other upgrades are
    /// refused with 400. Repeatable.
    #[arg(long = "proxy-allow-upgrade-protocol", value_name = "PROTOCOL")]
    pub(crate) upgrade_protocols: Vec<String>,
    /// Close an upgraded connection after this many seconds without traffic; 0 never does.
    #[arg(long = "proxy-upgrade-idle-timeout", default_value_t = 4 * 3600, value_name = "SECONDS")]
    pub(crate) upgrade_idle_timeout: u64,
    /// Answer a backend redirect (3xx with Location) with 502 instead of passing it to the
    /// client, as kube-apiserver's aggregator does.
    #[arg(long = "proxy-reject-redirects")]
    pub(crate) reject_redirects: bool,
    /// Upgrade requests (WebSocket, SPDY) also need verb `create`, not just `get`.
    #[arg(long = "proxy-authorize-upgrades-as-create")]
    pub(crate) upgrades_as_create: bool,
}

impl ResolutionArgs {
    /// The resolution options these flags describe. With the demo cluster's addresses,
    /// exactly the demo backends' addresses and ports are admitted besides.
    pub(crate) fn resolve_options(&self, demo: Option<&DemoAddresses>) -> ResolveOptions {
        let mut policy = DestinationPolicy::kube_default();
        for endpoint in demo.iter().flat_map(|d| d.endpoints()) {
            policy = policy.allow_endpoint(endpoint);
        }
        if self.deny_cloud_metadata {
            policy = policy.deny_cloud_metadata();
        }
        for net in &self.destination_allow {
            policy = policy.allow(*net);
        }
        for net in &self.destination_deny {
            policy = policy.deny(*net);
        }
        ResolveOptions {
            policy,
            kubelet: KubeletOptions {
                preferred_address_types: self.kubelet_preferred_address_types.clone(),
                default_port: self.kubelet_port,
            },
        }
    }
}

impl ServeArgs {
    /// The cluster poll interval.
    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cluster_poll_interval_ms)
    }
}

fn parse_address_type(text: &str) -> Result<NodeAddressType, String> {
    match text.trim() {
        "Hostname" => Ok(NodeAddressType::Hostname),
        "InternalDNS" => Ok(NodeAddressType::InternalDns),
        "InternalIP" => Ok(NodeAddressType::InternalIp),
        "ExternalDNS" => Ok(NodeAddressType::ExternalDns),
        "ExternalIP" => Ok(NodeAddressType::ExternalIp),
        other => Err(format!(
            "unknown node address type {other:?} (expected Hostname, InternalDNS, InternalIP, \
             ExternalDNS or ExternalIP)"
        )),
    }
}

fn parse_demo_network(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text.parse().map_err(|e| format!("{e}"))?;
    if net.prefix_len() != 24 || !net.addr().is_loopback() {
        return Err("expected a loopback /24 such as 127.0.0.0/24".to_owned());
    }
    Ok(net.trunc())
}

/// Parses the command line. Help and version go to stdout with exit 0; any error is printed
/// as one line on stderr with exit 2.
pub(crate) fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                std::process::exit(0);
            }
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = err.print();
                std::process::exit(2);
            }
            // clap's message can span lines (a list of missing flags, a tip, usage): keep
            // the message itself, on one line.
            let rendered = err.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            eprintln!("kube-bastion: {}", message.join(" "));
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_kube_apiserver() {
        let cli = Cli::try_parse_from(["kube-bastion"]).unwrap();
        assert_eq!(cli.serve.listen, "127.0.0.1:8080".parse().unwrap());
        let options = cli.serve.resolution.resolve_options(None);
        assert_eq!(options, ResolveOptions::default());
    }

    #[test]
    fn watch_flags_have_bounds() {
        let cli = Cli::try_parse_from(["kube-bastion"]).unwrap();
        assert_eq!(cli.serve.watch.cache_size(), 4096);
        assert_eq!(cli.serve.watch.bookmark_interval(), Duration::from_secs(60));
        for (flag, value) in [
            ("--watch-cache-size", "0"),
            ("--watch-bookmark-interval", "0"),
            ("--watch-bookmark-interval", "99999999999"),
        ] {
            assert!(
                Cli::try_parse_from(["kube-bastion", flag, value]).is_err(),
                "{flag} {value}"
            );
        }
    }

    #[test]
    fn address_types_parse_in_order() {
        let cli = Cli::try_parse_from([
            "kube-bastion",
            "--kubelet-preferred-address-types",
            "InternalIP,Hostname",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.resolution.kubelet_preferred_address_types,
            vec![NodeAddressType::InternalIp, NodeAddressType::Hostname]
        );
        assert!(
            Cli::try_parse_from(["kube-bastion", "--kubelet-preferred-address-types", "Foo"])
                .is_err()
        );
    }

    #[test]
    fn resolve_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "kube-bastion",
            "resolve",
            "--method",
            "POST",
            "/api/v1/nodes/n/proxy",
        ])
        .unwrap();
        let Some(Command::Resolve(args)) = cli.command else {
            panic!("no subcommand")
        };
        assert_eq!(args.method, "POST");
        assert_eq!(args.path, "/api/v1/nodes/n/proxy");
    }

    #[test]
    fn demo_network_must_be_a_loopback_slash_24() {
        assert!(Cli::try_parse_from(["kube-bastion", "--demo-network", "10.0.0.0/24"]).is_err());
        assert!(Cli::try_parse_from(["kube-bastion", "--demo-network", "127.0.0.0/16"]).is_err());
        let cli = Cli::try_parse_from(["kube-bastion", "--demo-network", "127.9.9.0/24"]).unwrap();
        assert_eq!(
            cli.serve.demo.demo_network.addr(),
            "127.9.9.0".parse::<std::net::Ipv4Addr>().unwrap()
        );
    }
}
