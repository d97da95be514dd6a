//! The `meta.k8s.io/v1` `Table` form of lists and objects, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and prints as columns.
//!
//! k8s-openapi has no `Table` type (it is not in the OpenAPI document), so the few fields
//! are written here as JSON.

use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use serde_json::{Value, json};

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value.
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") | Some("PartialObjectMetadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Object\", \
                 \"None\", \"PartialObjectMetadata\""
            )),
        }
    }
}

/// A column: name, type, format, description and priority (0 = shown by default, 1 = with
/// `-o wide`).
type Column = (&'static str, &'static str, &'static str, &'static str, u8);

/// A kind that has a table form.
pub(crate) trait Tabular: Metadata<Ty = ObjectMeta> + Serialize {
    /// The column definitions.
    const COLUMNS: &'static [Column];
    /// The cells of one row, in column order.
    fn cells(&self, now: i64) -> Vec<Value>;
}

/// Builds the Table of `items`.
pub(crate) fn table<'a, T: Tabular + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    resource_version: u64,
    include: IncludeObject,
    now: i64,
) -> Value {
    let columns: Vec<Value> = T::COLUMNS
        .iter()
        .map(|(name, ty, format, description, priority)| {
            json!({
                "name": name, "type": ty, "format": format,
                "description": description, "priority": priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let mut row = json!({ "cells": item.cells(now) });
            let object = match include {
                IncludeObject::None => None,
                IncludeObject::Metadata => Some(json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.metadata(),
                })),
                IncludeObject::Object => serde_json::to_value(item).ok(),
            };
            if let Some(object) = object {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version.to_string() },
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `12d`, `2y30d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

fn age(meta: &ObjectMeta, now: i64) -> Value {
    match &meta.creation_timestamp {
        Some(Time(ts)) => Value::from(human_duration(now - ts.as_second())),
        None => Value::from("<unknown>"),
    }
}

fn name(meta: &ObjectMeta) -> Value {
    Value::from(meta.name.clone().unwrap_or_default())
}

fn or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(",")
    }
}

/// `a,b,c + N more...` as kubectl prints long address lists.
fn abbreviated(items: Vec<String>) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return "<none>".to_owned();
    }
    if items.len() > MAX {
        format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX)
    } else {
        items.join(",")
    }
}

const NAME: Column = (
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace.",
    0,
);
const AGE: Column = ("Age", "string", "", "Time since the object was created.", 0);

impl Tabular for Pod {
    const COLUMNS: &'static [Column] = &[
        NAME,
        (
            "Ready",
            "string",
            "",
            "Ready containers / all containers.",
            0,
        ),
        (
            "Status",
            "string",
            "",
            "The aggregate status of the containers in this pod.",
            0,
        ),
        (
            "Restarts",
            "string",
            "",
            "The number of times the containers have restarted.",
            0,
        ),
        AGE,
        (
            "IP",
            "string",
            "",
            "The pod's IP addresses (every family).",
            0,
        ),
        ("Node", "string", "", "The node the pod runs on.", 1),
        (
            "Ports",
            "string",
            "",
            "Declared container ports as name:port.",
            1,
        ),
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let total = spec.map_or(0, |s| s.containers.len());
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or(&[]);
        let ready = statuses.iter().filter(|c| c.ready).count();
        let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
        let waiting = statuses.iter().find_map(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
        });
        let phase = if self.metadata.deletion_timestamp.is_some() {
            "Terminating".to_owned()
        } else if let Some(reason) = waiting {
            reason
        } else if let Some(reason) = status.and_then(|s| s.reason.clone()) {
            reason
        } else {
            status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Unknown".to_owned())
        };
        let mut ips: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = status.and_then(|s| s.pod_ip.clone())
        {
            ips.push(ip);
        }
        let ports: Vec<String> = spec
            .map(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .map(|p| match &p.name {
                        Some(n) => format!("{n}:{}", p.container_port),
                        None => p.container_port.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        vec![
            name(&self.metadata),
            Value::from(format!("{ready}/{total}")),
            Value::from(phase),
            Value::from(restarts.to_string()),
            age(&self.metadata, now),
            Value::from(or_none(ips)),
            Value::from(
                spec.and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "<none>".into()),
            ),
            Value::from(or_none(ports)),
        ]
    }
}

impl Tabular for Service {
    const COLUMNS: &'static [Column] = &[
        NAME,
        ("Type", "string", "", "The type of the service.", 0),
        (
            "Cluster-IP",
            "string",
            "",
            "The cluster IP of the service.",
            0,
        ),
        (
            "External-IP",
            "string",
            "",
            "External IPs of the service.",
            0,
        ),
        (
            "Port(s)",
            "string",
            "",
            "Ports as port[:nodePort]/protocol.",
            0,
        ),
        (
            "Port-Names",
            "string",
            "",
            "Port names, usable in services/<name>:<port>/proxy.",
            0,
        ),
        AGE,
        ("Selector", "string", "", "The pod selector.", 1),
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let ty = spec
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".to_owned());
        let cluster_ip = spec
            .and_then(|s| s.cluster_ip.clone())
            .unwrap_or_else(|| "<none>".into());
        let mut external: Vec<String> = spec
            .and_then(|s| s.external_ips.clone())
            .unwrap_or_default();
        if let Some(name) = spec.and_then(|s| s.external_name.clone()) {
            external.push(name);
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let port_text: Vec<String> = ports
            .iter()
            .map(|p| {
                let protocol = p.protocol.as_deref().unwrap_or("TCP");
                match p.node_port {
                    Some(node_port) => format!("{}:{node_port}/{protocol}", p.port),
                    None => format!("{}/{protocol}", p.port),
                }
            })
            .collect();
        let names: Vec<String> = ports.iter().filter_map(|p| p.name.clone()).collect();
        let selector: Vec<String> = spec
            .and_then(|s| s.selector.as_ref())
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        vec![
            name(&self.metadata),
            Value::from(ty),
            Value::from(cluster_ip),
            Value::from(or_none(external)),
            Value::from(or_none(port_text)),
            Value::from(or_none(names)),
            age(&self.metadata, now),
            Value::from(or_none(selector)),
        ]
    }
}

impl Tabular for Endpoints {
    const COLUMNS: &'static [Column] = &[
        NAME,
        (
            "Endpoints",
            "string",
            "",
            "Ready endpoint addresses as ip:port.",
            0,
        ),
        AGE,
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let mut out = Vec::new();
        for subset in self.subsets.iter().flatten() {
            let ports = subset.ports.as_deref().unwrap_or(&[]);
            for address in subset.addresses.iter().flatten() {
                if ports.is_empty() {
                    out.push(address.ip.clone());
                }
                for port in ports {
                    out.push(format!("{}:{}", address.ip, port.port));
                }
            }
        }
        vec![
            name(&self.metadata),
            Value::from(abbreviated(out)),
            age(&self.metadata, now),
        ]
    }
}

impl Tabular for EndpointSlice {
    const COLUMNS: &'static [Column] = &[
        NAME,
        (
            "AddressType",
            "string",
            "",
            "The address type of the endpoints.",
            0,
        ),
        ("Ports", "string", "", "Ports of the slice.", 0),
        ("Endpoints", "string", "", "Endpoint addresses.", 0),
        ("Ready", "string", "", "Ready endpoints / all endpoints.", 0),
        AGE,
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let ports: Vec<String> = self
            .ports
            .iter()
            .flatten()
            .map(|p| {
                p.port
                    .map_or_else(|| "<unset>".to_owned(), |n| n.to_string())
            })
            .collect();
        let addresses: Vec<String> = self
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        let ready = self
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count();
        vec![
            name(&self.metadata),
            Value::from(self.address_type.clone()),
            Value::from(or_none(ports)),
            Value::from(abbreviated(addresses)),
            Value::from(format!("{ready}/{}", self.endpoints.len())),
            age(&self.metadata, now),
        ]
    }
}

impl Tabular for Node {
    const COLUMNS: &'static [Column] = &[
        NAME,
        ("Status", "string", "", "The status of the node.", 0),
        ("Roles", "string", "", "The roles of the node.", 0),
        AGE,
        ("Version", "string", "", "Kubelet version.", 0),
        (
            "Addresses",
            "string",
            "",
            "Node addresses as type=address.",
            0,
        ),
        (
            "Kubelet-Port",
            "string",
            "",
            "The kubelet port nodes/proxy uses.",
            0,
        ),
        (
            "OS-Image",
            "string",
            "",
            "OS image reported by the node.",
            1,
        ),
        (
            "Kernel-Version",
            "string",
            "",
            "Kernel version reported by the node.",
            1,
        ),
        (
            "Container-Runtime",
            "string",
            "",
            "Container runtime reported by the node.",
            1,
        ),
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let status = self.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| match c.status.as_str() {
                "True" => "Ready",
                "False" => "NotReady",
                _ => "Unknown",
            })
            .unwrap_or("Unknown");
        let mut ready = ready.to_owned();
        if self
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
        {
            ready.push_str(",SchedulingDisabled");
        }
        let roles: Vec<String> = self
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        let addresses: Vec<String> = status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .map(|a| format!("{}={}", a.type_, a.address))
                    .collect()
            })
            .unwrap_or_default();
        let port = status
            .and_then(|s| s.daemon_endpoints.as_ref())
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port)
            .filter(|p| *p > 0)
            .map_or_else(|| "<default>".to_owned(), |p| p.to_string());
        let info = status.and_then(|s| s.node_info.as_ref());
        let info_field = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| {
            Value::from(
                info.map(|i| f(i).clone())
                    .unwrap_or_else(|| "<unknown>".to_owned()),
            )
        };
        vec![
            name(&self.metadata),
            Value::from(ready),
            Value::from(or_none(roles)),
            age(&self.metadata, now),
            info_field(|i| &i.kubelet_version),
            Value::from(or_none(addresses)),
            Value::from(port),
            info_field(|i| &i.os_image),
            info_field(|i| &i.kernel_version),
            info_field(|i| &i.container_runtime_version),
        ]
    }
}

impl Tabular for Namespace {
    const COLUMNS: &'static [Column] = &[
        NAME,
        ("Status", "string", "", "The status of the namespace.", 0),
        AGE,
    ];

    fn cells(&self, now: i64) -> Vec<Value> {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Active".to_owned());
        vec![
            name(&self.metadata),
            Value::from(phase),
            age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(3 * 365 * 86400), "3y");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn include_object_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert!(IncludeObject::parse(Some("x")).is_err());
    }
}
