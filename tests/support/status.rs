//! Reading the Kubernetes `Status` bodies the proxy answers errors with.

/// Parses a Status body: (code, reason, message). Panics, showing the body, when it is not
/// JSON of `kind: Status` with a numeric `code`.
pub(crate) fn status_of(body: &[u8]) -> (u64, Option<String>, String) {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(v["kind"], "Status", "{v}");
    (
        v["code"].as_u64().unwrap_or_else(|| panic!("no code: {v}")),
        v["reason"].as_str().map(str::to_owned),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}
