//! The Kubernetes manifests in `deploy/`: every document parses as the k8s-openapi type its
//! `kind` names and serializes back to the same JSON (k8s-openapi drops unknown fields, so a
//! misspelt field shows up as a difference), and the objects fit together: the ClusterRole
//! grants exactly what the watchers need, the binding, the Deployment, the Service and the
//! PodDisruptionBudget point at each other, and the pods run as the server expects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, PodSpec, Probe, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_bastion::KubeClusterOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The namespace every namespaced object lives in.
const NAMESPACE: &str = "kube-bastion";

/// Every object of `deploy/`, by kind.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pod_disruption_budgets: Vec<PodDisruptionBudget>,
    secrets: Vec<Secret>,
}

/// Reads every `*.yaml` file of `deploy/`, failing on a parse error, an unknown kind or a
/// field the typed object does not keep.
fn load() -> Manifests {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yaml files in {}", dir.display());

    let mut manifests = Manifests::default();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        // YAML 1.2 core booleans, as kubectl's parser reads them for these documents.
        let options = serde_saphyr::options! { strict_booleans: true };
        let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options)
            .unwrap_or_else(|e| panic!("deploy/{name}: invalid YAML: {e}"));
        for (index, document) in documents.into_iter().enumerate() {
            let origin = format!("deploy/{name}, document {}", index + 1);
            if document.is_null() {
                continue;
            }
            let kind = document
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{origin}: no kind"))
                .to_owned();
            let m = &mut manifests;
            match kind.as_str() {
                "Namespace" => m.namespaces.push(typed(&origin, document)),
                "ServiceAccount" => m.service_accounts.push(typed(&origin, document)),
                "ClusterRole" => m.cluster_roles.push(typed(&origin, document)),
                "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(&origin, document)),
                "Deployment" => m.deployments.push(typed(&origin, document)),
                "Service" => m.services.push(typed(&origin, document)),
                "PodDisruptionBudget" => m.pod_disruption_budgets.push(typed(&origin, document)),
                "Secret" => m.secrets.push(typed(&origin, document)),
                other => panic!("{origin}: unexpected kind {other:?}"),
            }
        }
    }
    manifests
}

/// `document` as a `T`, which must serialize back to the same JSON.
fn typed<T: DeserializeOwned + Serialize>(origin: &str, document: Value) -> T {
    check_typed(document).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

fn check_typed<T: DeserializeOwned + Serialize>(document: Value) -> Result<T, String> {
    let object: T = serde_json::from_value(document.clone())
        .map_err(|e| format!("not a valid object of its kind: {e}"))?;
    let back = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    match first_difference("", &document, &back) {
        None => Ok(object),
        Some(difference) => Err(format!(
            "the typed object differs from the YAML at {difference} \
             (a misspelt or misplaced field?)"
        )),
    }
}

/// The path of the first place where `a` and `b` differ.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                let path = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(a), Some(b)) => first_difference(&path, a, b),
                    (Some(_), None) => Some(format!("{path} (dropped)")),
                    (None, _) => Some(format!("{path} (added)")),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(&format!("{path}[{i}]"), a, b)),
        _ if a == b => None,
        _ => Some(format!("{path} ({a} became {b})")),
    }
}

/// The one object of a kind.
fn one<'a, T>(kind: &str, objects: &'a [T]) -> &'a T {
    match objects {
        [object] => object,
        _ => panic!("expected one {kind}, found {}", objects.len()),
    }
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().expect("metadata.name")
}

/// A rule with its lists sorted, comparable as a set member.
type NormalRule = (
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
);

fn normalise(rules: &[PolicyRule]) -> BTreeSet<NormalRule> {
    let set = |list: &Option<Vec<String>>| -> BTreeSet<String> {
        list.iter().flatten().cloned().collect()
    };
    rules
        .iter()
        .map(|rule| {
            (
                set(&rule.api_groups),
                set(&rule.resources),
                rule.verbs.iter().cloned().collect(),
                set(&rule.resource_names),
                set(&rule.non_resource_urls),
            )
        })
        .collect()
}

fn deployment_pod(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("the Deployment's pod template has a spec")
}

fn deployment_selector(deployment: &Deployment) -> &BTreeMap<String, String> {
    let spec = deployment.spec.as_ref().expect("Deployment spec");
    assert!(
        spec.selector.match_expressions.is_none(),
        "the Deployment selects by labels only"
    );
    spec.selector
        .match_labels
        .as_ref()
        .expect("Deployment selector matchLabels")
}

fn server_container(pod: &PodSpec) -> &Container {
    pod.containers
        .iter()
        .find(|c| c.name == "kube-bastion")
        .expect("a container named kube-bastion")
}

/// The value of `--flag` in `args`, as `--flag=value` or `--flag value`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(value) = arg.strip_prefix(flag) {
            if let Some(value) = value.strip_prefix('=') {
                return Some(value);
            }
            if value.is_empty() {
                return iter.next().map(String::as_str);
            }
        }
    }
    None
}

/// The container port `port` names (by name or number).
fn container_port<'a>(container: &'a Container, port: &IntOrString) -> &'a ContainerPort {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| match port {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
        })
        .unwrap_or_else(|| panic!("port {port:?} is not a port of the container"))
}

fn assert_https_probe(container: &Container, probe: Option<&Probe>, what: &str, path: &str) {
    let probe = probe.unwrap_or_else(|| panic!("the container has a {what}"));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("the {what} is an httpGet"));
    assert_eq!(get.path.as_deref(), Some(path), "{what} path");
    assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{what} scheme");
    let port = container_port(container, &get.port);
    assert_eq!(port.container_port, 8443, "{what} port");
}

#[test]
fn every_document_parses_as_its_kind_and_each_object_is_there_once() {
    let m = load();
    let namespace = one("Namespace", &m.namespaces);
    assert_eq!(name(&namespace.metadata), NAMESPACE);
    one("ServiceAccount", &m.service_accounts);
    one("ClusterRole", &m.cluster_roles);
    one("ClusterRoleBinding", &m.cluster_role_bindings);
    one("Deployment", &m.deployments);
    one("Service", &m.services);
    one("PodDisruptionBudget", &m.pod_disruption_budgets);

    let namespaced = m
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(m.deployments.iter().map(|o| &o.metadata))
        .chain(m.services.iter().map(|o| &o.metadata))
        .chain(m.pod_disruption_budgets.iter().map(|o| &o.metadata))
        .chain(m.secrets.iter().map(|o| &o.metadata));
    for meta in namespaced {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(NAMESPACE),
            "the namespace of {}",
            name(meta)
        );
    }
}

#[test]
fn a_misspelt_field_is_caught() {
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": "x", "namespce": "y" },
    });
    let error = check_typed::<ServiceAccount>(document).unwrap_err();
    assert!(error.contains(".metadata.namespce (dropped)"), "{error}");
}

#[test]
fn the_cluster_role_grants_exactly_what_the_watchers_need() {
    let m = load();
    let role = one("ClusterRole", &m.cluster_roles);
    assert!(role.aggregation_rule.is_none());
    let rules = role.rules.as_deref().expect("ClusterRole rules");
    assert_eq!(
        normalise(rules),
        normalise(&KubeClusterOptions::default().rbac_rules())
    );
}

#[test]
fn the_binding_binds_the_cluster_role_to_the_service_account() {
    let m = load();
    let role = one("ClusterRole", &m.cluster_roles);
    let account = one("ServiceAccount", &m.service_accounts);
    let binding = one("ClusterRoleBinding", &m.cluster_role_bindings);
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, name(&role.metadata));
    let subjects = binding.subjects.as_deref().expect("binding subjects");
    assert_eq!(subjects.len(), 1, "one subject");
    let subject = &subjects[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.api_group.as_deref().unwrap_or(""), "");
    assert_eq!(subject.name, name(&account.metadata));
    assert_eq!(subject.namespace, account.metadata.namespace);
    assert_eq!(subject.namespace.as_deref(), Some(NAMESPACE));
}

#[test]
fn the_deployment_runs_the_server_as_the_service_account_non_root_and_read_only() {
    let m = load();
    let deployment = one("Deployment", &m.deployments);
    let account = one("ServiceAccount", &m.service_accounts);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));

    // The pods carry the labels they are selected by.
    let selector = deployment_selector(deployment);
    assert!(!selector.is_empty());
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    for (key, value) in selector {
        assert_eq!(
            labels.and_then(|l| l.get(key)),
            Some(value),
            "pod label {key}"
        );
    }

    // The in-cluster configuration needs the service account's token.
    let pod = deployment_pod(deployment);
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(name(&account.metadata))
    );
    assert_ne!(pod.automount_service_account_token, Some(false));
    assert_ne!(account.automount_service_account_token, Some(false));

    // The image is the workspace's version.
    let container = server_container(pod);
    let image = container.image.as_deref().expect("image");
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "image {image} is tagged with the workspace version"
    );

    // Security: the container's settings, or the pod's where the container has none.
    let pod_security = pod.security_context.clone().unwrap_or_default();
    let security = container.security_context.clone().unwrap_or_default();
    assert_eq!(
        security.run_as_non_root.or(pod_security.run_as_non_root),
        Some(true),
        "runAsNonRoot"
    );
    assert_eq!(
        security.run_as_user.or(pod_security.run_as_user),
        Some(65532),
        "runAsUser"
    );
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_ne!(security.privileged, Some(true), "privileged");
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(capabilities.add.unwrap_or_default().is_empty());
    let seccomp = security.seccomp_profile.or(pod_security.seccomp_profile);
    assert_eq!(seccomp.map(|s| s.type_).as_deref(), Some("RuntimeDefault"));

    // Resources: requests for both, and a memory limit.
    let resources = container.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let limits = resources.limits.as_ref().expect("resource limits");
    assert!(limits.contains_key("memory"));

    // Health, over the serving port.
    assert_https_probe(
        container,
        container.liveness_probe.as_ref(),
        "livenessProbe",
        "/livez",
    );
    assert_https_probe(
        container,
        container.readiness_probe.as_ref(),
        "readinessProbe",
        "/readyz",
    );
}

#[test]
fn the_server_listens_on_the_container_port_with_tls_from_the_secret_and_shuts_down_in_time() {
    let m = load();
    let deployment = one("Deployment", &m.deployments);
    let pod = deployment_pod(deployment);
    let container = server_container(pod);
    assert!(container.command.is_none(), "the image's entrypoint runs");
    let args = container.args.as_deref().expect("args");

    let listen = flag(args, "--listen").expect("--listen");
    let (host, port) = listen.rsplit_once(':').expect("--listen ADDR:PORT");
    assert_eq!(host, "0.0.0.0");
    let port: i32 = port.parse().unwrap();
    let https = container_port(container, &IntOrString::String("https".to_owned()));
    assert_eq!(https.container_port, port);

    assert_eq!(flag(args, "--log-format"), Some("json"));

    // The grace period outlasts the server's own drain.
    let grace: i64 = flag(args, "--shutdown-grace-period")
        .expect("--shutdown-grace-period")
        .parse()
        .unwrap();
    let termination = pod
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} must exceed --shutdown-grace-period {grace}"
    );

    // The certificate and key are files of the kube-bastion-tls Secret, mounted read-only.
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some("kube-bastion-tls"))
        })
        .expect("a volume of the Secret kube-bastion-tls");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("the TLS volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    for (flag_name, key) in [
        ("--tls-cert-file", "tls.crt"),
        ("--tls-private-key-file", "tls.key"),
    ] {
        let expected = format!("{}/{key}", mount.mount_path.trim_end_matches('/'));
        assert_eq!(
            flag(args, flag_name),
            Some(expected.as_str()),
            "{flag_name}"
        );
    }
}

#[test]
fn the_service_and_the_budget_select_the_deployment_pods() {
    let m = load();
    let deployment = one("Deployment", &m.deployments);
    let selector = deployment_selector(deployment);
    let container = server_container(deployment_pod(deployment));

    let service = one("Service", &m.services);
    let spec = service.spec.as_ref().expect("Service spec");
    assert_eq!(spec.type_.as_deref().unwrap_or("ClusterIP"), "ClusterIP");
    assert_eq!(spec.selector.as_ref(), Some(selector));
    let ports = spec.ports.as_deref().expect("Service ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 443);
    let target = ports[0]
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(ports[0].port));
    assert_eq!(container_port(container, &target).container_port, 8443);

    let budget = one("PodDisruptionBudget", &m.pod_disruption_budgets);
    let spec = budget.spec.as_ref().expect("PodDisruptionBudget spec");
    let budget_selector = spec
        .selector
        .as_ref()
        .expect("PodDisruptionBudget selector");
    assert!(budget_selector.match_expressions.is_none());
    assert_eq!(budget_selector.match_labels.as_ref(), Some(selector));
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
}
