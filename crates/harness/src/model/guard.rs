//! Where the control plane may send model requests. Tenants choose base
//! URLs, and the control plane makes the requests, so an address that
//! would reach the host's own metadata service (link-local: 169.254.0.0/16
//! with 169.254.169.254, fe80::/10) is refused, for names at every
//! resolution (no DNS rebinding) and for literals when an agent is defined.
//! Loopback and private addresses stay allowed: self-hosted model servers
//! (vLLM, Ollama, llama.cpp) live there.

use std::net::{IpAddr, SocketAddr};

/// True for addresses no model request may go to.
pub fn forbidden(ip: IpAddr) -> bool {
    match reins_types::net::canonical(ip) {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.is_unspecified(),
    }
}

/// A resolver that drops forbidden addresses (and fails when none is left).
#[derive(Debug, Default, Clone, Copy)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all.iter().copied().filter(|a| !forbidden(a.ip())).collect();
            if allowed.is_empty() {
                let msg = format!("{host} resolves only to refused (link-local or unspecified) addresses");
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_are_refused_and_local_servers_are_not() {
        for bad in ["169.254.169.254", "169.254.0.1", "fe80::1", "::ffff:169.254.169.254", "0.0.0.0"] {
            assert!(forbidden(bad.parse().expect("ip")), "{bad}");
        }
        for ok in ["127.0.0.1", "10.0.0.5", "192.168.1.2", "::1", "8.8.8.8", "fd00::1"] {
            assert!(!forbidden(ok.parse().expect("ip")), "{ok}");
        }
    }
}
