//! The host side of a zygote: starting it and sending it spawn requests
//! without blocking the runtime (non-blocking `SOCK_SEQPACKET` + `AsyncFd`).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{fdpass, SpawnReply, ZygoteRequest, ZYGOTE_ARG};
use crate::Error;

/// One running zygote and the socket to it.
#[derive(Debug)]
pub struct Zygote {
    sock: AsyncFd<OwnedFd>,
    child: Child,
}

impl Zygote {
    /// Starts `exe` in the zygote role.
    pub fn start(exe: &Path) -> Result<Self, Error> {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)
            .map_err(|e| Error::Helper(format!("socketpair: {e}")))?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg(ZYGOTE_ARG).stdin(Stdio::null());
        // SAFETY: the closure only calls async-signal-safe functions (dup2, fcntl).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(theirs_raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let fl = libc::fcntl(3, libc::F_GETFL);
                libc::fcntl(3, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| Error::Helper(format!("starting {}: {e}", exe.display())))?;
        drop(theirs);
        // SAFETY: the AsyncFd takes ownership of our end, which no one else closes.
        let sock =
            unsafe { AsyncFd::register(ours) }.map_err(|e| Error::Helper(format!("registering zygote socket: {e}")))?;
        Ok(Self { sock, child })
    }

    /// Like [`Zygote::call`] for requests that clone a child (`Conceive`,
    /// `Spawn`): the answer must carry the child's pidfd.
    pub async fn clone_child(&self, req: &ZygoteRequest, guest: Option<&OwnedFd>) -> Result<(i32, OwnedFd), Error> {
        match self.call(req, guest).await? {
            (pid, Some(pidfd)) => Ok((pid, pidfd)),
            (_, None) => Err(Error::Helper("zygote reply without pidfd".into())),
        }
    }

    /// Sends one request (with the guest socket, if any) and waits for the
    /// answer: the child's host pid, and a pidfd when a child was cloned.
    pub async fn call(&self, req: &ZygoteRequest, guest: Option<&OwnedFd>) -> Result<(i32, Option<OwnedFd>), Error> {
        let body = postcard::to_allocvec(req).map_err(|e| Error::Helper(e.to_string()))?;
        let fds: Vec<RawFd> = guest.iter().map(|g| g.as_raw_fd()).collect();
        self.sock
            .async_io(Interest::WRITABLE, |fd| fdpass::send(fd.as_raw_fd(), &body, &fds).map_err(std::io::Error::from))
            .await
            .map_err(|e| Error::Helper(format!("sending to zygote: {e}")))?;
        let mut buf = [0u8; 4096];
        let (len, pidfd) = self
            .sock
            .async_io(Interest::READABLE, |fd| recv_reply(fd.as_raw_fd(), &mut buf))
            .await
            .map_err(|e| Error::Helper(format!("reading from zygote: {e}")))?;
        if len == 0 {
            return Err(Error::Helper("the zygote exited".into()));
        }
        match postcard::from_bytes(&buf[..len]).map_err(|e| Error::Helper(e.to_string()))? {
            SpawnReply::Ok { pid } => Ok((pid, pidfd)),
            SpawnReply::Err { message } => Err(Error::Setup(message)),
        }
    }
}

fn recv_reply(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let (len, fds) = fdpass::recv(fd, buf, MsgFlags::empty())?;
    Ok((len, fds.into_iter().next()))
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing the socket (with `self.sock`) makes the zygote exit; reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
