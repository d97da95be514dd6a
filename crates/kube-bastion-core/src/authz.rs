//! kube-style authorization attributes for proxy requests.

use http::Method;

use crate::Status;
use crate::go::push_quoted;

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
    /// The verb kube-apiserver's request-info parser derives from an HTTP method on a
    /// resource with a name: GET and HEAD are `get`, POST `create`, PUT `update`, PATCH
    /// `patch`, DELETE `delete`; any other method (OPTIONS, PROPFIND, ...) gets `""`, which only
    /// `*` rules match.
    pub fn verb_for(method: &Method) -> &'static str {
        match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
    }

    /// The 403 Status kube-apiserver writes when this request is denied for `user`, with the
    /// authorizer's optional `reason` appended after `": "`.
    ///
    /// ```
    /// use http::{HeaderMap, Method, Uri};
    /// use kube_bastion_core::{ProxyRequest, Route};
    ///
    /// let uri = Uri::from_static("/api/v1/namespaces/ns/pods/web:8080/proxy/");
    /// let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new())
    /// else { unreachable!() };
    /// let status = request.attributes().forbidden("alice", "");
    /// assert_eq!(status.code(), 403);
    /// assert_eq!(
    ///     status.message(),
    ///     r#"pods "web:8080" is forbidden: User "alice" cannot get resource "pods/proxy" in API group "" in the namespace "ns""#
    /// );
    /// ```
    pub fn forbidden(&self, user: &str, reason: &str) -> Status {
        let mut cause = String::with_capacity(128 + user.len() + reason.len());
        cause.push_str("User ");
        push_quoted(user.as_bytes(), &mut cause);
        cause.push_str(" cannot ");
        cause.push_str(self.verb);
        cause.push_str(" resource ");
        if self.subresource.is_empty() {
            push_quoted(self.resource.as_bytes(), &mut cause);
        } else {
            push_quoted(
                format!("{}/{}", self.resource, self.subresource).as_bytes(),
                &mut cause,
            );
        }
        cause.push_str(" in API group ");
        push_quoted(self.api_group.as_bytes(), &mut cause);
        match self.namespace.as_deref() {
            Some(namespace) if !namespace.is_empty() => {
                cause.push_str(" in the namespace ");
                push_quoted(namespace.as_bytes(), &mut cause);
            }
            _ => cause.push_str(" at the cluster scope"),
        }
        if !reason.is_empty() {
            cause.push_str(": ");
            cause.push_str(reason);
        }
        Status::forbidden(self.resource, &self.name, cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(
        namespace: Option<&str>,
        resource: &'static str,
        verb: &'static str,
    ) -> Attributes {
        Attributes {
            verb,
            api_group: "",
            api_version: "v1",
            resource,
            subresource: "proxy",
            namespace: namespace.map(str::to_owned),
            name: "web:8080".to_owned(),
            upgrade: false,
        }
    }

    #[test]
    fn forbidden_namespaced() {
        let status =
            attributes(Some("ns"), "services", "create").forbidden("bob", "no RBAC policy matched");
        assert_eq!(
            String::from_utf8(status.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"web:8080\" is forbidden: User \"bob\" cannot create resource \"services/proxy\" in API group \"\" in the namespace \"ns\": no RBAC policy matched","reason":"Forbidden","details":{"name":"web:8080","kind":"services"},"code":403}"#
        );
    }

    #[test]
    fn forbidden_cluster_scope_and_empty_verb() {
        let status = attributes(None, "nodes", "").forbidden("system:anonymous", "");
        assert_eq!(
            status.message(),
            r#"nodes "web:8080" is forbidden: User "system:anonymous" cannot  resource "nodes/proxy" in API group "" at the cluster scope"#
        );
        assert_eq!(status.reason(), Some("Forbidden"));
    }

    #[test]
    fn forbidden_quotes_odd_user_names() {
        let status = attributes(Some("ns"), "pods", "get").forbidden("a\"b\n", "");
        assert!(
            status.message().contains(r#"User "a\"b\n" cannot"#),
            "{}",
            status.message()
        );
    }

    #[test]
    fn verbs() {
        let verbs: Vec<_> = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
        ]
        .iter()
        .map(|m| Attributes::verb_for(&Method::from_bytes(m.as_bytes()).unwrap()))
        .collect();
        assert_eq!(
            verbs,
            ["get", "get", "create", "update", "patch", "delete", "", ""]
        );
    }
}
