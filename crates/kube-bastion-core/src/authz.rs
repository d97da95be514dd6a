//! kube-style authorization attributes for proxy requests.

use crate::Status;

/// What kube-apiserver's request-info parser produces for a proxy request, and what an
/// authorizer decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `create`, `update`, `patch`, `delete`, or `""` for any other method.
    pub verb: &'static str,
    /// Always `""` (the core group).
    pub api_group: &'static str,
    /// Always `v1`.
    pub api_version: &'static str,
    /// `pods`, `services` or `nodes`.
    pub resource: &'static str,
    /// Always `proxy`.
    pub subresource: &'static str,
    /// The request namespace (`None` for nodes).
    pub namespace: Option<String>,
    /// The whole decoded id, scheme and port included (`https:web:8443`).
    pub name: String,
    /// Whether the request asks for a protocol upgrade.
    pub upgrade: bool,
}

impl Attributes {
    /// The 403 Status kube-apiserver writes when this request is denied for `user`, with the
    /// authorizer's optional `reason` appended after `": "`.
    pub fn forbidden(&self, user: &str, reason: &str) -> Status {
        let _ = (user, reason);
        todo!()
    }
}
