//! Which destination addresses may be dialed.
//!
//! kube-apiserver refuses to proxy to a pod IP or a node address that is not *global
//! unicast* in Go's sense ([`is_global_unicast`]): unspecified, loopback, link-local unicast,
//! multicast and the IPv4 broadcast address are refused, IPv4-mapped IPv6 forms included.
//! [`DestinationPolicy`] applies that rule to every candidate of every kind (services too,
//! which upstream does not do), judges the IPv6 forms that carry an IPv4 address
//! (IPv4-compatible `::a.b.c.d` and NAT64 `64:ff9b::a.b.c.d`, [`embedded_ipv4`]) by that
//! address as well, and adds CIDR allow and deny lists, exact `IP:port` allowances for demos
//! ([`DestinationPolicy::allow_endpoint`]) and an opt-in list of cloud metadata addresses
//! ([`DestinationPolicy::deny_cloud_metadata`]).
//!
//! ```
//! use kube_bastion_core::DestinationPolicy;
//!
//! let policy = DestinationPolicy::kube_default().deny("10.96.0.0/12".parse().unwrap());
//! assert!(policy.check("10.0.0.1".parse().unwrap()).is_ok());
//! assert!(policy.check("10.96.0.1".parse().unwrap()).is_err()); // denied CIDR
//! assert!(policy.check("127.0.0.1".parse().unwrap()).is_err()); // loopback
//! assert!(policy.check("::ffff:169.254.169.254".parse().unwrap()).is_err()); // mapped link-local
//! assert!(policy.check("64:ff9b::a9fe:a9fe".parse().unwrap()).is_err()); // NAT64 link-local
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::Status;

/// The destination policy: kube-apiserver's rule (global unicast only), then configured
/// allow CIDRs (which may re-admit, say, loopback for a demo) and allowed endpoints, then
/// deny CIDRs (which always win).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    endpoints: Vec<SocketAddr>,
}

/// The cloud instance-metadata and host-agent addresses [`DestinationPolicy::deny_cloud_metadata`]
/// refuses, with who serves there. Link-local ones are refused by the kube rule already;
/// they are listed so an allow CIDR can never re-admit them.
pub const CLOUD_METADATA: [(&str, &str); 8] = [
    (
        "169.254.169.254/32",
        "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean metadata",
    ),
    ("169.254.170.2/32", "AWS ECS task metadata and credentials"),
    ("169.254.169.123/32", "AWS time sync"),
    ("fd00:ec2::254/128", "AWS instance metadata over IPv6"),
    ("fd00:ec2::23/128", "AWS time sync over IPv6"),
    (
        "168.63.129.16/32",
        "Azure WireServer (host agent, extension settings)",
    ),
    ("100.100.100.200/32", "Alibaba Cloud metadata"),
    ("169.254.0.23/32", "Tencent Cloud metadata"),
];

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

    /// Refuse every address of [`CLOUD_METADATA`], whatever allow CIDRs say. Off in
    /// [`DestinationPolicy::kube_default`] (kube-apiserver refuses only the link-local
    /// ones, through its global-unicast rule); turn it on wherever the proxy runs on a
    /// cloud instance.
    pub fn deny_cloud_metadata(mut self) -> Self {
        for (net, _) in CLOUD_METADATA {
            if let Ok(net) = net.parse() {
                self.deny.push(net);
            }
        }
        self
    }

    /// Also admit exactly `addr` (that IP at that port) when the kube rule refuses the IP:
    /// a demo's loopback backends, without opening every port of the host.
    ///
    /// Resolution admits the IP ([`DestinationPolicy::check`]); the port is judged when
    /// the endpoint is known ([`DestinationPolicy::check_endpoint`], which the proxy calls
    /// for every candidate while the policy has allowed endpoints).
    ///
    /// ```
    /// use kube_bastion_core::DestinationPolicy;
    ///
    /// let policy = DestinationPolicy::kube_default().allow_endpoint("127.0.0.41:10250".parse().unwrap());
    /// assert!(policy.check_endpoint("127.0.0.41:10250".parse().unwrap()).is_ok());
    /// assert!(policy.check_endpoint("127.0.0.41:22".parse().unwrap()).is_err());
    /// assert!(policy.check_endpoint("127.0.0.1:10250".parse().unwrap()).is_err());
    /// ```
    pub fn allow_endpoint(mut self, addr: SocketAddr) -> Self {
        self.endpoints.push(addr);
        self
    }

    /// The endpoints admitted by [`DestinationPolicy::allow_endpoint`].
    pub fn allowed_endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
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
    /// it carries, by the kube rule and by the CIDR lists alike; an IPv4-compatible or NAT64
    /// address ([`embedded_ipv4`]) must pass as itself and as the IPv4 address it carries.
    ///
    /// An IP named by an allowed endpoint passes here; its port is judged by
    /// [`DestinationPolicy::check_endpoint`].
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressNotAllowed> {
        self.judge(ip, |canonical| {
            self.endpoints
                .iter()
                .any(|e| e.ip().to_canonical() == canonical)
        })
    }

    /// Whether the endpoint `addr` may be dialed: [`DestinationPolicy::check`], except that
    /// an address the kube rule and the allow CIDRs refuse passes only as an exact allowed
    /// endpoint (IP and port).
    pub fn check_endpoint(&self, addr: SocketAddr) -> Result<(), AddressNotAllowed> {
        self.judge(addr.ip(), |canonical| {
            self.endpoints
                .iter()
                .any(|e| e.ip().to_canonical() == canonical && e.port() == addr.port())
        })
    }

    /// Whether the policy has allowed endpoints, so that ports must be judged
    /// ([`DestinationPolicy::check_endpoint`]).
    pub fn has_endpoint_rules(&self) -> bool {
        !self.endpoints.is_empty()
    }

    fn judge(
        &self,
        ip: IpAddr,
        endpoint_allows: impl Fn(IpAddr) -> bool,
    ) -> Result<(), AddressNotAllowed> {
        let canonical = ip.to_canonical();
        let embedded = match canonical {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let in_any = |nets: &[IpNet], ip: IpAddr| nets.iter().any(|net| net.contains(&ip));
        let forms = [Some(ip), Some(canonical), embedded];
        let listed = |nets: &[IpNet]| forms.iter().flatten().any(|f| in_any(nets, *f));
        if listed(&self.deny) {
            return Err(AddressNotAllowed(ip));
        }
        let kube_rule = is_global_unicast(canonical) && embedded.is_none_or(is_global_unicast);
        // An allowance names the address itself (or its mapped IPv4 form), never a NAT64
        // or compatible spelling of it: those stay refused unless the kube rule admits them.
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical));
        if kube_rule || allowed || endpoint_allows(canonical) {
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

/// The IPv4 address an IPv4-compatible (`::a.b.c.d`, RFC 4291, deprecated) or NAT64
/// (`64:ff9b::a.b.c.d`, RFC 6052) IPv6 address carries; `None` for other addresses and for
/// `::` and `::1`, which are judged as IPv6. A host that routes these prefixes reaches the
/// IPv4 address, so the policy judges them by it too.
///
/// ```
/// use kube_bastion_core::policy::embedded_ipv4;
///
/// assert_eq!(embedded_ipv4("64:ff9b::a9fe:a9fe".parse().unwrap()), Some("169.254.169.254".parse().unwrap()));
/// assert_eq!(embedded_ipv4("::7f00:1".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
/// assert_eq!(embedded_ipv4("::1".parse().unwrap()), None);
/// assert_eq!(embedded_ipv4("fd00::1".parse().unwrap()), None);
/// ```
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
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

    #[test]
    fn ipv4_compatible_and_nat64_forms_are_judged_by_their_ipv4() {
        let kube = DestinationPolicy::kube_default();
        for refused in [
            "::a9fe:a9fe",        // ::169.254.169.254
            "64:ff9b::a9fe:a9fe", // NAT64 169.254.169.254
            "::7f00:1",           // ::127.0.0.1
            "64:ff9b::7f00:1",
            "64:ff9b::e000:1", // multicast 224.0.0.1
            "64:ff9b::ffff:ffff",
            "64:ff9b::",
        ] {
            assert!(!kube.allows(ip(refused)), "{refused}");
        }
        for allowed in ["64:ff9b::a00:1", "::a00:1"] {
            assert!(kube.allows(ip(allowed)), "{allowed}");
        }
        // Deny CIDRs see the embedded IPv4 address too.
        let deny = kube.clone().deny("10.0.0.0/8".parse().expect("cidr"));
        assert!(!deny.allows(ip("64:ff9b::a00:1")));
        assert!(!deny.allows(ip("::a00:1")));
        // An allowance of the IPv4 address does not admit its NAT64 spelling.
        let allow = kube.allow("169.254.0.0/16".parse().expect("cidr"));
        assert!(allow.allows(ip("169.254.169.254")));
        assert!(!allow.allows(ip("64:ff9b::a9fe:a9fe")));
    }

    #[test]
    fn cloud_metadata_preset_refuses_every_listed_address() {
        let kube = DestinationPolicy::kube_default();
        let preset = DestinationPolicy::kube_default()
            .allow("169.254.0.0/16".parse().expect("cidr"))
            .deny_cloud_metadata();
        for (net, _) in CLOUD_METADATA {
            let net: IpNet = net.parse().expect("listed CIDR");
            assert!(!preset.allows(net.addr()), "{net}");
        }
        // Without the preset these pass the kube rule (not link-local): the default
        // refuses only what upstream refuses.
        for open in ["168.63.129.16", "100.100.100.200", "fd00:ec2::254"] {
            assert!(kube.allows(ip(open)), "{open}");
            assert!(!preset.allows(ip(open)), "{open}");
        }
        assert!(
            !preset.allows(ip("64:ff9b::a83f:8110")),
            "NAT64 168.63.129.16"
        );
        assert!(preset.allows(ip("10.0.0.1")));
        assert!(
            preset.allows(ip("169.254.1.1")),
            "the allow CIDR still works"
        );
    }

    #[test]
    fn allowed_endpoints_admit_one_port_of_one_address() {
        let policy = DestinationPolicy::kube_default()
            .allow_endpoint("127.0.0.41:10250".parse().expect("addr"))
            .deny("127.0.0.42/32".parse().expect("cidr"))
            .allow_endpoint("127.0.0.42:80".parse().expect("addr"));
        assert!(policy.has_endpoint_rules());
        let endpoint = |text: &str| policy.check_endpoint(text.parse().expect("addr"));
        assert!(endpoint("127.0.0.41:10250").is_ok());
        assert!(endpoint("[::ffff:127.0.0.41]:10250").is_ok());
        assert!(endpoint("127.0.0.41:22").is_err());
        assert!(endpoint("127.0.0.1:10250").is_err());
        assert!(endpoint("127.0.0.42:80").is_err(), "deny wins");
        assert!(
            endpoint("10.0.0.1:22").is_ok(),
            "the kube rule needs no allowance"
        );
        // Resolution judges the IP alone: the allowed endpoint's IP passes, others not.
        assert!(policy.allows(ip("127.0.0.41")));
        assert!(!policy.allows(ip("127.0.0.1")));
        assert!(!DestinationPolicy::kube_default().has_endpoint_rules());
    }
}
