//! Deciding and opening one outbound connection: the host a program asked
//! for, checked by name, resolved here, every address checked, then
//! connected to the first allowed address that answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reins_types::net::{normalize_domain, Denial, NetEvent, NetworkPolicy};
use tokio::net::TcpStream;

use crate::resolve::host_addresses;
use crate::Egress;

/// A destination as a program named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// A host as written in a URI authority or a SOCKS request: an IP
    /// address (IPv6 possibly in brackets) or a DNS name.
    pub fn parse(s: &str) -> Option<Self> {
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Self::Ip(ip));
        }
        if bare.len() != s.len() {
            return None;
        }
        normalize_domain(s).map(Self::Name)
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a connection was not made.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The policy refuses it (HTTP 403, SOCKS "not allowed by ruleset").
    Denied(Denial),
    /// Allowed, but the destination did not answer (HTTP 502).
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(d) => write!(f, "{d}"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// The host's own addresses, re-read at most every 10 s.
#[derive(Debug, Default)]
pub(crate) struct OwnAddrs(Mutex<Option<(Instant, Vec<IpAddr>)>>);

impl OwnAddrs {
    pub fn get(&self) -> Vec<IpAddr> {
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((at, addrs)) if at.elapsed() < Duration::from_secs(10) => addrs.clone(),
            _ => {
                let addrs = host_addresses();
                *cached = Some((Instant::now(), addrs.clone()));
                addrs
            }
        }
    }
}

/// Checks `host:port` against `policy`, resolves it, and connects.
async fn dial(
    egress: &Egress,
    policy: &NetworkPolicy,
    host: &Host,
    port: u16,
) -> Result<(TcpStream, SocketAddr), Refusal> {
    let own = egress.own.get();
    let is_own = |ip: IpAddr| own.contains(&reins_types::net::canonical(ip));
    let candidates = match host {
        Host::Ip(ip) => {
            policy.check_addr(*ip, port, false, &is_own).map_err(Refusal::Denied)?;
            vec![*ip]
        }
        Host::Name(name) => {
            policy.check_name(name, port).map_err(Refusal::Denied)?;
            let addrs = egress.resolver.lookup(name).await.map_err(Refusal::Failed)?;
            let allowed: Vec<IpAddr> =
                addrs.iter().copied().filter(|ip| policy.check_addr(*ip, port, true, &is_own).is_ok()).collect();
            if allowed.is_empty() {
                let list = addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
                return Err(Refusal::Denied(Denial::Resolved(name.clone(), list)));
            }
            allowed
        }
    };
    let mut last = String::new();
    for ip in candidates {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(egress.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr}: timed out"),
        }
    }
    Err(Refusal::Failed(last))
}

/// An allowed connection, with its audit event (recorded when it ends).
pub(crate) struct Opened {
    pub stream: TcpStream,
    pub event: NetEvent,
    pub started: Instant,
}

impl crate::SandboxCtx {
    /// Checks `host:port` against the sandbox's current policy and connects;
    /// a refusal is recorded as a `protocol` event here.
    pub async fn open(&self, protocol: &str, host: &Host, port: u16) -> Result<Opened, Refusal> {
        let started = Instant::now();
        let name = host.to_string();
        match dial(&self.egress, &self.current().policy, host, port).await {
            Ok((stream, addr)) => {
                Ok(Opened { stream, event: event(protocol, &name, port, Some(addr), Ok(())), started })
            }
            Err(r) => {
                self.record(event(protocol, &name, port, None, Err(&r.to_string())));
                Err(r)
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An audit event started now; `outcome` is the address or the reason.
pub(crate) fn event(
    protocol: &str,
    host: &str,
    port: u16,
    addr: Option<SocketAddr>,
    outcome: Result<(), &str>,
) -> NetEvent {
    NetEvent {
        at_ms: now_ms(),
        protocol: protocol.to_owned(),
        host: host.to_owned(),
        port,
        addr: addr.map(|a| a.to_string()),
        allowed: outcome.is_ok(),
        reason: outcome.err().map(str::to_owned),
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
    }
}

/// Fills in the traffic and duration of a finished connection.
pub(crate) fn finish(mut ev: NetEvent, started: Instant, up: u64, down: u64) -> NetEvent {
    ev.bytes_up = up;
    ev.bytes_down = down;
    ev.duration_ms = started.elapsed().as_millis() as u64;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(Host::parse("Example.COM"), Some(Host::Name("example.com".into())));
        assert_eq!(Host::parse("[::1]"), Some(Host::Ip("::1".parse().expect("ip"))));
        assert_eq!(Host::parse("10.0.0.1"), Some(Host::Ip("10.0.0.1".parse().expect("ip"))));
        assert_eq!(Host::parse("[example.com]"), None);
        assert_eq!(Host::parse("a b"), None);
        assert_eq!(Host::parse(""), None);
    }
}
