//! The test data files: JSON vectors under `tests/vectors/`, other files under
//! `tests/fixtures/`.

use std::path::PathBuf;

/// The path of `tests/<dir>/<name>`.
fn data_path(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
        .join(name)
}

/// Reads `tests/vectors/<name>` as JSON; panics with the file name when it is missing or bad.
pub(crate) fn vectors(name: &str) -> serde_json::Value {
    let path = data_path("vectors", name);
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

/// The text of `tests/fixtures/<name>`; panics with the file name when it is missing.
pub(crate) fn fixture(name: &str) -> String {
    let path = data_path("fixtures", name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
