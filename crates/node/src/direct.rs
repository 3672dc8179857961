//! Direct interfaces: for programs that cannot use a proxy, a sandbox whose
//! policy says [`direct`](reins_types::NetworkPolicy::direct) gets a veth
//! pair, `eth0` inside with a default route through the host's end, and the
//! host filters what it sends with nftables ([`reins_net::nft`]): only
//! addresses and ports its rules name, deny rules first, nothing into it.
//!
//! Each sandbox takes one /30 of the node's subnet (host end `.1`, sandbox
//! `.2`); its host-side interface is `rv{tag}-{n}`, where the tag comes from
//! the subnet, so that several nodes on one host keep apart (a lock file
//! under `/run/reins` refuses a second node on the same subnet). The node
//! prepares its table on first use and removes it when it shuts down; the
//! link goes when the sandbox's namespace does, or when the policy drops
//! `direct`.
//!
//! Every decision of a sandbox's chain is logged to the node's NFLOG group
//! and recorded in the egress audit ([`crate::nflog`]): protocol
//! `direct-tcp`, `direct-udp`, …, at the first packet, without byte counts.
//!
//! The host work runs `ip` (iproute2) and `nft` (nftables), one process
//! each per sandbox start: the kernel's own tools, well kept and exact
//! about the netlink details, for an opt-in mode outside the hot path. The
//! inside end is configured by the node's namespace thread with `ioctl`s
//! ([`reins_sandbox::Iface`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use ipnet::Ipv4Net;
use reins_net::nft::Table;
use reins_net::AuditSink;
use reins_sandbox::{Iface, Sandbox};
use reins_types::{NetEvent, NetworkPolicy};

use crate::error::ApiError;

/// The subnet direct interfaces take addresses from unless configured.
pub const DEFAULT_SUBNET: &str = "10.231.0.0/16";

/// A node's direct interfaces.
pub struct Direct {
    table: Table,
    /// Free /30 indexes of the subnet, lowest last.
    free: Mutex<Vec<u32>>,
    /// The sandbox on each link in use, for the audit log.
    owners: Mutex<HashMap<u32, String>>,
    audit: Arc<dyn AuditSink>,
    /// The lock file, held once the table is made.
    ready: tokio::sync::OnceCell<std::fs::File>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("table", &self.table).finish_non_exhaustive()
    }
}

fn setup_error(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "network_setup", format!("direct interface: {message}"))
}

impl Direct {
    /// Direct interfaces on addresses of `subnet` (a /8 to a /30); their
    /// connection attempts go to `audit`.
    pub fn new(subnet: Ipv4Net, audit: Arc<dyn AuditSink>) -> Result<Self, String> {
        let subnet = subnet.trunc();
        if !(8..=30).contains(&subnet.prefix_len()) {
            return Err(format!("direct subnet {subnet}: use a prefix from /8 to /30"));
        }
        // FNV-1a of the subnet: six hex digits of it keep interface names
        // within 15 bytes; the rest picks the log group.
        let tag = (subnet.network().octets().into_iter().chain([subnet.prefix_len()]))
            .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        let slots = 1u32 << (30 - subnet.prefix_len()).min(14);
        let table = Table {
            name: format!("reins_{:06x}", tag & 0xff_ffff),
            prefix: format!("rv{:06x}-", tag & 0xff_ffff),
            subnet,
            // Above the groups tools use by hand (0, 1, 2, …).
            log_group: 1024 + (tag >> 24) as u16 * 64 + (tag & 63) as u16,
        };
        Ok(Self {
            table,
            free: Mutex::new((0..slots).rev().collect()),
            owners: Mutex::new(HashMap::new()),
            audit,
            ready: tokio::sync::OnceCell::new(),
        })
    }

    /// Gives sandbox `sandbox` (`id`) its interface under `policy`.
    pub async fn attach(
        self: &Arc<Self>,
        id: &str,
        sandbox: &Sandbox,
        policy: &NetworkPolicy,
    ) -> Result<Link, ApiError> {
        self.prepare().await?;
        let n = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_capacity",
                format!("every address of the direct subnet {} is taken; retry later", self.table.subnet),
            )
        })?;
        // From here on, dropping the link frees what was made.
        let link = Link { direct: Arc::clone(self), n, released: false };
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).insert(n, id.to_owned());
        let ns = sandbox.netns_path()?;
        let (host, inside) = self.table.addresses(n);
        let dev = link.name();
        let batch = format!(
            "link add {dev} type veth peer name eth0 netns {ns}\nlink set {dev} addrgenmode none\n\
             addr add {host}/30 dev {dev}\nlink set {dev} up\n",
            ns = ns.display()
        );
        // The rules match the interface by name, so they can go in while it is made.
        let rules = self.table.attach(n, policy);
        let (made, ruled) = tokio::join!(run("ip", &["-batch", "-"], &batch), run("nft", &["-f", "-"], &rules));
        made.and(ruled).map_err(setup_error)?;
        sandbox.configure_iface(Iface { name: "eth0".into(), addr: inside, prefix: 30, gateway: host }).await?;
        tracing::debug!(sandbox = id, dev, %inside, "direct interface up");
        Ok(link)
    }

    /// Replaces the rules of `link` with `policy`'s (new connections follow them).
    pub async fn update(&self, link: &Link, policy: &NetworkPolicy) -> Result<(), ApiError> {
        run("nft", &["-f", "-"], &self.table.update(link.n, policy)).await.map_err(setup_error)
    }

    /// First use: takes the subnet's lock, starts reading the audit log
    /// group, makes the table anew (a crashed node's is dropped with its
    /// leftover interfaces), turns forwarding on.
    async fn prepare(self: &Arc<Self>) -> Result<(), ApiError> {
        self.ready
            .get_or_try_init(|| async {
                let lock = self.lock_subnet()?;
                let log = crate::nflog::open(self.table.log_group)
                    .map_err(|e| setup_error(format!("reading NFLOG group {}: {e}", self.table.log_group)))?;
                run("nft", &["-f", "-"], &self.table.create()).await.map_err(|e| {
                    setup_error(format!("{e}; direct interfaces need nftables (apt install nftables) and root"))
                })?;
                self.remove_stale_links().await;
                forwarding_on().map_err(setup_error)?;
                // Only now: a failed attempt closes its socket (and unbinds the
                // group) on the way out, so the next attempt can bind it again.
                let direct = Arc::downgrade(self);
                tokio::spawn(crate::nflog::read(log, move |logged| match direct.upgrade() {
                    Some(d) => {
                        d.record(logged);
                        true
                    }
                    None => false,
                }));
                Ok::<_, ApiError>(lock)
            })
            .await
            .map(|_| ())
    }

    fn lock_subnet(&self) -> Result<std::fs::File, ApiError> {
        let dir = std::path::Path::new("/run/reins");
        std::fs::create_dir_all(dir).map_err(|e| setup_error(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(format!("direct-{}.lock", self.table.name));
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| setup_error(format!("opening {}: {e}", path.display())))?;
        file.try_lock().map_err(|_| {
            setup_error(format!(
                "another Reins node on this host uses the direct subnet {}; give this one another --direct-subnet",
                self.table.subnet
            ))
        })?;
        Ok(file)
    }

    async fn remove_stale_links(&self) {
        let Ok(out) = tokio::process::Command::new("ip").args(["-o", "link", "show"]).output().await else { return };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).map(str::trim).unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(&self.table.prefix) {
                let _ = run("ip", &["link", "del", name], "").await;
            }
        }
    }

    /// At node start: a table of this subnet left by a node that crashed
    /// (with its interfaces) is taken over and emptied, unless another live
    /// node holds the subnet. Without `nft`, or without such a table, nothing.
    pub async fn recover(self: &Arc<Self>) {
        let listed = tokio::process::Command::new("nft")
            .args(["list", "table", "inet", &self.table.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if listed.is_ok_and(|s| s.success()) {
            match self.prepare().await {
                Ok(()) => tracing::info!(table = %self.table.name, "took over a crashed node's direct interfaces"),
                Err(e) => tracing::debug!(error = %e.message, "leaving the direct interfaces' table alone"),
            }
        }
    }

    /// Removes the table (node shutdown, after every sandbox is gone).
    pub async fn close(&self) {
        if self.ready.initialized() {
            if let Err(e) = run("nft", &["-f", "-"], &self.table.remove()).await {
                tracing::warn!(error = %e, "removing the direct interfaces' table");
            }
        }
    }

    /// Records what the filter logged about link `n`.
    fn record(&self, logged: crate::nflog::Logged) {
        let Some(sandbox) = self.owners.lock().unwrap_or_else(|p| p.into_inner()).get(&logged.link).cloned() else {
            return;
        };
        let event = NetEvent {
            at_ms: crate::lifecycle::now_ms() as i64,
            protocol: format!("direct-{}", logged.protocol),
            host: logged.dst.to_string(),
            port: logged.port,
            addr: Some(logged.dst.to_string()),
            allowed: logged.allowed,
            reason: (!logged.allowed).then(|| "refused by the host's filter of the direct interface".to_owned()),
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
        };
        self.audit.record(&sandbox, event);
    }

    /// Undoes [`Direct::attach`] for number `n`, in this thread.
    fn detach_now(&self, n: u32) {
        let dev = self.table.interface(n);
        // Both wait for the kernel (an RCU grace period each), so side by side.
        std::thread::scope(|s| {
            // The link is gone already when the sandbox's namespace went first.
            s.spawn(|| run_blocking("ip", &["link", "del", &dev], ""));
            if let Err(e) = run_blocking("nft", &["-f", "-"], &self.table.detach(n)) {
                tracing::debug!(error = %e, dev, "removing a direct interface's rules");
            }
        });
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(n);
    }
}

/// One sandbox's direct interface; dropping it removes the interface and
/// its rules (on a blocking thread when inside tokio).
#[derive(Debug)]
pub struct Link {
    direct: Arc<Direct>,
    n: u32,
    released: bool,
}

impl Link {
    /// The host-side interface's name.
    pub fn name(&self) -> String {
        self.direct.table.interface(self.n)
    }

    /// Removes the interface and its rules, and waits until they are gone.
    pub async fn release(mut self) {
        self.released = true;
        let (direct, n) = (Arc::clone(&self.direct), self.n);
        let _ = tokio::task::spawn_blocking(move || direct.detach_now(n)).await;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (direct, n) = (Arc::clone(&self.direct), self.n);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || direct.detach_now(n))),
            Err(_) => direct.detach_now(n),
        }
    }
}

fn forwarding_on() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let now = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    if now.trim() != "1" {
        std::fs::write(path, "1").map_err(|e| format!("turning IPv4 forwarding on: {e}"))?;
        tracing::warn!("turned IPv4 forwarding on for direct interfaces (net.ipv4.ip_forward=1)");
    }
    Ok(())
}

fn failed(prog: &str, out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    format!("{prog} failed ({}): {}", out.status, err.trim())
}

/// Runs `prog args` with `input` on its stdin, on a blocking thread; its
/// stderr in the error.
async fn run(prog: &str, args: &[&str], input: &str) -> Result<(), String> {
    let (prog, input) = (prog.to_owned(), input.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_blocking(&prog, &args, &input)
    })
    .await
    .map_err(|e| format!("running a host tool: {e}"))?
}

fn run_blocking(prog: &str, args: &[&str], input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| format!("writing to {prog}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for {prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(prog, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn subnets_give_distinct_names_and_addresses() {
        let sink = || Arc::new(crate::net::NetAudit::default()) as Arc<dyn AuditSink>;
        let a = Direct::new("10.231.0.0/16".parse().expect("subnet"), sink()).expect("valid");
        let b = Direct::new("10.232.0.0/16".parse().expect("subnet"), sink()).expect("valid");
        assert_ne!(a.table.name, b.table.name);
        assert_ne!(a.table.log_group, b.table.log_group);
        assert!(a.table.prefix.starts_with("rv") && a.table.prefix.len() == 9);
        assert!(format!("{}16383", a.table.prefix).len() <= 15, "interface names fit IFNAMSIZ");
        assert_eq!(a.table.addresses(0), (Ipv4Addr::new(10, 231, 0, 1), Ipv4Addr::new(10, 231, 0, 2)));
        assert_eq!(a.table.addresses(70), (Ipv4Addr::new(10, 231, 1, 25), Ipv4Addr::new(10, 231, 1, 26)));
        assert_eq!(a.free.lock().expect("lock").len(), 16_384);
        let small = Direct::new("10.9.0.0/29".parse().expect("subnet"), sink()).expect("valid");
        assert_eq!(small.free.lock().expect("lock").len(), 2);
        assert!(Direct::new("10.0.0.0/31".parse().expect("subnet"), sink()).is_err());
    }
}
