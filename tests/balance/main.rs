//! Load balancing, endpoint health and failover through the proxy, against real loopback
//! backends (hyper servers on 127.0.0.1, one port per endpoint) described to a
//! `MemoryCluster` by pods and EndpointSlices.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod affinity;
mod failover;
mod policies;
