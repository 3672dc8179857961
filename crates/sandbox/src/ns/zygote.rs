//! The zygote: a single-threaded process that clones sandboxes on request.
//!
//! It is started by [`crate::Runtime`] as `<binary> __reins-zygote` with its
//! request socket on fd 3, and exits when that socket closes, which the kernel
//! does when the host process dies, however it dies. Every sandbox has
//! `PR_SET_PDEATHSIG` pointing at its zygote and also exits when its own guest
//! socket closes, so a crashed host takes every sandbox down with it.
//! (The zygote itself uses no parent-death signal: that signal follows the
//! parent *thread*, and the host's threads come and go.)

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::seccomp::{self, Filter};
use super::{netns, setup};
use super::{SpawnReply, SpawnRequest};

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

fn serve() -> Result<(), String> {
    // Sandboxes are reaped by the kernel; the host watches them through pidfds.
    // SAFETY: installing SIG_IGN runs no code in signal context.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map_err(|e| e.to_string())?;
    // Inherited by every guest: the OOM killer picks a command (commands
    // reset it to 0), never a sandbox's PID 1 nor the zygote. Best effort:
    // it needs CAP_SYS_RESOURCE, which some hosts withhold even from root;
    // there the guest's small footprint keeps it from being chosen.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let filter = seccomp::compile().map_err(|e| format!("compiling seccomp filter: {e}"))?;
    let mut buf = vec![0u8; 64 << 10];
    let pool = netns::Pool::start()?;
    loop {
        let Some((req, guest)) = receive(&mut buf)? else {
            return Ok(());
        };
        let net = pool.take()?;
        let (reply, pidfd) = match spawn(&req, guest, net, &filter) {
            Ok((pid, pidfd)) => (SpawnReply::Ok { pid }, Some(pidfd)),
            Err(message) => (SpawnReply::Err { message }, None),
        };
        respond(&reply, pidfd)?;
    }
}

/// Receives one request and the guest socket that travels with it.
fn receive(buf: &mut [u8]) -> Result<Option<(SpawnRequest, OwnedFd)>, String> {
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(REQUEST_FD, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let fds: Vec<RawFd> = msg
                    .cmsgs()
                    .map_err(|e| e.to_string())?
                    .filter_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => Some(fds),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                break (msg.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("receiving request: {e}")),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the descriptors were just received and are owned by nobody else.
    let mut owned: Vec<OwnedFd> = fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    let req: SpawnRequest = postcard::from_bytes(&buf[..len]).map_err(|e| format!("bad request: {e}"))?;
    let guest = owned.pop().ok_or("request without a guest socket")?;
    Ok(Some((req, guest)))
}

fn respond(reply: &SpawnReply, pidfd: Option<OwnedFd>) -> Result<(), String> {
    let body = postcard::to_allocvec(reply).map_err(|e| e.to_string())?;
    let iov = [std::io::IoSlice::new(&body)];
    let fds: Vec<RawFd> = pidfd.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(REQUEST_FD, &iov, cmsgs, MsgFlags::empty(), None).map_err(|e| format!("replying: {e}"))?;
    Ok(())
}

/// The user namespace is not among them: the child builds its mounts as the
/// host's root first and enters a user namespace of its own afterwards. The
/// network namespace comes ready-made from [`netns`].
const CLONE_FLAGS: i32 =
    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD;

/// Clones the sandbox's PID 1, puts it in its cgroups and lets it go.
fn spawn(req: &SpawnRequest, guest: OwnedFd, net: OwnedFd, filter: &Filter) -> Result<(i32, OwnedFd), String> {
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
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
        drop(go_w);
        setup::child_main(req, guest, net, go_r, filter);
    }
    drop(go_r);
    drop(guest);
    drop(net);
    // SAFETY: the kernel just created this pidfd for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = pid as i32;
    if let Err(e) = prepare_child(pid, req) {
        // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) };
        return Err(e);
    }
    nix::unistd::write(&go_w, b"g").map_err(|e| format!("releasing sandbox: {e}"))?;
    Ok((pid, pidfd))
}

fn prepare_child(pid: i32, req: &SpawnRequest) -> Result<(), String> {
    for procs in &req.cgroup_procs {
        std::fs::write(procs, pid.to_string()).map_err(|e| format!("joining cgroup {procs}: {e}"))?;
    }
    Ok(())
}
