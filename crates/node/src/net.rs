//! The node's side of sandbox networking: each sandbox's proxy listener and
//! its current settings, and the audit log of connection attempts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reins_api::node::{EgressCounters, FeedEvent, NetFeed};
use reins_net::AuditSink;
use reins_types::net::{NetEvent, SandboxNetwork};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events kept for the control plane to collect (the oldest go first).
pub const FEED_LEN: usize = 100_000;

/// Connection attempts of every sandbox on this node, in memory, as one
/// numbered feed that the control plane collects and stores.
#[derive(Debug)]
pub struct NetAudit {
    /// Random per node process: sequence numbers restart with it.
    boot: String,
    feed: Mutex<(u64, VecDeque<FeedEvent>)>,
    allowed: AtomicU64,
    denied: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Default for NetAudit {
    fn default() -> Self {
        Self {
            boot: format!("{:016x}", rand_u64()),
            feed: Mutex::new((0, VecDeque::new())),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

impl AuditSink for NetAudit {
    fn record(&self, sandbox: &str, event: NetEvent) {
        {
            let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            feed.0 += 1;
            let seq = feed.0;
            if feed.1.len() == FEED_LEN {
                feed.1.pop_front();
            }
            feed.1.push_back(FeedEvent { seq, sandbox: sandbox.to_owned(), event: event.clone() });
        }
        let counter = if event.allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(event.bytes_up, Ordering::Relaxed);
        self.bytes_down.fetch_add(event.bytes_down, Ordering::Relaxed);
    }
}

impl NetAudit {
    /// Up to `limit` events of the feed after sequence number `after`.
    pub fn feed(&self, after: u64, limit: usize) -> NetFeed {
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let first = feed.1.front().map_or(feed.0 + 1, |e| e.seq);
        let events: Vec<FeedEvent> = feed.1.iter().filter(|e| e.seq > after).take(limit).cloned().collect();
        NetFeed { boot: self.boot.clone(), dropped: first.saturating_sub(after + 1), events }
    }

    pub fn counters(&self) -> EgressCounters {
        EgressCounters {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// A sandbox's proxy: its settings and the task serving its listener
/// (stopped when this is dropped).
#[derive(Debug)]
pub struct NetState {
    pub settings: watch::Sender<Arc<SandboxNetwork>>,
    task: JoinHandle<()>,
}

impl Drop for NetState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NetState {
    /// Serves `listener` (inside sandbox `id`) under `network`.
    pub fn start(
        egress: &Arc<reins_net::Egress>,
        id: &str,
        listener: tokio::net::TcpListener,
        network: SandboxNetwork,
    ) -> Self {
        let (settings, rx) = watch::channel(Arc::new(network));
        let task = egress.serve(id.to_owned(), listener, rx);
        Self { settings, task }
    }
}
