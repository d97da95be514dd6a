//! The columns and cells of each served kind, as kubectl prints them.

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::{AGE, Column, NAME, Tabular, abbreviated, age, name, or_none};

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
