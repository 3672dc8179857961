//! The zygote: a single-threaded process that clones sandboxes on request.
//!
//! It is started by [`crate::Runtime`] as `<binary> __reins-zygote` with its
//! request socket on fd 3, and exits when that socket closes, which the kernel
//! does when the host process dies, however it dies. Every sandbox has
//! `PR_SET_PDEATHSIG` pointing at its zygote and also exits when its own guest
//! socket closes, so a crashed host takes every sandbox down with it.
//! (The zygote itself uses no parent-death signal: that signal follows the
//! parent *thread*, and the host's threads come and go.)
//!
//! Each child gets a control socket from the zygote on which its
//! [`SpawnRequest`] and guest socket arrive. The child moves itself into its
//! slot's cgroups, or the host moves a parked one (on cgroup v1 that can wait
//! for an RCU grace period, so the zygote never does it). See
//! [`ZygoteRequest`] for parked (conceived) children.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use super::seccomp::{self, Filter};
use super::{fdpass, netns, setup};
use super::{SpawnReply, SpawnRequest, ZygoteRequest};

const REQUEST_FD: RawFd = 3;

/// Entry point of the zygote role. Never returns.
pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("reins zygote: {e}");
            1
        }
    };
    std::process::exit(code)
}

struct Zygote {
    filter: Filter,
    pool: netns::Pool,
    /// Conceived children waiting for their sandbox, by pid: their control sockets.
    parked: HashMap<i32, OwnedFd>,
}

fn serve() -> Result<(), String> {
    // Sandboxes are reaped by the kernel; the host watches them through pidfds.
    // SAFETY: installing SIG_IGN runs no code in signal context.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map_err(|e| e.to_string())?;
    // Inherited by every guest: the OOM killer picks a command (the guest
    // gives each command 0 back), never a sandbox's PID 1 nor the zygote. Best effort:
    // it needs CAP_SYS_RESOURCE, which some hosts withhold even from root;
    // there the guest's small footprint keeps it from being chosen.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let filter = seccomp::compile().map_err(|e| format!("compiling seccomp filter: {e}"))?;
    let mut z = Zygote { filter, pool: netns::Pool::start()?, parked: HashMap::new() };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let Some((req, guest)) = receive(&mut buf)? else {
            return Ok(());
        };
        let (reply, pidfd) = match z.handle(req, guest) {
            Ok((pid, pidfd)) => (SpawnReply::Ok { pid }, pidfd),
            Err(message) => (SpawnReply::Err { message }, None),
        };
        if let Err(e) = respond(&reply, pidfd) {
            // The host went away (it closes the socket however it ends): so do we.
            return if e == Errno::EPIPE || e == Errno::ECONNRESET { Ok(()) } else { Err(format!("replying: {e}")) };
        }
    }
}

impl Zygote {
    fn handle(&mut self, req: ZygoteRequest, guest: Option<OwnedFd>) -> Result<(i32, Option<OwnedFd>), String> {
        match req {
            ZygoteRequest::Conceive => {
                let (pid, pidfd, ctl) = self.conceive(true)?;
                self.parked.insert(pid, ctl);
                Ok((pid, Some(pidfd)))
            }
            ZygoteRequest::Hatch { pid, req } => {
                let ctl = self.parked.remove(&pid).ok_or_else(|| format!("no parked sandbox {pid}"))?;
                let guest = guest.ok_or("hatch without a guest socket")?;
                send_request(&ctl, &req, &guest)?;
                Ok((pid, None))
            }
            ZygoteRequest::Spawn { req } => {
                let guest = guest.ok_or("spawn without a guest socket")?;
                let (pid, pidfd, ctl) = self.conceive(false)?;
                if let Err(e) = send_request(&ctl, &req, &guest) {
                    kill(&pidfd);
                    return Err(e);
                }
                Ok((pid, Some(pidfd)))
            }
        }
    }

    /// Clones a child into fresh namespaces; it waits on its control socket.
    /// A `parked` child is moved into its cgroups by the host.
    fn conceive(&mut self, parked: bool) -> Result<(i32, OwnedFd, OwnedFd), String> {
        let net = self.pool.take()?;
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("socketpair: {e}"))?;
        let mut pidfd: RawFd = -1;
        // SAFETY: raw clone without CLONE_VM behaves like fork: the child gets a
        // copy of this single-threaded process and returns 0 here. CLONE_PIDFD
        // stores the pidfd through the parent_tid pointer, valid for the call.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                &mut pidfd as *mut RawFd,
                0usize,
                0usize,
            )
        };
        if pid < 0 {
            return Err(format!("clone: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(ours);
            self.parked.clear();
            setup::child_main(theirs, net, &self.filter, parked);
        }
        // SAFETY: the kernel just created this pidfd for us.
        Ok((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }, ours))
    }
}

/// Receives one request and the descriptor that may travel with it.
fn receive(buf: &mut [u8]) -> Result<Option<(ZygoteRequest, Option<OwnedFd>)>, String> {
    let (len, fds) = fdpass::recv(REQUEST_FD, buf, MsgFlags::empty()).map_err(|e| format!("receiving request: {e}"))?;
    if len == 0 {
        return Ok(None);
    }
    let req: ZygoteRequest = postcard::from_bytes(&buf[..len]).map_err(|e| format!("bad request: {e}"))?;
    Ok(Some((req, fds.into_iter().next())))
}

fn respond(reply: &SpawnReply, pidfd: Option<OwnedFd>) -> nix::Result<()> {
    let body = postcard::to_allocvec(reply).map_err(|_| Errno::EINVAL)?;
    let fds: Vec<RawFd> = pidfd.iter().map(AsRawFd::as_raw_fd).collect();
    fdpass::send(REQUEST_FD, &body, &fds)
}

fn send_request(ctl: &OwnedFd, req: &SpawnRequest, guest: &OwnedFd) -> Result<(), String> {
    let body = postcard::to_allocvec(req).map_err(|e| e.to_string())?;
    fdpass::send(ctl.as_raw_fd(), &body, &[guest.as_raw_fd()]).map_err(|e| format!("handing over the sandbox: {e}"))
}

/// The user namespace is not among them: the child builds its mounts as the
/// host's root first and enters a user namespace of its own afterwards. The
/// network namespace comes ready-made from [`netns`].
const CLONE_FLAGS: i32 =
    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD;

fn kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) };
}
