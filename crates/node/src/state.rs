//! The node's state: its runtime, the sandboxes it hosts and their running
//! commands, and its capacity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reins_api::node::{Capacity, Status};
use reins_sandbox::{ExecControl, Runtime, Sandbox};
use reins_types::{NetMode, SandboxNetwork, SandboxSpec};

use crate::error::ApiError;
use crate::net::{NetAudit, NetState};
use axum::http::StatusCode;

/// Limits of what one node accepts.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Sandboxes at once.
    pub max_sandboxes: u32,
    /// Sum of the memory limits of running sandboxes. Limits are ceilings, not
    /// reservations (an idle sandbox uses about 1 MiB), so the default is four
    /// times the host's memory.
    pub memory_bytes: u64,
    /// The egress proxy's fixed name answers and extra upstream CA.
    pub egress: reins_net::EgressOptions,
    /// Where agent volumes and skill bundles are kept; without it they are refused.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            max_sandboxes: 1000,
            memory_bytes: host_memory().saturating_mul(4),
            egress: reins_net::EgressOptions::default(),
            data_dir: None,
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, or 4 GiB when it cannot be read.
fn host_memory() -> u64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok());
    kib.map_or(4 << 30, |k| k * 1024)
}

struct Entry {
    sandbox: Arc<Sandbox>,
    memory: u64,
    /// Frozen: commands and file operations would hang, so they are refused.
    paused: bool,
    /// Its egress proxy, once its policy was other than `none`.
    net: Option<NetState>,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, Entry>,
    /// Creations in progress: counted against capacity already.
    pending: u32,
    reserved_memory: u64,
    execs: HashMap<(String, i32), RunningExec>,
}

/// One execution node.
pub struct Node {
    id: String,
    runtime: Runtime,
    opts: NodeOptions,
    inner: Mutex<Inner>,
    egress: Arc<reins_net::Egress>,
    audit: Arc<NetAudit>,
    /// Held while a sandbox's network settings change.
    net_changes: tokio::sync::Mutex<()>,
    mounts: crate::mounts::Mounts,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).field("opts", &self.opts).finish()
    }
}

impl Node {
    /// Fails only when the egress options are invalid (an unreadable CA).
    pub fn new(id: String, runtime: Runtime, opts: NodeOptions) -> Result<Arc<Self>, String> {
        let audit = Arc::new(NetAudit::default());
        let egress = reins_net::Egress::new(opts.egress.clone(), Arc::clone(&audit) as Arc<dyn reins_net::AuditSink>)?;
        let mounts = crate::mounts::Mounts::new(opts.data_dir.clone())?;
        Ok(Arc::new(Self {
            mounts,
            id,
            runtime,
            opts,
            inner: Mutex::new(Inner::default()),
            egress,
            audit,
            net_changes: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn status(&self) -> Status {
        let inner = self.lock();
        Status {
            node_id: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capacity: Capacity {
                max_sandboxes: self.opts.max_sandboxes,
                memory_bytes: self.opts.memory_bytes,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            },
            sandboxes: inner.sandboxes.keys().cloned().collect(),
            memory_reserved_bytes: inner.reserved_memory,
            egress: self.audit.counters(),
        }
    }

    /// Starts sandbox `id`, within capacity.
    pub async fn create(
        &self,
        id: String,
        mut spec: SandboxSpec,
        network: SandboxNetwork,
        mounts: &[reins_api::node::Mount],
    ) -> Result<(), ApiError> {
        if !spec.volumes.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "host volumes are not accepted by a node"));
        }
        spec.volumes = self.mounts.resolve(mounts)?;
        let memory = spec.limits.memory_bytes;
        {
            let mut inner = self.lock();
            if inner.sandboxes.contains_key(&id) {
                return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("sandbox {id} exists")));
            }
            let count = inner.sandboxes.len() as u32 + inner.pending;
            if count >= self.opts.max_sandboxes || inner.reserved_memory + memory > self.opts.memory_bytes {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_capacity",
                    format!("node {} is full ({count} sandboxes); retry later", self.id),
                ));
            }
            inner.pending += 1;
            inner.reserved_memory += memory;
        }
        let created = match self.runtime.create(&spec).await {
            Ok(sandbox) => self.start_net(&id, &sandbox, network).await.map(|net| (sandbox, net)),
            Err(e) => Err(e.into()),
        };
        let mut inner = self.lock();
        inner.pending -= 1;
        match created {
            Ok((sandbox, net)) => {
                inner.sandboxes.insert(id, Entry { sandbox: Arc::new(sandbox), memory, paused: false, net });
                Ok(())
            }
            Err(e) => {
                inner.reserved_memory -= memory;
                Err(e)
            }
        }
    }

    /// The proxy of a sandbox whose policy is not `none`: a listener at
    /// [`reins_net::PROXY_ADDR`] inside it, served here.
    async fn start_net(
        &self,
        id: &str,
        sandbox: &Sandbox,
        network: SandboxNetwork,
    ) -> Result<Option<NetState>, ApiError> {
        if network.policy.mode == NetMode::None {
            return Ok(None);
        }
        let listener = sandbox.listen_tcp(reins_net::PROXY_ADDR).await?;
        Ok(Some(NetState::start(&self.egress, id, listener, network)))
    }

    /// Changes a sandbox's network settings; new connections follow them.
    pub async fn set_network(&self, id: &str, network: SandboxNetwork) -> Result<(), ApiError> {
        // One change at a time, so that only one of them can make the listener.
        let _one = self.net_changes.lock().await;
        let sandbox = {
            let inner = self.lock();
            let e = inner.sandboxes.get(id).ok_or_else(ApiError::not_found)?;
            if let Some(net) = &e.net {
                net.settings.send_replace(Arc::new(network));
                return Ok(());
            }
            Arc::clone(&e.sandbox)
        };
        let Some(state) = self.start_net(id, &sandbox, network).await? else { return Ok(()) };
        let mut inner = self.lock();
        inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?.net = Some(state);
        Ok(())
    }

    /// The environment that points a sandbox's programs at its proxy (empty without one).
    pub fn net_env(&self, id: &str) -> Vec<(String, String)> {
        let inner = self.lock();
        match inner.sandboxes.get(id) {
            Some(Entry { net: Some(_), .. }) => reins_net::proxy_env(),
            _ => Vec::new(),
        }
    }

    /// The egress audit feed after sequence number `after`.
    pub fn net_feed(&self, after: u64, limit: usize) -> reins_api::node::NetFeed {
        self.audit.feed(after, limit)
    }

    /// Agent volumes and skill bundles.
    pub fn mounts(&self) -> &crate::mounts::Mounts {
        &self.mounts
    }

    /// A running (not paused) sandbox; 409 when it is paused.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>, ApiError> {
        let inner = self.lock();
        let e = inner.sandboxes.get(id).ok_or_else(ApiError::not_found)?;
        if e.paused {
            return Err(ApiError::new(StatusCode::CONFLICT, "paused", "the sandbox is paused: resume it first"));
        }
        Ok(Arc::clone(&e.sandbox))
    }

    /// Freezes or thaws every process of sandbox `id`.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let e = inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?;
        if paused {
            e.sandbox.pause()?;
        } else {
            e.sandbox.resume()?;
        }
        e.paused = paused;
        Ok(())
    }

    /// Kills and removes sandbox `id`, waiting until it is gone.
    pub async fn destroy(&self, id: &str) -> Result<(), ApiError> {
        let entry = {
            let mut inner = self.lock();
            let entry = inner.sandboxes.remove(id).ok_or_else(ApiError::not_found)?;
            inner.reserved_memory -= entry.memory;
            inner.execs.retain(|(sb, _), _| sb != id);
            entry
        };
        let Entry { mut sandbox, net, .. } = entry;
        drop(net);
        sandbox.kill();
        // Requests in flight hold a reference for a moment; they fail now that it is killed.
        for _ in 0..2000 {
            match Arc::try_unwrap(sandbox) {
                Ok(owned) => {
                    owned.destroy().await;
                    return Ok(());
                }
                Err(shared) => sandbox = shared,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::warn!(sandbox = id, "sandbox still referenced after 10 s; its cleanup is left to drop");
        Ok(())
    }

    /// Destroys every sandbox (node shutdown).
    pub async fn destroy_all(&self) {
        let ids: Vec<String> = self.lock().sandboxes.keys().cloned().collect();
        let tasks = ids.iter().map(|id| self.destroy(id));
        futures_util::future::join_all(tasks).await;
    }

    pub(crate) fn add_exec(&self, sandbox: &str, pid: i32, running: RunningExec) {
        self.lock().execs.insert((sandbox.to_owned(), pid), running);
    }

    /// The commands running in a sandbox (started through the node protocol).
    pub(crate) fn execs(&self, sandbox: &str) -> Vec<reins_api::node::ExecInfo> {
        let inner = self.lock();
        let mut list: Vec<_> = inner
            .execs
            .iter()
            .filter(|((sb, _), _)| sb == sandbox)
            .map(|((_, pid), r)| reins_api::node::ExecInfo { pid: *pid, cmd: r.cmd.clone(), cwd: r.cwd.clone() })
            .collect();
        list.sort_by_key(|e| e.pid);
        list
    }

    /// A live copy of a running command's frames from now on, and whether it runs on a terminal.
    pub(crate) fn attach(
        &self,
        sandbox: &str,
        pid: i32,
    ) -> Result<(tokio::sync::broadcast::Receiver<reins_api::node::ExecFrame>, bool), ApiError> {
        self.lock()
            .execs
            .get(&(sandbox.to_owned(), pid))
            .map(|r| (r.frames.subscribe(), r.pty))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no running command {pid}")))
    }

    pub(crate) fn remove_exec(&self, sandbox: &str, pid: i32) {
        self.lock().execs.remove(&(sandbox.to_owned(), pid));
    }

    pub(crate) fn exec(&self, sandbox: &str, pid: i32) -> Result<ExecControl, ApiError> {
        self.lock()
            .execs
            .get(&(sandbox.to_owned(), pid))
            .map(|r| r.control.clone())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no running command {pid}")))
    }
}

/// A command running in a sandbox: its control, what it is, and its frames
/// for callers that attach after it started.
#[derive(Debug)]
pub(crate) struct RunningExec {
    pub control: ExecControl,
    pub cmd: Vec<String>,
    pub cwd: Option<String>,
    pub pty: bool,
    pub frames: tokio::sync::broadcast::Sender<reins_api::node::ExecFrame>,
}
