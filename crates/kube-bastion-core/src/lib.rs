//! The pure core of kube-bastion.
//!
//! Everything from "an HTTP method, path and query arrived" to "these are the endpoints this
//! request may go to, over this scheme, or this exact kube-apiserver error", with no sockets
//! and no async runtime:
//!
//! * [`path`]: the proxy route grammar (`/api/v1/namespaces/{ns}/pods/{id}/proxy/...`),
//!   path cleaning, re-encoding and the 301 for a bare `/proxy`;
//! * [`id`]: the `scheme:name:port` target id ([`TargetId`]);
//! * [`authz`]: kube-style authorization [`Attributes`] derived from the same parse;
//! * [`cluster`]: the [`ClusterView`] trait and the in-memory [`MemoryCluster`];
//! * [`resolve`](mod@resolve): target resolution for pods, services and nodes ([`Target`]);
//! * [`policy`]: which destination addresses may be dialed ([`DestinationPolicy`]);
//! * [`status`]: `metav1.Status`, the only error body a client ever sees ([`Status`]).
//!
//! # Unit-testing resolution
//!
//! Parse a request with [`ProxyRequest::route`], load a small cluster from the YAML that
//! `kubectl get -o yaml` prints (or that you write by hand) into a [`MemoryCluster`], and
//! [`resolve()`] the one against the other: no server, no sockets.
//!
//! ```
//! use http::{HeaderMap, Method, Uri};
//! use kube_bastion_core::{
//!     AppProtocol, Host, MemoryCluster, ProxyRequest, ResolveOptions, Route, Scheme,
//!     TransportKind, resolve,
//! };
//!
//! let cluster = MemoryCluster::from_yaml(
//!     r#"
//! apiVersion: v1
//! kind: Pod
//! metadata: {name: web-0, namespace: shop}
//! spec:
//!   containers:
//!   - name: app
//!     image: example.com/shop/web:1.0
//!     ports: [{name: http, containerPort: 8080}]
//! status:
//!   podIPs: [{ip: 10.244.1.7}]
//! ---
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web, namespace: shop}
//! spec:
//!   selector: {app: web}
//!   ports: [{name: http, port: 80, targetPort: http, appProtocol: kubernetes.io/h2c}]
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata:
//!   name: web-x7k2p
//!   namespace: shop
//!   labels: {kubernetes.io/service-name: web}
//! addressType: IPv4
//! ports: [{name: http, port: 8080, protocol: TCP}]
//! endpoints:
//! - addresses: [10.244.1.7]
//!   conditions: {ready: true}
//!   targetRef: {kind: Pod, namespace: shop, name: web-0}
//! "#,
//! )?;
//!
//! // The same parse routes, authorizes and resolves the request.
//! let route = |path: &str| -> Result<ProxyRequest, Box<dyn std::error::Error>> {
//!     let uri: Uri = path.parse()?;
//!     match ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new()) {
//!         Route::Proxy(request) => Ok(request),
//!         Route::NotProxy => Err("not a proxy route".into()),
//!     }
//! };
//! let options = ResolveOptions::default();
//!
//! // Service port 80 is named `http`; its endpoint listens on 8080 and speaks h2c.
//! let request = route("/api/v1/namespaces/shop/services/web:80/proxy/healthz")?;
//! assert_eq!(request.attributes().name, "web:80");
//! let target = resolve(&*cluster.snapshot(), &request, &options)?;
//! assert_eq!((target.scheme, target.protocol), (Scheme::Http, AppProtocol::H2c));
//! assert_eq!(target.transport, TransportKind::Generic);
//! assert_eq!(target.candidates.len(), 1);
//! assert_eq!(target.candidates[0].authority(), "10.244.1.7:8080");
//! assert_eq!(target.tls_server_name.as_deref(), Some("web.shop.svc"));
//!
//! // A pod reached through its named container port.
//! let request = route("/api/v1/namespaces/shop/pods/https:web-0:http/proxy/")?;
//! let target = resolve(&*cluster.snapshot(), &request, &options)?;
//! assert_eq!(target.scheme, Scheme::Https);
//! assert_eq!(target.candidates[0].host, Host::Ip("10.244.1.7".parse()?));
//! assert_eq!(target.candidates[0].port, Some(8080));
//!
//! // Failures are kube-apiserver's Status, byte for byte.
//! let request = route("/api/v1/namespaces/shop/services/web:81/proxy/")?;
//! let status = resolve(&*cluster.snapshot(), &request, &options).unwrap_err();
//! assert_eq!(status.code(), 503);
//! assert_eq!(status.message(), r#"no service port 81 found for service "web""#);
//!
//! let request = route("/api/v1/namespaces/shop/pods/web-1/proxy/")?;
//! let status = resolve(&*cluster.snapshot(), &request, &options).unwrap_err();
//! assert_eq!((status.code(), status.message()), (404, r#"pods "web-1" not found"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod authz;
pub mod cluster;
pub mod go;
pub mod id;
pub mod kubelet;
pub mod path;
pub mod policy;
pub mod rbac;
pub mod resolve;
pub mod status;
mod view;

pub use authz::Attributes;
pub use cluster::{
    Change, ClusterEvent, ClusterSnapshot, ClusterSource, ClusterView, EventType, LoadError,
    MemoryCluster, Object, ObjectKind, StoredKind, parse_objects,
};
pub use id::{InvalidTargetId, Scheme, TargetId};
pub use path::{Plan, ProxyRequest, ResourceKind, Route};
pub use policy::{AddressNotAllowed, DestinationPolicy};
pub use rbac::{RbacDecision, RbacPolicy, RbacRequest};
pub use resolve::{
    AppProtocol, Candidate, Candidates, EndpointState, Host, KubeletOptions, NodeAddressType,
    ResolveOptions, ServiceBackends, ServiceInfo, Target, TransportKind, resolve,
};
pub use status::Status;

/// Re-export of the `k8s-openapi` crate this crate is built against, so users name the same
/// `Pod`, `Service`, ... types.
pub use k8s_openapi;
