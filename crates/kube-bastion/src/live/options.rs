//! [`KubeClusterOptions`]: what [`KubeCluster::watch`](super::KubeCluster::watch) watches.

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::runtime::watcher;
use kube_bastion_core::ObjectKind;

use super::feeder::Scope;

/// What [`KubeCluster::watch`](super::KubeCluster::watch) watches and how.
///
/// By default: Pods, Services, EndpointSlices, Nodes and Namespaces in every namespace,
/// with kube-rs's default [`watcher::Config`] (paged lists of 500, bookmarks).
#[derive(Clone, Debug, Default)]
pub struct KubeClusterOptions {
    namespaces: Vec<String>,
    config: watcher::Config,
    endpoints: bool,
}

impl KubeClusterOptions {
    /// Watches only these namespaces (one watcher per namespace and namespaced kind); an
    /// empty list means every namespace. Nodes are watched cluster-wide either way (node
    /// proxying needs them); Namespaces are watched by name (`metadata.name=<ns>`).
    #[must_use]
    pub fn namespaces<S: Into<String>>(mut self, namespaces: impl IntoIterator<Item = S>) -> Self {
        self.namespaces = namespaces.into_iter().map(Into::into).collect();
        self.namespaces.sort();
        self.namespaces.dedup();
        self
    }

    /// The watcher configuration every watcher uses: the initial list strategy
    /// (`streaming_lists()` when the apiserver supports them), the page size, label and
    /// field selectors (the Namespace watchers of a namespace restriction replace the field
    /// selector with `metadata.name=<ns>`), timeouts.
    #[must_use]
    pub fn watcher_config(mut self, config: watcher::Config) -> Self {
        self.config = config;
        self
    }

    /// Also watches Endpoints objects (off by default: EndpointSlices are the source of
    /// truth since Kubernetes 1.33; a Service with no slice then falls back to its
    /// Endpoints, as kube-apiserver does).
    #[must_use]
    pub fn endpoints(mut self, on: bool) -> Self {
        self.endpoints = on;
        self
    }

    /// The namespaces watched (empty: every namespace).
    pub fn watched_namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The kinds watched, in [`ObjectKind::ALL`] order.
    pub fn kinds(&self) -> Vec<ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .filter(|kind| self.endpoints || *kind != ObjectKind::Endpoints)
            .collect()
    }

    /// The RBAC rules the watchers need: `list` and `watch` on exactly the resources of
    /// [`kinds`](Self::kinds), nothing else (what `deploy/`'s ClusterRole grants).
    pub fn rbac_rules(&self) -> Vec<PolicyRule> {
        let mut core = Vec::new();
        let mut discovery = Vec::new();
        for kind in self.kinds() {
            let (group, resource) = match kind {
                ObjectKind::Pod => (&mut core, "pods"),
                ObjectKind::Service => (&mut core, "services"),
                ObjectKind::Endpoints => (&mut core, "endpoints"),
                ObjectKind::EndpointSlice => (&mut discovery, "endpointslices"),
                ObjectKind::Node => (&mut core, "nodes"),
                ObjectKind::Namespace => (&mut core, "namespaces"),
            };
            group.push(resource.to_owned());
        }
        let rule = |group: &str, resources: Vec<String>| PolicyRule {
            api_groups: Some(vec![group.to_owned()]),
            resources: Some(resources),
            verbs: vec!["list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        };
        vec![rule("", core), rule("discovery.k8s.io", discovery)]
    }

    /// The watchers of `kind`: their scopes and configurations.
    pub(super) fn watchers(&self, kind: ObjectKind) -> Vec<(Scope, watcher::Config)> {
        if self.namespaces.is_empty() || kind == ObjectKind::Node {
            return vec![(Scope::All, self.config.clone())];
        }
        self.namespaces
            .iter()
            .map(|ns| {
                if kind == ObjectKind::Namespace {
                    let config = self.config.clone().fields(&format!("metadata.name={ns}"));
                    (Scope::Name(ns.clone()), config)
                } else {
                    (Scope::Namespace(ns.clone()), self.config.clone())
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_restriction_gives_one_watcher_per_namespace_and_nodes_stay_cluster_wide() {
        let options = KubeClusterOptions::default().namespaces(["b", "a", "b"]);
        assert_eq!(options.watched_namespaces(), ["a", "b"]);
        let scopes =
            |kind| -> Vec<Scope> { options.watchers(kind).into_iter().map(|(s, _)| s).collect() };
        assert_eq!(
            scopes(ObjectKind::Pod),
            [Scope::Namespace("a".into()), Scope::Namespace("b".into())]
        );
        assert_eq!(scopes(ObjectKind::Node), [Scope::All]);
        let namespaces = options.watchers(ObjectKind::Namespace);
        assert_eq!(namespaces[1].0, Scope::Name("b".into()));
        assert_eq!(
            namespaces[1].1.field_selector.as_deref(),
            Some("metadata.name=b")
        );
        assert_eq!(
            KubeClusterOptions::default().watchers(ObjectKind::Pod)[0].0,
            Scope::All
        );
    }

    #[test]
    fn endpoints_are_watched_only_when_asked() {
        assert!(
            !KubeClusterOptions::default()
                .kinds()
                .contains(&ObjectKind::Endpoints)
        );
        let with = KubeClusterOptions::default().endpoints(true);
        assert!(with.kinds().contains(&ObjectKind::Endpoints));
        let core = &with.rbac_rules()[0];
        assert!(
            core.resources
                .as_ref()
                .unwrap()
                .contains(&"endpoints".to_owned())
        );
    }
}
