//! `metav1.Status`, the only error body a client ever sees.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// A failure Status, serialized exactly as kube-apiserver writes it
/// (`kind`, `apiVersion`, `metadata`, `status`, `message`, `reason`, `details`, `code`).
#[derive(Clone, Debug, PartialEq)]
pub struct Status(meta::Status);

impl Status {
    /// A Status with this code, reason (`None` leaves it out) and message.
    pub fn new(code: u16, reason: Option<&str>, message: impl Into<String>) -> Self {
        let _ = (code, reason, message.into());
        todo!()
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Some("BadRequest"), message)
    }

    /// 404 NotFound for `resource` (plural, e.g. `pods`) `name`: message
    /// `<resource> "<name>" not found`, details `{name, kind: <resource>}`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        let _ = (resource, name);
        todo!()
    }

    /// 503 ServiceUnavailable.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, Some("ServiceUnavailable"), message)
    }

    /// 500 with no reason and the raw message, as upstream writes untyped errors.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, None, message)
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.0.code.unwrap_or(500) as u16
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.0.message.as_deref().unwrap_or("")
    }

    /// The reason, when set.
    pub fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// The underlying k8s-openapi value.
    pub fn as_inner(&self) -> &meta::Status {
        &self.0
    }

    /// The JSON body, byte for byte as kube-apiserver writes it.
    pub fn to_json(&self) -> Vec<u8> {
        todo!()
    }
}
