//! A pool of fresh network namespaces, made ahead of time.
//!
//! Creating a network namespace is the most expensive step of a sandbox
//! start (about 0.5 ms of CPU here, plus bringing `lo` up). Each zygote forks
//! a *maker* process at `SCHED_IDLE` priority, so it only uses otherwise idle
//! CPU, which keeps [`TARGET`] namespaces queued on a socket; a new sandbox
//! joins one with `setns`. Each namespace is used by exactly one sandbox and
//! dies with it. When the queue is empty, the zygote makes one itself.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use super::fdpass;

/// Namespaces kept ready per zygote.
pub const TARGET: usize = 8;

/// The zygote's end of the queue of ready namespaces.
#[derive(Debug)]
pub struct Pool {
    sock: OwnedFd,
}

impl Pool {
    /// Forks the maker. Call from the single-threaded zygote.
    pub fn start() -> Result<Self, String> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("socketpair: {e}"))?;
        // SAFETY: the zygote is single-threaded; the child runs `maker` and exits.
        match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                maker(&theirs);
                // SAFETY: leave without running inherited atexit handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { .. } => {
                drop(theirs);
                let credits = [1u8; TARGET];
                nix::unistd::write(&ours, &credits).map_err(|e| format!("starting netns maker: {e}"))?;
                Ok(Self { sock: ours })
            }
        }
    }

    /// A fresh namespace: from the queue when one is ready, made now otherwise.
    pub fn take(&self) -> Result<OwnedFd, String> {
        let mut byte = [0u8; 1];
        if let Ok((_, fds)) = fdpass::recv(self.sock.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT) {
            if let Some(ns) = fds.into_iter().next() {
                let _ = nix::unistd::write(&self.sock, &[1u8]);
                return Ok(ns);
            }
        }
        make()
    }
}

/// The maker's loop: one namespace per credit, until the zygote goes away.
fn maker(sock: &OwnedFd) {
    // SAFETY: plain prctl/sched calls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
    let mut credit = [0u8; 1];
    while nix::unistd::read(sock.as_raw_fd(), &mut credit) == Ok(1) {
        let Ok(ns) = make() else { return };
        if fdpass::send(sock.as_raw_fd(), b"n", &[ns.as_raw_fd()]).is_err() {
            return;
        }
    }
}

#[repr(C)]
struct Job {
    fd: i32,
    err: i32,
}

/// Makes one network namespace now with `lo` up and low ports bindable by the
/// sandbox's unprivileged root; returns a descriptor that keeps it alive.
pub fn make() -> Result<OwnedFd, String> {
    let mut job = Job { fd: -1, err: 0 };
    let mut stack = vec![0u8; 16 << 10];
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::CLONE_NEWNET | libc::SIGCHLD;
    // SAFETY: CLONE_VFORK suspends this thread until the helper has exited,
    // so `job` and `stack` outlive it; the helper makes only raw system calls
    // (it shares this process's allocator and thread-locals). The kernel
    // reaps it: the zygote ignores SIGCHLD.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(setup, top as *mut libc::c_void, flags, &mut job as *mut Job as *mut libc::c_void)
    };
    drop(stack);
    if pid < 0 {
        return Err(format!("creating a network namespace: {}", std::io::Error::last_os_error()));
    }
    if job.fd < 0 {
        return Err(format!("preparing a network namespace: step {} failed", job.err));
    }
    // SAFETY: the helper opened this descriptor in our (shared) descriptor table.
    Ok(unsafe { OwnedFd::from_raw_fd(job.fd) })
}

extern "C" fn setup(arg: *mut libc::c_void) -> i32 {
    // SAFETY: `arg` is the `Job` of `make`, alive while this helper runs.
    let job = unsafe { &mut *(arg as *mut Job) };
    // SAFETY: raw system calls on values owned by this function.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            job.err = 1;
            return 1;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let ok = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) == 0
        };
        libc::close(sock);
        if !ok {
            job.err = 2;
            return 1;
        }
        // The namespace is not the sandbox's to configure, so let its
        // unprivileged root bind low ports (a web server on :80) by sysctl.
        let f = libc::open(c"/proc/sys/net/ipv4/ip_unprivileged_port_start".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if f < 0 || libc::write(f, b"0\n".as_ptr() as *const libc::c_void, 2) != 2 {
            job.err = 3;
            return 1;
        }
        libc::close(f);
        job.fd = libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if job.fd < 0 {
            job.err = 4;
        }
    }
    0
}
