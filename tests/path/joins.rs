//! `join_preserving_trailing_slash.json`: JoinPreservingTrailingSlash.

use kube_bastion_core::Plan;
use kube_bastion_core::path::{escape_path, join_preserving_trailing_slash};

use crate::{pct, proxy, s, support::data::vector_rows};

#[test]
fn every_join_row() {
    let rows = vector_rows("join_preserving_trailing_slash.json");
    assert!(!rows.is_empty());
    for row in &rows {
        let (a, b) = (s(&row["input"], "a"), s(&row["input"], "b"));
        let expected = row["expected"].as_str().expect("expected");
        assert_eq!(
            join_preserving_trailing_slash(a, b),
            expected,
            "{a:?} + {b:?}"
        );
    }
}

/// Rows whose `b` is a sub-path (`a` empty, `b` rooted) are what a request's backend path
/// goes through: sending `b` (percent-encoded) under `.../proxy` must reach the backend as
/// the row's result, re-encoded.
#[test]
fn join_rows_as_request_sub_paths() {
    let mut checked = 0;
    for row in &vector_rows("join_preserving_trailing_slash.json") {
        let (a, b) = (s(&row["input"], "a"), s(&row["input"], "b"));
        if !a.is_empty() || !b.starts_with('/') {
            continue;
        }
        let expected = row["expected"].as_str().expect("expected");
        let path = format!("/api/v1/namespaces/ns/pods/p/proxy{}", pct(b, true));
        let Plan::Forward { path_and_query, .. } = proxy("GET", &path, "").plan() else {
            panic!("{path} should be forwarded");
        };
        let mut escaped = String::new();
        escape_path(expected.as_bytes(), &mut escaped);
        assert_eq!(path_and_query, escaped, "{path}");
        checked += 1;
    }
    assert!(checked > 0);
}
