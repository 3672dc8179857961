//! The node's side of sandbox networking: each sandbox's proxy listener and
//! its current settings, and the audit log of connection attempts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reins_api::node::EgressCounters;
use reins_net::AuditSink;
use reins_types::net::{NetEvent, SandboxNetwork};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events kept per sandbox (the oldest go first).
pub const LOG_LEN: usize = 1000;

/// Connection attempts of every sandbox on this node, in memory.
#[derive(Debug, Default)]
pub struct NetAudit {
    logs: Mutex<HashMap<String, VecDeque<NetEvent>>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl AuditSink for NetAudit {
    fn record(&self, sandbox: &str, event: NetEvent) {
        let counter = if event.allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(event.bytes_up, Ordering::Relaxed);
        self.bytes_down.fetch_add(event.bytes_down, Ordering::Relaxed);
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        // Only sandboxes that have a proxy have a log (see `open`): a late event
        // of a destroyed sandbox is counted, not kept.
        if let Some(log) = logs.get_mut(sandbox) {
            if log.len() == LOG_LEN {
                log.pop_front();
            }
            log.push_back(event);
        }
    }
}

impl NetAudit {
    fn open(&self, sandbox: &str) {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).entry(sandbox.to_owned()).or_default();
    }

    pub fn forget(&self, sandbox: &str) {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).remove(sandbox);
    }

    /// The sandbox's events, oldest first.
    pub fn log(&self, sandbox: &str) -> Vec<NetEvent> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(sandbox).map(|l| l.iter().cloned().collect()).unwrap_or_default()
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
        audit: &NetAudit,
        id: &str,
        listener: tokio::net::TcpListener,
        network: SandboxNetwork,
    ) -> Self {
        audit.open(id);
        let (settings, rx) = watch::channel(Arc::new(network));
        let task = egress.serve(id.to_owned(), listener, rx);
        Self { settings, task }
    }
}
