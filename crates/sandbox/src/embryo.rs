//! Sandboxes prepared ahead ("embryos"): children cloned into fresh
//! namespaces, moved into their slot's cgroups and parked in a zygote until a
//! create hands them a sandbox. They have run no foreign code and each is
//! used once. The runtime keeps `RuntimeOptions::embryos` of them.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

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
        if let Err(e) = strong.conceive().await {
            tracing::warn!(error = %e, "could not prepare a sandbox ahead of time");
            drop(strong);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Inner {
    pub(crate) async fn conceive(&self) -> Result<(), Error> {
        let _conceiving = self.conceiving.lock().await;
        // `clear_embryos` lowers the target before it waits for this lock.
        if self.embryo_target.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        // Whatever limits the slot has are fine for a parked child (ours, tiny);
        // the sandbox's own are applied when it hatches.
        let (slot, cgroup_procs) = self.claim_slot(None)?;
        let zygote = self.pick_zygote();
        let conceived =
            self.zygotes[zygote].lock().await.clone_child(&ZygoteRequest::Conceive { cgroup_procs }, None).await;
        match conceived {
            Ok((pid, pidfd)) => {
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
            Err(e) => {
                self.slots.release(slot);
                Err(e)
            }
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
