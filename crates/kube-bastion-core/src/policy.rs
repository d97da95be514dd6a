//! Which destination addresses may be dialed.
//!
//! kube-apiserver refuses to proxy to a pod IP or a node address that is not *global
//! unicast* in Go's sense ([`is_global_unicast`]): unspecified, loopback, link-local unicast,
//! multicast and the IPv4 broadcast address are refused, IPv4-mapped IPv6 forms included.
//! [`DestinationPolicy`] applies that rule to every candidate of every kind (services too,
//! which upstream does not do) and adds CIDR allow and deny lists.
//!
//! ```
//! use kube_bastion_core::DestinationPolicy;
//!
//! let policy = DestinationPolicy::kube_default().deny("10.96.0.0/12".parse().unwrap());
//! assert!(policy.check("10.0.0.1".parse().unwrap()).is_ok());
//! assert!(policy.check("10.96.0.1".parse().unwrap()).is_err()); // denied CIDR
//! assert!(policy.check("127.0.0.1".parse().unwrap()).is_err()); // loopback
//! assert!(policy.check("::ffff:169.254.169.254".parse().unwrap()).is_err()); // mapped link-local
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

impl From<AddressNotAllowed> for Status {
    /// 400 BadRequest `address not allowed`, as kube-apiserver answers.
    fn from(_: AddressNotAllowed) -> Self {
        Status::bad_request("address not allowed")
    }
}

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
        self.allow(IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default(),
        ))
        .allow(IpNet::V6(
            ipnet::Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).unwrap_or_default(),
        ))
    }

    /// The CIDRs that re-admit addresses the kube rule refuses.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// The CIDRs that are always refused.
    pub fn denied(&self) -> &[IpNet] {
        &self.deny
    }

    /// Whether `ip` may be dialed. An IPv4-mapped IPv6 address is judged as the IPv4 address
    /// it carries, by the kube rule and by the CIDR lists alike.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressNotAllowed> {
        let canonical = ip.to_canonical();
        let in_any = |nets: &[IpNet]| {
            nets.iter()
                .any(|net| net.contains(&ip) || net.contains(&canonical))
        };
        if in_any(&self.deny) {
            return Err(AddressNotAllowed(ip));
        }
        if is_global_unicast(canonical) || in_any(&self.allow) {
            Ok(())
        } else {
            Err(AddressNotAllowed(ip))
        }
    }

    /// Whether `ip` may be dialed, as a bool.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.check(ip).is_ok()
    }

    /// Judges the addresses a hostname resolved to (node addresses): every one must pass.
    /// Errors: 400 `no addresses for hostname` when empty, 400 `address not allowed`.
    pub fn check_resolved(&self, ips: &[IpAddr]) -> Result<(), Status> {
        if ips.is_empty() {
            return Err(Status::bad_request("no addresses for hostname"));
        }
        for ip in ips {
            self.check(*ip)?;
        }
        Ok(())
    }
}

/// Go's `net.IP.IsGlobalUnicast`, IPv4-mapped IPv6 judged as IPv4.
///
/// Refuses the unspecified addresses, loopback, multicast, link-local unicast and
/// `255.255.255.255`; everything else (RFC 1918, CGNAT, ULA, `0.1.2.3`, `240.0.0.0/4`, ...)
/// is global unicast.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local())
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Parses an IP as Go's lenient parser does for pod IPs (IPv4 octets with leading zeros are
/// decimal).
///
/// IPv4-mapped IPv6 addresses come back as the IPv4 address they carry (Go treats them the
/// same way when it prints and dials them). Zones (`fe80::1%eth0`) are not IP addresses here,
/// as in Go's `ParseIP`.
///
/// ```
/// use kube_bastion_core::policy::parse_ip_lenient;
///
/// assert_eq!(parse_ip_lenient("010.000.000.001"), Some("10.0.0.1".parse().unwrap()));
/// assert_eq!(parse_ip_lenient("::ffff:127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
/// assert_eq!(parse_ip_lenient("fd00::1"), Some("fd00::1".parse().unwrap()));
/// assert_eq!(parse_ip_lenient("1"), None);
/// assert_eq!(parse_ip_lenient(""), None);
/// ```
pub fn parse_ip_lenient(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if !text.contains(':') {
        return parse_ipv4_lenient(text).map(IpAddr::V4);
    }
    // IPv6 with an embedded IPv4 tail that has leading zeros (`::ffff:010.0.0.1`).
    let (head, tail) = text.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_ipv4_lenient(tail)?;
    let rebuilt = format!("{head}:{v4}");
    rebuilt
        .parse::<Ipv6Addr>()
        .ok()
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

/// Four dot-separated decimal octets, each one or more ASCII digits with a value up to 255;
/// leading zeros are decimal, never octal.
fn parse_ipv4_lenient(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value = part.bytes().try_fold(0u32, |acc, b| {
            let next = acc * 10 + u32::from(b - b'0');
            (next <= 255).then_some(next)
        })?;
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test IP")
    }

    #[test]
    fn global_unicast_matches_go() {
        for allowed in [
            "10.0.0.1",
            "0.1.2.3",
            "240.0.0.1",
            "100.64.0.1",
            "fd00::1",
            "2600::",
        ] {
            assert!(is_global_unicast(ip(allowed)), "{allowed}");
        }
        for refused in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "127.255.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "169.254.1.1",
            "fe80::1",
            "febf::1",
            "224.0.0.1",
            "239.1.2.3",
            "ff02::1",
            "ff0e::1",
            "255.255.255.255",
            "::ffff:255.255.255.255",
        ] {
            assert!(!is_global_unicast(ip(refused)), "{refused}");
        }
        // fec0::/10 (deprecated site-local) is global unicast for Go.
        assert!(is_global_unicast(ip("fec0::1")));
    }

    #[test]
    fn lenient_parsing() {
        assert_eq!(parse_ip_lenient("001.002.003.004"), Some(ip("1.2.3.4")));
        assert_eq!(parse_ip_lenient("0001.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(parse_ip_lenient("::ffff:010.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_ip_lenient("256.0.0.1"), None);
        assert_eq!(parse_ip_lenient("1.2.3"), None);
        assert_eq!(parse_ip_lenient("1.2.3.4.5"), None);
        assert_eq!(parse_ip_lenient("1.2.3.-4"), None);
        assert_eq!(parse_ip_lenient("1.2..4"), None);
        assert_eq!(parse_ip_lenient("fe80::1%eth0"), None);
        assert_eq!(parse_ip_lenient("a:b:c"), None);
        assert_eq!(parse_ip_lenient("99999999999999999999.1.1.1"), None);
    }

    #[test]
    fn allow_and_deny() {
        let policy = DestinationPolicy::kube_default()
            .allow_loopback()
            .deny("10.0.0.0/8".parse().expect("cidr"))
            .deny("127.0.0.2/32".parse().expect("cidr"));
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(policy.allows(ip("::ffff:127.0.0.1")));
        assert!(policy.allows(ip("::1")));
        assert!(!policy.allows(ip("127.0.0.2")), "deny beats allow");
        assert!(!policy.allows(ip("10.1.2.3")), "deny beats the kube rule");
        assert!(
            !policy.allows(ip("::ffff:10.1.2.3")),
            "deny sees through IPv4 mapping"
        );
        assert!(!policy.allows(ip("169.254.169.254")));
        assert_eq!(
            policy.check(ip("10.0.0.1")),
            Err(AddressNotAllowed(ip("10.0.0.1")))
        );
        assert!(DestinationPolicy::kube_default().allows(ip("8.8.8.8")));
    }
}
