//! Loading clusters: YAML streams, JSON, `kind: List` and typed lists, errors that name the
//! document, and updates.

use kube_bastion_core::{
    ClusterView, LoadError, MemoryCluster, Object, ObjectKind, ResolveOptions, parse_objects,
};
use serde_json::json;

use crate::common::{pod, pod_path, resolve_path};

fn kinds(objects: &[Object]) -> Vec<(ObjectKind, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o.kind(),
                format!("{}/{}", o.namespace().unwrap_or("-"), o.name()),
            )
        })
        .collect()
}

#[test]
fn multi_document_yaml() {
    let text = "\u{feff}---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n---\n\
                # only a comment\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n\
                apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old}\n---\n\
                apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n...\n";
    let objects = parse_objects(text).expect("parses");
    assert_eq!(
        kinds(&objects),
        [
            (ObjectKind::Pod, "x/a".to_owned()),
            (ObjectKind::Node, "-/n1".to_owned()),
            (ObjectKind::Service, "default/svc".to_owned()),
        ]
    );
}

/// Cluster dumps are bigger than configuration files: thousands of documents, and a list of
/// 8,000 pods (over 300,000 YAML nodes), load whole.
#[test]
fn large_streams_and_lists_load() {
    let documents: String = (0..3_000)
        .map(|i| {
            format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: x}}\n")
        })
        .collect();
    assert_eq!(
        parse_objects(&documents).expect("3,000 documents").len(),
        3_000
    );

    let items: String = (0..8_000)
        .map(|i| {
            format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p{i}\n    namespace: x\n    \
                 labels: {{app: web, tier: front, i: \"{i}\"}}\n  spec:\n    containers:\n    \
                 - name: app\n      ports: [{{name: http, containerPort: 8080}}]\n  \
                 status:\n    phase: Running\n    podIP: 10.0.{}.{}\n    podIPs: [{{ip: 10.0.{}.{}}}]\n",
                i / 250,
                i % 250,
                i / 250,
                i % 250
            )
        })
        .collect();
    let list = format!("apiVersion: v1\nkind: List\nitems:\n{items}");
    assert_eq!(parse_objects(&list).expect("8,000 pods").len(), 8_000);
}

#[test]
fn json_forms() {
    let one =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"}});
    let two = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}});
    // A single object, pretty-printed (`kubectl get pod a -o json`).
    let objects =
        parse_objects(&serde_json::to_string_pretty(&one).expect("json")).expect("object");
    assert_eq!(kinds(&objects), [(ObjectKind::Pod, "x/a".to_owned())]);
    // A stream of objects (`jq -c`), and a top-level array.
    let objects = parse_objects(&format!("{one}\n{two}\n")).expect("stream");
    assert_eq!(objects.len(), 2);
    let objects = parse_objects(&json!([one, two]).to_string()).expect("array");
    assert_eq!(objects.len(), 2);
    // JSON with a tab and an escaped slash is JSON, whatever a YAML parser thinks of it.
    let text = "{\t\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"a\\/b\"}}";
    let objects = parse_objects(text).expect("tabbed JSON");
    assert_eq!(objects[0].name(), "a/b");
    // A YAML flow mapping that is not JSON still loads as YAML.
    let objects =
        parse_objects("{apiVersion: v1, kind: Node, metadata: {name: n}}").expect("flow YAML");
    assert_eq!(kinds(&objects), [(ObjectKind::Node, "-/n".to_owned())]);
}

#[test]
fn yaml_scalars_in_names_and_labels_stay_text() {
    let objects = parse_objects(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 1234\n  namespace: on\n  labels: {version: 2, canary: yes, n: n}\n",
    )
    .expect("parses");
    assert_eq!(kinds(&objects), [(ObjectKind::Pod, "on/1234".to_owned())]);
    let labels = objects[0].metadata().labels.clone().expect("labels");
    assert_eq!(labels["version"], "2");
    assert_eq!(labels["canary"], "yes");
    assert_eq!(labels["n"], "n");
}

#[test]
fn lists_and_typed_lists() {
    let text = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"}},
            {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                {"metadata": {"name": "b", "namespace": "x"}},
                {"metadata": {"name": "c", "namespace": "y"}},
            ]},
            {"apiVersion": "v1", "kind": "ConfigMapList", "items": [{"metadata": {"name": "cm"}}]},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "items": [
                {"metadata": {"name": "s", "namespace": "x"}, "addressType": "IPv4", "endpoints": []},
            ]},
            {"apiVersion": "v1", "kind": "List", "items": null},
        ],
    });
    let objects = parse_objects(&text.to_string()).expect("lists");
    assert_eq!(
        kinds(&objects),
        [
            (ObjectKind::Pod, "x/a".to_owned()),
            (ObjectKind::Pod, "x/b".to_owned()),
            (ObjectKind::Pod, "y/c".to_owned()),
            (ObjectKind::EndpointSlice, "x/s".to_owned()),
        ]
    );
}

#[test]
fn errors_name_the_document() {
    let text = "apiVersion: v1\nkind: Node\nmetadata: {name: ok}\n---\n\
                apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: ok2}\n\
                - apiVersion: v1\n  kind: Pod\n  metadata: {name: broken, namespace: shop}\n  spec: {containers: 7}\n";
    match parse_objects(text) {
        Err(LoadError::Object {
            index,
            kind,
            message,
        }) => {
            assert_eq!((index, kind.as_str()), (1, "Pod"));
            assert!(
                message.starts_with("items[1]: \"shop/broken\": "),
                "{message}"
            );
            let display = LoadError::Object {
                index,
                kind,
                message,
            }
            .to_string();
            assert!(
                display.starts_with("document 1 (Pod): items[1]"),
                "{display}"
            );
        }
        other => panic!("expected a decoding error, got {other:?}"),
    }
    match parse_objects("---\napiVersion: v1\nkind: Node\nmetadata: {name: n}\n---\n- 1\n- 2\n") {
        Err(err @ LoadError::NotAnObject { index: 1, .. }) => {
            assert_eq!(
                err.to_string(),
                "document 1: [0]: expected an object, found a number"
            );
        }
        other => panic!("expected NotAnObject, got {other:?}"),
    }
    match parse_objects("apiVersion: v1\nmetadata: {name: x}\n") {
        Err(err @ LoadError::NotAnObject { index: 0, .. }) => {
            assert_eq!(err.to_string(), "document 0: object has no `kind`");
        }
        other => panic!("expected NotAnObject, got {other:?}"),
    }
    match parse_objects("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n") {
        Err(LoadError::Syntax(message)) => {
            assert!(message.starts_with("invalid YAML"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match parse_objects("{\"apiVersion\": \"v1\", \"kind\": ") {
        Err(LoadError::Syntax(message)) => {
            assert!(message.starts_with("invalid JSON"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match parse_objects("apiVersion: v1\nkind: List\nitems: 3\n") {
        Err(LoadError::Object {
            index: 0,
            kind,
            message,
        }) => {
            assert_eq!(kind, "List");
            assert_eq!(message, "`items` is a number, not a list");
        }
        other => panic!("expected a List error, got {other:?}"),
    }
    assert!(parse_objects("").expect("empty").is_empty());
    assert!(
        parse_objects("---\n---\n")
            .expect("empty documents")
            .is_empty()
    );
}

#[test]
fn later_duplicates_replace_earlier_ones_and_nameless_objects_are_ignored() {
    let cluster = MemoryCluster::from_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: default}\nstatus: {podIPs: [{ip: 10.0.0.2}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {namespace: default}\n",
    )
    .expect("loads");
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot.pods(None).len(), 1);
    let target = resolve_path(
        &*snapshot,
        &pod_path("default", "a"),
        &ResolveOptions::default(),
    )
    .expect("a");
    assert_eq!(target.candidates[0].authority(), "10.0.0.2");
}

#[test]
fn apply_delete_and_failed_loads() {
    let cluster = MemoryCluster::new();
    assert!(cluster.snapshot().pod("ns", "a").is_none());
    let before = cluster.snapshot();
    let objects = parse_objects(
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            pod("ns", "a", &["10.0.0.1"], json!([])),
            pod("ns", "b", &["10.0.0.2"], json!([])),
        ]})
        .to_string(),
    )
    .expect("objects");
    cluster.apply(objects);
    assert_eq!(cluster.snapshot().pods(Some("ns")).len(), 2);
    assert!(
        before.pods(None).is_empty(),
        "an old snapshot never changes"
    );
    assert!(cluster.delete(ObjectKind::Pod, "ns", "a"));
    assert!(!cluster.delete(ObjectKind::Pod, "ns", "a"));
    assert!(!cluster.delete(ObjectKind::Node, "", "nope"));
    assert_eq!(cluster.snapshot().pods(None).len(), 1);
    assert!(cluster.load_yaml("kind: [").is_err());
    assert_eq!(
        cluster.snapshot().pods(None).len(),
        1,
        "a failed load changes nothing"
    );
    cluster
        .load_yaml("apiVersion: v1\nkind: Node\nmetadata: {name: n}\n")
        .expect("loads");
    assert!(cluster.snapshot().pods(None).is_empty());
    assert_eq!(cluster.snapshot().nodes().len(), 1);
    let snapshot = cluster.snapshot();
    cluster.update(|current| current.with_applied(current.objects()));
    assert_eq!(cluster.snapshot().counts(), snapshot.counts());
    assert!(format!("{:?}", cluster.snapshot()).contains("Node: 1"));
}

#[test]
fn service_backends_follow_applied_pods() {
    // Endpoint validity depends on pods: applying a pod must revalidate its service.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"},
                         "spec": {"ports": [{"port": 80}]}});
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "s"}},
        "addressType": "IPv4", "ports": [{"port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.7"], "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p"}}],
    });
    let load = |items: Vec<serde_json::Value>| {
        parse_objects(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string())
            .expect("objects")
    };
    let cluster = MemoryCluster::from_objects(load(vec![service, slice]));
    let path = crate::common::service_path("ns", "s");
    assert!(resolve_path(&*cluster.snapshot(), &path, &ResolveOptions::default()).is_err());
    cluster.apply(load(vec![pod("ns", "p", &["10.0.0.7"], json!([]))]));
    let target =
        resolve_path(&*cluster.snapshot(), &path, &ResolveOptions::default()).expect("now valid");
    assert_eq!(target.candidates[0].authority(), "10.0.0.7:8080");
    cluster.delete(ObjectKind::Pod, "ns", "p");
    assert!(resolve_path(&*cluster.snapshot(), &path, &ResolveOptions::default()).is_err());
}
