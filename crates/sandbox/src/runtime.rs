//! The runtime: options, the zygotes, and sandbox creation.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use reins_types::{Limits, SandboxSpec};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cgroup::Cgroups;
use crate::embryo::{keep_embryos, Embryo, Hatch};
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
    pub(crate) zygotes: Vec<tokio::sync::Mutex<Zygote>>,
    next_zygote: AtomicUsize,
    pub cgroups: Cgroups,
    pub slots: Slots,
    pub templates: Templates,
    mount_dir: PathBuf,
    /// Sandboxes dropped without `destroy`: killed, their slots released once they are gone.
    graveyard: Mutex<Vec<(Pidfd, Slot)>>,
    /// Parked children, ready to become sandboxes.
    pub(crate) embryos: Mutex<Vec<Embryo>>,
    /// How many to keep parked (starts at `opts.embryos`).
    pub(crate) embryo_target: AtomicUsize,
    /// Wakes the task that keeps `embryos` full.
    pub(crate) refill: Arc<Notify>,
    /// Held while a child is being prepared ahead.
    pub(crate) conceiving: tokio::sync::Mutex<()>,
    refill_task: Mutex<Option<JoinHandle<()>>>,
    /// Makes sockets in sandboxes' network namespaces; started on first use.
    netjoin: std::sync::OnceLock<crate::ns::netjoin::NetJoiner>,
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
        if Cgroups::favordynmods() == Some(false) {
            tracing::info!(
                "moving a task between cgroups waits for an RCU grace period on this host (10-15 ms on small VMs); \
                 Reins keeps it off prepared creates, and `mount -o remount,favordynmods` on the cgroup2 mount \
                 removes it for the rest (docs/operations.md)"
            );
        }
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
            conceiving: tokio::sync::Mutex::new(()),
            refill_task: Mutex::new(None),
            netjoin: std::sync::OnceLock::new(),
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
        let mut binds: Vec<Bind> = template
            .binds
            .iter()
            .map(|b| Bind { host: b.clone(), target: b.clone(), read_only: true, idmap: false })
            .collect();
        for v in &spec.volumes {
            if !v.host.is_dir() {
                return Err(Error::VolumeNotFound(v.host.clone()));
            }
            let host = v.host.to_string_lossy().into_owned();
            binds.push(Bind {
                host,
                target: v.sandbox.to_string_lossy().into_owned(),
                read_only: v.read_only,
                idmap: v.idmap,
            });
        }
        let mut layers = Vec::with_capacity(spec.layers.len());
        for l in &spec.layers {
            if !l.is_dir() {
                return Err(Error::Invalid(format!("snapshot layer {} is missing", l.display())));
            }
            layers.push(l.to_string_lossy().into_owned());
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
            layers: layers.clone(),
        };
        if let Some(mut embryo) = self.inner.take_embryo() {
            if let Err(e) = self.inner.limit(&mut embryo.slot, &spec.limits) {
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
        let (slot, cgroup_procs) = self.inner.claim_slot(Some(&spec.limits))?;
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
            zygote.clone_child(&ZygoteRequest::Spawn { req: req.clone() }, Some(&guest_end)).await
        };
        drop(guest_end);
        let (pid, pidfd) = match spawned {
            Ok(child) => child,
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
        // A conception under way sees the target at 0 and discards its child
        // before it lets go of this lock: wait for it.
        drop(self.inner.conceiving.lock().await);
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

impl Inner {
    pub(crate) fn netjoin(&self) -> Result<&crate::ns::netjoin::NetJoiner, Error> {
        if let Some(j) = self.netjoin.get() {
            return Ok(j);
        }
        let started = crate::ns::netjoin::NetJoiner::start().map_err(Error::Helper)?;
        Ok(self.netjoin.get_or_init(|| started))
    }

    /// Applies `limits` to a held slot's cgroups (rewritten only when the
    /// slot's record differs), records them, and returns its `cgroup.procs` files.
    pub fn limit(&self, slot: &mut Slot, limits: &Limits) -> Result<Vec<String>, Error> {
        let procs = self.cgroups.prepare(slot.index, limits, slot.applied())?;
        slot.record(Cgroups::key(limits));
        Ok(procs)
    }

    /// Takes a free slot with `limits` applied; with `None` it keeps the
    /// limits it has (the defaults on a slot never used). The slot is
    /// released again if its cgroups cannot be prepared.
    pub fn claim_slot(&self, limits: Option<&Limits>) -> Result<(Slot, Vec<String>), Error> {
        let mut slot = self.slots.acquire()?;
        let prepared = match limits {
            Some(l) => self.limit(&mut slot, l),
            None if slot.applied().is_empty() => self.limit(&mut slot, &Limits::default()),
            None => self.cgroups.ensure(slot.index),
        };
        match prepared {
            Ok(procs) => Ok((slot, procs)),
            Err(e) => {
                self.slots.release(slot);
                Err(e)
            }
        }
    }

    pub fn pick_zygote(&self) -> usize {
        self.next_zygote.fetch_add(1, Ordering::Relaxed) % self.zygotes.len()
    }

    pub fn skeleton(&self, slot: &Slot) -> PathBuf {
        self.opts.run_dir.join("skel").join(format!("s{}", slot.index))
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

    /// Kills a sandbox, paused or not: frozen tasks (cgroup v1 freezer) do not
    /// die until thawed, so the slot is thawed after the kill is sent.
    pub fn kill(&self, pidfd: &Pidfd, slot: &Slot) {
        pidfd.kill();
        let _ = self.cgroups.freeze(slot.index, false);
    }

    pub fn entomb(&self, pidfd: Pidfd, slot: Slot) {
        self.kill(&pidfd, &slot);
        if let Ok(mut g) = self.graveyard.lock() {
            g.push((pidfd, slot));
        }
    }

    pub fn start_timeout(&self) -> Duration {
        self.opts.start_timeout
    }
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

/// Each sandbox holds a few descriptors on the host (its socket, pidfd,
/// writable-layer handle and slot lock): lift the limit to the kernel's
/// `fs.nr_open` where this process may (root), else the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(max) = nr_open {
        if setrlimit(Resource::RLIMIT_NOFILE, max, max).is_ok() {
            return;
        }
    }
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
