//! End-to-end tests of upgraded connections through the proxy (`kube_bastion::upgrade`)
//! against real peers on 127.0.0.1: tokio-tungstenite clients and WebSocket backends over
//! plain TCP and TLS (rcgen certificates), scripted raw backends for the CVE regressions,
//! and the tunnel's lifecycle (idle timeout, rate limit, backend close, shutdown).

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod lifecycle;
mod redirect;
mod security;
mod websocket;
