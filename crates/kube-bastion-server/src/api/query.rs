//! The `ListOptions` of lists and watches: the query parameters as kube-apiserver decodes
//! them, its defaulting (the WatchList feature gate on, as since Kubernetes 1.34) and its
//! validation, with upstream's status codes and texts.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube_bastion::Status;

/// `resourceVersionMatch=NotOlderThan`.
pub(crate) const NOT_OLDER_THAN: &str = "NotOlderThan";
/// `resourceVersionMatch=Exact`.
pub(crate) const EXACT: &str = "Exact";

/// The query of a list or watch, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListOptions {
    /// `watch`.
    pub(crate) watch: bool,
    /// `allowWatchBookmarks`.
    pub(crate) allow_bookmarks: bool,
    /// `resourceVersion`, as sent.
    pub(crate) resource_version: String,
    /// `resourceVersionMatch`, as sent (or defaulted).
    pub(crate) resource_version_match: String,
    /// `sendInitialEvents` (or defaulted).
    pub(crate) send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub(crate) timeout_seconds: Option<i64>,
    /// `limit` (0: no limit).
    pub(crate) limit: i64,
    /// `continue`.
    pub(crate) continue_token: String,
    /// `labelSelector`.
    pub(crate) label_selector: String,
    /// `fieldSelector`.
    pub(crate) field_selector: String,
}

/// Go's conversion of a query value to a bool: present and neither `0` nor `false` (any
/// case) is true, so `watch=true`, `watch=1` and even `watch=` are watches.
pub(crate) fn truthy(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// A request's query parameters, decoded once for every reader (the handlers, the
/// in-flight limiter and the metrics): percent-decoded with `+` as a space, as axum's
/// `Query` decodes them, and the FIRST value of a repeated parameter wins, as Go's
/// `url.Values.Get` in kube-apiserver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueryParams(pub(crate) HashMap<String, String>);

impl QueryParams {
    /// Decodes a request's query (with axum's own decoder).
    pub(crate) fn of(uri: &axum::http::Uri) -> Self {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        let mut params = HashMap::with_capacity(pairs.len());
        for (key, value) in pairs {
            params.entry(key).or_insert(value);
        }
        QueryParams(params)
    }

    /// Whether `watch` is set to a true value.
    pub(crate) fn is_watch(&self) -> bool {
        self.0.get("watch").is_some_and(|v| truthy(v))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(QueryParams::of(&parts.uri))
    }
}

/// Whether a request's query makes it a watch (`watch` set to a true value), decoded as
/// the handlers decode it.
pub(crate) fn is_watch_query(uri: &axum::http::Uri) -> bool {
    QueryParams::of(uri).is_watch()
}

/// Go's `strconv.ParseInt` with its error text.
fn parse_int(value: &str) -> Result<i64, Status> {
    value.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        Status::bad_request(format!("strconv.ParseInt: parsing {value:?}: {why}"))
    })
}

impl ListOptions {
    /// Decodes the query parameters (400 BadRequest when a number does not parse), then
    /// applies kube-apiserver's defaulting.
    pub(crate) fn decode(query: &HashMap<String, String>) -> Result<Self, Status> {
        let text = |name: &str| query.get(name).cloned().unwrap_or_default();
        let flag = |name: &str| query.get(name).is_some_and(|v| truthy(v));
        let mut options = ListOptions {
            watch: flag("watch"),
            allow_bookmarks: flag("allowWatchBookmarks"),
            resource_version: text("resourceVersion"),
            resource_version_match: text("resourceVersionMatch"),
            send_initial_events: query.get("sendInitialEvents").map(|v| truthy(v)),
            timeout_seconds: query
                .get("timeoutSeconds")
                .map(|v| parse_int(v))
                .transpose()?,
            limit: query
                .get("limit")
                .map(|v| parse_int(v))
                .transpose()?
                .unwrap_or(0),
            continue_token: text("continue"),
            label_selector: text("labelSelector"),
            field_selector: text("fieldSelector"),
        };
        options.set_defaults();
        Ok(options)
    }

    /// `SetListOptionsDefaults` with the WatchList gate on: a watch from `""` or `"0"` that
    /// names neither `sendInitialEvents` nor `resourceVersionMatch` becomes a streaming list
    /// (`sendInitialEvents=true`, `resourceVersionMatch=NotOlderThan`).
    fn set_defaults(&mut self) {
        if self.send_initial_events.is_some() || !self.resource_version_match.is_empty() {
            return;
        }
        if !self.watch || !(self.resource_version.is_empty() || self.resource_version == "0") {
            return;
        }
        self.send_initial_events = Some(true);
        self.resource_version_match = NOT_OLDER_THAN.to_owned();
    }

    /// `ValidateListOptions` (WatchList gate on): the field errors, empty when valid.
    pub(crate) fn field_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let rv_match = self.resource_version_match.as_str();
        let forbidden = |field: &'static str, detail: &str| FieldError {
            field,
            kind: FieldErrorKind::Forbidden,
            detail: detail.to_owned(),
        };
        if self.watch {
            if self.send_initial_events.is_some() && rv_match != NOT_OLDER_THAN {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !rv_match.is_empty() {
                if self.send_initial_events.is_none() {
                    errors.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if rv_match != NOT_OLDER_THAN {
                    errors.push(FieldError::not_supported(
                        "resourceVersionMatch",
                        rv_match,
                        &[NOT_OLDER_THAN],
                    ));
                }
                if !self.continue_token.is_empty() {
                    errors.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
            return errors;
        }
        if !rv_match.is_empty() {
            if self.resource_version.is_empty() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !self.continue_token.is_empty() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rv_match != EXACT && rv_match != NOT_OLDER_THAN {
                errors.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    rv_match,
                    &[EXACT, NOT_OLDER_THAN, ""],
                ));
            }
            if rv_match == EXACT && self.resource_version == "0" {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            errors.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        errors
    }

    /// Validates: the 422 Invalid Status of `ListOptions.meta.k8s.io` with every field
    /// error, or the parsed `resourceVersion` (`None` for `""` and `"0"`).
    pub(crate) fn validate(&self) -> Result<Option<u64>, Box<meta::Status>> {
        let errors = self.field_errors();
        if !errors.is_empty() {
            return Err(Box::new(invalid("meta.k8s.io", "ListOptions", "", &errors)));
        }
        parse_resource_version(&self.resource_version)
            .map_err(|status| Box::new(meta::Status::from(status)))
    }
}

/// Parses a `resourceVersion` parameter: `None` for `""` and `"0"`, else the number; a
/// 400 BadRequest with Go's text for anything else.
pub(crate) fn parse_resource_version(text: &str) -> Result<Option<u64>, Status> {
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        Status::bad_request(format!(
            "resourceVersion: Invalid value: {text:?}: strconv.ParseUint: parsing {text:?}: {why}"
        ))
    })
}

/// The kinds of field error the validation produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    /// `field.Forbidden`.
    Forbidden,
    /// `field.NotSupported`.
    NotSupported,
}

/// One `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The field path.
    pub(crate) field: &'static str,
    /// Its type.
    pub(crate) kind: FieldErrorKind,
    /// What follows the type in the message.
    pub(crate) detail: String,
}

impl FieldError {
    fn not_supported(field: &'static str, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field,
            kind: FieldErrorKind::NotSupported,
            detail: format!("{value:?}: supported values: {}", list.join(", ")),
        }
    }

    /// `ErrorBody()`: the message without the field.
    pub(crate) fn body(&self) -> String {
        match self.kind {
            FieldErrorKind::Forbidden => format!("Forbidden: {}", self.detail),
            FieldErrorKind::NotSupported => format!("Unsupported value: {}", self.detail),
        }
    }

    /// The cause type.
    fn cause_type(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `errors.NewInvalid`: 422 Invalid, `<Kind>.<group> "<name>" is invalid: <errors>` (one
/// error as is, several as `[a, b]`), with one cause per field error.
pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> meta::Status {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let aggregate = match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let mut status = meta::Status::from(Status::new(
        422,
        Some("Invalid"),
        format!("{qualified} {name:?} is invalid: {aggregate}"),
    ));
    status.details = Some(meta::StatusDetails {
        group: Some(group.to_owned()).filter(|g| !g.is_empty()),
        kind: Some(kind.to_owned()),
        name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        causes: Some(
            errors
                .iter()
                .map(|e| meta::StatusCause {
                    field: Some(e.field.to_owned()),
                    message: Some(e.body()),
                    reason: Some(e.cause_type().to_owned()),
                })
                .collect(),
        ),
        ..meta::StatusDetails::default()
    });
    status
}

/// How a watch starts, after defaulting and validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// A synthetic ADDED for every current object, then the changes after that state; with
    /// `end_bookmark`, a BOOKMARK annotated `k8s.io/initial-events-end` between the two.
    Initial {
        /// Send the initial-events-end bookmark.
        end_bookmark: bool,
    },
    /// Only the changes after this resourceVersion.
    After(u64),
    /// Only the changes after the current state.
    Now,
}

impl ListOptions {
    /// Where a (validated) watch starts; `rv` is the parsed `resourceVersion`.
    pub(crate) fn watch_start(&self, rv: Option<u64>) -> WatchStart {
        match (self.send_initial_events, rv) {
            (Some(true), _) => WatchStart::Initial {
                end_bookmark: self.allow_bookmarks,
            },
            (_, Some(rv)) => WatchStart::After(rv),
            (Some(false), None) => WatchStart::Now,
            // The legacy watch from "" or "0" (defaulting makes `?watch=true` a streaming
            // list; the `/watch/` path form is not defaulted, as upstream).
            (None, None) => WatchStart::Initial {
                end_bookmark: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> ListOptions {
        let query: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ListOptions::decode(&query).unwrap()
    }

    fn uri(query: &str) -> axum::http::Uri {
        format!("/api/v1/pods?{query}").parse().unwrap()
    }

    fn message(pairs: &[(&str, &str)]) -> String {
        options(pairs).validate().unwrap_err().message.unwrap()
    }

    #[test]
    fn booleans_follow_go() {
        assert!(truthy("true") && truthy("1") && truthy("True") && truthy(""));
        assert!(!truthy("0") && !truthy("false") && !truthy("FALSE"));
        assert!(is_watch_query(&uri("a=b&watch=1")));
        assert!(!is_watch_query(&"/api/v1/pods".parse().unwrap()));
    }

    /// One decoding for the handlers, the limiter and the metrics: percent-decoded, the
    /// first of repeated values wins (Go's `url.Values.Get`).
    #[test]
    fn the_query_is_decoded_once_first_value_wins() {
        for (query, watch) in [
            ("watch=true&watch=false", true),
            ("watch=%74rue", true),
            ("w%61tch=1", true),
            ("watch=false&watch=true", false),
            ("watch=%30", false),
        ] {
            assert_eq!(is_watch_query(&uri(query)), watch, "{query}");
            let params = QueryParams::of(&uri(query));
            assert_eq!(
                ListOptions::decode(&params.0).unwrap().watch,
                watch,
                "{query}"
            );
        }
        let params = QueryParams::of(&uri("labelSelector=a%3Db+c&limit=1&limit=2"));
        assert_eq!(params.0["labelSelector"], "a=b c");
        assert_eq!(params.0["limit"], "1");
    }

    /// The vectors' ListOptions rows (the WatchList gate on).
    #[test]
    fn validation_texts_are_upstreams() {
        assert_eq!(
            message(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")]),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        assert_eq!(
            message(&[("resourceVersion", "0"), ("resourceVersionMatch", "foo")]),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported \
             value: \"foo\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        );
        assert_eq!(
            message(&[("watch", "true"), ("resourceVersionMatch", "NotOlderThan")]),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        );
        assert_eq!(
            message(&[("watch", "true"), ("sendInitialEvents", "true")]),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
        assert_eq!(
            message(&[("resourceVersionMatch", "NotOlderThan")]),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        let two = options(&[("resourceVersionMatch", "foo"), ("continue", "x")])
            .validate()
            .unwrap_err();
        assert!(
            two.message
                .as_deref()
                .unwrap()
                .contains(": [resourceVersionMatch: Forbidden"),
            "{two:?}"
        );
        let causes = two.details.unwrap().causes.unwrap();
        assert_eq!(causes.len(), 3);
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueForbidden"));
        assert!(
            options(&[
                ("watch", "true"),
                ("sendInitialEvents", "true"),
                ("resourceVersionMatch", "NotOlderThan"),
                ("allowWatchBookmarks", "true"),
            ])
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn watch_defaults_to_a_streaming_list() {
        let o = options(&[("watch", "1")]);
        assert_eq!(o.send_initial_events, Some(true));
        assert_eq!(o.resource_version_match, NOT_OLDER_THAN);
        assert_eq!(
            o.watch_start(None),
            WatchStart::Initial {
                end_bookmark: false
            }
        );
        let o = options(&[("watch", "1"), ("resourceVersion", "7")]);
        assert_eq!(o.send_initial_events, None);
        assert_eq!(o.watch_start(Some(7)), WatchStart::After(7));
        let o = options(&[
            ("watch", "1"),
            ("sendInitialEvents", "false"),
            ("resourceVersionMatch", "NotOlderThan"),
        ]);
        assert_eq!(o.watch_start(None), WatchStart::Now);
    }

    #[test]
    fn bad_numbers_are_bad_requests() {
        let query = HashMap::from([("limit".to_owned(), "x".to_owned())]);
        let err = ListOptions::decode(&query).unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.message(),
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        let err = parse_resource_version("abc").unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(parse_resource_version("0").unwrap(), None);
        assert_eq!(parse_resource_version("12").unwrap(), Some(12));
    }
}
