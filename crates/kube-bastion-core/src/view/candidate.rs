//! The endpoints a request may go to: [`Candidate`] and the shared list [`Candidates`].

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;

use crate::Scheme;

/// Where a candidate lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address, already approved by the destination policy.
    Ip(IpAddr),
    /// A DNS name (node `Hostname`/`*DNS` addresses): the caller resolves it once, judges
    /// every address with [`DestinationPolicy::check_resolved`](crate::DestinationPolicy::check_resolved) and dials what it checked.
    Name(String),
}

/// Readiness of a service endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Ready (or unknown readiness, which counts as ready).
    Ready,
    /// Not ready but serving while terminating: used only when nothing is ready.
    ServingTerminating,
}

/// One endpoint a request may go to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The address.
    pub host: Host,
    /// The port, or `None` when the id and the pod named none (dial the scheme's default).
    pub port: Option<u16>,
    /// The pod behind this endpoint, when known (shared with the snapshot: cloning a
    /// candidate does not copy the name).
    pub pod: Option<Arc<str>>,
    /// Readiness (always `Ready` for pods and nodes).
    pub state: EndpointState,
}

impl Candidate {
    /// `host[:port]` as upstream's location host prints it (`1.2.3.4`, `1.2.3.4:80`,
    /// `[fd00::1]:80`).
    pub fn authority(&self) -> String {
        let mut out = String::new();
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => {
                let _ = write!(out, "{ip}");
            }
            Host::Ip(IpAddr::V6(ip)) => {
                let _ = write!(out, "[{ip}]");
            }
            Host::Name(name) => out.push_str(name),
        }
        if let Some(port) = self.port {
            let _ = write!(out, ":{port}");
        }
        out
    }

    /// The port to dial: the explicit one or the scheme's default.
    pub fn dial_port(&self, scheme: Scheme) -> u16 {
        self.port.unwrap_or(scheme.default_port())
    }
}

/// The candidate endpoints of a [`Target`](crate::Target): an immutable list shared by reference count.
///
/// Cloning it is O(1) whatever its length: service resolution hands out the list its
/// [`ServiceBackends`](crate::ServiceBackends) precomputed (when the destination policy keeps every address, the usual
/// case) instead of copying it per request, and a balancer can tell by
/// [`same_list`](Self::same_list) that two targets carry the very same list. It reads as a
/// slice (`candidates[0]`, `.len()`, `.iter()`).
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use kube_bastion_core::{Candidate, Candidates, EndpointState, Host};
///
/// let candidates: Candidates = (1..=3)
///     .map(|last| Candidate {
///         host: Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
///         port: Some(8080),
///         pod: None,
///         state: EndpointState::Ready,
///     })
///     .collect();
/// let shared = candidates.clone();
/// assert!(shared.same_list(&candidates));
/// assert_eq!(shared[2].authority(), "10.0.0.3:8080");
/// assert_eq!(shared.len(), 3);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Candidates(Arc<[Candidate]>);

impl Candidates {
    /// The shared list.
    pub fn as_arc(&self) -> &Arc<[Candidate]> {
        &self.0
    }

    /// Whether `self` and `other` are the same list (one allocation), not merely equal ones.
    pub fn same_list(&self, other: &Candidates) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The candidates as a slice.
    pub fn as_slice(&self) -> &[Candidate] {
        &self.0
    }
}

impl Default for Candidates {
    fn default() -> Self {
        Self(Arc::from([]))
    }
}

impl std::ops::Deref for Candidates {
    type Target = [Candidate];

    fn deref(&self) -> &[Candidate] {
        &self.0
    }
}

impl AsRef<[Candidate]> for Candidates {
    fn as_ref(&self) -> &[Candidate] {
        &self.0
    }
}

impl fmt::Debug for Candidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl From<Vec<Candidate>> for Candidates {
    fn from(list: Vec<Candidate>) -> Self {
        Self(Arc::from(list))
    }
}

impl From<Arc<[Candidate]>> for Candidates {
    fn from(list: Arc<[Candidate]>) -> Self {
        Self(list)
    }
}

impl<const N: usize> From<[Candidate; N]> for Candidates {
    fn from(list: [Candidate; N]) -> Self {
        Self(Arc::from(list))
    }
}

impl FromIterator<Candidate> for Candidates {
    fn from_iter<I: IntoIterator<Item = Candidate>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Candidates {
    type Item = &'a Candidate;
    type IntoIter = std::slice::Iter<'a, Candidate>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
