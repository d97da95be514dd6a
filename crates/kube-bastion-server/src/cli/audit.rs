//! Flags of the audit log (kube-apiserver's names).

use std::path::PathBuf;

use clap::Args;

/// The audit log of proxy requests.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Audit")]
pub(crate) struct AuditArgs {
    /// Write an audit log: one `audit.k8s.io/v1` Event per line (level Metadata) for every
    /// pods/services/nodes proxy request: RequestReceived, then ResponseComplete (or
    /// ResponseStarted for an upgrade, or a single ResponseStarted when authentication
    /// refused it). `-` writes to standard output. The file is appended to, and created
    /// with mode 0600. Never bodies, never credentials.
    #[arg(long = "audit-log-path", value_name = "FILE")]
    pub(crate) path: Option<PathBuf>,
    /// Audit events held in memory on their way to the log; when the writer falls that far
    /// behind, new events are dropped (and counted in
    /// `kube_bastion_audit_events_dropped_total`) rather than slowing requests down. At
    /// most 1,000,000 (the queue's slots are allocated up front).
    #[arg(long = "audit-log-batch-buffer-size", default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) buffer_size: u64,
}
