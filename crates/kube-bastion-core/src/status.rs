//! `metav1.Status`, the only error body a client ever sees.
//!
//! [`Status`] wraps k8s-openapi's `meta/v1` `Status` and serializes it the way kube-apiserver
//! does: the fields in Go's declaration order (`kind`, `apiVersion`, `metadata`, `status`,
//! `message`, `reason`, `details`, `code`), empty optional fields left out, and, in
//! [`Status::to_json`], Go's HTML-safe string escaping (`<`, `>`, `&`, U+2028 and U+2029 are
//! written as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`).
//!
//! ```
//! use kube_bastion_core::Status;
//!
//! let status = Status::not_found("pods", "x");
//! assert_eq!(status.code(), 404);
//! assert_eq!(
//!     String::from_utf8(status.to_json()).unwrap(),
//!     r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
//! );
//! ```

use std::fmt;
use std::io;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// A failure Status, serialized exactly as kube-apiserver writes it
/// (`kind`, `apiVersion`, `metadata`, `status`, `message`, `reason`, `details`, `code`).
///
/// Constructors mirror the apimachinery `errors.New*` helpers kube-apiserver uses for the
/// proxy subresources; every one documents its code, reason and message.
///
/// The value is boxed so that `Result<_, Status>` stays small on the success path.
#[derive(Clone, Debug, PartialEq)]
pub struct Status(Box<meta::Status>);

/// The message of upstream's generic 405 answer.
const METHOD_NOT_ALLOWED_MESSAGE: &str =
    "the server does not allow this method on the requested resource";

impl Status {
    /// A Status with this code, reason (`None` or `Some("")` leaves it out) and message.
    pub fn new(code: u16, reason: Option<&str>, message: impl Into<String>) -> Self {
        Status(Box::new(meta::Status {
            code: Some(i32::from(code)),
            details: None,
            message: Some(message.into()),
            metadata: meta::ListMeta::default(),
            reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
            status: Some("Failure".to_owned()),
        }))
    }

    /// Sets `details` to `{name, kind}` (empty values are left out, as Go's `omitempty`).
    pub fn with_details(mut self, name: &str, kind: &str) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        self.0.details = Some(meta::StatusDetails {
            name: non_empty(name),
            kind: non_empty(kind),
            ..meta::StatusDetails::default()
        });
        self
    }

    /// 400 BadRequest with this message (`errors.NewBadRequest`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Some("BadRequest"), message)
    }

    /// 401 Unauthorized (`errors.NewUnauthorized`): the message given, or `not authorized`
    /// when it is empty. kube-apiserver's authentication filter uses the message
    /// `Unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.is_empty() {
            message.push_str("not authorized");
        }
        Self::new(401, Some("Unauthorized"), message)
    }

    /// 403 Forbidden (`errors.NewForbidden`) for `resource` (plural, e.g. `pods`) `name`:
    /// message `<resource> "<name>" is forbidden: <cause>` (`<resource> is forbidden: <cause>`
    /// when `name` is empty), details `{name, kind: <resource>}`. The name is quoted as Go's
    /// `%q` does.
    pub fn forbidden(resource: &str, name: &str, cause: impl fmt::Display) -> Self {
        let message = if name.is_empty() {
            format!("{resource} is forbidden: {cause}")
        } else {
            let mut quoted = String::with_capacity(name.len() + 2);
            crate::go::push_quoted(name.as_bytes(), &mut quoted);
            format!("{resource} {quoted} is forbidden: {cause}")
        };
        Self::new(403, Some("Forbidden"), message).with_details(name, resource)
    }

    /// 404 NotFound for `resource` (plural, e.g. `pods`) `name`: message
    /// `<resource> "<name>" not found`, details `{name, kind: <resource>}`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        let mut message = String::with_capacity(resource.len() + name.len() + 14);
        message.push_str(resource);
        message.push(' ');
        crate::go::push_quoted(name.as_bytes(), &mut message);
        message.push_str(" not found");
        Self::new(404, Some("NotFound"), message).with_details(name, resource)
    }

    /// 405 MethodNotAllowed with upstream's generic message
    /// `the server does not allow this method on the requested resource`, the answer for a
    /// method the proxy routes do not register (anything but GET, POST, PUT, PATCH, DELETE,
    /// HEAD and OPTIONS).
    pub fn method_not_allowed() -> Self {
        Self::new(405, Some("MethodNotAllowed"), METHOD_NOT_ALLOWED_MESSAGE)
    }

    /// 413 RequestEntityTooLarge (`errors.NewRequestEntityTooLargeError`): message
    /// `Request entity too large: <message>`.
    pub fn request_entity_too_large(message: impl fmt::Display) -> Self {
        Self::new(
            413,
            Some("RequestEntityTooLarge"),
            format!("Request entity too large: {message}"),
        )
    }

    /// 500 with no reason and the raw message, as upstream writes untyped errors (for
    /// example `error dialing backend: ...` or `invalid upgrade response: status code 200`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, None, message)
    }

    /// 500 InternalError (`errors.NewInternalError`): message
    /// `Internal error occurred: <error>`, details `{causes: [{message: <error>}]}`.
    pub fn internal_error(error: impl fmt::Display) -> Self {
        let error = error.to_string();
        let mut status = Self::new(
            500,
            Some("InternalError"),
            format!("Internal error occurred: {error}"),
        );
        status.0.details = Some(meta::StatusDetails {
            causes: Some(vec![meta::StatusCause {
                message: Some(error),
                ..meta::StatusCause::default()
            }]),
            ..meta::StatusDetails::default()
        });
        status
    }

    /// 502 with this message and no reason: `metav1` defines no reason for 502, so none is
    /// written (as for upstream's untyped errors). Used when a backend answers with something
    /// that is not valid HTTP.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, None, message)
    }

    /// 503 ServiceUnavailable with this message (`errors.NewServiceUnavailable`), for example
    /// `error trying to reach service: ...` or `no endpoints available for service "x"`.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, Some("ServiceUnavailable"), message)
    }

    /// 503 ServiceUnavailable `the proxy's view of the cluster is not synced yet: its
    /// initial lists are still loading` with `details.retryAfterSeconds: 1`, for a request
    /// that arrives while a [`ClusterSource`](crate::ClusterSource) is not synced: a
    /// retry soon succeeds, where a `404` from a partial view would be wrong.
    ///
    /// ```
    /// let status = kube_bastion_core::Status::not_synced();
    /// assert_eq!(status.code(), 503);
    /// assert_eq!(status.reason(), Some("ServiceUnavailable"));
    /// assert_eq!(status.details().and_then(|d| d.retry_after_seconds), Some(1));
    /// assert_eq!(status.to_response().headers()["retry-after"], "1");
    /// ```
    pub fn not_synced() -> Self {
        let mut status = Self::service_unavailable(
            "the proxy's view of the cluster is not synced yet: its initial lists are still loading",
        );
        status.0.details = Some(meta::StatusDetails {
            retry_after_seconds: Some(1),
            ..meta::StatusDetails::default()
        });
        status
    }

    /// 504 with reason `Timeout` (`metav1.StatusReasonTimeout`, the reason apimachinery
    /// associates with 504) and this message, for a backend that did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, Some("Timeout"), message)
    }

    /// 429 TooManyRequests `Too many requests, please try again later.` with
    /// `details.retryAfterSeconds` (`errors.NewTooManyRequests`), for a server over its
    /// in-flight limit; send `Retry-After` with the same seconds beside it.
    ///
    /// ```
    /// let status = kube_bastion_core::Status::too_many_requests(1);
    /// assert_eq!(status.code(), 429);
    /// assert_eq!(status.reason(), Some("TooManyRequests"));
    /// assert_eq!(status.details().and_then(|d| d.retry_after_seconds), Some(1));
    /// ```
    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        let mut status = Self::new(
            429,
            Some("TooManyRequests"),
            "Too many requests, please try again later.",
        );
        status.0.details = Some(meta::StatusDetails {
            retry_after_seconds: i32::try_from(retry_after_seconds).ok(),
            ..meta::StatusDetails::default()
        });
        status
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.0
            .code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=999).contains(c))
            .unwrap_or(500)
    }

    /// The HTTP status code as an [`http::StatusCode`] (500 if the code is not a valid one).
    pub fn status_code(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.code()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.0.message.as_deref().unwrap_or("")
    }

    /// The reason, when set.
    pub fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// The details, when set.
    pub fn details(&self) -> Option<&meta::StatusDetails> {
        self.0.details.as_ref()
    }

    /// The underlying k8s-openapi value.
    pub fn as_inner(&self) -> &meta::Status {
        &self.0
    }

    /// The JSON body, byte for byte as kube-apiserver writes it (without the newline its
    /// encoder appends; see [`Status::to_body`]).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.message().len());
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
        match self.serialize(&mut serializer) {
            Ok(()) => out,
            // Writing to a Vec cannot fail and `serialize` raises no error of its own; this
            // fallback only keeps the function total.
            Err(_) => br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","code":500}"#
                .to_vec(),
        }
    }

    /// The HTTP response body kube-apiserver sends: [`Status::to_json`] followed by `\n`
    /// (Go's `json.Encoder` ends every value with a newline). Serve it with
    /// `Content-Type: application/json`.
    pub fn to_body(&self) -> Vec<u8> {
        let mut body = self.to_json();
        body.push(b'\n');
        body
    }

    /// The whole HTTP answer: this Status's code, `Content-Type: application/json` and
    /// [`Status::to_body`]; map the body into whatever body type the server uses. Every
    /// Status a client gets is built here.
    ///
    /// ```
    /// let response = kube_bastion_core::Status::not_found("pods", "web").to_response();
    /// assert_eq!(response.status(), 404);
    /// assert_eq!(response.headers()["content-type"], "application/json");
    /// assert!(response.body().ends_with(b"\n"));
    /// ```
    pub fn to_response(&self) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(self.to_body());
        *response.status_mut() = self.status_code();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        // As apimachinery's `ErrorNegotiated`: a positive `retryAfterSeconds` also goes out
        // as `Retry-After`.
        if let Some(seconds) = self
            .details()
            .and_then(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
        {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<Status> for meta::Status {
    fn from(status: Status) -> Self {
        *status.0
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Status {}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

/// Serializes like Go's `encoding/json` over apimachinery's `metav1.Status`: declaration
/// order, `omitempty` fields left out, `metadata` always present.
impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let inner = &self.0;
        let status = non_empty(&inner.status);
        let message = non_empty(&inner.message);
        let reason = non_empty(&inner.reason);
        let code = inner.code.filter(|c| *c != 0);
        let mut s = serializer.serialize_struct("Status", 8)?;
        s.serialize_field("kind", "Status")?;
        s.serialize_field("apiVersion", "v1")?;
        s.serialize_field("metadata", &GoListMeta(&inner.metadata))?;
        serialize_opt(&mut s, "status", &status)?;
        serialize_opt(&mut s, "message", &message)?;
        serialize_opt(&mut s, "reason", &reason)?;
        serialize_opt(&mut s, "details", &inner.details.as_ref().map(GoDetails))?;
        serialize_opt(&mut s, "code", &code)?;
        s.end()
    }
}

fn serialize_opt<S: SerializeStruct, T: Serialize>(
    s: &mut S,
    key: &'static str,
    value: &Option<T>,
) -> Result<(), S::Error> {
    match value {
        Some(v) => s.serialize_field(key, v),
        None => s.skip_field(key),
    }
}

/// `metav1.ListMeta` in Go's field order.
struct GoListMeta<'a>(&'a meta::ListMeta);

impl Serialize for GoListMeta<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut s = serializer.serialize_struct("ListMeta", 4)?;
        serialize_opt(&mut s, "selfLink", &non_empty(&m.self_link))?;
        serialize_opt(&mut s, "resourceVersion", &non_empty(&m.resource_version))?;
        serialize_opt(&mut s, "continue", &non_empty(&m.continue_))?;
        serialize_opt(&mut s, "remainingItemCount", &m.remaining_item_count)?;
        s.end()
    }
}

/// `metav1.StatusDetails` in Go's field order.
struct GoDetails<'a>(&'a meta::StatusDetails);

impl Serialize for GoDetails<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let causes = d
            .causes
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| c.iter().map(GoCause).collect::<Vec<_>>());
        let mut s = serializer.serialize_struct("StatusDetails", 6)?;
        serialize_opt(&mut s, "name", &non_empty(&d.name))?;
        serialize_opt(&mut s, "group", &non_empty(&d.group))?;
        serialize_opt(&mut s, "kind", &non_empty(&d.kind))?;
        serialize_opt(&mut s, "uid", &non_empty(&d.uid))?;
        serialize_opt(&mut s, "causes", &causes)?;
        serialize_opt(
            &mut s,
            "retryAfterSeconds",
            &d.retry_after_seconds.filter(|r| *r != 0),
        )?;
        s.end()
    }
}

/// `metav1.StatusCause` in Go's field order.
struct GoCause<'a>(&'a meta::StatusCause);

impl Serialize for GoCause<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut s = serializer.serialize_struct("StatusCause", 3)?;
        serialize_opt(&mut s, "reason", &non_empty(&c.reason))?;
        serialize_opt(&mut s, "message", &non_empty(&c.message))?;
        serialize_opt(&mut s, "field", &non_empty(&c.field))?;
        s.end()
    }
}

/// serde_json's compact formatter plus Go's HTML-safe string escaping. serde_json already
/// escapes `"`, `\` and control characters as Go 1.22+ does (`\b`, `\f`, `\n`, `\r`, `\t`,
/// else `\u00xx` in lower-case hex).
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(status: &Status) -> String {
        String::from_utf8(status.to_json()).expect("utf-8")
    }

    #[test]
    fn not_found_is_byte_exact() {
        assert_eq!(
            json(&Status::not_found("pods", "x")),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
    }

    #[test]
    fn reason_and_details_are_left_out_when_empty() {
        assert_eq!(
            json(&Status::internal("boom")),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"boom","code":500}"#
        );
        assert_eq!(Status::new(500, Some(""), "x").reason(), None);
    }

    #[test]
    fn go_html_safe_escaping() {
        let status = Status::bad_request("a<b>&c\u{2028}\u{2029}\"\\\n\t\u{8}\u{c}\u{1}\u{7f}é");
        assert_eq!(
            json(&status),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"a\u003cb\u003e\u0026c\u2028\u2029\"\\\n\t\b\f\u0001"#,
                "\u{7f}é",
                r#"","reason":"BadRequest","code":400}"#
            )
        );
    }

    #[test]
    fn to_body_ends_with_newline() {
        let status = Status::method_not_allowed();
        let body = status.to_body();
        assert_eq!(body.last(), Some(&b'\n'));
        assert_eq!(&body[..body.len() - 1], &status.to_json()[..]);
    }

    #[test]
    fn constructors() {
        let s = Status::method_not_allowed();
        assert_eq!((s.code(), s.reason()), (405, Some("MethodNotAllowed")));
        assert_eq!(
            s.message(),
            "the server does not allow this method on the requested resource"
        );
        let s = Status::unauthorized("");
        assert_eq!(
            (s.code(), s.reason(), s.message()),
            (401, Some("Unauthorized"), "not authorized")
        );
        let s = Status::unauthorized("Unauthorized");
        assert_eq!(s.message(), "Unauthorized");
        assert_eq!(Status::gateway_timeout("t").reason(), Some("Timeout"));
        assert_eq!(Status::gateway_timeout("t").code(), 504);
        assert_eq!(Status::bad_gateway("b").code(), 502);
        assert_eq!(Status::bad_gateway("b").reason(), None);
        assert_eq!(
            Status::request_entity_too_large("limit is 3").message(),
            "Request entity too large: limit is 3"
        );
        assert_eq!(
            Status::service_unavailable("x").status_code(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn internal_error_has_a_cause() {
        assert_eq!(
            json(&Status::internal_error("bad <Location>")),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Internal error occurred: bad \u003cLocation\u003e","reason":"InternalError","details":{"causes":[{"message":"bad \u003cLocation\u003e"}]},"code":500}"#
        );
    }

    #[test]
    fn forbidden_quotes_the_name() {
        let s = Status::forbidden("pods", "a\"b", "nope");
        assert_eq!(s.message(), r#"pods "a\"b" is forbidden: nope"#);
        assert_eq!(s.code(), 403);
        let s = Status::forbidden("pods", "", "nope");
        assert_eq!(s.message(), "pods is forbidden: nope");
        assert_eq!(
            json(&s),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: nope","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#
        );
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        for (input, quoted) in [
            ("", r#""""#),
            ("web:8080", r#""web:8080""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\u{7}\u{8}\u{c}\n\r\t\u{b}", r#""\a\b\f\n\r\t\v""#),
            ("\u{0}\u{1b}\u{7f}", r#""\x00\x1b\x7f""#),
            // Letters, marks (even leading), symbols and U+FFFD are printable.
            (
                "é\u{301}x\u{301}€\u{fffd}日本",
                "\"é\u{301}x\u{301}€\u{fffd}日本\"",
            ),
            // Spaces other than U+0020, format, private-use and unassigned are not.
            (
                "\u{a0}\u{3000}\u{200b}\u{2028}",
                r#""\u00a0\u3000\u200b\u2028""#,
            ),
            ("\u{e000}\u{10ffff}\u{feff}", r#""\ue000\U0010ffff\ufeff""#),
            ("\u{1f600}", "\"\u{1f600}\""),
        ] {
            assert_eq!(crate::go::quote(input), quoted, "{input:?}");
        }
    }

    #[test]
    fn display_and_error() {
        let s = Status::bad_request("dryRun is not supported");
        assert_eq!(s.to_string(), "dryRun is not supported");
        let e: Box<dyn std::error::Error> = Box::new(s);
        assert_eq!(e.to_string(), "dryRun is not supported");
    }

    #[test]
    fn serde_json_serialization_has_go_field_order() {
        let v = serde_json::to_string(&Status::not_found("nodes", "n")).expect("json");
        assert_eq!(
            v,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"n\" not found","reason":"NotFound","details":{"name":"n","kind":"nodes"},"code":404}"#
        );
    }
}
