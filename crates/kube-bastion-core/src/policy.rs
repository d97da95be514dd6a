//! Which destination addresses may be dialed.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::Status;

/// The destination policy: kube-apiserver's rule (global unicast only), then configured
/// allow CIDRs (which may re-admit, say, loopback for a demo), then deny CIDRs (which always
/// win).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// An address the policy refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address not allowed")]
pub struct AddressNotAllowed(pub IpAddr);

impl DestinationPolicy {
    /// kube-apiserver's rule with no extra CIDRs.
    pub fn kube_default() -> Self {
        Self::default()
    }

    /// Also admit addresses in `net` that the kube rule refuses.
    pub fn allow(mut self, net: IpNet) -> Self {
        self.allow.push(net);
        self
    }

    /// Refuse every address in `net`, whatever else says.
    pub fn deny(mut self, net: IpNet) -> Self {
        self.deny.push(net);
        self
    }

    /// Admit loopback (`127.0.0.0/8`, `::1`): for tests and demos only.
    pub fn allow_loopback(self) -> Self {
        self.allow("127.0.0.0/8".parse().expect("valid CIDR"))
            .allow("::1/128".parse().expect("valid CIDR"))
    }

    /// Whether `ip` may be dialed.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressNotAllowed> {
        let _ = ip;
        todo!()
    }

    /// Judges the addresses a hostname resolved to (node addresses): every one must pass.
    /// Errors: 400 `no addresses for hostname` when empty, 400 `address not allowed`.
    pub fn check_resolved(&self, ips: &[IpAddr]) -> Result<(), Status> {
        let _ = ips;
        todo!()
    }
}

/// Go's `net.IP.IsGlobalUnicast`, IPv4-mapped IPv6 judged as IPv4.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    let _ = ip;
    todo!()
}

/// Parses an IP as Go's lenient parser does for pod IPs (IPv4 octets with leading zeros are
/// decimal).
pub fn parse_ip_lenient(text: &str) -> Option<IpAddr> {
    let _ = text;
    todo!()
}
