//! The runtime: options, the zygotes, and sandbox creation.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use reins_types::SandboxSpec;
use tokio::net::UnixStream;

use crate::cgroup::Cgroups;
use crate::ns::client::Zygote;
use crate::ns::{Bind, SpawnRequest};
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
}

impl RuntimeOptions {
    pub fn new(data_dir: PathBuf) -> Result<Self, Error> {
        let helper = std::env::current_exe().map_err(|e| Error::Helper(format!("locating own binary: {e}")))?;
        Ok(Self {
            data_dir,
            run_dir: PathBuf::from("/run/reins"),
            helper,
            zygotes: 1,
            cgroup: "reins".into(),
            start_timeout: Duration::from_secs(10),
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
        let inner = Inner {
            opts,
            zygotes,
            next_zygote: AtomicUsize::new(0),
            cgroups,
            slots,
            templates,
            mount_dir,
            graveyard: Mutex::new(Vec::new()),
        };
        Ok(Self { inner: Arc::new(inner) })
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
        let slot = self.inner.slots.acquire()?;
        let cgroup_procs = match self.inner.cgroups.prepare(slot.index, &spec.limits) {
            Ok(p) => p,
            Err(e) => {
                self.inner.slots.release(slot);
                return Err(e);
            }
        };
        let req = SpawnRequest {
            rootfs: template.rootfs.to_string_lossy().into_owned(),
            binds,
            disk_bytes: spec.limits.disk_bytes,
            id_base: slot.id_base(),
            cgroup_procs,
            mount_dir: self.inner.mount_dir.to_string_lossy().into_owned(),
            skeleton: self.inner.opts.run_dir.join("skel").join(format!("s{}", slot.index)).to_string_lossy().into_owned(),
        };
        self.spawn(spec, &req, slot).await
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
            let i = self.inner.next_zygote.fetch_add(1, Ordering::Relaxed) % self.inner.zygotes.len();
            let zygote = self.inner.zygotes[i].lock().await;
            zygote.spawn(req, &guest_end).await
        };
        drop(guest_end);
        let (pid, pidfd) = match spawned {
            Ok(ok) => ok,
            Err(e) => {
                self.inner.slots.release(slot);
                return Err(e);
            }
        };
        Sandbox::attach(Arc::clone(&self.inner), spec, host_end, pid, pidfd, slot).await
    }

    /// Number of sandboxes dropped but not yet fully gone.
    pub fn dying(&self) -> usize {
        self.inner.bury();
        self.inner.graveyard.lock().map_or(0, |g| g.len())
    }
}

impl Inner {
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
