//! kube-apiserver's RBAC authorizer as data and a pure function: [`RbacPolicy`] holds
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings, and
//! [`RbacPolicy::authorize`] decides on a [`RbacRequest`] exactly as upstream's
//! `RBACAuthorizer.Authorize` does (`plugin/pkg/auth/authorizer/rbac`,
//! `pkg/apis/rbac/v1/evaluation_helpers.go`, `pkg/registry/rbac/validation/rule.go`):
//!
//! * ClusterRoleBindings always apply; RoleBindings only in the request's namespace, and a
//!   RoleBinding to a ClusterRole grants its rules in that namespace only;
//! * subjects: `User` by exact name, `Group` by membership, `ServiceAccount` as the user
//!   `system:serviceaccount:<namespace>:<name>` (the namespace defaults to the binding's;
//!   a ClusterRoleBinding's ServiceAccount subject without one never matches);
//! * rules: verbs and API groups exact or `*`; resources exact on `resource/subresource`,
//!   `*`, or `*/<subresource>` (there is no `pods/*`); `resourceNames` compared with the
//!   whole name (for the proxy: the whole id, `https:web:8443`); non-resource URLs exact,
//!   `*`, or a `prefix*`;
//! * aggregated ClusterRoles count with their rules as written.
//!
//! RBAC never denies: it allows or has no opinion, with the reason upstream gives
//! (`RBAC: ...` when a binding names a role that does not exist).

use std::collections::HashMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use serde_json::Value;

use crate::Attributes;
use crate::cluster::{LoadError, parse_documents};

/// The attributes RBAC decides on: upstream's `authorizer.Attributes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RbacRequest<'a> {
    /// The user name.
    pub user: &'a str,
    /// The user's groups.
    pub groups: &'a [String],
    /// The verb (`get`, `create`, ...).
    pub verb: &'a str,
    /// The API group (`""` for the core group).
    pub api_group: &'a str,
    /// The resource (`pods`).
    pub resource: &'a str,
    /// The subresource (`proxy`), or `""`.
    pub subresource: &'a str,
    /// The namespace, or `""` for cluster-scoped requests.
    pub namespace: &'a str,
    /// The object name, or `""`.
    pub name: &'a str,
    /// The URL path of a non-resource request.
    pub path: &'a str,
    /// A resource request (else a non-resource URL).
    pub resource_request: bool,
}

impl<'a> RbacRequest<'a> {
    /// The request of a proxy call with these [`Attributes`], by `user` in `groups`.
    pub fn proxy(attributes: &'a Attributes, user: &'a str, groups: &'a [String]) -> Self {
        RbacRequest {
            user,
            groups,
            verb: attributes.verb,
            api_group: attributes.api_group,
            resource: attributes.resource,
            subresource: attributes.subresource,
            namespace: attributes.namespace.as_deref().unwrap_or(""),
            name: &attributes.name,
            path: "",
            resource_request: true,
        }
    }
}

/// RBAC's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RbacDecision {
    /// A rule of a binding that applies to the user allows the request.
    Allow,
    /// Nothing allows it, with upstream's reason (empty, or `RBAC: <errors>` when bindings
    /// name roles that do not exist).
    NoOpinion(String),
}

/// Roles, ClusterRoles and their bindings, indexed for [`authorize`](Self::authorize).
///
/// Bindings are indexed by the users and groups their subjects name (a ServiceAccount
/// subject by its user name `system:serviceaccount:<namespace>:<name>`), so a decision
/// reads only the bindings that name the requesting user or one of its groups, in the order
/// upstream visits them, whatever the number of bindings in the cluster.
#[derive(Clone, Debug, Default)]
pub struct RbacPolicy {
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// RoleBindings by namespace.
    role_bindings: HashMap<String, Bindings<RoleBinding>>,
    cluster_role_bindings: Bindings<ClusterRoleBinding>,
}

/// Bindings in their original order, with the positions of the bindings that name each user
/// and each group.
#[derive(Clone, Debug)]
struct Bindings<B> {
    list: Vec<B>,
    users: HashMap<String, Vec<u32>>,
    groups: HashMap<String, Vec<u32>>,
}

impl<B> Default for Bindings<B> {
    fn default() -> Self {
        Bindings {
            list: Vec::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl<B> Bindings<B> {
    /// Adds `binding`, whose `subjects` are indexed with `namespace` as the default
    /// namespace of ServiceAccount subjects (`""` for ClusterRoleBindings: no default).
    fn push(&mut self, binding: B, subjects: &[Subject], namespace: &str) {
        let Ok(position) = u32::try_from(self.list.len()) else {
            return;
        };
        self.list.push(binding);
        for subject in subjects {
            let (map, key) = match subject.kind.as_str() {
                "User" => (&mut self.users, subject.name.clone()),
                "Group" => (&mut self.groups, subject.name.clone()),
                "ServiceAccount" => {
                    let namespace = match subject.namespace.as_deref() {
                        Some(ns) if !ns.is_empty() => ns,
                        _ => namespace,
                    };
                    if namespace.is_empty() {
                        continue;
                    }
                    (
                        &mut self.users,
                        format!("system:serviceaccount:{namespace}:{}", subject.name),
                    )
                }
                _ => continue,
            };
            let positions = map.entry(key).or_default();
            // A binding naming the same subject twice is listed once.
            if positions.last() != Some(&position) {
                positions.push(position);
            }
        }
    }

    /// The bindings naming `user` or one of `groups`, in their original order.
    fn applying_to<'s>(&'s self, user: &str, groups: &[String]) -> impl Iterator<Item = &'s B> {
        let mut positions: Vec<u32> = self.users.get(user).cloned().unwrap_or_default();
        let mut merged = false;
        for group in groups {
            if let Some(more) = self.groups.get(group.as_str()) {
                positions.extend_from_slice(more);
                merged = true;
            }
        }
        if merged {
            positions.sort_unstable();
            positions.dedup();
        }
        positions
            .into_iter()
            .filter_map(|position| self.list.get(position as usize))
    }
}

impl RbacPolicy {
    /// A policy of these objects (later duplicates replace earlier ones for roles).
    pub fn new(
        roles: impl IntoIterator<Item = Role>,
        cluster_roles: impl IntoIterator<Item = ClusterRole>,
        role_bindings: impl IntoIterator<Item = RoleBinding>,
        cluster_role_bindings: impl IntoIterator<Item = ClusterRoleBinding>,
    ) -> Self {
        let mut policy = RbacPolicy::default();
        for role in roles {
            let namespace = role.metadata.namespace.clone().unwrap_or_default();
            let name = role.metadata.name.clone().unwrap_or_default();
            policy
                .roles
                .insert((namespace, name), role.rules.unwrap_or_default());
        }
        for role in cluster_roles {
            let name = role.metadata.name.clone().unwrap_or_default();
            policy
                .cluster_roles
                .insert(name, role.rules.unwrap_or_default());
        }
        for binding in role_bindings {
            let namespace = binding.metadata.namespace.clone().unwrap_or_default();
            let subjects = binding.subjects.clone().unwrap_or_default();
            policy
                .role_bindings
                .entry(namespace.clone())
                .or_default()
                .push(binding, &subjects, &namespace);
        }
        for binding in cluster_role_bindings {
            let subjects = binding.subjects.clone().unwrap_or_default();
            policy.cluster_role_bindings.push(binding, &subjects, "");
        }
        policy
    }

    /// The Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in `texts` (YAML or
    /// JSON as [`parse_objects`](crate::parse_objects) reads them: documents, `kind: List`,
    /// typed lists); other kinds are skipped.
    ///
    /// ```
    /// use kube_bastion_core::{RbacDecision, RbacPolicy, RbacRequest};
    ///
    /// let policy = RbacPolicy::from_texts([r#"
    /// apiVersion: rbac.authorization.k8s.io/v1
    /// kind: ClusterRoleBinding
    /// metadata: {name: readers}
    /// roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read-proxy}
    /// subjects: [{kind: Group, name: dev}]
    /// ---
    /// apiVersion: rbac.authorization.k8s.io/v1
    /// kind: ClusterRole
    /// metadata: {name: read-proxy}
    /// rules: [{apiGroups: [""], resources: [pods/proxy], verbs: [get]}]
    /// "#]).unwrap();
    /// let groups = ["dev".to_owned()];
    /// let request = RbacRequest {
    ///     user: "alice", groups: &groups, verb: "get", resource: "pods",
    ///     subresource: "proxy", namespace: "shop", name: "web", resource_request: true,
    ///     ..RbacRequest::default()
    /// };
    /// assert_eq!(policy.authorize(&request), RbacDecision::Allow);
    /// ```
    pub fn from_texts<'t>(texts: impl IntoIterator<Item = &'t str>) -> Result<Self, LoadError> {
        let mut objects = RbacObjects::default();
        for text in texts {
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            for (index, document) in parse_documents(text)?.into_iter().enumerate() {
                objects.collect(index, None, document)?;
            }
        }
        Ok(RbacPolicy::new(
            objects.roles,
            objects.cluster_roles,
            objects.role_bindings,
            objects.cluster_role_bindings,
        ))
    }

    /// How many bindings the policy holds.
    pub fn bindings(&self) -> usize {
        self.cluster_role_bindings.list.len()
            + self
                .role_bindings
                .values()
                .map(|b| b.list.len())
                .sum::<usize>()
    }

    /// Upstream's `VisitRulesFor`: calls `visit` with the rules of every binding that
    /// applies to the request's user in its namespace (ClusterRoleBindings first), or with
    /// the error of a binding whose role does not exist, until `visit` returns `false`.
    fn visit_rules_for(
        &self,
        request: &RbacRequest<'_>,
        mut visit: impl FnMut(Result<&[PolicyRule], String>) -> bool,
    ) {
        for binding in self
            .cluster_role_bindings
            .applying_to(request.user, request.groups)
        {
            if !visit(self.rules_of(&binding.role_ref, "")) {
                return;
            }
        }
        if request.namespace.is_empty() {
            return;
        }
        let Some(bindings) = self.role_bindings.get(request.namespace) else {
            return;
        };
        for binding in bindings.applying_to(request.user, request.groups) {
            if !visit(self.rules_of(&binding.role_ref, request.namespace)) {
                return;
            }
        }
    }

    /// Every rule that applies to `user` in `groups` in `namespace` (`""`: cluster-wide
    /// bindings only), in upstream's order (`DefaultRuleResolver.RulesFor`), without the
    /// errors of bindings whose roles do not exist.
    pub fn rules_for(&self, user: &str, groups: &[String], namespace: &str) -> Vec<PolicyRule> {
        let request = RbacRequest {
            user,
            groups,
            namespace,
            ..RbacRequest::default()
        };
        let mut out = Vec::new();
        self.visit_rules_for(&request, |rules| {
            out.extend(rules.into_iter().flatten().cloned());
            true
        });
        out
    }

    /// Decides on `request` as upstream's RBAC authorizer does.
    pub fn authorize(&self, request: &RbacRequest<'_>) -> RbacDecision {
        let mut errors = Vec::new();
        let mut allowed = false;
        self.visit_rules_for(request, |rules| match rules {
            Ok(rules) => {
                allowed = rules.iter().any(|rule| rule_allows(request, rule));
                !allowed
            }
            Err(error) => {
                errors.push(error);
                true
            }
        });
        if allowed {
            return RbacDecision::Allow;
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        RbacDecision::NoOpinion(reason)
    }

    /// Upstream's `GetRoleReferenceRules`.
    fn rules_of(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(&(namespace.to_owned(), role_ref.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

/// RBAC objects found in documents.
#[derive(Default)]
struct RbacObjects {
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl RbacObjects {
    /// Walks one document: arrays and lists are flattened (a typed list's items take its
    /// element kind), RBAC objects decoded, anything else skipped.
    fn collect(
        &mut self,
        index: usize,
        inherited: Option<&str>,
        value: Value,
    ) -> Result<(), LoadError> {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.collect(index, inherited, item)?;
                }
                Ok(())
            }
            Value::Object(mut map) => {
                let kind = map
                    .get("kind")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| inherited.map(str::to_owned))
                    .unwrap_or_default();
                if let Some(Value::Array(items)) = map.remove("items") {
                    let element = kind.strip_suffix("List").filter(|k| !k.is_empty());
                    for item in items {
                        self.collect(index, element, item)?;
                    }
                    return Ok(());
                }
                let value = Value::Object(map);
                let decode = |error: serde_json::Error| LoadError::Object {
                    index,
                    kind: kind.clone(),
                    message: error.to_string(),
                };
                match kind.as_str() {
                    "Role" => self
                        .roles
                        .push(serde_json::from_value(value).map_err(decode)?),
                    "ClusterRole" => self
                        .cluster_roles
                        .push(serde_json::from_value(value).map_err(decode)?),
                    "RoleBinding" => self
                        .role_bindings
                        .push(serde_json::from_value(value).map_err(decode)?),
                    "ClusterRoleBinding" => self
                        .cluster_role_bindings
                        .push(serde_json::from_value(value).map_err(decode)?),
                    _ => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Upstream's `appliesTo`: the index of the first subject that names the user.
pub fn applies_to(
    request: &RbacRequest<'_>,
    subjects: &[Subject],
    namespace: &str,
) -> Option<usize> {
    subjects
        .iter()
        .position(|subject| applies_to_user(request, subject, namespace))
}

fn applies_to_user(request: &RbacRequest<'_>, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => request.user == subject.name,
        "Group" => request.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = match subject.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => ns,
                _ => namespace,
            };
            !namespace.is_empty() && matches_username(namespace, &subject.name, request.user)
        }
        _ => false,
    }
}

/// Upstream's `serviceaccount.MatchesUsername`: whether `username` is exactly
/// `system:serviceaccount:<namespace>:<name>`.
pub fn matches_username(namespace: &str, name: &str, username: &str) -> bool {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(name)
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(request: &RbacRequest<'_>, rule: &PolicyRule) -> bool {
    let verb = rule.verbs.iter().any(|v| v == "*" || v == request.verb);
    if !request.resource_request {
        return verb
            && rule.non_resource_urls.iter().flatten().any(|url| {
                url == "*"
                    || url == request.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| request.path.starts_with(prefix))
            });
    }
    let group = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == request.api_group);
    // `resource/subresource` compared piecewise: no string is built per rule.
    let combined = |r: &str| match request.subresource {
        "" => r == request.resource,
        sub => {
            r.strip_prefix(request.resource)
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(sub)
        }
    };
    let resource = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || combined(r)
            || (!request.subresource.is_empty()
                && r.len() == request.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(request.subresource))
    });
    let name = rule
        .resource_names
        .as_deref()
        .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == request.name));
    verb && group && resource && name
}
