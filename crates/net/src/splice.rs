//! Relaying a tunnel between two TCP sockets with `splice(2)`: the bytes
//! go socket → pipe → socket inside the kernel and are never copied
//! through the proxy's memory. Readiness comes from tokio, so a tunnel
//! costs no thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per `splice` call at most.
const CHUNK: usize = 1 << 20;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A larger pipe means fewer calls; the default size is fine when refused.
    // SAFETY: F_SETPIPE_SZ on a pipe we own.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Ok((r, w))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between two descriptors that are open for the whole call; no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves everything `from` sends to `to`, then half-closes `to`; the bytes moved.
async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pr, pw) = pipe()?;
    let mut total = 0u64;
    loop {
        let n = from.async_io(Interest::READABLE, || splice(from.as_raw_fd(), pw.as_raw_fd(), CHUNK)).await?;
        if n == 0 {
            // SAFETY: shutdown of the write half of a socket we hold.
            unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            let m = to.async_io(Interest::WRITABLE, || splice(pr.as_raw_fd(), to.as_raw_fd(), left)).await?;
            left -= m;
            total += m as u64;
        }
    }
}

/// Relays both ways until both sides are done: (client → upstream, upstream → client) bytes.
/// A failed direction (a reset, say) ends the other one too.
pub(crate) async fn relay(client: &TcpStream, upstream: &TcpStream) -> (u64, u64) {
    let abort = || {
        for s in [client, upstream] {
            // SAFETY: shutdown of a socket we hold; it wakes the other direction.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
        }
    };
    let up = async {
        let r = one_way(client, upstream).await;
        if r.is_err() {
            abort();
        }
        r
    };
    let down = async {
        let r = one_way(upstream, client).await;
        if r.is_err() {
            abort();
        }
        r
    };
    let (up, down) = tokio::join!(up, down);
    (up.unwrap_or(0), down.unwrap_or(0))
}
