//! The context of one proxy request once its target is resolved: the approved endpoints
//! (the destination policy's last word, names resolved once) and what the forwarding and
//! upgrade steps read from the request and the configuration.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

use crate::config::ProxyConfig;
use crate::headers::HostHeader;
use crate::{Candidate, Host, ProxyRequest, Status, Target, UserInfo};

/// One address the destination policy approved, with the candidate it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ApprovedEndpoint {
    /// The address to dial (never re-resolved).
    pub addr: SocketAddr,
    /// Index of the candidate in [`Target::candidates`].
    pub candidate: usize,
}

/// Everything known about a proxy request once its target is resolved and its endpoints
/// approved: what the balancing, upgrade and rewriting modules receive.
#[derive(Debug)]
pub(crate) struct ProxyContext {
    /// The configuration (transport, timeouts, header options, switches).
    pub config: ProxyConfig,
    /// The parsed request.
    pub request: ProxyRequest,
    /// The resolved target.
    pub target: Target,
    /// The client address, when the host provided it.
    pub peer: Option<SocketAddr>,
    /// The `Host` the client addressed (its `Host` header or HTTP/2 `:authority`).
    pub client_host: Option<HeaderValue>,
    /// The user the backend is told about: set only for a Service that asked for it
    /// ([`crate::FORWARD_IDENTITY_ANNOTATION`]) when the request carries a [`UserInfo`].
    pub identity: Option<UserInfo>,
    /// The addresses approved for candidates that name a host (resolved once, each
    /// checked). IP candidates need no entry: their endpoint is computed from the
    /// candidate, so a Service with many endpoints costs nothing per request here.
    pub(crate) resolved: Vec<ApprovedEndpoint>,
}

impl ProxyContext {
    /// The endpoint to dial for candidate `candidate` (an index into
    /// [`Target::candidates`]): its IP and dial port, or for a candidate naming a host the
    /// first address the name resolved to. `None` for an index out of range.
    pub(crate) fn endpoint(&self, candidate: usize) -> Option<ApprovedEndpoint> {
        let c = self.target.candidates.get(candidate)?;
        match &c.host {
            Host::Ip(ip) => Some(ApprovedEndpoint {
                addr: SocketAddr::new(*ip, c.dial_port(self.target.scheme)),
                candidate,
            }),
            Host::Name(_) => self
                .resolved
                .iter()
                .find(|e| e.candidate == candidate)
                .cloned(),
        }
    }

    /// The candidate behind `endpoint`.
    pub(crate) fn candidate(&self, endpoint: &ApprovedEndpoint) -> &Candidate {
        &self.target.candidates[endpoint.candidate]
    }

    /// The backend authority as kube-apiserver's location host prints it (`10.1.2.3:8080`,
    /// or the node address name with its port); what `Location` rewriting compares with.
    pub(crate) fn backend_authority(&self, endpoint: &ApprovedEndpoint) -> String {
        self.candidate(endpoint).authority()
    }

    /// The `Host` header the backend receives for `endpoint`, following
    /// [`HostHeader`].
    pub(crate) fn backend_host(&self, endpoint: &ApprovedEndpoint) -> Option<HeaderValue> {
        match self.config.headers().host {
            HostHeader::Client => self.client_host.clone(),
            HostHeader::Target => HeaderValue::from_str(&self.backend_authority(endpoint)).ok(),
        }
    }

    /// The peer IP appended to `X-Forwarded-For`.
    pub(crate) fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    /// What the header rules add to this request: `X-Forwarded-For`, `X-Forwarded-Uri`
    /// (`uri`), `X-Forwarded-Prefix` (`prefix`) and the identity the Service asked for.
    pub(crate) fn forwarded<'a>(
        &'a self,
        uri: &'a str,
        prefix: &'a str,
    ) -> crate::headers::Forwarded<'a> {
        crate::headers::Forwarded {
            peer: self.peer_ip(),
            uri,
            prefix,
            identity: self.identity.as_ref(),
        }
    }
}

/// Resolves the candidates that name a host, once, and checks every address they resolved
/// to; IP candidates were approved by resolution and need nothing here. Service candidates
/// are always IPs (EndpointSlice and Endpoints addresses), so a Service is never scanned:
/// this step stays O(1) however many endpoints it has.
///
/// A policy with allowed endpoints ([`DestinationPolicy::allow_endpoint`](crate::DestinationPolicy::allow_endpoint))
/// judges ports too: then every candidate's dial address is checked (O(candidates), only in
/// that mode), and one that fails refuses the request with kube-apiserver's
/// `address not allowed`.
pub(crate) async fn approve(
    config: &ProxyConfig,
    target: &Target,
) -> Result<Vec<ApprovedEndpoint>, Status> {
    let policy = config.destination_policy();
    if policy.has_endpoint_rules() {
        for c in target.candidates.iter() {
            if let Host::Ip(ip) = c.host {
                policy.check_endpoint(SocketAddr::new(ip, c.dial_port(target.scheme)))?;
            }
        }
    }
    let mut resolved = Vec::new();
    if target.service.is_some() {
        return Ok(resolved);
    }
    let mut named = 0;
    for (i, c) in target.candidates.iter().enumerate() {
        let Host::Name(name) = &c.host else {
            continue;
        };
        named += 1;
        let port = c.dial_port(target.scheme);
        let lookup = tokio::net::lookup_host((name.as_str(), port));
        let addrs = match tokio::time::timeout(config.timeouts().connect, lookup).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => return Err(Status::bad_request(format!("lookup {name}: {e}"))),
            Err(_) => return Err(Status::bad_request(format!("lookup {name}: timeout"))),
        };
        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        ips.dedup();
        policy.check_resolved(&ips)?;
        if policy.has_endpoint_rules() {
            for ip in &ips {
                policy.check_endpoint(SocketAddr::new(*ip, port))?;
            }
        }
        resolved.extend(ips.into_iter().map(|ip| ApprovedEndpoint {
            addr: SocketAddr::new(ip, port),
            candidate: i,
        }));
    }
    if named == target.candidates.len() && resolved.is_empty() {
        return Err(Status::service_unavailable("no endpoints available"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderMap, Method, Uri};

    use super::*;
    use crate::{AppProtocol, MemoryCluster, Route, Scheme, TransportKind};
    use kube_bastion_core::EndpointState;

    fn context() -> ProxyContext {
        let config = ProxyConfig::builder(Arc::new(MemoryCluster::new()))
            .build()
            .expect("config");
        let uri: Uri = "/api/v1/nodes/n1/proxy/".parse().expect("uri");
        let Route::Proxy(request) = ProxyRequest::route(&Method::GET, &uri, &HeaderMap::new())
        else {
            panic!("a proxy route");
        };
        let candidate = |host: Host, port: Option<u16>| Candidate {
            host,
            port,
            pod: None,
            state: EndpointState::Ready,
        };
        let name = |n: &str| Host::Name(n.to_owned());
        let ip = |s: &str| Host::Ip(s.parse().expect("ip"));
        ProxyContext {
            config,
            request,
            target: Target {
                scheme: Scheme::Https,
                scheme_explicit: false,
                protocol: AppProtocol::Http,
                transport: TransportKind::Generic,
                candidates: vec![
                    candidate(ip("10.0.0.1"), Some(8443)),
                    candidate(name("node.example"), Some(10250)),
                    candidate(ip("10.0.0.2"), None),
                ]
                .into(),
                service: None,
                tls_server_name: None,
            },
            peer: None,
            client_host: None,
            identity: None,
            resolved: vec![
                ApprovedEndpoint {
                    addr: "192.0.2.7:10250".parse().expect("addr"),
                    candidate: 1,
                },
                ApprovedEndpoint {
                    addr: "192.0.2.8:10250".parse().expect("addr"),
                    candidate: 1,
                },
            ],
        }
    }

    #[test]
    fn ip_endpoints_are_computed_and_names_use_their_resolved_addresses() {
        let ctx = context();
        let addr = |s: &str| -> SocketAddr { s.parse().expect("addr") };
        let endpoint = |i: usize| ctx.endpoint(i).map(|e| (e.addr, e.candidate));
        assert_eq!(endpoint(0), Some((addr("10.0.0.1:8443"), 0)));
        assert_eq!(endpoint(1), Some((addr("192.0.2.7:10250"), 1)));
        // No port: the scheme's default.
        assert_eq!(endpoint(2), Some((addr("10.0.0.2:443"), 2)));
        assert_eq!(endpoint(3), None);
    }
}
