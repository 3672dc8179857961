//! A sandbox's network policy: its mode, allow and deny rules, and the
//! decision for one connection. Pure: the egress proxy resolves names and
//! asks here; nothing in this module touches the network.
//!
//! A rule is `HOST[:PORTS]`: `HOST` is a domain (`api.openai.com`), a
//! wildcard (`*.pypi.org`: every name below it, not the name itself), an IP
//! address or a CIDR (`10.1.0.0/16`; IPv6 in brackets when ports follow:
//! `[fd00::/8]:443`); `PORTS` is `*`, a port, a range (`8000-8100`), or a
//! comma list of those. Without ports a rule covers every port.
//!
//! Deny rules win over allow rules. Addresses that are not public
//! ([`is_special`]: private, loopback, link-local such as
//! `169.254.169.254`, multicast, reserved, the host's own) are refused unless
//! an allow rule *names them by address*: a domain rule is not enough, so a
//! name that resolves into a private range is refused (no DNS rebinding).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A rule or policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid network rule `{0}`: {1}")]
    Rule(String, &'static str),
    #[error("at most {MAX_RULES} rules per list")]
    TooMany,
}

/// Most rules in one allow or deny list.
pub const MAX_RULES: usize = 256;

/// What a sandbox may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback only (the default).
    #[default]
    None,
    /// Only what the allow rules name (minus what the deny rules name).
    Allowlist,
    /// Every public address (minus the deny rules); an explicit, audited opt-in.
    Open,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "allowlist" => Some(Self::Allowlist),
            "open" => Some(Self::Open),
            _ => None,
        }
    }
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name (lower case, no trailing dot).
    Domain(String),
    /// Every name that ends in `.{suffix}`.
    Below(String),
    Net(IpNet),
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange(pub u16, pub u16);

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub host: HostPattern,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
}

/// Lower-cases and checks a DNS name: 1–253 characters, labels of 1–63
/// letters, digits, `-` and `_`, not starting or ending with `-`.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    ((1..=253).contains(&name.len()) && name.split('.').all(label_ok)).then_some(name)
}

fn parse_ports(s: &str) -> Option<Vec<PortRange>> {
    if s == "*" {
        return Some(Vec::new());
    }
    let one = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    s.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some(PortRange(one(a)?, one(b)?)).filter(|r| r.0 <= r.1),
            None => one(part).map(|p| PortRange(p, p)),
        })
        .collect()
}

fn parse_host(s: &str) -> Option<HostPattern> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(HostPattern::Net(IpNet::from(ip)));
    }
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(HostPattern::Net(net.trunc()));
    }
    if let Some(rest) = s.strip_prefix("*.") {
        return normalize_domain(rest).map(HostPattern::Below);
    }
    // A name of digits and dots only would be an IP address written wrongly.
    let numeric = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric {
        return None;
    }
    normalize_domain(s).map(HostPattern::Domain)
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, RuleError> {
        let err = |why| RuleError::Rule(s.chars().take(300).collect(), why);
        let s = s.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        // A bare IPv6 address or network has colons of its own.
        if let Some(host) = (!s.starts_with('[')).then(|| parse_host(s)).flatten() {
            return Ok(Self { host, ports: Vec::new() });
        }
        let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("`[` without `]`"))?;
            let ports = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("expected `:` after `]`"))?),
            };
            if !h.contains(':') {
                return Err(err("brackets are for IPv6 addresses"));
            }
            (h, ports)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let host = parse_host(host).ok_or_else(|| err("expected a domain, `*.domain`, an IP address or a CIDR"))?;
        let ports = match ports {
            None => Vec::new(),
            Some(p) => parse_ports(p).ok_or_else(|| err("ports are `*`, N, N-M or a comma list, 1–65535"))?,
        };
        Ok(Self { host, ports })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(self.host, HostPattern::Net(IpNet::V6(_)));
        let bracket = v6 && !self.ports.is_empty();
        if bracket {
            f.write_str("[")?;
        }
        match &self.host {
            HostPattern::Domain(d) => f.write_str(d)?,
            HostPattern::Below(d) => write!(f, "*.{d}")?,
            HostPattern::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr())?,
            HostPattern::Net(n) => write!(f, "{n}")?,
        }
        if bracket {
            f.write_str("]")?;
        }
        for (i, PortRange(a, b)) in self.ports.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Rule {
    fn port_ok(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|r| (r.0..=r.1).contains(&port))
    }

    /// True when this rule names `domain` (already normalized) on `port`.
    pub fn matches_name(&self, domain: &str, port: u16) -> bool {
        let host = match &self.host {
            HostPattern::Domain(d) => d == domain,
            HostPattern::Below(d) => {
                domain.len() > d.len() + 1 && domain.ends_with(d.as_str()) && {
                    domain.as_bytes()[domain.len() - d.len() - 1] == b'.'
                }
            }
            HostPattern::Net(_) => false,
        };
        host && self.port_ok(port)
    }

    /// True when this rule names `ip` by address on `port`.
    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        matches!(&self.host, HostPattern::Net(n) if n.contains(&canonical(ip))) && self.port_ok(port)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True for every address that is not a public unicast one: unspecified,
/// loopback, private, shared (CGNAT), link-local (cloud metadata services),
/// documentation, benchmarking, multicast, reserved, unique-local, NAT64
/// and 6to4/Teredo prefixes (which embed other addresses).
pub fn is_special(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// The networks [`is_special`] covers, as CIDRs (for filters that match
/// prefixes, such as the host's firewall rules for direct interfaces).
/// IPv4-mapped IPv6 addresses are left out: they are judged as the IPv4
/// address they carry ([`canonical`]).
pub fn special_nets() -> Vec<IpNet> {
    const NETS: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
        "::/96",
        "64:ff9b::/32",
        "2001::/32",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ];
    NETS.iter().filter_map(|n| n.parse().ok()).collect()
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
}

fn special_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
        || s[0] == 0x2002 // 6to4
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || s[..6].iter().all(|&x| x == 0) // IPv4-compatible (deprecated)
}

/// A refused connection and why, in words for the sandbox's user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the sandbox has no network (policy `none`)")]
    NoNetwork,
    #[error("`{0}` is denied by rule `{1}`")]
    DenyRule(String, String),
    #[error("`{0}` is not in the sandbox's allowlist")]
    NotAllowed(String),
    #[error("{0} is a private, loopback, link-local or reserved address; a rule must name it by address")]
    Special(IpAddr),
    #[error("`{0}` resolves only to refused addresses ({1})")]
    Resolved(String, String),
}

/// A sandbox's network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    #[serde(default)]
    pub mode: NetMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Rule>,
    /// Besides the proxy, a network interface with a route out, for programs
    /// that cannot use a proxy. The host filters it by address: only the
    /// IP and CIDR rules apply there (names need the proxy, which resolves them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

impl NetworkPolicy {
    /// Parses allow and deny rule strings into a policy.
    pub fn parse(mode: NetMode, allow: &[String], deny: &[String]) -> Result<Self, RuleError> {
        if allow.len() > MAX_RULES || deny.len() > MAX_RULES {
            return Err(RuleError::TooMany);
        }
        let rules = |v: &[String]| v.iter().map(|s| s.parse()).collect::<Result<Vec<Rule>, _>>();
        Ok(Self { mode, allow: rules(allow)?, deny: rules(deny)?, direct: false })
    }

    /// True when the sandbox gets a direct interface: asked for, and a
    /// network at all (`none` has none).
    pub fn has_direct(&self) -> bool {
        self.direct && self.mode != NetMode::None
    }

    /// The first step for a name: may `domain` (normalized) on `port` be
    /// connected to at all? Its addresses are checked by [`Self::check_addr`].
    pub fn check_name(&self, domain: &str, port: u16) -> Result<(), Denial> {
        if self.mode == NetMode::None {
            return Err(Denial::NoNetwork);
        }
        if let Some(r) = self.deny.iter().find(|r| r.matches_name(domain, port)) {
            return Err(Denial::DenyRule(domain.to_owned(), r.to_string()));
        }
        if self.mode == NetMode::Allowlist && !self.allow.iter().any(|r| r.matches_name(domain, port)) {
            return Err(Denial::NotAllowed(format!("{domain}:{port}")));
        }
        Ok(())
    }

    /// May `ip` on `port` be connected to? `via_name` is true when the
    /// address came from resolving a name that [`Self::check_name`] allowed
    /// (then a public address needs no rule of its own); `own` says whether
    /// an address is one of the host's.
    pub fn check_addr(
        &self,
        ip: IpAddr,
        port: u16,
        via_name: bool,
        own: &dyn Fn(IpAddr) -> bool,
    ) -> Result<(), Denial> {
        let ip = canonical(ip);
        if self.mode == NetMode::None {
            return Err(Denial::NoNetwork);
        }
        if let Some(r) = self.deny.iter().find(|r| r.matches_addr(ip, port)) {
            return Err(Denial::DenyRule(ip.to_string(), r.to_string()));
        }
        let named = self.allow.iter().any(|r| r.matches_addr(ip, port));
        if is_special(ip) || own(ip) {
            return if named { Ok(()) } else { Err(Denial::Special(ip)) };
        }
        if named || via_name || self.mode == NetMode::Open {
            Ok(())
        } else {
            Err(Denial::NotAllowed(format!("{ip}:{port}")))
        }
    }
}

/// A credential the proxy adds to requests for some hosts; its value never
/// enters the sandbox. `Debug` does not show the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The tenant's secret it comes from.
    pub name: String,
    /// Domain patterns it is sent to.
    pub hosts: Vec<Rule>,
    pub header_name: String,
    /// The whole header value (for example `Bearer sk-…`).
    pub header_value: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("header_name", &self.header_name)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// True when this credential is bound to `domain` (normalized) on `port`.
    pub fn applies_to(&self, domain: &str, port: u16) -> bool {
        self.hosts.iter().any(|r| r.matches_name(domain, port))
    }
}

/// What a node enforces for one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNetwork {
    #[serde(default)]
    pub policy: NetworkPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
}

/// One connection attempt through the egress proxy, allowed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetEvent {
    /// Unix time in milliseconds when it started.
    pub at_ms: i64,
    /// `connect`, `http`, `socks5`, `credential` (forwarded with a credential),
    /// or `direct-tcp`/`direct-udp`/`direct-icmp`/`direct-ip` (the first packet
    /// of a connection on a direct interface; no byte counts).
    pub protocol: String,
    pub host: String,
    pub port: u16,
    /// The address connected to, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    pub allowed: bool,
    /// Why it was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes from the sandbox to the destination, and back.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn policy(mode: NetMode, allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetworkPolicy::parse(mode, &v(allow), &v(deny)).expect("valid policy")
    }

    const NOT_OWN: &dyn Fn(IpAddr) -> bool = &|_| false;

    #[test]
    fn rules_parse_and_print_back() {
        for s in [
            "api.openai.com",
            "*.pypi.org:443",
            "example.com:80,443,8000-8100",
            "10.0.0.0/8:5432",
            "127.0.0.1",
            "::1",
            "fd00::/8",
            "[fd00::/8]:443",
            "[::1]:8080",
            "1.2.3.4:22",
        ] {
            assert_eq!(rule(s).to_string(), s);
        }
        assert_eq!(rule("API.OpenAI.com.").to_string(), "api.openai.com");
        assert_eq!(rule("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(rule("x.com:*").to_string(), "x.com");
        for bad in [
            "",
            "*",
            "*.",
            "x.com:0",
            "x.com:65536",
            "x.com:9-8",
            "x.com:",
            "[1.2.3.4]:80",
            "[::1",
            "a..b",
            "-a.com",
            "1.2.3.999",
            "http://x.com",
            "x.com/path",
            "x com",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn wildcards_cover_names_below_only() {
        let r = rule("*.example.com");
        assert!(r.matches_name("a.example.com", 1));
        assert!(r.matches_name("a.b.example.com", 1));
        assert!(!r.matches_name("example.com", 1));
        assert!(!r.matches_name("badexample.com", 1));
        let exact = rule("example.com:443");
        assert!(exact.matches_name("example.com", 443));
        assert!(!exact.matches_name("example.com", 80));
        assert!(!exact.matches_name("a.example.com", 443));
    }

    #[test]
    fn deny_wins_and_none_refuses_everything() {
        let p = policy(NetMode::Allowlist, &["*.example.com"], &["secret.example.com"]);
        assert!(p.check_name("api.example.com", 443).is_ok());
        assert!(matches!(p.check_name("secret.example.com", 443), Err(Denial::DenyRule(..))));
        assert!(matches!(p.check_name("other.org", 443), Err(Denial::NotAllowed(_))));
        let none = policy(NetMode::None, &["example.com"], &[]);
        assert_eq!(none.check_name("example.com", 443), Err(Denial::NoNetwork));
        let open = policy(NetMode::Open, &[], &["*.evil.com"]);
        assert!(open.check_name("anything.org", 443).is_ok());
        assert!(open.check_name("x.evil.com", 443).is_err());
    }

    #[test]
    fn special_addresses_need_a_rule_naming_them() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let open = policy(NetMode::Open, &["example.com"], &[]);
        for s in
            ["169.254.169.254", "10.1.2.3", "127.0.0.1", "192.168.1.1", "::1", "fe80::1", "::ffff:10.0.0.1", "0.0.0.0"]
        {
            assert_eq!(open.check_addr(ip(s), 80, true, NOT_OWN), Err(Denial::Special(canonical(ip(s)))), "{s}");
        }
        assert!(open.check_addr(ip("93.184.216.34"), 80, false, NOT_OWN).is_ok());
        assert!(open.check_addr(ip("93.184.216.34"), 80, false, &|_| true).is_err(), "the host's own address");
        let named = policy(NetMode::Allowlist, &["api.test", "127.0.0.1:8080"], &[]);
        assert!(named.check_addr(ip("127.0.0.1"), 8080, true, NOT_OWN).is_ok());
        assert!(named.check_addr(ip("127.0.0.1"), 8081, true, NOT_OWN).is_err());
        assert!(named.check_addr(ip("::ffff:127.0.0.1"), 8080, true, NOT_OWN).is_ok());
        // A public address reached by IP literal needs a rule in an allowlist.
        assert!(named.check_addr(ip("93.184.216.34"), 80, false, NOT_OWN).is_err());
        assert!(named.check_addr(ip("93.184.216.34"), 80, true, NOT_OWN).is_ok());
        let deny = policy(NetMode::Open, &["10.0.0.0/8"], &["10.9.0.0/16"]);
        assert!(deny.check_addr(ip("10.1.0.1"), 1, false, NOT_OWN).is_ok());
        assert!(matches!(deny.check_addr(ip("10.9.0.1"), 1, false, NOT_OWN), Err(Denial::DenyRule(..))));
    }

    #[test]
    fn policies_round_trip_through_json() {
        let p = policy(NetMode::Allowlist, &["*.pypi.org:443", "[fd00::/8]:443"], &["1.2.3.4"]);
        let json = serde_json::to_string(&p).expect("serializes");
        assert_eq!(json, r#"{"mode":"allowlist","allow":["*.pypi.org:443","[fd00::/8]:443"],"deny":["1.2.3.4"]}"#);
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&json).expect("parses"), p);
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"mode":"allowlist","allow":["x.com:0"]}"#).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(r) = s.parse::<Rule>() {
                let again: Rule = r.to_string().parse().expect("a printed rule parses");
                prop_assert_eq!(again, r);
            }
        }

        #[test]
        fn structured_rules_round_trip(
            host in prop_oneof!["[a-z]([a-z0-9-]{0,9}[a-z0-9])?(\\.[a-z]{2,5}){1,2}", "\\*\\.[a-z]{1,8}\\.[a-z]{2,4}",
                                "([1-9]?[0-9])(\\.([1-9]?[0-9])){3}(/[0-9]|/[12][0-9]|/3[0-2])?"],
            ports in proptest::collection::vec(1u16.., 0..4),
        ) {
            let mut s = host.clone();
            for (i, p) in ports.iter().enumerate() {
                s.push(if i == 0 { ':' } else { ',' });
                s.push_str(&p.to_string());
            }
            let r = s.parse::<Rule>().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.to_string().parse::<Rule>().expect("reparses"), r);
        }

        #[test]
        fn special_nets_cover_exactly_the_special_addresses(v4 in any::<u32>(), v6 in any::<u128>(), pick in 0usize..21) {
            let nets = special_nets();
            prop_assert_eq!(nets.len(), 21);
            // Random addresses, and addresses inside each listed network.
            let inside = match nets[pick] {
                IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (v4 & !u32::from(n.netmask())))),
                IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (v6 & !u128::from(n.netmask())))),
            };
            for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6)), inside] {
                let listed = nets.iter().any(|n| n.contains(&canonical(ip)));
                prop_assert_eq!(listed, is_special(ip), "{}", ip);
            }
        }

        #[test]
        fn private_v4_is_always_special(a in 0u8..=255, b in 0u8..=255, c in 0u8..=255) {
            for ip in [Ipv4Addr::new(10, a, b, c), Ipv4Addr::new(127, a, b, c), Ipv4Addr::new(169, 254, b, c),
                       Ipv4Addr::new(192, 168, b, c), Ipv4Addr::new(172, 16 + (a % 16), b, c)] {
                prop_assert!(is_special(IpAddr::V4(ip)));
                prop_assert!(is_special(IpAddr::V6(ip.to_ipv6_mapped())));
            }
        }
    }
}
