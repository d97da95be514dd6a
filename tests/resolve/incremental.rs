//! Incremental snapshots answer exactly as a full rebuild does: random sequences of
//! changes, applied in random batches, end in a snapshot whose objects, derived backends and
//! resolution answers (candidate lists and their order included) equal those of
//! `ClusterSnapshot::from_objects` over the final set of objects.

use std::collections::BTreeMap;

use http::{HeaderMap, Method, Uri};
use kube_bastion_core::{
    Change, ClusterSnapshot, ClusterView, EventType, MemoryCluster, Object, ObjectKind,
    ProxyRequest, ResolveOptions, Route, parse_objects, resolve,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use crate::properties::{
    ID_PORTS, NAMES, NAMESPACES, endpoints_strategy, node_strategy, pod_strategy, service_strategy,
    slice_strategy,
};

fn object(value: Value) -> Object {
    let mut objects = parse_objects(&value.to_string()).expect("generated objects load");
    assert_eq!(objects.len(), 1);
    objects.remove(0)
}

/// One change: an object applied (slices sometimes renamed so that one slice name moves
/// between services), or a deletion drawn from the same small name pools.
fn change_strategy() -> impl Strategy<Value = Change> {
    let slice = (slice_strategy(), any::<bool>(), 0u8..3).prop_map(|(mut slice, rename, n)| {
        if rename {
            slice["metadata"]["name"] = Value::String(format!("shared-{n}"));
        }
        slice
    });
    let kinds = select(
        &[
            ObjectKind::Pod,
            ObjectKind::Service,
            ObjectKind::Endpoints,
            ObjectKind::EndpointSlice,
            ObjectKind::Node,
        ][..],
    );
    let slice_names = select(&["a-0", "a-1", "web-0", "b-2", "shared-0", "shared-1"][..]);
    prop_oneof![
        4 => pod_strategy().prop_map(|v| Change::Apply(object(v))),
        1 => service_strategy().prop_map(|v| Change::Apply(object(v))),
        3 => slice.prop_map(|v| Change::Apply(object(v))),
        2 => endpoints_strategy().prop_map(|v| Change::Apply(object(v))),
        1 => node_strategy().prop_map(|v| Change::Apply(object(v))),
        3 => (kinds, select(NAMESPACES), select(NAMES), slice_names).prop_map(
            |(kind, ns, name, slice_name)| {
                let name = if kind == ObjectKind::EndpointSlice { slice_name } else { name };
                Change::delete(kind, ns, name)
            }
        ),
    ]
}

type Key = (ObjectKind, String, String);

fn key(object: &Object) -> Key {
    (
        object.kind(),
        object.namespace().unwrap_or("").to_owned(),
        object.name().to_owned(),
    )
}

/// The object without its resource version, as JSON (for comparing content).
fn content(object: &Object) -> Value {
    let mut value = match object {
        Object::Pod(o) => serde_json::to_value(o),
        Object::Service(o) => serde_json::to_value(o),
        Object::Endpoints(o) => serde_json::to_value(o),
        Object::EndpointSlice(o) => serde_json::to_value(o),
        Object::Node(o) => serde_json::to_value(o),
        Object::Namespace(o) => serde_json::to_value(o),
    }
    .expect("serializes");
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    value
}

/// Every answer resolution can give on the name pools, with the resolved targets.
fn answers(view: &dyn ClusterView) -> Vec<String> {
    let options = ResolveOptions::default();
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for name in NAMES {
            let backends = view.service_backends(ns, name);
            out.push(format!("{ns}/{name} backends {backends:?}"));
            out.push(format!(
                "{ns}/{name} slices {:?}",
                view.endpoint_slices(ns, name)
                    .iter()
                    .map(|s| s.metadata.name.clone())
                    .collect::<Vec<_>>()
            ));
            for port in ID_PORTS {
                let id = if port.is_empty() {
                    (*name).to_owned()
                } else {
                    format!("{name}:{port}")
                };
                for kind in ["pods", "services"] {
                    let path = format!("/api/v1/namespaces/{ns}/{kind}/{id}/proxy/");
                    out.push(format!(
                        "{path} {:?}",
                        route_and_resolve(view, &path, &options)
                    ));
                }
                if *ns == NAMESPACES[0] {
                    let path = format!("/api/v1/nodes/{id}/proxy/");
                    out.push(format!(
                        "{path} {:?}",
                        route_and_resolve(view, &path, &options)
                    ));
                }
            }
        }
    }
    out
}

fn route_and_resolve(view: &dyn ClusterView, path: &str, options: &ResolveOptions) -> String {
    let uri: Uri = path.parse().expect("path");
    match ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) {
        Route::Proxy(request) => format!("{:?}", resolve(view, &request, options)),
        other => format!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn incremental_snapshots_equal_a_full_rebuild(
        initial in prop::collection::vec(change_strategy(), 0..12),
        changes in prop::collection::vec(change_strategy(), 0..40),
        batch_sizes in prop::collection::vec(1usize..6, 1..40),
    ) {
        // The model: what the cluster must hold.
        let mut model: BTreeMap<Key, Object> = BTreeMap::new();
        let apply_model = |change: &Change, model: &mut BTreeMap<Key, Object>| match change {
            Change::Apply(object) if !object.name().is_empty() => {
                model.insert(key(object), object.clone());
            }
            Change::Apply(_) => {}
            Change::Delete { kind, namespace, name } => {
                let namespace = if kind.is_namespaced() { namespace.clone() } else { String::new() };
                model.remove(&(*kind, namespace, name.clone()));
            }
        };
        let initial_objects: Vec<Object> = initial
            .iter()
            .filter_map(|c| match c { Change::Apply(o) => Some(o.clone()), _ => None })
            .collect();
        for object in &initial_objects {
            apply_model(&Change::Apply(object.clone()), &mut model);
        }
        let cluster = MemoryCluster::from_objects(initial_objects);
        let mut last_rv = cluster.snapshot().resource_version();

        let mut rest = changes.as_slice();
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().expect("cycle")).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            // The events the model expects: one per change that altered an object's
            // content, in order (an object added then deleted in one batch gives both).
            let mut expected: Vec<(EventType, Key, Value)> = Vec::new();
            for change in batch {
                let touched = match change {
                    Change::Apply(object) => key(object),
                    Change::Delete { kind, namespace, name } => {
                        let namespace = match (kind.is_namespaced(), namespace.as_str()) {
                            (false, _) => String::new(),
                            (true, "") => "default".to_owned(),
                            (true, ns) => ns.to_owned(),
                        };
                        (*kind, namespace, name.clone())
                    }
                };
                let before = model.get(&touched).map(content);
                apply_model(change, &mut model);
                let after = model.get(&touched).map(content);
                match (before, after) {
                    (None, Some(now)) => expected.push((EventType::Added, touched, now)),
                    (Some(was), Some(now)) if was != now => {
                        expected.push((EventType::Modified, touched, now));
                    }
                    (Some(was), None) => expected.push((EventType::Deleted, touched, was)),
                    _ => {}
                }
            }
            let events = cluster.apply_batch(batch.iter().cloned());
            let got: Vec<(EventType, Key, Value)> = events
                .iter()
                .map(|e| (e.event_type, key(&e.object), content(&e.object)))
                .collect();
            prop_assert_eq!(got, expected);
            // Strictly increasing resource versions, one per event, carried by the objects.
            for event in &events {
                prop_assert_eq!(event.resource_version(), last_rv + 1);
                last_rv = event.resource_version();
            }
            prop_assert_eq!(cluster.snapshot().resource_version(), last_rv);
        }

        let incremental = cluster.snapshot();
        let rebuilt = ClusterSnapshot::from_objects(model.values().cloned());
        let stored: Vec<Value> = incremental.objects().iter().map(content).collect();
        let expected: Vec<Value> = rebuilt.objects().iter().map(content).collect();
        prop_assert_eq!(stored, expected);
        prop_assert_eq!(incremental.counts(), rebuilt.counts());
        prop_assert_eq!(incremental.namespaces(), rebuilt.namespaces());
        let (got, want) = (answers(&*incremental), answers(&rebuilt));
        prop_assert_eq!(got.len(), want.len());
        if let Some((got, want)) = got.iter().zip(&want).find(|(g, w)| g != w) {
            prop_assert_eq!(got, want, "the first answer that differs from a full rebuild");
        }
    }
}

/// `sync_scope` replaces one kind in one namespace (a watcher's relist): objects of that kind
/// in the scope that are not listed are deleted, everything else is left alone, and
/// cluster-scoped kinds ignore the namespace.
#[test]
fn a_scoped_sync_replaces_one_kind_in_one_namespace() {
    use crate::common::pod;
    let node = |name: &str| {
        object(serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
    };
    let cluster = MemoryCluster::from_objects([
        object(pod("a", "old", &["10.0.0.1"], serde_json::json!([]))),
        object(pod("a", "kept", &["10.0.0.2"], serde_json::json!([]))),
        object(pod("b", "other", &["10.0.0.3"], serde_json::json!([]))),
        object(
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "old", "namespace": "a"}}),
        ),
        node("n1"),
        node("n2"),
    ]);
    let events = cluster.sync_scope(
        ObjectKind::Pod,
        Some("a"),
        [
            object(pod("a", "kept", &["10.0.0.2"], serde_json::json!([]))),
            object(pod("a", "new", &["10.0.0.4"], serde_json::json!([]))),
        ],
    );
    let mut seen: Vec<(EventType, String)> = events
        .iter()
        .map(|e| (e.event_type, e.object.name().to_owned()))
        .collect();
    seen.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        seen,
        [
            (EventType::Added, "new".to_owned()),
            (EventType::Deleted, "old".to_owned())
        ]
    );
    let snapshot = cluster.snapshot();
    let names = |ns| -> Vec<String> {
        snapshot
            .pods(Some(ns))
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(names("a"), ["kept", "new"]);
    assert_eq!(names("b"), ["other"], "another namespace is out of scope");
    assert_eq!(
        snapshot.services(Some("a")).len(),
        1,
        "another kind is out of scope"
    );

    let events = cluster.sync_scope(ObjectKind::Node, Some("a"), [node("n2")]);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].event_type, events[0].object.name()),
        (EventType::Deleted, "n1")
    );
    assert_eq!(cluster.snapshot().nodes().len(), 1);
    assert!(
        cluster
            .sync_scope(ObjectKind::Node, None, [node("n2")])
            .is_empty(),
        "an unchanged relist changes nothing"
    );
}
