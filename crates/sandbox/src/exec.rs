//! Commands running in a sandbox, seen from the host.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reins_guest::proto::{Event, ExitStatus, Request, Stream, CHUNK};

use crate::conn::{Conn, Events};
use crate::ns::setup::USER_ID;
use crate::Error;

/// The identity a command runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum User {
    /// uid 0 of the sandbox, still without any capability.
    Root,
    /// The unprivileged `user` account (uid 1000), home `/home/user`.
    #[default]
    User,
}

impl User {
    pub fn ids(self) -> (u32, u32) {
        match self {
            Self::Root => (0, 0),
            Self::User => (USER_ID, USER_ID),
        }
    }

    pub fn home(self) -> &'static str {
        match self {
            Self::Root => "/root",
            Self::User => "/home/user",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::User => "user",
        }
    }
}

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's environment.
    pub env: Vec<(String, String)>,
    /// Working directory; the user's home when `None`.
    pub cwd: Option<String>,
    pub user: User,
    /// Run on a terminal of (cols, rows).
    pub pty: Option<(u16, u16)>,
}

impl ExecRequest {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        Self { argv: argv.into_iter().map(Into::into).collect(), ..Self::default() }
    }
}

/// Something a running command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// The collected result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// Why a sandbox stopped answering: its timeout, or anything else.
pub(crate) fn ended(timed_out: &AtomicBool) -> Error {
    if timed_out.load(Ordering::SeqCst) {
        Error::Timeout
    } else {
        Error::Gone
    }
}

/// A running command: its events, and handles for stdin, signals and resize.
#[derive(Debug)]
pub struct Exec {
    id: u32,
    pid: i32,
    conn: Arc<Conn>,
    events: Events,
    timed_out: Arc<AtomicBool>,
    done: bool,
}

impl Exec {
    pub(crate) async fn start(
        conn: Arc<Conn>,
        id: u32,
        mut events: Events,
        timed_out: Arc<AtomicBool>,
    ) -> Result<Self, Error> {
        let pid = match events.recv().await {
            Some(Event::Started { pid, .. }) => pid,
            Some(Event::Error { message, .. }) => return Err(Error::Exec(message)),
            Some(other) => return Err(Error::Protocol(format!("unexpected event {other:?}"))),
            None => return Err(ended(&timed_out)),
        };
        Ok(Self { id, pid, conn, events, timed_out, done: false })
    }

    fn gone(&self) -> Error {
        ended(&self.timed_out)
    }

    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next event; `Ok(None)` after the exit has been returned.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, Error> {
        if self.done {
            return Ok(None);
        }
        loop {
            let ev = match self.events.recv().await {
                Some(ev) => ev,
                None => return Err(self.gone()),
            };
            return Ok(Some(match ev {
                Event::Output { stream: Stream::Stdout, data, .. } => ExecEvent::Stdout(data),
                Event::Output { stream: Stream::Stderr, data, .. } => ExecEvent::Stderr(data),
                Event::Exited { status, .. } => {
                    self.done = true;
                    ExecEvent::Exit(status)
                }
                Event::Error { message, .. } => return Err(Error::Protocol(message)),
                _ => continue,
            }));
        }
    }

    /// Waits for the end, collecting all output.
    pub async fn output(mut self) -> Result<Output, Error> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(ev) = self.next().await? {
            match ev {
                ExecEvent::Stdout(d) => stdout.extend_from_slice(&d),
                ExecEvent::Stderr(d) => stderr.extend_from_slice(&d),
                ExecEvent::Exit(status) => return Ok(Output { stdout, stderr, status }),
            }
        }
        Err(self.gone())
    }

    /// Sends bytes to the command's stdin (or terminal).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), Error> {
        self.control().write_stdin(data).await
    }

    /// Closes stdin (sends end-of-file on a terminal).
    pub async fn close_stdin(&self) -> Result<(), Error> {
        self.control().close_stdin().await
    }

    /// Sends signal `signal` to the command's process group.
    pub async fn signal(&self, signal: i32) -> Result<(), Error> {
        self.control().signal(signal).await
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), Error> {
        self.control().resize(cols, rows).await
    }

    /// A handle for stdin, signals and resize that can live apart from the
    /// event stream (for example in another task or request).
    pub fn control(&self) -> ExecControl {
        ExecControl { id: self.id, conn: Arc::clone(&self.conn) }
    }
}

/// Sends input, signals and terminal sizes to a running command; cheap to clone.
/// Once the command has ended its sends are ignored by the guest.
#[derive(Debug, Clone)]
pub struct ExecControl {
    id: u32,
    conn: Arc<Conn>,
}

impl ExecControl {
    /// Sends bytes to the command's stdin (or terminal).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), Error> {
        for chunk in data.chunks(CHUNK) {
            self.conn.send(&Request::Stdin { id: self.id, data: chunk.to_vec() }).await?;
        }
        Ok(())
    }

    /// Closes stdin (sends end-of-file on a terminal).
    pub async fn close_stdin(&self) -> Result<(), Error> {
        self.conn.send(&Request::Stdin { id: self.id, data: Vec::new() }).await
    }

    /// Sends signal `signal` to the command's process group.
    pub async fn signal(&self, signal: i32) -> Result<(), Error> {
        self.conn.send(&Request::Signal { id: self.id, signal }).await
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), Error> {
        self.conn.send(&Request::Resize { id: self.id, cols, rows }).await
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}
