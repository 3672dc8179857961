//! The runtime: options, the zygotes, and sandbox creation.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use reins_types::{Limits, SandboxSpec};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cgroup::Cgroups;
use crate::ns::client::Zygote;
use crate::ns::{Bind, SpawnRequest, ZygoteRequest};
use crate::sandbox::{Pidfd, Sandbox};
use crate::slots::{Slot, Slots};
use crate::template::Templates;
use crate::Error;

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where templates live.
    pub data_dir: PathBuf,
    /// Host-wide runtime state: slot locks and the (always empty) mount point.
    /// Shared by every Reins process on the host; it must be traversable by
    /// unprivileged users (the default `/run/reins` is).
    pub run_dir: PathBuf,
    /// The binary re-executed as helper (it must call [`crate::maybe_run_helper`]).
    pub helper: PathBuf,
    /// How many zygotes serve spawn requests in parallel.
    pub zygotes: usize,
    /// Name of the parent cgroup (`reins`).
    pub cgroup: String,
    /// How long a sandbox may take to set itself up.
    pub start_timeout: Duration,
    /// Children kept cloned, in their cgroups and parked, so that a create
    /// skips the costliest steps (0 turns this off). Each holds a slot.
    pub embryos: usize,
}

impl RuntimeOptions {
    /// Sandboxes prepared ahead by default.
    pub const DEFAULT_EMBRYOS: usize = 4;

    pub fn new(data_dir: PathBuf) -> Result<Self, Error> {
        let helper = std::env::current_exe().map_err(|e| Error::Helper(format!("locating own binary: {e}")))?;
        Ok(Self {
            data_dir,
            run_dir: PathBuf::from("/run/reins"),
            helper,
            zygotes: 1,
            cgroup: "reins".into(),
            start_timeout: Duration::from_secs(10),
            embryos: Self::DEFAULT_EMBRYOS,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub opts: RuntimeOptions,
    zygotes: Vec<tokio::sync::Mutex<Zygote>>,
    next_zygote: AtomicUsize,
    pub cgroups: Cgroups,
    pub slots: Slots,
    pub templates: Templates,
    mount_dir: PathBuf,
    /// Sandboxes dropped without `destroy`: killed, their slots released once they are gone.
    graveyard: Mutex<Vec<(Pidfd, Slot)>>,
    /// Parked children, ready to become sandboxes.
    embryos: Mutex<Vec<Embryo>>,
    /// How many to keep parked (starts at `opts.embryos`).
    embryo_target: AtomicUsize,
    /// Wakes the task that keeps `embryos` full.
    refill: Arc<Notify>,
    refill_task: Mutex<Option<JoinHandle<()>>>,
}

/// Why starting a parked child failed.
enum Hatch {
    /// The child was gone before it got its sandbox; a fresh one may be started.
    Lost(Error),
    /// The sandbox itself failed (as a fresh one would).
    Failed(Error),
}

/// A parked child: cloned into fresh namespaces, in its slot's cgroups,
/// waiting in zygote `zygote` for its sandbox. It has run no foreign code.
#[derive(Debug)]
struct Embryo {
    slot: Slot,
    pid: i32,
    pidfd: OwnedFd,
    zygote: usize,
}

/// Creates sandboxes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl Runtime {
    /// Starts the zygotes and opens the stores. Call inside a tokio runtime.
    pub fn start(opts: RuntimeOptions) -> Result<Self, Error> {
        raise_fd_limit();
        let run = opts.run_dir.clone();
        let mount_dir = run.join("mnt");
        std::fs::create_dir_all(&mount_dir).map_err(|e| Error::io(&mount_dir, e))?;
        let slots = Slots::new(run.join("slots"))?;
        let templates = Templates::open(opts.data_dir.join("templates"))?;
        let cgroups = Cgroups::detect(&opts.cgroup)?;
        let zygotes = (0..opts.zygotes.max(1))
            .map(|_| Zygote::start(&opts.helper).map(tokio::sync::Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let opts_embryos = opts.embryos;
        let inner = Arc::new(Inner {
            opts,
            zygotes,
            next_zygote: AtomicUsize::new(0),
            cgroups,
            slots,
            templates,
            mount_dir,
            graveyard: Mutex::new(Vec::new()),
            embryos: Mutex::new(Vec::new()),
            embryo_target: AtomicUsize::new(opts_embryos),
            refill: Arc::new(Notify::new()),
            refill_task: Mutex::new(None),
        });
        if inner.opts.embryos > 0 {
            let task = tokio::spawn(keep_embryos(Arc::downgrade(&inner), Arc::clone(&inner.refill)));
            if let Ok(mut t) = inner.refill_task.lock() {
                *t = Some(task);
            }
            inner.refill.notify_one();
        }
        Ok(Self { inner })
    }

    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.inner.cgroups
    }

    /// Creates a sandbox and waits until it is ready to run commands.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox, Error> {
        spec.limits.validate()?;
        let template = self.inner.templates.resolve(&spec.template)?;
        let mut binds: Vec<Bind> =
            template.binds.iter().map(|b| Bind { host: b.clone(), target: b.clone(), read_only: true }).collect();
        for v in &spec.volumes {
            if !v.host.is_dir() {
                return Err(Error::VolumeNotFound(v.host.clone()));
            }
            let host = v.host.to_string_lossy().into_owned();
            binds.push(Bind { host, target: v.sandbox.to_string_lossy().into_owned(), read_only: v.read_only });
        }
        self.inner.bury();
        let rootfs = template.rootfs.to_string_lossy().into_owned();
        let request = |slot: &Slot, cgroup_procs: Vec<String>| SpawnRequest {
            rootfs: rootfs.clone(),
            binds: binds.clone(),
            disk_bytes: spec.limits.disk_bytes,
            id_base: slot.id_base(),
            cgroup_procs,
            mount_dir: self.inner.mount_dir.to_string_lossy().into_owned(),
            skeleton: self.inner.skeleton(slot).to_string_lossy().into_owned(),
        };
        if let Some(embryo) = self.inner.take_embryo() {
            if let Err(e) = self.inner.cgroups.prepare(embryo.slot.index, &spec.limits) {
                self.inner.discard(embryo).await;
                return Err(e);
            }
            let req = request(&embryo.slot, Vec::new());
            match self.hatch(spec, &req, embryo).await {
                // The parked child was gone: start a fresh one instead.
                Err(Hatch::Lost(e)) => tracing::warn!(error = %e, "a parked sandbox was lost"),
                Err(Hatch::Failed(e)) => return Err(e),
                Ok(sb) => return Ok(sb),
            }
        }
        let slot = self.inner.slots.acquire()?;
        let cgroup_procs = match self.inner.cgroups.prepare(slot.index, &spec.limits) {
            Ok(p) => p,
            Err(e) => {
                self.inner.slots.release(slot);
                return Err(e);
            }
        };
        let req = request(&slot, cgroup_procs);
        self.spawn(spec, &req, slot).await
    }

    /// Starts a parked child as the sandbox `req`.
    async fn hatch(&self, spec: &SandboxSpec, req: &SpawnRequest, embryo: Embryo) -> Result<Sandbox, Hatch> {
        let (host_end, guest_end) = match guest_socket() {
            Ok(pair) => pair,
            Err(e) => {
                self.inner.discard(embryo).await;
                return Err(Hatch::Failed(e));
            }
        };
        let hatched = {
            let zygote = self.inner.zygotes[embryo.zygote].lock().await;
            zygote.call(&ZygoteRequest::Hatch { pid: embryo.pid, req: req.clone() }, Some(&guest_end)).await
        };
        drop(guest_end);
        if let Err(e) = hatched {
            self.inner.discard(embryo).await;
            return Err(Hatch::Lost(e));
        }
        let Embryo { slot, pid, pidfd, .. } = embryo;
        Sandbox::attach(Arc::clone(&self.inner), spec, host_end, pid, pidfd, slot).await.map_err(Hatch::Failed)
    }

    async fn spawn(&self, spec: &SandboxSpec, req: &SpawnRequest, slot: Slot) -> Result<Sandbox, Error> {
        let (host_end, guest_end) = match guest_socket() {
            Ok(pair) => pair,
            Err(e) => {
                self.inner.slots.release(slot);
                return Err(e);
            }
        };
        let spawned = {
            let zygote = self.inner.zygotes[self.inner.pick_zygote()].lock().await;
            zygote.call(&ZygoteRequest::Spawn { req: req.clone() }, Some(&guest_end)).await
        };
        drop(guest_end);
        let (pid, pidfd) = match spawned {
            Ok((pid, Some(pidfd))) => (pid, pidfd),
            Ok((_, None)) => {
                self.inner.slots.release(slot);
                return Err(Error::Helper("zygote reply without pidfd".into()));
            }
            Err(e) => {
                self.inner.slots.release(slot);
                return Err(e);
            }
        };
        Sandbox::attach(Arc::clone(&self.inner), spec, host_end, pid, pidfd, slot).await
    }

    /// Stops keeping children parked, kills those there are and frees their
    /// slots (for shutdown and tests).
    pub async fn clear_embryos(&self) {
        let taken: Vec<Embryo> = match self.inner.embryos.lock() {
            Ok(mut parked) => {
                self.inner.embryo_target.store(0, Ordering::SeqCst);
                parked.drain(..).collect()
            }
            Err(_) => Vec::new(),
        };
        for e in taken {
            self.inner.discard(e).await;
        }
    }

    /// Number of children parked and ready to become sandboxes.
    pub fn parked(&self) -> usize {
        self.inner.embryos.lock().map_or(0, |e| e.len())
    }

    /// Number of sandboxes dropped but not yet fully gone.
    pub fn dying(&self) -> usize {
        self.inner.bury();
        self.inner.graveyard.lock().map_or(0, |g| g.len())
    }
}

/// Keeps the runtime's parked children at their target number. Ends with the runtime.
async fn keep_embryos(inner: Weak<Inner>, refill: Arc<Notify>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let target = strong.embryo_target.load(Ordering::SeqCst);
        let missing = target.saturating_sub(strong.embryos.lock().map_or(0, |e| e.len()));
        if missing == 0 {
            // Wait without keeping the runtime alive.
            drop(strong);
            refill.notified().await;
            continue;
        }
        if let Err(e) = strong.conceive().await {
            tracing::warn!(error = %e, "could not prepare a sandbox ahead of time");
            drop(strong);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Inner {
    pub fn pick_zygote(&self) -> usize {
        self.next_zygote.fetch_add(1, Ordering::Relaxed) % self.zygotes.len()
    }

    pub fn skeleton(&self, slot: &Slot) -> PathBuf {
        self.opts.run_dir.join("skel").join(format!("s{}", slot.index))
    }

    async fn conceive(&self) -> Result<(), Error> {
        let slot = self.slots.acquire()?;
        let cgroup_procs = match self.cgroups.prepare(slot.index, &Limits::default()) {
            Ok(p) => p,
            Err(e) => {
                self.slots.release(slot);
                return Err(e);
            }
        };
        let zygote = self.pick_zygote();
        let conceived = self.zygotes[zygote].lock().await.call(&ZygoteRequest::Conceive { cgroup_procs }, None).await;
        match conceived {
            Ok((pid, Some(pidfd))) => {
                let embryo = Embryo { slot, pid, pidfd, zygote };
                // Checked under the lock `clear_embryos` also takes to lower the target.
                let unwanted = {
                    let mut parked = self.embryos.lock().map_err(|_| Error::Poisoned)?;
                    if self.embryo_target.load(Ordering::SeqCst) == 0 {
                        Some(embryo)
                    } else {
                        parked.push(embryo);
                        None
                    }
                };
                if let Some(embryo) = unwanted {
                    self.discard(embryo).await;
                }
                Ok(())
            }
            Ok((_, None)) => {
                self.slots.release(slot);
                Err(Error::Helper("zygote reply without pidfd".into()))
            }
            Err(e) => {
                self.slots.release(slot);
                Err(e)
            }
        }
    }

    fn take_embryo(&self) -> Option<Embryo> {
        let embryo = self.embryos.lock().ok()?.pop();
        self.refill.notify_one();
        embryo
    }

    /// Kills a parked child, waits until it is gone and frees its slot.
    async fn discard(&self, embryo: Embryo) {
        // SAFETY: the AsyncFd takes ownership of the pidfd, which no one else closes.
        match unsafe { AsyncFd::register(embryo.pidfd) } {
            Ok(fd) => {
                let pidfd = Pidfd::from(fd);
                pidfd.kill();
                pidfd.wait().await;
                self.slots.release(embryo.slot);
            }
            // Cannot watch it: keep the slot out of use rather than reuse it early.
            Err(_) => std::mem::forget(embryo.slot),
        }
    }

    /// Releases the slots of dropped sandboxes that have exited.
    pub fn bury(&self) {
        let Ok(mut graves) = self.graveyard.lock() else {
            return;
        };
        let (gone, alive): (Vec<_>, Vec<_>) = graves.drain(..).partition(|(p, _)| p.exited());
        *graves = alive;
        drop(graves);
        for (_, slot) in gone {
            self.slots.release(slot);
        }
    }

    pub fn entomb(&self, pidfd: Pidfd, slot: Slot) {
        pidfd.kill();
        if let Ok(mut g) = self.graveyard.lock() {
            g.push((pidfd, slot));
        }
    }

    pub fn start_timeout(&self) -> Duration {
        self.opts.start_timeout
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cleanup {
    /// Idle slots whose cgroups, skeleton and lock were removed.
    pub slots: usize,
    pub cgroup_dirs: usize,
    /// Slots still in use by a running sandbox (left alone).
    pub busy: usize,
}

/// Removes what idle slots keep for reuse (cgroup directories, skeleton
/// layers, lock files), so that a host where no sandbox runs holds nothing of
/// Reins but its data directory. Slots in use are left alone. Safe to run
/// beside running Reins processes.
pub fn cleanup(opts: &RuntimeOptions) -> Result<Cleanup, Error> {
    let cgroups = Cgroups::detect(&opts.cgroup)?;
    let slots_dir = opts.run_dir.join("slots");
    let total = std::fs::read_dir(&slots_dir).map_or(0, |d| d.count());
    let mut report = Cleanup::default();
    for slot in crate::slots::idle_slots(&slots_dir)? {
        report.cgroup_dirs += cgroups.remove_slot(slot.index)?;
        let skel = opts.run_dir.join("skel").join(format!("s{}", slot.index));
        for path in [skel.with_extension("done"), skel.clone()] {
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        report.slots += 1;
    }
    report.busy = total - report.slots;
    if report.busy == 0 {
        // The group directories themselves, once empty.
        let _ = cgroups.remove_group();
    }
    Ok(report)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(Some(task)) = self.refill_task.lock().map(|mut t| t.take()) {
            task.abort();
        }
        // Parked children die with their zygote (closed with `zygotes`); their
        // slot locks are released when the slot files close.
    }
}

fn guest_socket() -> Result<(UnixStream, OwnedFd), Error> {
    let flags = SockFlag::SOCK_CLOEXEC;
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags)
        .map_err(|e| Error::Helper(format!("socketpair: {e}")))?;
    let std = std::os::unix::net::UnixStream::from(a);
    std.set_nonblocking(true).map_err(|e| Error::Helper(e.to_string()))?;
    let stream = UnixStream::from_std(std).map_err(|e| Error::Helper(e.to_string()))?;
    Ok((stream, b))
}

/// Each sandbox holds a few descriptors; lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

impl crate::Backend for Runtime {
    fn kind(&self) -> crate::BackendKind {
        crate::BackendKind::Ns
    }

    fn create(&self, spec: &SandboxSpec) -> impl std::future::Future<Output = Result<Sandbox, Error>> + Send {
        Runtime::create(self, spec)
    }
}
