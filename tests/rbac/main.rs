//! kube-apiserver's RBAC, from upstream's own test tables (`tests/vectors/rbac_*.json`,
//! copied from the shared vectors): rule matching (verbs, API groups, `*/subresource`,
//! `resourceNames`, non-resource URLs), subjects (users, groups, service accounts and their
//! namespaces), whole authorizations over bindings, and the rules a user gets.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_bastion_core::rbac::{applies_to, matches_username, rule_allows};
use kube_bastion_core::{RbacDecision, RbacPolicy, RbacRequest};
use serde_json::Value;

fn rows(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    let value: Value = serde_json::from_str(&text).unwrap();
    value["rows"].as_array().unwrap().clone()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|s| text(s).to_owned()).collect())
        .unwrap_or_default()
}

/// The request of a row; `groups` must outlive it.
fn request<'a>(value: &'a Value, groups: &'a [String]) -> RbacRequest<'a> {
    RbacRequest {
        user: text(&value["user"]),
        groups,
        verb: text(&value["verb"]),
        api_group: text(&value["apiGroup"]),
        resource: text(&value["resource"]),
        subresource: text(&value["subresource"]),
        namespace: text(&value["namespace"]),
        name: text(&value["name"]),
        path: text(&value["path"]),
        resource_request: value["resourceRequest"].as_bool().unwrap_or(false),
    }
}

#[test]
fn rule_matching_follows_upstreams_table() {
    let rows = rows("rbac_rule_matching.json");
    assert!(rows.len() >= 50);
    for row in rows {
        let rules: Vec<PolicyRule> = serde_json::from_value(row["input"]["rules"].clone()).unwrap();
        let groups = strings(&row["input"]["request"]["groups"]);
        let request = request(&row["input"]["request"], &groups);
        let allowed = rules.iter().any(|rule| rule_allows(&request, rule));
        assert_eq!(
            allowed,
            row["expected"]["allowed"].as_bool().unwrap(),
            "{}",
            row["name"]
        );
    }
}

/// staticRoles1 of upstream's `TestDefaultRuleResolver`.
fn static_roles() -> (RbacPolicy, [(&'static str, PolicyRule); 3]) {
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| PolicyRule {
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        ..PolicyRule::default()
    };
    let read_pods = rule(&["GET", "WATCH"], &[""], &["pods"]);
    let read_services = rule(&["GET", "WATCH"], &[""], &["services"]);
    let admin = rule(&["*"], &["*"], &["*"]);
    let meta = |namespace: Option<&str>, name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    };
    let subject = |kind: &str, name: &str| Subject {
        kind: kind.to_owned(),
        name: name.to_owned(),
        ..Subject::default()
    };
    let policy = RbacPolicy::new(
        [Role {
            metadata: meta(Some("namespace1"), "readthings"),
            rules: Some(vec![read_pods.clone(), read_services.clone()]),
        }],
        [ClusterRole {
            metadata: meta(None, "cluster-admin"),
            rules: Some(vec![admin.clone()]),
            ..ClusterRole::default()
        }],
        [RoleBinding {
            metadata: meta(Some("namespace1"), "readthings"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "readthings".into(),
            },
            subjects: Some(vec![subject("User", "foobar"), subject("Group", "group1")]),
        }],
        [ClusterRoleBinding {
            metadata: meta(None, "cluster-admins"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "cluster-admin".into(),
            },
            subjects: Some(vec![subject("User", "admin"), subject("Group", "admin")]),
        }],
    );
    (
        policy,
        [
            ("ruleAdmin (* * *)", admin),
            ("ruleReadPods", read_pods),
            ("ruleReadServices", read_services),
        ],
    )
}

/// A policy whose only binding (a RoleBinding in `namespace`, or a ClusterRoleBinding when it
/// is empty) grants everything to `subjects`.
fn one_binding_policy(namespace: &str, subjects: Vec<Subject>) -> RbacPolicy {
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some("all".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    let role_ref = RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "ClusterRole".into(),
        name: "all".into(),
    };
    let metadata = ObjectMeta {
        name: Some("binding".into()),
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        ..ObjectMeta::default()
    };
    if namespace.is_empty() {
        let binding = ClusterRoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        };
        RbacPolicy::new([], [role], [], [binding])
    } else {
        let binding = RoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        };
        RbacPolicy::new([], [role], [binding], [])
    }
}

#[test]
fn subjects_bindings_and_decisions_follow_upstreams_tables() {
    let mut levels = std::collections::BTreeMap::<String, usize>::new();
    for row in rows("rbac_subjects.json") {
        let input = &row["input"];
        let expected = &row["expected"];
        let level = text(&input["level"]).to_owned();
        *levels.entry(level.clone()).or_default() += 1;
        match level.as_str() {
            "appliesTo" => {
                let subjects: Vec<Subject> =
                    serde_json::from_value(input["subjects"].clone()).unwrap();
                let groups = strings(&input["user"]["groups"]);
                let request = RbacRequest {
                    user: text(&input["user"]["name"]),
                    groups: &groups,
                    ..RbacRequest::default()
                };
                let index = applies_to(&request, &subjects, text(&input["bindingNamespace"]));
                assert_eq!(
                    index.is_some(),
                    expected["applies"].as_bool().unwrap(),
                    "{}",
                    row["name"]
                );
                assert_eq!(
                    index.map(|i| i as u64),
                    expected["subjectIndex"].as_u64(),
                    "{}",
                    row["name"]
                );
                // The policy's subject index selects exactly the bindings `applies_to` does.
                let namespace = text(&input["bindingNamespace"]);
                let policy = one_binding_policy(namespace, subjects);
                let request = RbacRequest {
                    verb: "get",
                    resource: "pods",
                    subresource: "proxy",
                    namespace,
                    resource_request: true,
                    ..request
                };
                assert_eq!(
                    policy.authorize(&request) == RbacDecision::Allow,
                    expected["applies"].as_bool().unwrap(),
                    "indexed: {}",
                    row["name"]
                );
            }
            "serviceaccount.MatchesUsername" => assert_eq!(
                matches_username(
                    text(&input["namespace"]),
                    text(&input["name"]),
                    text(&input["username"])
                ),
                expected["matches"].as_bool().unwrap(),
                "{}",
                row["name"]
            ),
            "RBACAuthorizer.Authorize" => {
                let (mut roles, mut cluster_roles, mut bindings, mut cluster_bindings) =
                    (vec![], vec![], vec![], vec![]);
                for binding in input["bindings"].as_array().unwrap() {
                    let role = &binding["role"];
                    let rules: Vec<PolicyRule> =
                        serde_json::from_value(role["rules"].clone()).unwrap();
                    let namespace = binding["namespace"].as_str().map(str::to_owned);
                    let meta = |namespace: Option<String>, name: &str| ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace,
                        ..ObjectMeta::default()
                    };
                    match text(&role["kind"]) {
                        "Role" => roles.push(Role {
                            metadata: meta(namespace.clone(), text(&role["name"])),
                            rules: Some(rules),
                        }),
                        _ => cluster_roles.push(ClusterRole {
                            metadata: meta(None, text(&role["name"])),
                            rules: Some(rules),
                            ..ClusterRole::default()
                        }),
                    }
                    let role_ref = RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: text(&binding["roleRef"]["kind"]).to_owned(),
                        name: text(&binding["roleRef"]["name"]).to_owned(),
                    };
                    let subjects: Vec<Subject> =
                        serde_json::from_value(binding["subjects"].clone()).unwrap();
                    match text(&binding["kind"]) {
                        "RoleBinding" => bindings.push(RoleBinding {
                            metadata: meta(namespace, "binding"),
                            role_ref,
                            subjects: Some(subjects),
                        }),
                        _ => cluster_bindings.push(ClusterRoleBinding {
                            metadata: meta(None, "binding"),
                            role_ref,
                            subjects: Some(subjects),
                        }),
                    }
                }
                let policy = RbacPolicy::new(roles, cluster_roles, bindings, cluster_bindings);
                let groups = strings(&input["request"]["groups"]);
                let decision = policy.authorize(&request(&input["request"], &groups));
                let allowed = decision == RbacDecision::Allow;
                assert_eq!(
                    allowed,
                    text(&expected["decision"]) == "Allow",
                    "{}",
                    row["name"]
                );
            }
            "DefaultRuleResolver.RulesFor" => {
                let (policy, named) = static_roles();
                let groups = strings(&input["user"]["groups"]);
                let rules = policy.rules_for(
                    text(&input["user"]["name"]),
                    &groups,
                    text(&input["namespace"]),
                );
                let names: Vec<&str> = rules
                    .iter()
                    .map(|rule| {
                        named
                            .iter()
                            .find(|(_, r)| r == rule)
                            .expect("a fixture rule")
                            .0
                    })
                    .collect();
                let want = strings(&expected["effectiveRules"]);
                assert_eq!(names, want, "{}", row["name"]);
            }
            other => panic!("unknown level {other}"),
        }
    }
    assert_eq!(levels.len(), 4, "every level of the table ran: {levels:?}");
}

/// A RoleBinding to a missing role says so in the reason, as upstream does.
#[test]
fn a_binding_to_a_missing_role_is_the_reason() {
    let policy = RbacPolicy::new(
        [],
        [],
        [RoleBinding {
            metadata: ObjectMeta {
                name: Some("b".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "gone".into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: "alice".into(),
                ..Subject::default()
            }]),
        }],
        [],
    );
    let request = RbacRequest {
        user: "alice",
        verb: "get",
        resource: "pods",
        subresource: "proxy",
        namespace: "ns",
        name: "web",
        resource_request: true,
        ..RbacRequest::default()
    };
    assert_eq!(
        policy.authorize(&request),
        RbacDecision::NoOpinion(
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into()
        )
    );
}
