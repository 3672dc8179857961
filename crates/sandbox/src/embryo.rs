//! Sandboxes prepared ahead ("embryos"): children cloned into fresh
//! namespaces, moved into their slot's cgroups and parked in a zygote until a
//! create hands them a sandbox. They have run no foreign code and each is
//! used once. The runtime keeps `RuntimeOptions::embryos` of them.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::cgroup::Cgroups;
use crate::ns::ZygoteRequest;
use crate::runtime::Inner;
use crate::sandbox::Pidfd;
use crate::slots::Slot;
use crate::Error;

/// Why starting a parked child failed.
pub(crate) enum Hatch {
    /// The child was gone before it got its sandbox; a fresh one may be started.
    Lost(Error),
    /// The sandbox itself failed (as a fresh one would).
    Failed(Error),
}

/// A parked child: cloned into fresh namespaces, in its slot's cgroups,
/// waiting in zygote `zygote` for its sandbox. It has run no foreign code.
#[derive(Debug)]
pub(crate) struct Embryo {
    pub slot: Slot,
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub zygote: usize,
}

/// Moves child `pid` into the groups of `procs`, if it is still alive: the
/// zygote's children are reaped by the kernel as they exit, so a dead one's
/// pid could name another process; its pidfd tells whether it lives.
fn move_child(pid: i32, pidfd: &OwnedFd, procs: &[String]) -> Result<(), Error> {
    if crate::sandbox::exited(pidfd.as_fd()) {
        return Err(Error::Setup("a sandbox prepared ahead exited before it was ready".into()));
    }
    Cgroups::attach(procs, pid)
}

/// Keeps the runtime's parked children at their target number. Ends with the runtime.
pub(crate) async fn keep_embryos(inner: Weak<Inner>, refill: Arc<Notify>) {
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
        if let Err(e) = strong.conceive(missing).await {
            tracing::warn!(error = %e, "could not prepare a sandbox ahead of time");
            drop(strong);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Inner {
    /// Prepares up to `count` children and parks those that are ready.
    ///
    /// A child counts as ready only once it is in its slot's cgroups, so a
    /// create never waits for that move. On cgroup v1 a move waits for an RCU
    /// grace period (10–15 ms on a 2-vCPU VM) whenever the kernel's
    /// `cgroup_threadgroup_rwsem` has had no writer for one, holding the
    /// host-wide `cgroup_mutex` meanwhile; moves that follow one another
    /// closely share that wait. So the children are cloned first and then
    /// moved together, from a blocking thread (the host does it for them:
    /// the move is the only step left between a clone and a parked child).
    pub(crate) async fn conceive(&self, count: usize) -> Result<(), Error> {
        let _conceiving = self.conceiving.lock().await;
        let mut born = Vec::with_capacity(count);
        let mut failure = None;
        for _ in 0..count {
            // `clear_embryos` lowers the target before it waits for this lock.
            if self.embryo_target.load(Ordering::SeqCst) == 0 {
                break;
            }
            match self.clone_embryo().await {
                Ok(child) => born.push(child),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let (born, procs): (Vec<Embryo>, Vec<Vec<String>>) = born.into_iter().unzip();
        let moves: Vec<_> = born.iter().zip(procs).map(|(e, procs)| (e.pid, e.pidfd.try_clone(), procs)).collect();
        let moved = tokio::task::spawn_blocking(move || {
            let move_one = |(pid, pidfd, procs): (i32, std::io::Result<OwnedFd>, Vec<String>)| {
                let pidfd = pidfd.map_err(|e| Error::Setup(format!("duplicating a pidfd: {e}")))?;
                move_child(pid, &pidfd, &procs)
            };
            moves.into_iter().map(move_one).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut results = moved.into_iter();
        for embryo in born {
            match results.next() {
                Some(Ok(())) => self.park(embryo).await,
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                    self.discard(embryo).await;
                }
                None => self.discard(embryo).await,
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Clones one child for a slot; it is not yet in the slot's cgroups.
    async fn clone_embryo(&self) -> Result<(Embryo, Vec<String>), Error> {
        // Whatever limits the slot has are fine for a parked child (ours, tiny);
        // the sandbox's own are applied when it hatches.
        let (slot, cgroup_procs) = self.claim_slot(None)?;
        let zygote = self.pick_zygote();
        let conceived = self.zygotes[zygote].lock().await.clone_child(&ZygoteRequest::Conceive, None).await;
        match conceived {
            Ok((pid, pidfd)) => Ok((Embryo { slot, pid, pidfd, zygote }, cgroup_procs)),
            Err(e) => {
                self.slots.release(slot);
                Err(e)
            }
        }
    }

    /// Parks a ready child, unless parking stopped meanwhile.
    async fn park(&self, embryo: Embryo) {
        // Checked under the lock `clear_embryos` also takes to lower the target.
        let unwanted = match self.embryos.lock() {
            Ok(mut parked) if self.embryo_target.load(Ordering::SeqCst) != 0 => {
                parked.push(embryo);
                None
            }
            _ => Some(embryo),
        };
        if let Some(embryo) = unwanted {
            self.discard(embryo).await;
        }
    }

    pub(crate) fn take_embryo(&self) -> Option<Embryo> {
        let embryo = self.embryos.lock().ok()?.pop();
        self.refill.notify_one();
        embryo
    }

    /// Kills a parked child, waits until it is gone and frees its slot.
    pub(crate) async fn discard(&self, embryo: Embryo) {
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
}
