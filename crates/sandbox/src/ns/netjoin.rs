//! Sockets inside a sandbox's network namespace, made from the host.
//!
//! A socket belongs to the network namespace it was created in, wherever it
//! is used afterwards. So the host process can serve a sandbox's egress
//! proxy, or connect to a port inside it, with sockets that one dedicated
//! thread creates after `setns(pidfd, CLONE_NEWNET)` into the sandbox's
//! namespace (network namespaces, unlike mount or user namespaces, can be
//! entered by one thread of a multi-threaded process). The thread does
//! nothing else, so no other work ever runs in a sandbox's namespace; each
//! job enters its target first and goes back to the host's namespace after.
//! One job costs two `setns` and the socket calls (tens of microseconds).
//! The same thread configures a sandbox's direct interface ([`super::iface`]).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
use tokio::sync::oneshot;

/// The socket a job makes.
#[derive(Debug, Clone, Copy)]
pub enum SocketKind {
    /// A non-blocking TCP listener bound to this address (backlog 1024).
    Listen(SocketAddr),
    /// A non-blocking, unconnected TCP socket of this address family
    /// (the caller connects it to a port inside the sandbox).
    Stream { v6: bool },
}

struct Job {
    /// A pidfd of a process in the target namespace (a duplicate the job owns).
    target: OwnedFd,
    /// Runs after entering the target; told whether that succeeded.
    work: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// The handle of the namespace-entering thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct NetJoiner {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl NetJoiner {
    /// Starts the thread. It ends when the last handle is dropped.
    pub fn start() -> Result<Self, String> {
        let home = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| format!("opening own netns: {e}"))?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("reins-netns".into())
            .spawn(move || {
                let home = OwnedFd::from(home);
                for job in rx {
                    let entered = setns(&job.target, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("entering the sandbox's network namespace: {e}"));
                    (job.work)(entered);
                    if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
                        // Later jobs still enter their own target first, so this
                        // thread only keeps a dead namespace alive a little longer.
                        tracing::error!(error = %e, "returning to the host network namespace");
                    }
                }
            })
            .map_err(|e| format!("starting the netns thread: {e}"))?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread inside the network namespace of the process
    /// `pidfd` refers to. `f` must be short and must not block on the runtime.
    pub async fn run_in<T: Send + 'static>(
        &self,
        pidfd: BorrowedFd<'_>,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let target = pidfd.try_clone_to_owned().map_err(|e| format!("duplicating the pidfd: {e}"))?;
        let (reply, answer) = oneshot::channel();
        let work = Box::new(move |entered: Result<(), String>| {
            let _ = reply.send(entered.and_then(|()| f()));
        });
        self.jobs.send(Job { target, work }).map_err(|_| "the netns thread is gone".to_owned())?;
        answer.await.map_err(|_| "the netns thread is gone".to_owned())?
    }

    /// A socket of `kind` in the network namespace of the process `pidfd` refers to.
    pub async fn socket(&self, pidfd: BorrowedFd<'_>, kind: SocketKind) -> Result<OwnedFd, String> {
        self.run_in(pidfd, move || make(kind)).await
    }
}

fn make(kind: SocketKind) -> Result<OwnedFd, String> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let family = |v6: bool| if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    match kind {
        SocketKind::Stream { v6 } => {
            socket::socket(family(v6), SockType::Stream, flags, None).map_err(|e| format!("socket: {e}"))
        }
        SocketKind::Listen(addr) => {
            let fd = socket::socket(family(addr.is_ipv6()), SockType::Stream, flags, None)
                .map_err(|e| format!("socket: {e}"))?;
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| format!("bind {addr}: {e}"))?;
            socket::listen(&fd, socket::Backlog::new(1024).unwrap_or(socket::Backlog::MAXCONN))
                .map_err(|e| format!("listen {addr}: {e}"))?;
            Ok(fd)
        }
    }
}
