//! The proxy route grammar.
//!
//! `/api/v1/namespaces/{ns}/pods/{id}/proxy[/{path}]`,
//! `/api/v1/namespaces/{ns}/services/{id}/proxy[/{path}]` and
//! `/api/v1/nodes/{id}/proxy[/{path}]` are proxy requests; every other path is
//! [`Route::NotProxy`] and is never an error.

use http::{HeaderMap, Method, Uri};

use crate::{Attributes, Status, TargetId};

/// Which kind of object a proxy request targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `pods/proxy` (namespaced).
    Pod,
    /// `services/proxy` (namespaced).
    Service,
    /// `nodes/proxy` (cluster-scoped).
    Node,
}

impl ResourceKind {
    /// The plural resource name: `pods`, `services` or `nodes`.
    pub fn resource(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pods",
            ResourceKind::Service => "services",
            ResourceKind::Node => "nodes",
        }
    }

    /// The singular name used in upstream messages: `pod`, `service` or `node`.
    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pod",
            ResourceKind::Service => "service",
            ResourceKind::Node => "node",
        }
    }
}

/// The outcome of routing one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Route {
    /// Not a proxy route: the host's other handlers should see it, untouched.
    NotProxy,
    /// A proxy route (which may still be refused later: bad id, method, `dryRun`, ...).
    Proxy(ProxyRequest),
}

/// What to do with a proxy request once its target is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answer `301 Moved Permanently` with this `Location` and an empty body; the backend is
    /// not contacted (bare `.../proxy` on GET or HEAD).
    Redirect {
        /// The `Location` header value.
        location: String,
    },
    /// Send the request to the backend.
    Forward {
        /// The origin-form request target for the backend: encoded path plus `?` and the raw
        /// query when there is one.
        path_and_query: String,
        /// The value of `X-Forwarded-Uri` (not sent on upgrades).
        forwarded_uri: String,
    },
}

/// A parsed proxy request: kind, namespace, raw id, sub-path and raw query.
///
/// One parse serves routing, authorization ([`ProxyRequest::attributes`]) and resolution
/// ([`crate::resolve`]), so the authorized name is always the resolved one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    kind: ResourceKind,
    namespace: Option<String>,
    id: String,
    method: Method,
    upgrade: bool,
    // further private fields: decoded request path, path option, raw query, dry-run flag ...
}

impl ProxyRequest {
    /// Routes a request from its method, URI and headers (headers decide whether it is an
    /// upgrade: any `Connection` value containing `upgrade`, case-insensitive).
    pub fn route(method: &Method, uri: &Uri, headers: &HeaderMap) -> Route {
        let _ = (method, uri, headers);
        todo!()
    }

    /// Routes from request parts.
    pub fn from_parts(parts: &http::request::Parts) -> Route {
        Self::route(&parts.method, &parts.uri, &parts.headers)
    }

    /// Pods, services or nodes.
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The namespace (`None` for nodes).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The decoded `{id}` segment exactly as received: the authorization name.
    pub fn raw_id(&self) -> &str {
        &self.id
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether this is an upgrade request (WebSocket, SPDY, ...).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// The proxy prefix, e.g. `/api/v1/namespaces/ns/services/svc/proxy`, used to rewrite
    /// `Location` headers and HTML links back under the proxy.
    pub fn prefix(&self) -> &str {
        todo!()
    }

    /// kube-style authorization attributes for this request.
    pub fn attributes(&self) -> Attributes {
        todo!()
    }

    /// Checks what kube-apiserver checks before looking anything up, in its order:
    /// method routed (else 405), `dryRun` absent (else 400).
    pub fn check(&self) -> Result<(), Status> {
        todo!()
    }

    /// Parses the id: 400 `invalid {pod,service,node} request "<id>"` when it is malformed.
    pub fn target_id(&self) -> Result<TargetId, Status> {
        todo!()
    }

    /// The 301 or the backend request target.
    pub fn plan(&self) -> Plan {
        todo!()
    }
}
