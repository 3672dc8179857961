//! Starting a command inside the sandbox: pipes or a PTY, a new session, the
//! requested identity, no capabilities, a Landlock domain of its own, `execve`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::{dup2, execve, fork, ForkResult, Gid, Pid, Uid};

use crate::daemon::read_nonblocking;
use crate::proto::{ExecSpec, ExitStatus, Stream};

/// One output descriptor of a running command.
pub(crate) struct Output {
    pub fd: Option<OwnedFd>,
    pub stream: Stream,
}

impl Output {
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        read_nonblocking(&mut self.fd, buf)
    }
}

/// A command started by the guest.
pub(crate) struct Proc {
    pub pid: i32,
    pub outputs: Vec<Output>,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_close: bool,
    /// PTY master when the command runs on a terminal (also in `outputs`).
    pty: Option<RawFd>,
    pub status: Option<ExitStatus>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Proc {
    pub fn queue_stdin(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            self.stdin_close = true;
        } else {
            self.stdin_buf.extend_from_slice(&data);
        }
    }

    /// Writes what stdin can take now; closes it when asked and drained.
    pub fn try_flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.stdin_buf.is_empty() {
            match nix::unistd::write(fd, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => return self.drop_stdin(),
            }
        }
        if self.stdin_close {
            if self.pty.is_some() {
                // A terminal has no half-close: send EOF (^D) as a user would.
                let _ = nix::unistd::write(fd, &[4u8]);
                self.stdin_close = false;
            } else {
                self.drop_stdin();
            }
        }
    }

    /// The stdin descriptor when buffered data waits for room in it.
    pub fn stdin_waiting(&self) -> Option<RawFd> {
        self.stdin
            .as_ref()
            .filter(|_| !self.stdin_buf.is_empty())
            .map(|f| f.as_raw_fd())
    }

    pub fn drop_stdin(&mut self) {
        self.stdin = None;
        self.stdin_buf.clear();
    }

    /// Signals the command's whole process group.
    pub fn signal(&self, signal: i32) {
        if let Ok(sig) = Signal::try_from(signal) {
            let _ = kill(Pid::from_raw(-self.pid), sig);
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        if let Some(fd) = self.pty {
            set_winsize(fd, cols, rows);
        }
    }
}

fn set_winsize(fd: RawFd, cols: u16, rows: u16) {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The three descriptors the child gets, and what the guest keeps.
struct Stdio {
    child: [RawFd; 3],
    keep_child: Vec<OwnedFd>,
    outputs: Vec<Output>,
    stdin: OwnedFd,
    pty: Option<RawFd>,
}

fn pipes() -> nix::Result<Stdio> {
    let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for fd in [&in_w, &out_r, &err_r] {
        set_nonblocking(fd)?;
    }
    Ok(Stdio {
        child: [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        keep_child: vec![in_r, out_w, err_w],
        outputs: vec![
            Output {
                fd: Some(out_r),
                stream: Stream::Stdout,
            },
            Output {
                fd: Some(err_r),
                stream: Stream::Stderr,
            },
        ],
        stdin: in_w,
        pty: None,
    })
}

fn pty(cols: u16, rows: u16) -> nix::Result<Stdio> {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pair = openpty(Some(&ws), None)?;
    for fd in [&pair.master, &pair.slave] {
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    set_nonblocking(&pair.master)?;
    let master_raw = pair.master.as_raw_fd();
    let stdin = pair.master.try_clone().map_err(|_| Errno::EMFILE)?;
    let s = pair.slave.as_raw_fd();
    Ok(Stdio {
        child: [s, s, s],
        keep_child: vec![pair.slave],
        outputs: vec![Output {
            fd: Some(pair.master),
            stream: Stream::Stdout,
        }],
        stdin,
        pty: Some(master_raw),
    })
}

/// Starts `spec`; the returned process is already running.
pub(crate) fn spawn(spec: &ExecSpec) -> nix::Result<Proc> {
    if spec.argv.is_empty() {
        return Err(Errno::EINVAL);
    }
    let stdio = match spec.pty {
        Some((cols, rows)) => pty(cols, rows)?,
        None => pipes()?,
    };
    // Prepare everything that allocates before forking.
    let prepared = Prepared::new(spec);
    // SAFETY: the guest is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Child => child(&prepared, &stdio),
        ForkResult::Parent { child } => {
            let Stdio {
                outputs,
                stdin,
                pty,
                keep_child,
                ..
            } = stdio;
            drop(keep_child);
            Ok(Proc {
                pid: child.as_raw(),
                outputs,
                stdin: Some(stdin),
                stdin_buf: Vec::new(),
                stdin_close: false,
                pty,
                status: None,
            })
        }
    }
}

struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: String,
    uid: u32,
    gid: u32,
    path: String,
    pty: bool,
}

impl Prepared {
    fn new(spec: &ExecSpec) -> Self {
        let cs = |s: &String| CString::new(s.replace('\0', "")).unwrap_or_default();
        let path = spec
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_owned();
        Self {
            argv: spec.argv.iter().map(cs).collect(),
            env: spec.env.iter().map(cs).collect(),
            cwd: spec.cwd.clone(),
            uid: spec.uid,
            gid: spec.gid,
            path,
            pty: spec.pty.is_some(),
        }
    }
}

fn fail(code: i32, msg: &str) -> ! {
    let _ = nix::unistd::write(std::io::stderr(), format!("reins: {msg}\n").as_bytes());
    // SAFETY: `_exit` ends the forked child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn child(p: &Prepared, stdio: &Stdio) -> ! {
    let _ = SigSet::all().thread_unblock();
    let _ = nix::unistd::setsid();
    for (target, fd) in stdio.child.iter().enumerate() {
        if dup2(*fd, target as RawFd).is_err() {
            fail(126, "cannot set up stdio");
        }
    }
    if p.pty {
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the terminal's slave side.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    // SAFETY: closes every descriptor above stderr; none is used after this.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if let Err(e) = nix::unistd::chdir(p.cwd.as_str()) {
        fail(
            126,
            &format!("cannot change directory to {}: {}", p.cwd, e.desc()),
        );
    }
    if let Err(e) = drop_privileges(p.uid, p.gid) {
        fail(126, &format!("cannot drop privileges: {}", e.desc()));
    }
    crate::exec_policy::restrict_self();
    exec_program(p)
}

fn exec_program(p: &Prepared) -> ! {
    let prog = p.argv[0].to_string_lossy().into_owned();
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        p.path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{prog}"))
            .collect()
    };
    let mut denied = false;
    for c in candidates {
        if !Path::new(&c).is_file() {
            continue;
        }
        let Ok(path) = CString::new(c) else { continue };
        match execve(&path, &p.argv, &p.env) {
            Err(Errno::EACCES) => denied = true,
            Err(Errno::ENOENT) => {}
            Err(e) => fail(126, &format!("{prog}: {}", e.desc())),
        }
    }
    if denied {
        fail(126, &format!("{prog}: permission denied"));
    }
    fail(127, &format!("{prog}: command not found"))
}

fn drop_privileges(uid: u32, gid: u32) -> nix::Result<()> {
    // Empty the bounding set first: that needs CAP_SETPCAP, which goes next.
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; unknown numbers fail with EINVAL.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: clears the ambient set; plain integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[gid])?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    clear_capabilities()
}

/// Empties the effective, permitted and inheritable sets (needed for uid 0).
fn clear_capabilities() -> nix::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a v3 header and two data structs, both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    Errno::result(rc).map(drop)
}
