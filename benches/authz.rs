//! Who may proxy, per request: a bearer token authenticated against a static token file of
//! 1,000 users, then kube-apiserver's RBAC decision over a cluster with 1,000 RoleBindings
//! in the request's namespace (one per user, each granting `get pods/proxy` on one pod by
//! name) and 1,000 more in other namespaces, plus 100 ClusterRoleBindings. The rows:
//!
//! * `authenticate+authorize`: the library's [`TokenFile`] and [`RbacAuthorizer`] as the
//!   layer calls them (the user put in the request's extensions between the two);
//! * `rbac/indexed`: the RBAC decision alone;
//! * `rbac/linear-scan`: the baseline, the same decision by visiting every binding of the
//!   namespace and testing its subjects (upstream's loop, and this crate's before the subject
//!   index).
//!
//! `cargo bench --locked --bench authz -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube_bastion::core::rbac::{applies_to, rule_allows};
use kube_bastion::core::{Attributes, RbacDecision, RbacPolicy, RbacRequest};
use kube_bastion::{
    Authentication, Authenticator, Authorizer, Decision, RbacAuthorizer, TokenFile, UserInfo,
};

const USERS: usize = 1_000;
const NAMESPACE: &str = "shop";

/// The RBAC objects: per user a Role and a RoleBinding in `shop`, a RoleBinding in another
/// namespace, and every tenth user a ClusterRoleBinding to a read-only ClusterRole.
fn policy_text() -> String {
    let mut text = String::from(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: view-nodes}\n\
         rules: [{apiGroups: [\"\"], resources: [nodes], verbs: [get, list]}]\n",
    );
    for i in 0..USERS {
        text.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: proxy-{i}, namespace: {NAMESPACE}}}\n\
             rules: [{{apiGroups: [\"\"], resources: [pods/proxy], verbs: [get], resourceNames: [web-{i}]}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: proxy-{i}, namespace: {NAMESPACE}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: proxy-{i}}}\n\
             subjects: [{{kind: User, name: user-{i}}}, {{kind: Group, name: team-{i}}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: view-{i}, namespace: ns-{i}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view-nodes}}\n\
             subjects: [{{kind: User, name: user-{i}}}]\n"
        ));
        if i % 10 == 0 {
            text.push_str(&format!(
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
                 metadata: {{name: view-{i}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view-nodes}}\n\
                 subjects: [{{kind: Group, name: team-{i}}}]\n"
            ));
        }
    }
    text
}

fn token_file() -> TokenFile {
    let text: String = (0..USERS)
        .map(|i| format!("token-{i:04}-0123456789abcdef,user-{i},uid-{i},\"team-{i},dev\"\n"))
        .collect();
    TokenFile::parse(&text).expect("token file")
}

/// The proxy request of user 777 for its own pod.
fn attributes() -> Attributes {
    Attributes {
        verb: "get",
        api_group: "",
        api_version: "v1",
        resource: "pods",
        subresource: "proxy",
        namespace: Some(NAMESPACE.to_owned()),
        name: "web-777".to_owned(),
        upgrade: false,
    }
}

type Roles = std::collections::HashMap<String, Vec<PolicyRule>>;

/// The decision by visiting every binding of the namespace and, for each that names the
/// user, its Role's rules (the baseline).
fn linear_scan(bindings: &[RoleBinding], roles: &Roles, request: &RbacRequest<'_>) -> bool {
    bindings.iter().any(|binding| {
        applies_to(
            request,
            binding.subjects.as_deref().unwrap_or_default(),
            NAMESPACE,
        )
        .is_some()
            && roles
                .get(&binding.role_ref.name)
                .is_some_and(|rules| rules.iter().any(|rule| rule_allows(request, rule)))
    })
}

fn bench(c: &mut Criterion) {
    let text = policy_text();
    let policy = RbacPolicy::from_texts([text.as_str()]).expect("policy");
    assert_eq!(policy.bindings(), 2 * USERS + USERS / 10);
    let authorizer = RbacAuthorizer::new(policy.clone());
    let tokens = token_file();
    let attributes = attributes();

    let request = http::Request::get("/api/v1/namespaces/shop/pods/web-777/proxy/")
        .header("authorization", "Bearer token-0777-0123456789abcdef")
        .body(())
        .expect("request");
    let (parts, ()) = request.into_parts();

    // The whole path must allow, and another user must not.
    let user = match Authenticator::authenticate(&tokens, &parts).now_or_never() {
        Some(Authentication::User(user)) => user,
        other => panic!("token not accepted: {other:?}"),
    };
    let groups = vec!["team-777".to_owned(), "dev".to_owned()];
    let allowed = RbacRequest::proxy(&attributes, "user-777", &groups);
    assert_eq!(policy.authorize(&allowed), RbacDecision::Allow);
    let other = RbacRequest::proxy(&attributes, "user-778", &[]);
    assert_ne!(policy.authorize(&other), RbacDecision::Allow);
    assert_eq!(user.name, "user-777");

    let mut group = c.benchmark_group("authz");
    group.bench_function("authenticate+authorize", |b| {
        b.iter(|| {
            let mut parts = parts.clone();
            let user = match Authenticator::authenticate(&tokens, black_box(&parts)).now_or_never()
            {
                Some(Authentication::User(user)) => user,
                _ => unreachable!("checked above"),
            };
            parts.extensions.insert::<UserInfo>(user);
            let decision = authorizer
                .authorize(black_box(&attributes), &parts)
                .now_or_never();
            assert_eq!(decision, Some(Decision::Allow));
        })
    });
    group.bench_function("rbac/indexed", |b| {
        b.iter(|| policy.authorize(black_box(&allowed)))
    });
    // The baseline: the same bindings and Roles, visited one by one.
    let documents = || text.split("---\n").filter(|doc| doc.contains(NAMESPACE));
    let bindings: Vec<RoleBinding> = documents()
        .filter(|doc| doc.contains("kind: RoleBinding"))
        .map(|doc| serde_saphyr::from_str(doc).expect("binding"))
        .collect();
    let roles: Roles = documents()
        .filter(|doc| doc.contains("kind: Role\n"))
        .map(|doc| {
            let role: Role = serde_saphyr::from_str(doc).expect("role");
            (
                role.metadata.name.unwrap_or_default(),
                role.rules.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!((bindings.len(), roles.len()), (USERS, USERS));
    assert!(linear_scan(&bindings, &roles, &allowed));
    assert!(!linear_scan(&bindings, &roles, &other));
    group.bench_function("rbac/linear-scan", |b| {
        b.iter(|| linear_scan(black_box(&bindings), &roles, black_box(&allowed)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
