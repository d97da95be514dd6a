//! The authorization attributes the kubelet derives from a request path
//! (`pkg/kubelet/server/auth.go`, `GetRequestAttributes`, with `KubeletFineGrainedAuthz`
//! on, as from Kubernetes 1.33), for checking a `nodes/proxy` request before it reaches the
//! kubelet.
//!
//! Every kubelet request is a `nodes` request named after the node. The subresource comes
//! from the path: `/stats/...` is `stats`, `/metrics/...` `metrics`, `/logs/...` `log`,
//! `/checkpoint/...` `checkpoint`; `/pods` and `/runningpods` are `pods`, `/healthz/...`
//! `healthz`, `/configz` `configz` and `/statusz` `statusz`, each with `proxy` as the
//! fallback; everything else is `proxy`. The verb comes from the method (POST `create`, GET
//! `get`, ...; HEAD and anything else `""`), so a WebSocket exec, a GET, is `get nodes/proxy` to the kubelet
//! (kubernetes #119640). [`KubeletCheck::for_path`] adds one rule stricter than upstream:
//! `/exec`, `/attach`, `/run`, `/portForward` and `/cri` need `create` on `nodes/proxy`
//! whatever the method.

use http::Method;

use crate::Attributes;

/// Upstream's `isSubpath`: whether `subpath` is `path` or lies below it (`/statsx` is not
/// below `/stats`).
///
/// ```
/// use kube_bastion_core::kubelet::is_subpath;
/// assert!(is_subpath("/stats/summary", "/stats"));
/// assert!(!is_subpath("/statsx", "/stats"));
/// assert!(is_subpath("/foo/bar", "/"));
/// ```
pub fn is_subpath(subpath: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    subpath == path
        || (subpath.starts_with(path) && subpath.as_bytes().get(path.len()) == Some(&b'/'))
}

/// The kubelet's verb for a method: unlike kube-apiserver's request-info parser, HEAD is
/// not `get` (the kubelet's switch names POST, GET, PUT, PATCH and DELETE only).
fn kubelet_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// The kubelet paths that run something in a container or open a stream to it (`/cri`:
/// the streaming server's exec, attach and port-forward sessions).
const COMMAND_PATHS: [&str; 5] = ["/exec", "/attach", "/run", "/portForward", "/cri"];

/// What a request for one kubelet path needs: the verb, and the `nodes` subresources that
/// may allow it, asked in order (the first that allows decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletCheck {
    /// The verb asked for.
    pub verb: &'static str,
    /// The subresources of `nodes`, in the order they are asked.
    pub subresources: &'static [&'static str],
}

impl KubeletCheck {
    /// What the kubelet (fine-grained authorization on) asks for `method` on `path` (a
    /// cleaned, decoded path: `/stats/summary`).
    ///
    /// ```
    /// use http::Method;
    /// use kube_bastion_core::kubelet::KubeletCheck;
    ///
    /// let check = KubeletCheck::upstream(&Method::GET, "/pods");
    /// assert_eq!((check.verb, check.subresources), ("get", &["pods", "proxy"][..]));
    /// let check = KubeletCheck::upstream(&Method::GET, "/exec/default/web/app");
    /// assert_eq!((check.verb, check.subresources), ("get", &["proxy"][..]));
    /// ```
    pub fn upstream(method: &Method, path: &str) -> Self {
        let subresources: &'static [&'static str] = if is_subpath(path, "/stats") {
            &["stats"]
        } else if is_subpath(path, "/metrics") {
            &["metrics"]
        } else if is_subpath(path, "/logs") {
            &["log"]
        } else if is_subpath(path, "/checkpoint") {
            &["checkpoint"]
        } else if is_subpath(path, "/statusz") {
            &["statusz", "proxy"]
        } else if is_subpath(path, "/pods") || is_subpath(path, "/runningpods") {
            &["pods", "proxy"]
        } else if is_subpath(path, "/healthz") {
            &["healthz", "proxy"]
        } else if is_subpath(path, "/configz") {
            &["configz", "proxy"]
        } else {
            &["proxy"]
        };
        KubeletCheck {
            verb: kubelet_verb(method),
            subresources,
        }
    }

    /// [`upstream`](Self::upstream), except that `/exec`, `/attach`, `/run`,
    /// `/portForward` and `/cri` (the streaming sessions) need `create` on `nodes/proxy`
    /// whatever the method: a WebSocket exec is a GET, and `get nodes/proxy` must not be
    /// enough to run commands in the node's pods.
    ///
    /// ```
    /// use http::Method;
    /// use kube_bastion_core::kubelet::KubeletCheck;
    ///
    /// let check = KubeletCheck::for_path(&Method::GET, "/exec/default/web/app");
    /// assert_eq!((check.verb, check.subresources), ("create", &["proxy"][..]));
    /// ```
    pub fn for_path(method: &Method, path: &str) -> Self {
        if COMMAND_PATHS.iter().any(|p| is_subpath(path, p)) {
            return KubeletCheck {
                verb: "create",
                subresources: &["proxy"],
            };
        }
        Self::upstream(method, path)
    }

    /// The attributes asked for subresource `subresource` of node `node`.
    pub fn attributes(&self, subresource: &'static str, node: &str) -> Attributes {
        Attributes {
            verb: self.verb,
            api_group: "",
            api_version: "v1",
            resource: "nodes",
            subresource,
            namespace: None,
            name: node.to_owned(),
            upgrade: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runningpods_with_or_without_a_slash() {
        for path in ["/runningpods", "/runningpods/", "/runningpods/x"] {
            assert_eq!(
                KubeletCheck::upstream(&Method::GET, path).subresources,
                ["pods", "proxy"]
            );
        }
        assert_eq!(
            KubeletCheck::upstream(&Method::GET, "/runningpodsx").subresources,
            ["proxy"]
        );
    }

    #[test]
    fn command_paths_need_create() {
        for path in [
            "/exec/a/b/c",
            "/attach/a/b/c",
            "/run/a/b/c",
            "/portForward/a/b",
        ] {
            for method in [Method::GET, Method::POST, Method::OPTIONS] {
                let check = KubeletCheck::for_path(&method, path);
                assert_eq!((check.verb, check.subresources), ("create", &["proxy"][..]));
            }
        }
        assert_eq!(
            KubeletCheck::for_path(&Method::GET, "/executive").verb,
            "get"
        );
    }
}
