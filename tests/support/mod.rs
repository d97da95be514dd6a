//! The loopback harness shared by the integration test binaries, each of which includes it
//! as `#[path = "../support/mod.rs"] mod support;`. A binary uses only some of it.
#![allow(dead_code)]

pub(crate) mod data;
pub(crate) mod net;
pub(crate) mod objects;
pub(crate) mod status;
pub(crate) mod tls;
