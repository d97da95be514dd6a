//! Helpers shared by the integration test binaries (`#[path = "../support/mod.rs"] mod support;`).
#![allow(dead_code)]

use std::path::PathBuf;

/// Reads `tests/vectors/<name>` as JSON; panics with the file name when it is missing or bad.
pub(crate) fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The rows of a vector file that is a JSON array.
pub(crate) fn vector_rows(name: &str) -> Vec<serde_json::Value> {
    match vectors(name) {
        serde_json::Value::Array(rows) => rows,
        other => panic!("{name} is not an array: {other}"),
    }
}
