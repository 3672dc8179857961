//! The host's packet filter for direct interfaces (a policy with
//! [`direct`](reins_types::NetworkPolicy::direct)): nftables rulesets, as
//! text for `nft -f -`. Pure; the node runs `nft`.
//!
//! One table per node (`inet`, so IPv4 and IPv6 alike) holds:
//! - base chains on the `forward` and `input` hooks that look only at the
//!   node's interfaces (a name prefix): replies to allowed connections pass,
//!   nothing may open a connection *into* a sandbox, and a packet a sandbox
//!   sends jumps to that sandbox's chain through a verdict map keyed by its
//!   interface; an interface that is not in the map is refused;
//! - one chain per sandbox: [`NetworkPolicy::check_addr`] as rules, in its
//!   order (deny rules, then addresses the allow rules name, then for `open`
//!   every public address that is not the host's own), ending in a refusal;
//! - masquerading of the node's subnet on the way out.
//!
//! Refusals are ICMP "administratively prohibited", so a program sees its
//! connect fail at once (`EHOSTUNREACH`) instead of timing out.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use reins_types::net::{special_nets, HostPattern, NetMode, NetworkPolicy, PortRange, Rule};

const REFUSE: &str = "reject with icmpx admin-prohibited";

/// A node's table: its name, its interfaces' name prefix and its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Every interface of the node's sandboxes is named `{prefix}{n}`.
    pub prefix: String,
    pub subnet: Ipv4Net,
    /// The NFLOG group every decision of a sandbox chain is logged to, with
    /// the prefix `a{n}` (accepted) or `d{n}` (refused).
    pub log_group: u16,
}

impl Table {
    /// Drops any table of this name (a crashed node's) and makes it anew.
    pub fn create(&self) -> String {
        let (t, p) = (&self.name, &self.prefix);
        let mut s = format!("table inet {t}\ndelete table inet {t}\n");
        let _ = write!(
            s,
            "table inet {t} {{
  map egress {{ type ifname : verdict; }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname \"{p}*\" ct state established,related accept
    oifname \"{p}*\" drop
    iifname \"{p}*\" ct state established,related accept
    iifname \"{p}*\" iifname vmap @egress
    iifname \"{p}*\" {REFUSE}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{p}*\" ct state established,related accept
    iifname \"{p}*\" iifname vmap @egress
    iifname \"{p}*\" {REFUSE}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != \"{p}*\" masquerade
  }}
}}
",
            subnet = self.subnet
        );
        s
    }

    /// Removes the table (and with it every sandbox's chain).
    pub fn remove(&self) -> String {
        format!("table inet {t}\ndelete table inet {t}\n", t = self.name)
    }

    /// The host-side interface of sandbox `n`.
    pub fn interface(&self, n: u32) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Adds sandbox `n`'s chain under `policy` and routes its interface to it.
    pub fn attach(&self, n: u32, policy: &NetworkPolicy) -> String {
        let mut s = self.update(n, policy);
        let _ = writeln!(s, "add element inet {} egress {{ \"{}\" : jump sb{n} }}", self.name, self.interface(n));
        s
    }

    /// The host's and the sandbox's address on /30 number `n` of the subnet.
    pub fn addresses(&self, n: u32) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.subnet.network()) + 4 * n;
        (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
    }

    /// Replaces the rules of sandbox `n`'s chain, in one transaction; each
    /// decision is logged to [`Table::log_group`]. Packets that do not come
    /// from the sandbox's own address, and any IPv6, are dropped first.
    pub fn update(&self, n: u32, policy: &NetworkPolicy) -> String {
        let t = &self.name;
        let (_, inside) = self.addresses(n);
        let mut s = format!("add chain inet {t} sb{n}\nflush chain inet {t} sb{n}\n");
        let _ = writeln!(s, "add rule inet {t} sb{n} meta nfproto ipv6 drop");
        let _ = writeln!(s, "add rule inet {t} sb{n} ip saddr != {inside} drop");
        for (m, accept) in decisions(policy) {
            let (mark, verdict) = if accept { ('a', "accept") } else { ('d', REFUSE) };
            let log = format!("log group {} prefix \"{mark}{n}\"", self.log_group);
            let rule = if m.is_empty() { format!("{log} {verdict}") } else { format!("{m} {log} {verdict}") };
            let _ = writeln!(s, "add rule inet {t} sb{n} {rule}");
        }
        s
    }

    /// Removes sandbox `n`'s map entry and chain.
    pub fn detach(&self, n: u32) -> String {
        let t = &self.name;
        format!("delete element inet {t} egress {{ \"{}\" }}\ndelete chain inet {t} sb{n}\n", self.interface(n))
    }
}

fn ports(list: &[PortRange]) -> String {
    let one = |r: &PortRange| if r.0 == r.1 { r.0.to_string() } else { format!("{}-{}", r.0, r.1) };
    list.iter().map(one).collect::<Vec<_>>().join(", ")
}

fn daddr(net: &IpNet) -> String {
    match net {
        IpNet::V4(n) => format!("ip daddr {n}"),
        IpNet::V6(n) => format!("ip6 daddr {n}"),
    }
}

/// The match of an address rule, or `None` for a name rule (names are for
/// the proxy, which resolves them; a filter sees only addresses).
fn matcher(rule: &Rule) -> Option<String> {
    let HostPattern::Net(net) = &rule.host else { return None };
    let mut m = daddr(net);
    if !rule.ports.is_empty() {
        let _ = write!(m, " meta l4proto {{ tcp, udp }} th dport {{ {} }}", ports(&rule.ports));
    }
    Some(m)
}

/// A sandbox's chain as (match, accept) pairs, in order: an empty match
/// matches every packet. [`NetworkPolicy::check_addr`] for connections that
/// did not come through a name (`via_name` false).
fn decisions(policy: &NetworkPolicy) -> Vec<(String, bool)> {
    let mut rules = Vec::new();
    if policy.mode != NetMode::None {
        rules.extend(policy.deny.iter().filter_map(matcher).map(|m| (m, false)));
        rules.extend(policy.allow.iter().filter_map(matcher).map(|m| (m, true)));
    }
    if policy.mode == NetMode::Open {
        rules.push(("fib daddr type local".to_owned(), false));
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = special_nets().into_iter().partition(|n| matches!(n, IpNet::V4(_)));
        for (family, nets) in [("ip", v4), ("ip6", v6)] {
            let list = nets.iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ");
            rules.push((format!("{family} daddr {{ {list} }}"), false));
        }
        rules.push((String::new(), true));
    }
    rules.push((String::new(), false));
    rules
}

/// A sandbox's chain without logging, one rule per line.
pub fn chain_rules(policy: &NetworkPolicy) -> Vec<String> {
    let verdict = |accept: bool| if accept { "accept" } else { REFUSE };
    decisions(policy)
        .into_iter()
        .map(|(m, a)| if m.is_empty() { verdict(a).to_owned() } else { format!("{m} {}", verdict(a)) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: NetMode, allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetworkPolicy::parse(mode, &v(allow), &v(deny)).expect("valid policy")
    }

    #[test]
    fn allowlists_become_address_rules_in_check_addr_order() {
        let p = policy(
            NetMode::Allowlist,
            &["api.test", "10.232.0.2:8080,9000-9010", "[fd00::/8]:443", "192.0.2.0/24"],
            &["10.232.0.2:9005"],
        );
        assert_eq!(
            chain_rules(&p),
            [
                "ip daddr 10.232.0.2/32 meta l4proto { tcp, udp } th dport { 9005 } reject with icmpx admin-prohibited",
                "ip daddr 10.232.0.2/32 meta l4proto { tcp, udp } th dport { 8080, 9000-9010 } accept",
                "ip6 daddr fd00::/8 meta l4proto { tcp, udp } th dport { 443 } accept",
                "ip daddr 192.0.2.0/24 accept",
                "reject with icmpx admin-prohibited",
            ]
        );
    }

    #[test]
    fn none_refuses_everything_even_with_rules() {
        let p = policy(NetMode::None, &["10.0.0.1"], &[]);
        assert_eq!(chain_rules(&p), ["reject with icmpx admin-prohibited"]);
    }

    #[test]
    fn open_refuses_special_and_own_addresses_after_the_named_ones() {
        let p = policy(NetMode::Open, &["10.1.0.0/16"], &["203.0.114.0/24"]);
        let rules = chain_rules(&p);
        assert_eq!(rules[0], "ip daddr 203.0.114.0/24 reject with icmpx admin-prohibited");
        assert_eq!(rules[1], "ip daddr 10.1.0.0/16 accept");
        assert_eq!(rules[2], "fib daddr type local reject with icmpx admin-prohibited");
        assert!(rules[3].starts_with("ip daddr { 0.0.0.0/8, 10.0.0.0/8,") && rules[3].contains("169.254.0.0/16"));
        assert!(rules[4].starts_with("ip6 daddr { ::/96,") && rules[4].contains("fe80::/10"));
        assert_eq!(&rules[5..], ["accept", "reject with icmpx admin-prohibited"]);
    }

    #[test]
    fn the_table_routes_only_its_own_interfaces() {
        let subnet = "10.231.0.0/16".parse().expect("a subnet");
        let t = Table { name: "reins_0ae700".into(), prefix: "rv0ae700-".into(), subnet, log_group: 9 };
        let s = t.create();
        assert!(s.starts_with("table inet reins_0ae700\ndelete table inet reins_0ae700\n"));
        assert!(s.contains("oifname \"rv0ae700-*\" drop"));
        assert!(s.contains("ip saddr 10.231.0.0/16 oifname != \"rv0ae700-*\" masquerade"));
        let a = t.attach(7, &policy(NetMode::Allowlist, &["10.9.9.9"], &[]));
        assert!(a.starts_with("add chain inet reins_0ae700 sb7\nflush chain inet reins_0ae700 sb7\n"));
        assert!(
            a.contains("sb7 meta nfproto ipv6 drop\nadd rule inet reins_0ae700 sb7 ip saddr != 10.231.0.30 drop\n"),
            "{a}"
        );
        assert!(a.contains("sb7 ip daddr 10.9.9.9/32 log group 9 prefix \"a7\" accept\n"), "{a}");
        assert!(a.contains("sb7 log group 9 prefix \"d7\" reject with icmpx admin-prohibited\n"), "{a}");
        assert!(a.ends_with("add element inet reins_0ae700 egress { \"rv0ae700-7\" : jump sb7 }\n"));
        assert_eq!(
            t.detach(7),
            "delete element inet reins_0ae700 egress { \"rv0ae700-7\" }\ndelete chain inet reins_0ae700 sb7\n"
        );
    }
}
