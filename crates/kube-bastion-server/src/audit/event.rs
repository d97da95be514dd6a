//! One `audit.k8s.io/v1` `Event`, serialized as kube-apiserver's log backend writes it: the
//! field names and order of the Go struct, `omitempty` where Go has it, timestamps as
//! `metav1.MicroTime` (RFC 3339 in UTC with six fractional digits).
//!
//! k8s-openapi has no `audit.k8s.io` types, and its `UserInfo` and `Status` serialize their
//! fields in alphabetical order (and `Status` adds `kind` and `apiVersion`), which is not what
//! an audit line looks like; so the event is a borrowed view written here, filled from the
//! request's [`Record`](super::Record) by the writer thread.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// The stage of a request an event reports (`audit.k8s.io/v1` `Stage`; `Panic` never happens
/// here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Stage {
    /// The request arrived (after authentication).
    RequestReceived,
    /// The response head went out; the body is still to come (upgrades, refused
    /// authentication).
    ResponseStarted,
    /// The response body ended (or the client went away).
    ResponseComplete,
}

/// `audit.k8s.io/v1` `Event` at level `Metadata`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Event<'a> {
    pub(crate) kind: &'static str,
    pub(crate) api_version: &'static str,
    pub(crate) level: &'static str,
    #[serde(rename = "auditID")]
    pub(crate) audit_id: &'a str,
    pub(crate) stage: Stage,
    #[serde(rename = "requestURI")]
    pub(crate) request_uri: &'a str,
    pub(crate) verb: &'a str,
    pub(crate) user: User<'a>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) source_ips: &'a [IpAddr],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) object_ref: Option<ObjectRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_status: Option<ResponseStatus<'a>>,
    pub(crate) request_received_timestamp: MicroTime,
    pub(crate) stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<Annotations<'a>>,
}

/// `authentication.k8s.io/v1` `UserInfo`, every field `omitempty` (a request refused by
/// authentication has `"user":{}`).
#[derive(Debug, Default, Serialize)]
pub(crate) struct User<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) username: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) uid: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) extra: Option<&'a BTreeMap<String, Vec<String>>>,
}

/// `audit.k8s.io/v1` `ObjectReference`: what request info names (`uid`, `apiGroup` and
/// `resourceVersion` are empty for the proxy subresources, so never written).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectRef<'a> {
    pub(crate) resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) name: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: &'a str,
}

/// `metav1.Status` as an audit event carries it: `metadata` always (an empty `ListMeta`), the
/// bounded fields kube-apiserver copies from a Status answer, and the code.
#[derive(Debug, Serialize)]
pub(crate) struct ResponseStatus<'a> {
    pub(crate) metadata: Empty,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    pub(crate) code: u16,
}

impl ResponseStatus<'_> {
    /// A status with only a code, as kube-apiserver records a response it did not write a
    /// Status for.
    pub(crate) fn code(code: u16) -> Self {
        ResponseStatus {
            metadata: Empty {},
            status: None,
            message: None,
            reason: None,
            code,
        }
    }

    /// The authentication layer's 401 answer.
    pub(crate) fn unauthorized() -> Self {
        ResponseStatus {
            metadata: Empty {},
            status: Some("Failure"),
            message: Some("Unauthorized"),
            reason: Some("Unauthorized"),
            code: 401,
        }
    }
}

/// An empty JSON object (`metav1.ListMeta{}`).
#[derive(Debug, Serialize)]
pub(crate) struct Empty {}

/// The authorization annotations kube-apiserver's authorization filter adds.
#[derive(Debug, Serialize)]
pub(crate) struct Annotations<'a> {
    /// `allow` or `forbid`.
    #[serde(rename = "authorization.k8s.io/decision")]
    pub(crate) decision: &'static str,
    /// The authorizer's reason (may be empty).
    #[serde(rename = "authorization.k8s.io/reason")]
    pub(crate) reason: &'a str,
}

/// A wall-clock time as `metav1.MicroTime` (the epoch if the clock is out of jiff's range).
pub(crate) fn micro_time(at: SystemTime) -> MicroTime {
    MicroTime(Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(micros: u64) -> SystemTime {
        // 2026-12-07T10:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_637_600) + Duration::from_micros(micros)
    }

    /// Field names, order and omissions as kube-apiserver writes a Metadata-level event
    /// (a line of a real audit log, with values replaced).
    #[test]
    fn complete_event_has_kube_apiserver_shape() {
        let groups = vec!["developers".to_owned(), "system:authenticated".to_owned()];
        let ips: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: "0b5a6f6e-3f8e-4b8e-9a51-4a2b1d2c3e4f",
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/demo/pods/echo-0:8080/proxy/x?y=1",
            verb: "get",
            user: User {
                username: "alice",
                uid: "1001",
                groups: &groups,
                extra: None,
            },
            source_ips: &ips,
            user_agent: "curl/8.5.0",
            object_ref: Some(ObjectRef {
                resource: "pods",
                namespace: Some("demo"),
                name: "echo-0:8080",
                api_version: "v1",
                subresource: "proxy",
            }),
            response_status: Some(ResponseStatus::code(200)),
            request_received_timestamp: micro_time(at(123_456)),
            stage_timestamp: micro_time(at(1_500_000)),
            annotations: Some(Annotations {
                decision: "allow",
                reason: "",
            }),
        };
        let expected = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0b5a6f6e-3f8e-4b8e-9a51-4a2b1d2c3e4f","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/demo/pods/echo-0:8080/proxy/x?y=1","verb":"get","user":{"username":"alice","uid":"1001","groups":["developers","system:authenticated"]},"sourceIPs":["10.0.0.7","127.0.0.1"],"userAgent":"curl/8.5.0","objectRef":{"resource":"pods","namespace":"demo","name":"echo-0:8080","apiVersion":"v1","subresource":"proxy"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-07T10:00:00.123456Z","stageTimestamp":"2026-12-07T10:00:01.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;
        assert_eq!(serde_json::to_string(&event).unwrap(), expected);
    }

    /// A request refused by authentication: `"user":{}`, no user agent, a node (no
    /// namespace), the 401 Status fields, no annotations; a RequestReceived event has no
    /// `responseStatus`.
    #[test]
    fn refused_and_received_events_omit_empty_fields() {
        let ips: Vec<IpAddr> = vec!["::1".parse().unwrap()];
        let mut event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: "id",
            stage: Stage::ResponseStarted,
            request_uri: "/api/v1/nodes/n1/proxy/",
            verb: "",
            user: User::default(),
            source_ips: &ips,
            user_agent: "",
            object_ref: Some(ObjectRef {
                resource: "nodes",
                namespace: None,
                name: "n1",
                api_version: "v1",
                subresource: "proxy",
            }),
            response_status: Some(ResponseStatus::unauthorized()),
            request_received_timestamp: micro_time(at(0)),
            stage_timestamp: micro_time(at(7)),
            annotations: None,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id","stage":"ResponseStarted","requestURI":"/api/v1/nodes/n1/proxy/","verb":"","user":{},"sourceIPs":["::1"],"objectRef":{"resource":"nodes","name":"n1","apiVersion":"v1","subresource":"proxy"},"responseStatus":{"metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401},"requestReceivedTimestamp":"2026-12-07T10:00:00.000000Z","stageTimestamp":"2026-12-07T10:00:00.000007Z"}"#
        );
        event.stage = Stage::RequestReceived;
        event.response_status = None;
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.contains(r#""stage":"RequestReceived""#), "{text}");
        assert!(!text.contains("responseStatus"), "{text}");
    }

    #[test]
    fn extra_is_written_when_present() {
        let extra = BTreeMap::from([("scopes".to_owned(), vec!["a".to_owned()])]);
        let user = User {
            username: "u",
            uid: "",
            groups: &[],
            extra: Some(&extra),
        };
        assert_eq!(
            serde_json::to_string(&user).unwrap(),
            r#"{"username":"u","extra":{"scopes":["a"]}}"#
        );
    }
}
