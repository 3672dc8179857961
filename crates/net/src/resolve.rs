//! Name resolution for the proxy: fixed answers first (`--resolve`), then
//! the host's resolver. The sandbox never resolves anything itself; every
//! answer is checked against the policy by the caller.

use std::collections::HashMap;
use std::net::IpAddr;

/// Resolves names on the host's side.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    fixed: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// `fixed` maps lower-case names to the addresses they resolve to.
    pub fn new(fixed: HashMap<String, Vec<IpAddr>>) -> Self {
        let fixed = fixed.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Self { fixed }
    }

    /// The addresses of `name` (normalized), without duplicates, in the
    /// resolver's order.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(addrs) = self.fixed.get(name) {
            return Ok(addrs.clone());
        }
        let found = tokio::net::lookup_host((name, 0)).await.map_err(|e| format!("cannot resolve `{name}`: {e}"))?;
        let mut out: Vec<IpAddr> = Vec::new();
        for a in found {
            if !out.contains(&a.ip()) {
                out.push(a.ip());
            }
        }
        if out.is_empty() {
            return Err(format!("`{name}` has no addresses"));
        }
        Ok(out)
    }
}

/// The host's own addresses (every interface's), which a sandbox may reach
/// only when a rule names them.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
