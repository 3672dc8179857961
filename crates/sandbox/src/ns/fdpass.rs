//! Passing file descriptors over Unix sockets (`SCM_RIGHTS`): one message
//! body with up to two descriptors. Shared by the runtime, the zygotes, the
//! network-namespace maker and sandbox children.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Sends `body` with `fds` (none is fine) as one message.
pub fn send(sock: RawFd, body: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(body)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::empty(), None).map(drop)
}

/// Receives one message into `buf`: its length (0 at end of stream) and the
/// descriptors that came with it, owned and close-on-exec. Retries `EINTR`.
pub fn recv(sock: RawFd, buf: &mut [u8], flags: MsgFlags) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), flags | MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: descriptors just received are owned by nobody else.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                return Ok((msg.bytes, fds));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
