//! `/version`, `/api`, `/api/v1`, `/apis` and the `discovery.k8s.io` group documents.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;

/// The Kubernetes API version this server's types and discovery follow.
pub(crate) const KUBE_MINOR: &str = "35";

/// `/version`.
pub(crate) fn version() -> Info {
    Info {
        major: "1".to_owned(),
        minor: KUBE_MINOR.to_owned(),
        git_version: format!(
            "v1.{KUBE_MINOR}.0+kube-bastion-{}",
            env!("CARGO_PKG_VERSION")
        ),
        git_commit: String::new(),
        git_tree_state: String::new(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".to_owned(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        ..Info::default()
    }
}

/// `/api`.
pub(crate) fn core_versions(server_address: &str) -> APIVersions {
    APIVersions {
        versions: vec!["v1".to_owned()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".to_owned(),
            server_address: server_address.to_owned(),
        }],
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn resource(
    name: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    verbs: &[&str],
    short_names: &[&str],
    categories: &[&str],
) -> APIResource {
    APIResource {
        name: name.to_owned(),
        singular_name: singular.to_owned(),
        kind: kind.to_owned(),
        namespaced,
        verbs: strings(verbs),
        short_names: (!short_names.is_empty()).then(|| strings(short_names)),
        categories: (!categories.is_empty()).then(|| strings(categories)),
        ..APIResource::default()
    }
}

const READ: &[&str] = &["get", "list"];
const CONNECT: &[&str] = &["create", "delete", "get", "patch", "update"];

/// `/api/v1`.
pub(crate) fn core_v1() -> APIResourceList {
    APIResourceList {
        group_version: "v1".to_owned(),
        resources: vec![
            resource(
                "endpoints",
                "endpoints",
                "Endpoints",
                true,
                READ,
                &["ep"],
                &[],
            ),
            resource(
                "namespaces",
                "namespace",
                "Namespace",
                false,
                READ,
                &["ns"],
                &[],
            ),
            resource("nodes", "node", "Node", false, READ, &["no"], &[]),
            resource(
                "nodes/proxy",
                "",
                "NodeProxyOptions",
                false,
                CONNECT,
                &[],
                &[],
            ),
            resource("pods", "pod", "Pod", true, READ, &["po"], &["all"]),
            resource("pods/proxy", "", "PodProxyOptions", true, CONNECT, &[], &[]),
            resource(
                "services",
                "service",
                "Service",
                true,
                READ,
                &["svc"],
                &["all"],
            ),
            resource(
                "services/proxy",
                "",
                "ServiceProxyOptions",
                true,
                CONNECT,
                &[],
                &[],
            ),
        ],
    }
}

/// The discovery group name.
pub(crate) const DISCOVERY_GROUP: &str = "discovery.k8s.io";

fn discovery_group() -> APIGroup {
    let v1 = GroupVersionForDiscovery {
        group_version: format!("{DISCOVERY_GROUP}/v1"),
        version: "v1".to_owned(),
    };
    APIGroup {
        name: DISCOVERY_GROUP.to_owned(),
        versions: vec![v1.clone()],
        preferred_version: Some(v1),
        server_address_by_client_cidrs: None,
    }
}

/// `/apis`.
pub(crate) fn groups() -> APIGroupList {
    APIGroupList {
        groups: vec![discovery_group()],
    }
}

/// `/apis/discovery.k8s.io`.
pub(crate) fn group() -> APIGroup {
    discovery_group()
}

/// `/apis/discovery.k8s.io/v1`.
pub(crate) fn discovery_v1() -> APIResourceList {
    APIResourceList {
        group_version: format!("{DISCOVERY_GROUP}/v1"),
        resources: vec![resource(
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
            READ,
            &[],
            &[],
        )],
    }
}
