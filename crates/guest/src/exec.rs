//! Starting a command inside the sandbox: pipes or a PTY, a new session, the
//! requested identity, no capabilities, a Landlock domain of its own, `execve`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
        self.stdin.as_ref().filter(|_| !self.stdin_buf.is_empty()).map(|f| f.as_raw_fd())
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
    let ws = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
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
            Output { fd: Some(out_r), stream: Stream::Stdout },
            Output { fd: Some(err_r), stream: Stream::Stderr },
        ],
        stdin: in_w,
        pty: None,
    })
}

fn pty(cols: u16, rows: u16) -> nix::Result<Stdio> {
    let ws = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pair = openpty(Some(&ws), None)?;
    for fd in [&pair.master, &pair.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    }
    set_nonblocking(&pair.master)?;
    let master_raw = pair.master.as_raw_fd();
    let stdin = pair.master.try_clone().map_err(|_| Errno::EMFILE)?;
    let s = pair.slave.as_raw_fd();
    Ok(Stdio {
        child: [s, s, s],
        keep_child: vec![pair.slave],
        outputs: vec![Output { fd: Some(pair.master), stream: Stream::Stdout }],
        stdin,
        pty: Some(master_raw),
    })
}

/// Starts `spec`; the returned process is already running, or `None` when
/// the program does not exist (the caller reports exit code 127).
pub(crate) fn spawn(spec: &ExecSpec) -> nix::Result<Option<Proc>> {
    if spec.argv.is_empty() {
        return Err(Errno::EINVAL);
    }
    let Some(program) = resolve(spec) else { return Ok(None) };
    let stdio = match spec.pty {
        Some((cols, rows)) => pty(cols, rows)?,
        None => pipes()?,
    };
    let job = Job::new(spec, program, &stdio)?;
    let pid = job.start()?;
    reset_oom_score(pid);
    let Stdio { outputs, stdin, pty, keep_child, .. } = stdio;
    drop(keep_child);
    Ok(Some(Proc { pid, outputs, stdin: Some(stdin), stdin_buf: Vec::new(), stdin_close: false, pty, status: None }))
}

/// Gives command `pid` the OOM score of an ordinary process when the guest
/// runs protected (`oom_score_adj` -1000, set by the zygote where the host
/// grants `CAP_SYS_RESOURCE`), so that a sandbox's OOM killer picks a
/// command, never PID 1. Done from here, once the command has exec'd: the
/// `vfork` child shares the guest's non-dumpable memory, so its own
/// `/proc/self/oom_score_adj` is closed to it. Raising a score needs no
/// privilege; a guest at 0 (a host without that capability) skips it all.
fn reset_oom_score(pid: i32) {
    static PROTECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let protected =
        *PROTECTED.get_or_init(|| std::fs::read_to_string("/proc/self/oom_score_adj").is_ok_and(|s| s.trim() != "0"));
    if protected {
        let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "0");
    }
}

/// The program `argv[0]` names: as given when it has a `/`, else the first
/// executable file of that name in the command's `PATH`.
fn resolve(spec: &ExecSpec) -> Option<CString> {
    let prog = &spec.argv[0];
    let path = spec.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if prog.contains('/') {
        Some(prog.clone()).filter(|p| Path::new(p).exists())
    } else {
        path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{prog}")).find(|c| executable(Path::new(c)))
    };
    found.and_then(|p| CString::new(p).ok())
}

fn cstrings(v: &[String]) -> nix::Result<Vec<CString>> {
    v.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL)).collect()
}

fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// Everything the child needs, prepared before it exists: the child shares
/// the guest's memory (`CLONE_VM | CLONE_VFORK`, no page tables copied) and
/// may only make raw system calls on it.
struct Job {
    program: CString,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    name: Vec<u8>,
    uid: u32,
    gid: u32,
    stdio: [RawFd; 3],
    pty: bool,
}

impl Job {
    fn new(spec: &ExecSpec, program: CString, stdio: &Stdio) -> nix::Result<Self> {
        let argv = cstrings(&spec.argv)?;
        let env = cstrings(&spec.env)?;
        Ok(Self {
            argv_ptrs: pointers(&argv),
            env_ptrs: pointers(&env),
            _argv: argv,
            _env: env,
            program,
            cwd: CString::new(spec.cwd.as_bytes()).map_err(|_| Errno::EINVAL)?,
            name: spec.argv[0].as_bytes().to_vec(),
            uid: spec.uid,
            gid: spec.gid,
            stdio: stdio.child,
            pty: spec.pty.is_some(),
        })
    }

    fn start(&self) -> nix::Result<i32> {
        let mut stack = vec![0u8; 32 << 10];
        // SAFETY: CLONE_VFORK suspends the guest until the child has called
        // execve or exited, so `self` and `stack` outlive its use of them;
        // the child only makes raw system calls (see `child`).
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
            let arg = self as *const Job as *mut libc::c_void;
            libc::clone(child, top as *mut libc::c_void, libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, arg)
        };
        Errno::result(pid)
    }
}

/// Writes `reins: <program>: <msg>` to stderr and exits with `code`.
///
/// # Safety
/// Only raw system calls; callable in the vfork child.
unsafe fn fail(job: &Job, code: i32, msg: &[u8]) -> i32 {
    for part in [b"reins: ".as_slice(), &job.name, b": ", msg, b"\n"] {
        // SAFETY: writes bytes from a live slice.
        unsafe { libc::write(2, part.as_ptr() as *const libc::c_void, part.len()) };
    }
    // SAFETY: ends the child at once.
    unsafe { libc::_exit(code) }
}

extern "C" fn child(arg: *mut libc::c_void) -> i32 {
    // SAFETY: `arg` is the `Job` of `Job::start`, alive while the guest is
    // suspended; everything below is a raw system call on prepared data.
    unsafe {
        let job = &*(arg as *const Job);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The guest ignores SIGPIPE; commands must not inherit that.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        for (target, fd) in job.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                return fail(job, 126, b"cannot set up stdio");
            }
        }
        if job.pty {
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if libc::chdir(job.cwd.as_ptr()) != 0 {
            return fail(job, 126, b"cannot change to the working directory");
        }
        let gid = job.gid;
        if libc::setgroups(1, &gid) != 0 || libc::setresgid(gid, gid, gid) != 0 {
            return fail(job, 126, b"cannot set the group");
        }
        if libc::setresuid(job.uid, job.uid, job.uid) != 0 {
            return fail(job, 126, b"cannot set the user");
        }
        if clear_capabilities() != 0 {
            return fail(job, 126, b"cannot drop capabilities");
        }
        libc::execve(job.program.as_ptr(), job.argv_ptrs.as_ptr(), job.env_ptrs.as_ptr());
        match *libc::__errno_location() {
            libc::ENOENT => fail(job, 127, b"command not found"),
            libc::EACCES => fail(job, 126, b"permission denied"),
            libc::ENOEXEC => fail(job, 126, b"exec format error"),
            _ => fail(job, 126, b"cannot execute"),
        }
    }
}

/// Empties the effective, permitted and inheritable sets (needed for uid 0;
/// a switch to another uid clears them anyway). Raw system call only.
fn clear_capabilities() -> libc::c_long {
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
    let header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a v3 header and two data structs, both valid for the call.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }
}
