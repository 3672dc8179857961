//! The guest's event loop: one thread, one `poll(2)`, no runtime.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exec::{self, Proc};
use crate::files;
use crate::proto::{self, Event, ExitStatus, Request, CHUNK};
use crate::watch::Watches;

/// What one registered descriptor in a poll round belongs to.
#[derive(Clone, Copy)]
enum Source {
    Socket,
    Signals,
    Output(u32, usize),
    Stdin(u32),
    Watches,
}

struct Guest {
    sock: UnixStream,
    inbuf: Vec<u8>,
    signals: SignalFd,
    procs: HashMap<u32, Proc>,
    by_pid: HashMap<i32, u32>,
    watches: Watches,
}

/// Runs the guest on `sock` until the host closes it. Call this as PID 1 of
/// the sandbox, single-threaded, after the sandbox has been set up.
pub fn run(sock: UnixStream) -> io::Result<()> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let mut guest = Guest {
        sock,
        inbuf: Vec::with_capacity(4096),
        signals,
        procs: HashMap::new(),
        by_pid: HashMap::new(),
        watches: Watches::new()?,
    };
    guest.send(&Event::Ready)?;
    while guest.round()? {}
    Ok(())
}

impl Guest {
    fn send(&mut self, ev: &Event) -> io::Result<()> {
        proto::write_frame(&mut self.sock, ev)
    }

    /// One poll round; `Ok(false)` when the host has gone.
    fn round(&mut self) -> io::Result<bool> {
        let (sources, raw): (Vec<Source>, Vec<(RawFd, PollFlags)>) = self.interest().into_iter().unzip();
        // SAFETY: every raw fd comes from a descriptor owned by `self`, which
        // outlives this function's borrow of it; none is closed before `poll` returns.
        let borrowed: Vec<BorrowedFd<'_>> = raw.iter().map(|(fd, _)| unsafe { BorrowedFd::borrow_raw(*fd) }).collect();
        let mut fds: Vec<PollFd<'_>> = borrowed.iter().zip(&raw).map(|(fd, (_, ev))| PollFd::new(*fd, *ev)).collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<(Source, PollFlags)> = sources
            .into_iter()
            .zip(fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        for (source, revents) in ready {
            match source {
                Source::Socket => {
                    if !self.read_requests()? {
                        return Ok(false);
                    }
                }
                Source::Signals => self.reap()?,
                Source::Output(id, idx) => self.pump_output(id, idx)?,
                Source::Stdin(id) => self.flush_stdin(id, revents),
                Source::Watches => {
                    for ev in self.watches.read_events() {
                        self.send(&ev)?;
                    }
                }
            }
        }
        Ok(true)
    }

    fn interest(&self) -> Vec<(Source, (RawFd, PollFlags))> {
        let mut v = vec![
            (Source::Socket, (self.sock.as_raw_fd(), PollFlags::POLLIN)),
            (Source::Signals, (self.signals.as_fd().as_raw_fd(), PollFlags::POLLIN)),
        ];
        if let Some(fd) = self.watches.fd() {
            v.push((Source::Watches, (fd, PollFlags::POLLIN)));
        }
        for (id, p) in &self.procs {
            for (idx, out) in p.outputs.iter().enumerate() {
                if let Some(fd) = &out.fd {
                    v.push((Source::Output(*id, idx), (fd.as_raw_fd(), PollFlags::POLLIN)));
                }
            }
            if let Some(fd) = p.stdin_waiting() {
                v.push((Source::Stdin(*id), (fd, PollFlags::POLLOUT)));
            }
        }
        v
    }

    /// Reads what the socket has; `Ok(false)` at end of stream.
    fn read_requests(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match recv(self.sock.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(false),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        while self.inbuf.len() >= 4 {
            let mut prefix = [0u8; 4];
            prefix.copy_from_slice(&self.inbuf[..4]);
            let len = proto::frame_len(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if self.inbuf.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = self.inbuf.drain(..4 + len).skip(4).collect();
            match proto::decode::<Request>(&frame) {
                Ok(req) => self.handle(req)?,
                Err(e) => self.send(&Event::Error { id: 0, message: e.to_string() })?,
            }
        }
        Ok(true)
    }

    fn handle(&mut self, req: Request) -> io::Result<()> {
        match req {
            Request::Exec { id, spec } => self.start(id, &spec),
            Request::Stdin { id, data } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.queue_stdin(data);
                    p.try_flush_stdin();
                }
                Ok(())
            }
            Request::Signal { id, signal } => {
                if let Some(p) = self.procs.get(&id) {
                    p.signal(signal);
                }
                Ok(())
            }
            Request::Resize { id, cols, rows } => {
                if let Some(p) = self.procs.get(&id) {
                    p.resize(cols, rows);
                }
                Ok(())
            }
            Request::File { id, uid, gid, op } => {
                let result = files::perform(uid, gid, op);
                self.send(&Event::FileResult { id, result })
            }
            Request::Watch { id, path, recursive } => match self.watches.add(id, &path, recursive) {
                Ok(()) => self.send(&Event::FileResult { id, result: Ok(proto::FileReply::Done) }),
                Err(e) => self.send(&Event::FileResult { id, result: Err(files::fs_error(&e)) }),
            },
            Request::Unwatch { id } => {
                self.watches.remove(id);
                Ok(())
            }
        }
    }

    fn start(&mut self, id: u32, spec: &proto::ExecSpec) -> io::Result<()> {
        if self.procs.contains_key(&id) {
            return self.send(&Event::Error { id, message: "exec id already in use".into() });
        }
        match exec::spawn(spec) {
            Ok(None) => {
                let message = format!("reins: {}: command not found\n", spec.argv[0]);
                self.send(&Event::Started { id, pid: 0 })?;
                self.send(&Event::Output { id, stream: proto::Stream::Stderr, data: message.into_bytes() })?;
                self.send(&Event::Exited { id, status: ExitStatus::Code(127) })
            }
            Ok(Some(p)) => {
                let pid = p.pid;
                self.by_pid.insert(pid, id);
                self.procs.insert(id, p);
                self.send(&Event::Started { id, pid })
            }
            Err(e) => self.send(&Event::Error { id, message: format!("cannot start command: {}", e.desc()) }),
        }
    }

    fn pump_output(&mut self, id: u32, idx: usize) -> io::Result<()> {
        let Some(p) = self.procs.get_mut(&id) else {
            return Ok(());
        };
        let out = &mut p.outputs[idx];
        let stream = out.stream;
        let mut buf = vec![0u8; CHUNK];
        let n = out.read(&mut buf);
        if n > 0 {
            buf.truncate(n);
            self.send(&Event::Output { id, stream, data: buf })?;
        }
        self.finish_if_done(id)
    }

    fn flush_stdin(&mut self, id: u32, revents: PollFlags) {
        if let Some(p) = self.procs.get_mut(&id) {
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                p.drop_stdin();
            } else {
                p.try_flush_stdin();
            }
        }
    }

    fn reap(&mut self) -> io::Result<()> {
        while self.signals.read_signal()?.is_some() {}
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(id) = self.by_pid.remove(&status.0.as_raw()) else {
                continue;
            };
            if let Some(p) = self.procs.get_mut(&id) {
                p.status = Some(status.1);
                p.drop_stdin();
                self.drain(id)?;
            }
        }
    }

    /// Sends what is left in the output pipes of an exited command, then its exit.
    fn drain(&mut self, id: u32) -> io::Result<()> {
        let Some(p) = self.procs.get_mut(&id) else {
            return Ok(());
        };
        let mut events = Vec::new();
        for out in &mut p.outputs {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = out.read(&mut buf);
                if n == 0 {
                    break;
                }
                events.push(Event::Output { id, stream: out.stream, data: buf[..n].to_vec() });
            }
            out.fd = None;
        }
        for ev in &events {
            self.send(ev)?;
        }
        self.finish_if_done(id)
    }

    fn finish_if_done(&mut self, id: u32) -> io::Result<()> {
        let done = self.procs.get(&id).and_then(|p| p.status.filter(|_| p.outputs.iter().all(|o| o.fd.is_none())));
        if let Some(status) = done {
            self.procs.remove(&id);
            self.send(&Event::Exited { id, status })?;
        }
        Ok(())
    }
}

/// Reads without blocking; 0 means nothing now or end of stream (then `fd` is closed).
pub(crate) fn read_nonblocking(fd: &mut Option<OwnedFd>, buf: &mut [u8]) -> usize {
    let Some(f) = fd.as_ref() else { return 0 };
    loop {
        match nix::unistd::read(f.as_raw_fd(), buf) {
            Ok(0) | Err(Errno::EIO) => {
                *fd = None;
                return 0;
            }
            Ok(n) => return n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return 0,
            Err(_) => {
                *fd = None;
                return 0;
            }
        }
    }
}
