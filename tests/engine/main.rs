//! End-to-end tests of the proxy engine (`crates/kube-bastion`) against real servers on
//! 127.0.0.1: hyper backends over HTTP/1.1, h2c and TLS (rcgen certificates), the proxy
//! served by hyper or mounted in axum, and hyper clients.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod authn;
mod authz;
mod errors;
mod faults;
mod forwarding;
mod headers;
mod mount;
mod streaming;
mod tls;
mod vanishing;
