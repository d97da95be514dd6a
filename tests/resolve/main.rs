//! Target resolution and destination policy, data-driven over the upstream vectors
//! (`tests/vectors/*.json`) and a `kubectl get -o yaml` fixture (`tests/fixtures/`), plus
//! loading, concurrent updates and property tests.

#[path = "../support/mod.rs"]
mod support;

mod addresses;
mod common;
mod concurrency;
mod errors;
mod fixture;
mod incremental;
mod loading;
mod nodes;
mod pods;
mod properties;
mod readiness;
mod services;
