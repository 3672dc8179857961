//! The node's state: its runtime, the sandboxes it hosts (running, paused
//! or hibernated) and their running commands, and its capacity.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reins_api::node::{Capacity, Status};
use reins_sandbox::{ExecControl, Runtime, Sandbox};
use reins_types::{NetMode, SandboxNetwork, SandboxSpec};

use crate::error::ApiError;
use crate::lifecycle::Plan;
use crate::net::{NetAudit, NetState};
use crate::pools::Pools;
use axum::http::StatusCode;

/// Limits of what one node accepts.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Sandboxes running at once (warm pools' included; hibernated ones are not).
    pub max_sandboxes: u32,
    /// Sum of the memory limits of running sandboxes. Limits are ceilings, not
    /// reservations (an idle sandbox uses about 1 MiB), so the default is four
    /// times the host's memory.
    pub memory_bytes: u64,
    /// Sum of the pids limits of running sandboxes. Like memory limits they
    /// are ceilings (an idle sandbox runs one process), so the default is
    /// eight times the kernel's `pid_max` (1,000 sandboxes of 256 on a
    /// default kernel).
    pub pids: u64,
    /// The egress proxy's fixed name answers and extra upstream CA.
    pub egress: reins_net::EgressOptions,
    /// Where agent volumes, skill bundles, snapshots and hibernated
    /// sandboxes are kept; without it they are refused.
    pub data_dir: Option<std::path::PathBuf>,
    /// Addresses of direct interfaces (policies with `direct`), a /30 each.
    pub direct_subnet: ipnet::Ipv4Net,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            max_sandboxes: 1000,
            memory_bytes: host_memory().saturating_mul(4),
            pids: pid_max().saturating_mul(8),
            egress: reins_net::EgressOptions::default(),
            data_dir: None,
            direct_subnet: crate::direct::DEFAULT_SUBNET.parse().unwrap_or_default(),
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

fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32_768)
}

/// A running sandbox's handles.
pub(crate) struct Live {
    pub sandbox: Arc<Sandbox>,
    /// Frozen: commands and file operations would hang, so they are refused.
    pub paused: bool,
    /// Its egress proxy, once its policy was other than `none`.
    pub net: Option<NetState>,
    /// Its direct interface, while its policy asks for one.
    pub direct: Option<crate::direct::Link>,
}

pub(crate) struct Entry {
    /// `None` while hibernated (files on disk, no process).
    pub live: Option<Live>,
    /// What it was made with: a wake makes it again from this.
    pub plan: Plan,
    /// Snapshot layers under its writable layer (ids, top first).
    pub layers: Vec<String>,
    pub last_used: Instant,
    /// Streams and tunnels open now: it is not idle while any is.
    pub holds: Arc<AtomicUsize>,
    /// Held while it hibernates or wakes.
    pub turn: Arc<tokio::sync::Mutex<()>>,
    /// Taken out of service but its processes not yet gone: not reported
    /// as hibernated until they are.
    pub hibernating: bool,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub sandboxes: HashMap<String, Entry>,
    /// Creations in progress: counted against capacity already.
    pub pending: u32,
    pub reserved_memory: u64,
    pub reserved_pids: u64,
    pub execs: HashMap<(String, i32), RunningExec>,
}

impl Inner {
    pub fn running(&self) -> u32 {
        self.sandboxes.values().filter(|e| e.live.is_some()).count() as u32
    }
}

/// One execution node.
pub struct Node {
    pub(crate) id: String,
    pub(crate) runtime: Runtime,
    pub(crate) opts: NodeOptions,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) egress: Arc<reins_net::Egress>,
    audit: Arc<NetAudit>,
    /// Held while a sandbox's network settings change.
    net_changes: tokio::sync::Mutex<()>,
    mounts: crate::mounts::Mounts,
    pub(crate) snapshots: crate::snapshots::Snapshots,
    pub(crate) pools: Pools,
    direct: Arc<crate::direct::Direct>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).field("opts", &self.opts).finish()
    }
}

/// The answer when a node cannot take more work.
pub(crate) fn full(node: &str, what: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", format!("node {node} is full ({what}); retry later"))
}

impl Node {
    /// Fails only when the egress options are invalid (an unreadable CA) or
    /// the data directory cannot be prepared. Starts the node's background
    /// work (warm pools, hibernation of idle sandboxes) when called inside tokio.
    pub fn new(id: String, runtime: Runtime, opts: NodeOptions) -> Result<Arc<Self>, String> {
        let audit = Arc::new(NetAudit::default());
        let egress = reins_net::Egress::new(opts.egress.clone(), Arc::clone(&audit) as Arc<dyn reins_net::AuditSink>)?;
        let mounts = crate::mounts::Mounts::new(opts.data_dir.clone())?;
        let snapshots = crate::snapshots::Snapshots::new(opts.data_dir.as_deref())?;
        let direct = Arc::new(crate::direct::Direct::new(
            opts.direct_subnet,
            Arc::clone(&audit) as Arc<dyn reins_net::AuditSink>,
        )?);
        let node = Arc::new(Self {
            direct,
            mounts,
            snapshots,
            id,
            runtime,
            opts,
            inner: Mutex::new(Inner::default()),
            egress,
            audit,
            net_changes: tokio::sync::Mutex::new(()),
            pools: Pools::default(),
        });
        node.load_hibernated();
        if tokio::runtime::Handle::try_current().is_ok() {
            let direct = Arc::clone(&node.direct);
            tokio::spawn(async move { direct.recover().await });
            tokio::spawn(crate::pools::keep(Arc::downgrade(&node)));
            tokio::spawn(crate::lifecycle::hibernate_idle(Arc::downgrade(&node)));
        }
        Ok(node)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn status(&self) -> Status {
        let pools = self.pools.status();
        let inner = self.lock();
        let hibernated = inner
            .sandboxes
            .iter()
            .filter(|(_, e)| e.live.is_none() && !e.hibernating)
            .map(|(id, _)| id.clone())
            .collect();
        Status {
            node_id: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capacity: Capacity {
                max_sandboxes: self.opts.max_sandboxes,
                memory_bytes: self.opts.memory_bytes,
                pids: self.opts.pids,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            },
            sandboxes: inner.sandboxes.keys().cloned().collect(),
            hibernated,
            memory_reserved_bytes: inner.reserved_memory,
            egress: self.audit.counters(),
            pools,
        }
    }

    /// Counts a sandbox of `spec`'s limits against capacity (undo with [`Node::unreserve`]).
    pub(crate) fn reserve(&self, inner: &mut Inner, spec: &SandboxSpec) -> Result<(), ApiError> {
        self.take_room(inner, &spec.limits, false)?;
        inner.pending += 1;
        Ok(())
    }

    /// Reserves memory and pids for a pool sandbox being started (already
    /// counted among the pools' sandboxes); fails when the node is full.
    pub(crate) fn reserve_for_pool(&self, spec: &SandboxSpec) -> Result<(), ApiError> {
        self.take_room(&mut self.lock(), &spec.limits, true)
    }

    /// Checks that one more sandbox with `limits` fits (`counted`: it is
    /// among the sandboxes counted already) and reserves its memory and pids.
    fn take_room(&self, inner: &mut Inner, limits: &reins_types::Limits, counted: bool) -> Result<(), ApiError> {
        let count = inner.running() + inner.pending + self.pools.held();
        let after = count + u32::from(!counted);
        if after > self.opts.max_sandboxes {
            return Err(full(&self.id, &format!("{count} of {} sandboxes", self.opts.max_sandboxes)));
        }
        if inner.reserved_memory + limits.memory_bytes > self.opts.memory_bytes {
            return Err(full(&self.id, "memory limits"));
        }
        if inner.reserved_pids + u64::from(limits.pids) > self.opts.pids {
            return Err(full(&self.id, "pids limits"));
        }
        inner.reserved_memory += limits.memory_bytes;
        inner.reserved_pids += u64::from(limits.pids);
        Ok(())
    }

    /// Gives back what [`Node::reserve`] took for a sandbox with `limits`.
    pub(crate) fn unreserve(inner: &mut Inner, limits: &reins_types::Limits) {
        inner.reserved_memory -= limits.memory_bytes;
        inner.reserved_pids -= u64::from(limits.pids);
    }

    /// Starts sandbox `id`, within capacity: from a warm pool when one
    /// matches, from snapshot `snapshot` when given.
    pub async fn create(&self, req: reins_api::node::CreateSandbox) -> Result<(), ApiError> {
        if !req.spec.volumes.is_empty() || !req.spec.layers.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "host paths are not accepted by a node"));
        }
        let layers = match &req.snapshot {
            Some(s) => self.snapshots.layer_ids(s)?,
            None => Vec::new(),
        };
        let plan = Plan {
            spec: req.spec,
            network: req.network,
            mounts: req.mounts,
            idle_timeout: req.idle_timeout_secs.map(Duration::from_secs),
        };
        {
            let mut inner = self.lock();
            if inner.sandboxes.contains_key(&req.id) {
                return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("sandbox {} exists", req.id)));
            }
            self.reserve(&mut inner, &plan.spec)?;
        }
        let started = self.start(&req.id, &plan, &layers).await;
        let mut inner = self.lock();
        inner.pending -= 1;
        match started {
            Ok(live) => {
                inner.sandboxes.insert(req.id, Entry::new(Some(live), plan, layers));
                Ok(())
            }
            Err(e) => {
                Self::unreserve(&mut inner, &plan.spec.limits);
                Err(e)
            }
        }
    }

    /// Makes the processes of a sandbox that `plan` describes, on `layers`.
    pub(crate) async fn start(&self, id: &str, plan: &Plan, layers: &[String]) -> Result<Live, ApiError> {
        let pooled = if layers.is_empty() && plan.mounts.is_empty() { self.pools.claim(&plan.spec) } else { None };
        let sandbox = match pooled {
            Some(mut sb) => {
                // The pool's reservation goes: the caller made one for this sandbox.
                Self::unreserve(&mut self.lock(), &plan.spec.limits);
                sb.set_env(&plan.spec.env);
                sb
            }
            None => {
                let mut spec = plan.spec.clone();
                spec.volumes = self.mounts.resolve(&plan.mounts)?;
                spec.layers = self.snapshots.paths(layers)?;
                self.runtime.create(&spec).await?
            }
        };
        let net = match self.start_net(id, &sandbox, plan.network.clone()).await {
            Ok(net) => net,
            Err(e) => {
                sandbox.destroy().await;
                return Err(e);
            }
        };
        let direct = match self.start_direct(id, &sandbox, &plan.network.policy).await {
            Ok(direct) => direct,
            Err(e) => {
                drop(net);
                sandbox.destroy().await;
                return Err(e);
            }
        };
        Ok(Live { sandbox: Arc::new(sandbox), paused: false, net, direct })
    }

    /// The direct interface of a sandbox whose policy asks for one.
    async fn start_direct(
        &self,
        id: &str,
        sandbox: &Sandbox,
        policy: &reins_types::NetworkPolicy,
    ) -> Result<Option<crate::direct::Link>, ApiError> {
        if !policy.has_direct() {
            return Ok(None);
        }
        self.direct.attach(id, sandbox, policy).await.map(Some)
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

    /// Changes a sandbox's network settings; new connections follow them
    /// (a hibernated sandbox gets them when it wakes).
    pub async fn set_network(&self, id: &str, network: SandboxNetwork) -> Result<(), ApiError> {
        // One change at a time, so that only one of them can make the listener.
        let _one = self.net_changes.lock().await;
        let sandbox = {
            let mut inner = self.lock();
            let e = inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?;
            match &e.live {
                Some(live) => Arc::clone(&live.sandbox),
                None => {
                    e.plan.network = network;
                    return Ok(());
                }
            }
        };
        // The direct interface first: when it cannot be made or changed,
        // nothing else has changed either.
        self.set_direct(id, &sandbox, &network.policy).await?;
        let has_proxy = self.with_live(id, |live| {
            if let Some(net) = &live.net {
                net.settings.send_replace(Arc::new(network.clone()));
            }
            live.net.is_some()
        })?;
        if !has_proxy {
            if let Some(state) = self.start_net(id, &sandbox, network.clone()).await? {
                self.with_live(id, |live| live.net = Some(state))?;
            }
        }
        let mut inner = self.lock();
        inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?.plan.network = network;
        Ok(())
    }

    /// Adds, updates or removes a running sandbox's direct interface.
    async fn set_direct(
        &self,
        id: &str,
        sandbox: &Sandbox,
        policy: &reins_types::NetworkPolicy,
    ) -> Result<(), ApiError> {
        let current = self.with_live(id, |live| live.direct.take())?;
        match current {
            Some(link) if policy.has_direct() => {
                let updated = self.direct.update(&link, policy).await;
                self.with_live(id, |live| live.direct = Some(link))?;
                updated
            }
            Some(link) => {
                link.release().await;
                Ok(())
            }
            None => {
                let link = self.start_direct(id, sandbox, policy).await?;
                self.with_live(id, |live| live.direct = link)
            }
        }
    }

    /// Runs `f` on running sandbox `id` under the lock.
    fn with_live<T>(&self, id: &str, f: impl FnOnce(&mut Live) -> T) -> Result<T, ApiError> {
        let mut inner = self.lock();
        let live = inner.sandboxes.get_mut(id).and_then(|e| e.live.as_mut()).ok_or_else(ApiError::not_found)?;
        Ok(f(live))
    }

    /// The environment that points a sandbox's programs at its proxy (empty without one).
    pub fn net_env(&self, id: &str) -> Vec<(String, String)> {
        let inner = self.lock();
        match inner.sandboxes.get(id).and_then(|e| e.live.as_ref()) {
            Some(Live { net: Some(_), .. }) => reins_net::proxy_env(),
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

    /// A running sandbox, woken first if it hibernates; 409 when it is paused.
    /// Counts as activity.
    pub async fn get(&self, id: &str) -> Result<Arc<Sandbox>, ApiError> {
        loop {
            let turn = {
                let mut inner = self.lock();
                let e = inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?;
                e.last_used = Instant::now();
                match &e.live {
                    Some(live) if live.paused => {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "paused",
                            "the sandbox is paused: resume it first",
                        ));
                    }
                    Some(live) => return Ok(Arc::clone(&live.sandbox)),
                    None => Arc::clone(&e.turn),
                }
            };
            self.wake(id, &turn).await?;
        }
    }

    /// The running sandbox without waking it (`None` while it hibernates).
    pub(crate) fn peek(&self, id: &str) -> Result<Option<Arc<Sandbox>>, ApiError> {
        let inner = self.lock();
        let e = inner.sandboxes.get(id).ok_or_else(ApiError::not_found)?;
        Ok(e.live.as_ref().map(|l| Arc::clone(&l.sandbox)))
    }

    /// Replaces the warm pools (each checked: known template, valid limits, min ≤ max).
    pub fn set_pools(&self, pools: Vec<reins_api::node::PoolSpec>) -> Result<(), ApiError> {
        for p in &pools {
            p.limits.validate().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
            if p.min > p.max || p.max > self.opts.max_sandboxes {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("pool {}: need min ≤ max ≤ {}", p.template, self.opts.max_sandboxes),
                ));
            }
        }
        self.pools.set(pools);
        Ok(())
    }

    /// Marks a sandbox busy until the guard drops (a stream or a tunnel).
    pub(crate) fn hold(&self, id: &str) -> Option<Hold> {
        let inner = self.lock();
        let holds = Arc::clone(&inner.sandboxes.get(id)?.holds);
        holds.fetch_add(1, Ordering::SeqCst);
        Some(Hold(holds))
    }

    /// Freezes or thaws every process of sandbox `id` (a hibernated one has none: 409).
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let e = inner.sandboxes.get_mut(id).ok_or_else(ApiError::not_found)?;
        let Some(live) = e.live.as_mut() else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "hibernated",
                "the sandbox is hibernated: wake it instead",
            ));
        };
        if paused {
            live.sandbox.pause()?;
        } else {
            live.sandbox.resume()?;
        }
        live.paused = paused;
        e.last_used = Instant::now();
        Ok(())
    }

    /// Kills and removes sandbox `id` (and a hibernated one's files), waiting until it is gone.
    pub async fn destroy(&self, id: &str) -> Result<(), ApiError> {
        let turn = self.lock().sandboxes.get(id).map(|e| Arc::clone(&e.turn)).ok_or_else(ApiError::not_found)?;
        // Not in the middle of a hibernation or a wake.
        let _turn = turn.lock().await;
        let entry = {
            let mut inner = self.lock();
            let entry = inner.sandboxes.remove(id).ok_or_else(ApiError::not_found)?;
            if entry.live.is_some() {
                Self::unreserve(&mut inner, &entry.plan.spec.limits);
            }
            inner.execs.retain(|(sb, _), _| sb != id);
            entry
        };
        match entry.live {
            Some(live) => self.end(id, live).await,
            None => self.forget_hibernation(id).await,
        }
        if !entry.layers.is_empty() {
            self.collect_layers().await;
        }
        Ok(())
    }

    /// Kills a sandbox's processes and waits until they are gone.
    pub(crate) async fn end(&self, id: &str, live: Live) {
        let Live { mut sandbox, net, direct, .. } = live;
        drop(net);
        // Its interface and rules go in the background (the kernel takes ~20 ms).
        drop(direct);
        sandbox.kill();
        // Requests in flight hold a reference for a moment; they fail now that it is killed.
        for _ in 0..2000 {
            match Arc::try_unwrap(sandbox) {
                Ok(owned) => return owned.destroy().await,
                Err(shared) => sandbox = shared,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::warn!(sandbox = id, "sandbox still referenced after 10 s; its cleanup is left to drop");
    }

    /// The snapshot layers this node's sandboxes (running or hibernated) stand on.
    pub(crate) fn layers_in_use(&self) -> HashSet<String> {
        self.lock().sandboxes.values().flat_map(|e| e.layers.iter().cloned()).collect()
    }

    /// Removes snapshot layers nothing uses any more.
    pub(crate) async fn collect_layers(&self) {
        if let Err(e) = self.snapshots.collect(self.layers_in_use()).await {
            tracing::warn!(error = %e.message, "collecting snapshot layers");
        }
    }

    /// Destroys every running sandbox and the warm pools (node shutdown);
    /// hibernated ones stay on disk for the next start.
    pub async fn destroy_all(&self) {
        self.pools.set(Vec::new());
        self.pools.drain(self).await;
        let ids: Vec<String> =
            self.lock().sandboxes.iter().filter(|(_, e)| e.live.is_some()).map(|(id, _)| id.clone()).collect();
        let tasks = ids.iter().map(|id| self.destroy(id));
        futures_util::future::join_all(tasks).await;
        self.direct.close().await;
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
        let mut inner = self.lock();
        inner.execs.remove(&(sandbox.to_owned(), pid));
        if let Some(e) = inner.sandboxes.get_mut(sandbox) {
            e.last_used = Instant::now();
        }
    }

    pub(crate) fn exec(&self, sandbox: &str, pid: i32) -> Result<ExecControl, ApiError> {
        self.lock()
            .execs
            .get(&(sandbox.to_owned(), pid))
            .map(|r| r.control.clone())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no running command {pid}")))
    }
}

impl Entry {
    pub fn new(live: Option<Live>, plan: Plan, layers: Vec<String>) -> Self {
        Self {
            live,
            plan,
            layers,
            last_used: Instant::now(),
            holds: Arc::new(AtomicUsize::new(0)),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            hibernating: false,
        }
    }
}

/// A stream or tunnel open on a sandbox (see [`Node::hold`]).
pub(crate) struct Hold(Arc<AtomicUsize>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
