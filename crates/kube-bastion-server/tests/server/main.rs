//! End-to-end tests of the `kube-bastion` binary: each test starts the real server on a free
//! port and drives it with real clients (kubectl, curl, Python's `kubernetes` client,
//! tokio-tungstenite, a kube-rs watcher) over real loopback sockets.

mod live;
mod support;

mod api;
mod audit;
mod auth;
mod cli;
mod cluster;
mod demo;
mod lifecycle;
mod limits;
mod paging;
mod proxy;
mod request_header;
mod two_servers;
mod watch;
mod watch_kube;
mod watch_versions;
mod webhook;
