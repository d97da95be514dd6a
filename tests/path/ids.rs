//! `split_scheme_name_port.json`: SplitSchemeNamePort / JoinSchemeNamePort.

use kube_bastion_core::{ResourceKind, Scheme, TargetId};

use crate::{pct, proxy, s, support::data::vector_rows};

fn scheme_str(scheme: Option<Scheme>) -> &'static str {
    scheme.map_or("", Scheme::as_str)
}

#[test]
fn every_split_row() {
    let rows = vector_rows("split_scheme_name_port.json");
    assert!(!rows.is_empty());
    for row in &rows {
        let input = s(row, "input");
        let expected = &row["expected"];
        let valid = expected["valid"].as_bool().expect("valid");
        match TargetId::parse(input) {
            Ok(id) => {
                assert!(valid, "{input:?} parsed but the vector says invalid");
                assert_eq!(scheme_str(id.scheme()), s(expected, "scheme"), "{input:?}");
                assert_eq!(id.name(), s(expected, "name"), "{input:?}");
                assert_eq!(id.port(), s(expected, "port"), "{input:?}");
                assert_eq!(id.join(), s(expected, "join_roundtrip"), "{input:?}");
                // Upstream's `normalized` flag: when set, joining gives the input back byte
                // for byte (when unset the upstream test simply does not check).
                if expected["join_equals_input"].as_bool() == Some(true) {
                    assert_eq!(id.join(), input);
                }
                // Semantic round trip.
                assert_eq!(TargetId::parse(&id.join()).as_ref(), Ok(&id), "{input:?}");
            }
            Err(error) => {
                assert!(!valid, "{input:?} rejected but the vector says valid");
                assert_eq!(error.0, input);
            }
        }
    }
}

/// The same rows through a request path: the id is percent-decoded before splitting, and
/// a bad id is upstream's 400.
#[test]
fn every_split_row_through_a_request_path() {
    for row in &vector_rows("split_scheme_name_port.json") {
        let input = s(row, "input");
        let valid = row["expected"]["valid"].as_bool().expect("valid");
        if input.is_empty() {
            // An empty id segment is not a proxy route at all.
            let path = "/api/v1/namespaces/ns/pods//proxy";
            assert_eq!(
                crate::route("GET", path, "", &[]),
                kube_bastion_core::Route::NotProxy
            );
            continue;
        }
        for (kind, path) in [
            (
                ResourceKind::Pod,
                format!("/api/v1/namespaces/ns/pods/{}/proxy/x", pct(input, false)),
            ),
            (
                ResourceKind::Service,
                format!(
                    "/api/v1/namespaces/ns/services/{}/proxy/x",
                    pct(input, false)
                ),
            ),
            (
                ResourceKind::Node,
                format!("/api/v1/nodes/{}/proxy/x", pct(input, false)),
            ),
        ] {
            let request = proxy("GET", &path, "");
            assert_eq!(request.kind(), kind);
            assert_eq!(request.raw_id(), input);
            match request.target_id() {
                Ok(id) => {
                    assert!(valid, "{path}");
                    assert_eq!(id.name(), s(&row["expected"], "name"));
                }
                Err(status) => {
                    assert!(!valid, "{path}");
                    assert_eq!(status.code(), 400);
                    assert_eq!(status.reason(), Some("BadRequest"));
                    // These ids are printable ASCII without `"` or `\`: Go's %q just quotes.
                    assert!(
                        input
                            .bytes()
                            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
                    );
                    assert_eq!(
                        status.message(),
                        format!("invalid {} request \"{input}\"", kind.singular())
                    );
                }
            }
        }
    }
}

/// The note on the `foo%3A80` row: a client sending `%3A` gets a `:` in the id, while a
/// literal `%3A` (sent as `%253A`) stays in the name.
#[test]
fn escaped_colon_in_the_path() {
    let id = proxy("GET", "/api/v1/namespaces/ns/pods/foo%3A80/proxy/", "")
        .target_id()
        .expect("valid");
    assert_eq!((id.name(), id.port()), ("foo", "80"));
    let id = proxy("GET", "/api/v1/namespaces/ns/pods/foo%253A80/proxy/", "")
        .target_id()
        .expect("valid");
    assert_eq!((id.name(), id.port()), ("foo%3A80", ""));
}
