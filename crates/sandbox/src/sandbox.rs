//! One sandbox, seen from the host: commands, files, pause, destroy.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reins_guest::proto::{EntryInfo, Event, FileOp, FileReply, Request, WatchKind};
use reins_types::SandboxSpec;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::conn::{handshake, layer_handle, Conn, Events};
use crate::exec::{Exec, ExecRequest, User};
use crate::runtime::Inner;
use crate::slots::Slot;
use crate::Error;

/// Longest wait at destroy for the reader to pass on what a dead guest wrote.
const READER_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// A pidfd of a sandbox's PID 1.
#[derive(Debug)]
pub(crate) struct Pidfd(AsyncFd<OwnedFd>);

impl From<AsyncFd<OwnedFd>> for Pidfd {
    fn from(fd: AsyncFd<OwnedFd>) -> Self {
        Self(fd)
    }
}

/// True once the process of pidfd `fd` has exited (it polls readable then).
/// Usable from any thread, without a tokio registration.
pub(crate) fn exited(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: poll on one valid pollfd with a zero timeout.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 }
}

impl Pidfd {
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), libc::SIGKILL, 0usize, 0u32) };
    }

    /// True once the process has exited (a pidfd polls readable then).
    pub fn exited(&self) -> bool {
        exited(self.0.get_ref().as_fd())
    }

    pub async fn wait(&self) {
        while !self.exited() {
            match self.0.readable().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => return,
            }
        }
    }
}

/// A running sandbox. Dropping it kills it; [`Sandbox::destroy`] also waits
/// until every process, mount and cgroup membership of it is gone.
#[derive(Debug)]
pub struct Sandbox {
    id: String,
    pid: i32,
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    reader: JoinHandle<()>,
    timer: Option<JoinHandle<()>>,
    timed_out: Arc<AtomicBool>,
    env: Vec<(String, String)>,
    /// `O_PATH` handle on the tmpfs holding the writable layer (`upper/`).
    layer: Arc<OwnedFd>,
    /// Frozen by [`Sandbox::pause`].
    paused: AtomicBool,
    life: Option<(Arc<Pidfd>, Slot)>,
}

impl Sandbox {
    pub(crate) async fn attach(
        inner: Arc<Inner>,
        spec: &SandboxSpec,
        stream: UnixStream,
        pid: i32,
        pidfd: OwnedFd,
        slot: Slot,
    ) -> Result<Self, Error> {
        // SAFETY: the AsyncFd takes ownership of the pidfd, which no one else closes.
        let pidfd = match unsafe { AsyncFd::register(pidfd) } {
            Ok(fd) => Arc::new(Pidfd(fd)),
            Err(e) => {
                // Without a registered pidfd we cannot watch it; the socket closing kills it.
                drop(stream);
                inner.slots.release(slot);
                return Err(Error::Helper(format!("registering pidfd: {e}")));
            }
        };
        let started = async {
            let layer = layer_handle(&stream, inner.start_timeout()).await?;
            let (conn, reader) = handshake(stream, inner.start_timeout()).await?;
            match layer {
                Some(layer) => Ok((conn, reader, layer)),
                None => Err(Error::Protocol("the sandbox sent no handle on its writable layer".into())),
            }
        };
        let (conn, reader, layer) = match started.await {
            Ok(ok) => ok,
            Err(e) => {
                pidfd.kill();
                pidfd.wait().await;
                inner.slots.release(slot);
                return Err(e);
            }
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let timer = spec.timeout.map(|limit| {
            let (pidfd, flag) = (Arc::downgrade(&pidfd), Arc::clone(&timed_out));
            let (cgroups, slot_index) = (inner.cgroups.clone(), slot.index);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(pidfd) = pidfd.upgrade() {
                    flag.store(true, Ordering::SeqCst);
                    pidfd.kill();
                    // A paused sandbox dies only once thawed.
                    let _ = cgroups.freeze(slot_index, false);
                }
            })
        });
        let env = spec.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        let id = format!("sb{}x{}", slot.index, pid);
        Ok(Self {
            id,
            pid,
            inner,
            conn,
            reader,
            timer,
            timed_out,
            env,
            layer: Arc::new(layer),
            paused: AtomicBool::new(false),
            life: Some((pidfd, slot)),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the sandbox's PID 1.
    pub fn host_pid(&self) -> i32 {
        self.pid
    }

    /// The slot index (its cgroups and id range).
    pub fn slot(&self) -> Option<u32> {
        self.life.as_ref().map(|(_, s)| s.index)
    }

    /// First host uid/gid of the sandbox's id range (root inside is this id).
    pub fn id_base(&self) -> Option<u32> {
        self.life.as_ref().map(|(_, s)| s.id_base())
    }

    /// True once the sandbox's timeout killed it.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// A TCP listener bound to `addr` inside the sandbox's network namespace,
    /// served by the host (the egress proxy's in-sandbox address).
    pub async fn listen_tcp(&self, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Error> {
        let fd = self.net_socket(crate::ns::netjoin::SocketKind::Listen(addr)).await?;
        tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd)).map_err(|e| Error::Helper(e.to_string()))
    }

    /// An unconnected TCP socket inside the sandbox's network namespace: the
    /// host connects it to a port of the sandbox's loopback (ingress).
    pub async fn tcp_socket(&self, v6: bool) -> Result<tokio::net::TcpSocket, Error> {
        let fd = self.net_socket(crate::ns::netjoin::SocketKind::Stream { v6 }).await?;
        Ok(tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    async fn net_socket(&self, kind: crate::ns::netjoin::SocketKind) -> Result<OwnedFd, Error> {
        let (pidfd, _) = self.life.as_ref().ok_or(Error::Gone)?;
        if pidfd.exited() {
            return Err(self.gone());
        }
        let joiner = self.inner.netjoin()?;
        joiner.socket(pidfd.0.get_ref().as_fd(), kind).await.map_err(Error::Setup)
    }

    /// The path of the sandbox's network namespace, for host tools that move
    /// an interface into it (`ip link … netns PATH`).
    pub fn netns_path(&self) -> Result<std::path::PathBuf, Error> {
        let (pidfd, _) = self.life.as_ref().ok_or(Error::Gone)?;
        if pidfd.exited() {
            return Err(self.gone());
        }
        Ok(std::path::PathBuf::from(format!("/proc/{}/ns/net", self.pid)))
    }

    /// Configures an interface the host moved into the sandbox's network
    /// namespace (address, link up, default route), from the host side.
    pub async fn configure_iface(&self, iface: crate::ns::iface::Iface) -> Result<(), Error> {
        let (pidfd, _) = self.life.as_ref().ok_or(Error::Gone)?;
        if pidfd.exited() {
            return Err(self.gone());
        }
        let joiner = self.inner.netjoin()?;
        joiner
            .run_in(pidfd.0.get_ref().as_fd(), move || crate::ns::iface::configure(&iface))
            .await
            .map_err(Error::Setup)
    }

    fn gone(&self) -> Error {
        crate::exec::ended(&self.timed_out)
    }

    /// Starts a command.
    pub async fn exec(&self, req: ExecRequest) -> Result<Exec, Error> {
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(Error::Invalid("missing command".into()));
        }
        let (uid, gid) = req.user.ids();
        let spec = reins_guest::proto::ExecSpec {
            env: self.environment(&req),
            cwd: req.cwd.clone().unwrap_or_else(|| req.user.home().to_owned()),
            argv: req.argv,
            uid,
            gid,
            pty: req.pty,
        };
        let (id, events) = self.conn.request(|id| Request::Exec { id, spec }).await.map_err(|_| self.gone())?;
        Exec::start(Arc::clone(&self.conn), id, events, Arc::clone(&self.timed_out)).await
    }

    fn environment(&self, req: &ExecRequest) -> Vec<String> {
        let user = req.user;
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), user.home().into()),
            ("USER".into(), user.name().into()),
            ("LOGNAME".into(), user.name().into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        if req.pty.is_some() {
            env.push(("TERM".into(), "xterm-256color".into()));
        }
        for (k, v) in self.env.iter().chain(&req.env) {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    async fn file(&self, user: User, op: FileOp) -> Result<FileReply, Error> {
        let (uid, gid) = user.ids();
        let (_, mut events) =
            self.conn.request(|id| Request::File { id, uid, gid, op }).await.map_err(|_| self.gone())?;
        match events.recv().await {
            Some(Event::FileResult { result, .. }) => result.map_err(Error::Fs),
            Some(Event::Error { message, .. }) => Err(Error::Protocol(message)),
            Some(other) => Err(Error::Protocol(format!("unexpected event {other:?}"))),
            None => Err(self.gone()),
        }
    }

    /// Reads up to `limit` bytes (0: as much as fits in one frame) from `offset`; returns the data and whether the end was reached.
    pub async fn read_file(&self, user: User, path: &str, offset: u64, limit: u64) -> Result<(Vec<u8>, bool), Error> {
        match self.file(user, FileOp::Read { path: path.into(), offset, limit }).await? {
            FileReply::Data { data, eof } => Ok((data, eof)),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Reads a whole file, in frame-sized pieces, up to `max` bytes.
    pub async fn read_to_end(&self, user: User, path: &str, max: u64) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        loop {
            let (data, eof) = self.read_file(user, path, out.len() as u64, 0).await?;
            out.extend_from_slice(&data);
            if out.len() as u64 > max {
                return Err(Error::Invalid(format!("{path} is larger than {max} bytes")));
            }
            if eof || data.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Writes (or appends) a file, creating parent directories. Large data
    /// goes in frame-sized pieces; a failure part-way leaves a partial file.
    pub async fn write_file(&self, user: User, path: &str, data: Vec<u8>, append: bool) -> Result<EntryInfo, Error> {
        const PIECE: usize = 1 << 20;
        if data.len() <= PIECE {
            return entry(self.file(user, FileOp::Write { path: path.into(), data, append, mode: 0o644 }).await?);
        }
        let mut last = None;
        for (i, piece) in data.chunks(PIECE).enumerate() {
            let op = FileOp::Write { path: path.into(), data: piece.to_vec(), append: append || i > 0, mode: 0o644 };
            last = Some(entry(self.file(user, op).await?)?);
        }
        last.ok_or_else(|| Error::Invalid("nothing to write".into()))
    }

    pub async fn list(&self, user: User, path: &str, depth: u32) -> Result<Vec<EntryInfo>, Error> {
        match self.file(user, FileOp::List { path: path.into(), depth }).await? {
            FileReply::Entries(e) => Ok(e),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    pub async fn stat(&self, user: User, path: &str) -> Result<EntryInfo, Error> {
        entry(self.file(user, FileOp::Stat { path: path.into() }).await?)
    }

    pub async fn mkdir(&self, user: User, path: &str, parents: bool) -> Result<(), Error> {
        self.file(user, FileOp::Mkdir { path: path.into(), parents }).await.map(drop)
    }

    pub async fn remove(&self, user: User, path: &str, recursive: bool) -> Result<(), Error> {
        self.file(user, FileOp::Remove { path: path.into(), recursive }).await.map(drop)
    }

    pub async fn rename(&self, user: User, from: &str, to: &str) -> Result<(), Error> {
        self.file(user, FileOp::Rename { from: from.into(), to: to.into() }).await.map(drop)
    }

    /// Watches a directory (and its subdirectories when `recursive`).
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watch, Error> {
        let (id, mut events) = self
            .conn
            .request_stream(|id| Request::Watch { id, path: path.into(), recursive })
            .await
            .map_err(|_| self.gone())?;
        match events.recv().await {
            Some(Event::FileResult { result: Ok(_), .. }) => {}
            Some(Event::FileResult { result: Err(e), .. }) => return Err(Error::Fs(e)),
            _ => return Err(self.gone()),
        }
        Ok(Watch { id, conn: Arc::clone(&self.conn), events })
    }

    /// Freezes every process of the sandbox.
    pub fn pause(&self) -> Result<(), Error> {
        let slot = self.slot().ok_or(Error::Gone)?;
        self.inner.cgroups.freeze(slot, true)?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn resume(&self) -> Result<(), Error> {
        let slot = self.slot().ok_or(Error::Gone)?;
        self.inner.cgroups.freeze(slot, false)?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the environment every command starts with (a sandbox taken
    /// from a warm pool gets its creator's).
    pub fn set_env(&mut self, env: &[reins_types::EnvVar]) {
        self.env = env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    }

    /// Copies the sandbox's writable layer into the new directory `dst` as a
    /// snapshot layer ([`crate::layer`]): owners become inner ids. The
    /// sandbox is frozen meanwhile (and stays so if it was paused), so the
    /// copy is consistent and nothing inside can race the walk.
    pub async fn capture(&self, dst: std::path::PathBuf) -> Result<crate::layer::LayerStats, Error> {
        let (slot, id_base) = match &self.life {
            Some((_, s)) => (s.index, s.id_base()),
            None => return Err(Error::Gone),
        };
        if dst.symlink_metadata().is_ok() {
            return Err(Error::Snapshot(format!("{} exists already", dst.display())));
        }
        self.inner.cgroups.freeze(slot, true)?;
        let layer = Arc::clone(&self.layer);
        let copied = tokio::task::spawn_blocking(move || {
            let upper = std::path::PathBuf::from(format!("/proc/self/fd/{}/upper", layer.as_raw_fd()));
            let copied = crate::layer::capture(&upper, &dst, id_base);
            if copied.is_err() {
                let _ = std::fs::remove_dir_all(&dst);
            }
            copied
        })
        .await;
        if !self.paused.load(Ordering::SeqCst) {
            self.inner.cgroups.freeze(slot, false)?;
        }
        match copied {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(e)) => Err(Error::Snapshot(e.to_string())),
            Err(e) => Err(Error::Snapshot(e.to_string())),
        }
    }

    /// Kills every process of the sandbox now, without waiting; requests in
    /// flight fail with [`Error::Gone`]. [`Sandbox::destroy`] or drop cleans up.
    pub fn kill(&self) {
        if let Some((pidfd, slot)) = &self.life {
            self.inner.kill(pidfd, slot);
        }
    }

    /// Kills the sandbox and waits until it is gone; its slot is then free.
    pub async fn destroy(mut self) {
        if let Some((pidfd, slot)) = self.life.take() {
            self.inner.kill(&pidfd, &slot);
            pidfd.wait().await;
            self.inner.slots.release(slot);
        }
        // The guest is gone: what it wrote before still reaches the readers,
        // then the connection ends (drop closes it if the reader lags).
        let _ = tokio::time::timeout(READER_DRAIN, &mut self.reader).await;
    }
}

fn entry(reply: FileReply) -> Result<EntryInfo, Error> {
    match reply {
        FileReply::Entry(e) => Ok(e),
        other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.reader.abort();
        // An aborted reader never closes the connection: requests in flight
        // (a streaming exec, a watch) would wait forever.
        self.conn.close();
        if let Some(t) = &self.timer {
            t.abort();
        }
        if let Some((pidfd, slot)) = self.life.take() {
            match Arc::try_unwrap(pidfd) {
                Ok(p) => self.inner.entomb(p, slot),
                Err(shared) => {
                    // Only a timer firing right now holds it; keep the slot out of
                    // use (locked until this process exits) rather than reuse it early.
                    self.inner.kill(&shared, &slot);
                    std::mem::forget(slot);
                }
            }
        }
    }
}

/// A change in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchKind,
    pub path: String,
}

/// A directory watch; dropping it stops watching.
#[derive(Debug)]
pub struct Watch {
    id: u32,
    conn: Arc<Conn>,
    events: Events,
}

impl Watch {
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            match self.events.recv().await? {
                Event::WatchEvent { kind, path, .. } => return Some(WatchEvent { kind, path }),
                _ => continue,
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.conn.forget(self.id);
        let (conn, id) = (Arc::clone(&self.conn), self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = conn.send(&Request::Unwatch { id }).await;
            });
        }
    }
}
