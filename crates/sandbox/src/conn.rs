//! The host's connection to one guest: a writer, and a reader task that
//! routes each event to whoever waits for its id. The guest is untrusted:
//! frames are size-checked and a malformed one closes the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reins_guest::proto::{self, Event, Request};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;

pub(crate) type Events = mpsc::Receiver<Event>;

/// Events buffered per request before the guest is made to wait: output
/// frames are at most 64 KiB, so a command that outruns its reader holds at
/// most 16 MiB here; then the guest, and through its pipe the command, wait.
const BUFFERED_EVENTS: usize = 256;

#[derive(Debug)]
struct Route {
    tx: mpsc::Sender<Event>,
    /// Outlives its first reply (a watch); otherwise removed after the last event.
    stream: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    routes: Mutex<HashMap<u32, Route>>,
    next_id: AtomicU32,
    closed: AtomicBool,
}

async fn read_event(r: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Result<Option<Event>, Error> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::Protocol(e.to_string())),
    }
    let len = proto::frame_len(prefix).map_err(|e| Error::Protocol(e.to_string()))?;
    buf.resize(len, 0);
    r.read_exact(buf).await.map_err(|e| Error::Protocol(e.to_string()))?;
    proto::decode(buf).map(Some).map_err(|e| Error::Protocol(e.to_string()))
}

/// Receives the child's first byte and, when set-up went well, the handle
/// on its writable layer that comes with it (see `setup::child_main`).
pub(crate) async fn layer_handle(stream: &UnixStream, limit: Duration) -> Result<Option<OwnedFd>, Error> {
    let recv = async {
        loop {
            stream.readable().await.map_err(|e| Error::Protocol(e.to_string()))?;
            let got = stream.try_io(Interest::READABLE, || {
                let mut byte = [0u8; 1];
                crate::ns::fdpass::recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT)
                    .map(|(n, fds)| (n, byte[0], fds))
                    .map_err(std::io::Error::from)
            });
            match got {
                Ok((0, _, _)) => return Ok(None),
                Ok((_, 1, fds)) => return Ok(fds.into_iter().next()),
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
        }
    };
    tokio::time::timeout(limit, recv)
        .await
        .map_err(|_| Error::Setup(format!("the sandbox did not start within {limit:?}")))?
}

/// Waits for the guest's first event: `Ready`, or the reason set-up failed.
pub(crate) async fn handshake(stream: UnixStream, limit: Duration) -> Result<(Arc<Conn>, JoinHandle<()>), Error> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(8 << 10, read);
    let mut buf = Vec::new();
    let first = tokio::time::timeout(limit, read_event(&mut reader, &mut buf))
        .await
        .map_err(|_| Error::Setup(format!("the sandbox did not start within {limit:?}")))??;
    match first {
        Some(Event::Ready) => {}
        Some(Event::SetupFailed { message }) => return Err(Error::Setup(message)),
        Some(other) => return Err(Error::Protocol(format!("unexpected first event {other:?}"))),
        None => return Err(Error::Setup("the sandbox exited during set-up".into())),
    }
    let conn = Arc::new(Conn {
        writer: tokio::sync::Mutex::new(write),
        routes: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
        closed: AtomicBool::new(false),
    });
    let task = tokio::spawn(read_loop(Arc::clone(&conn), reader));
    Ok((conn, task))
}

async fn read_loop(conn: Arc<Conn>, mut reader: BufReader<OwnedReadHalf>) {
    let mut buf = Vec::new();
    while let Ok(Some(ev)) = read_event(&mut reader, &mut buf).await {
        let id = match &ev {
            Event::Started { id, .. }
            | Event::Output { id, .. }
            | Event::Exited { id, .. }
            | Event::FileResult { id, .. }
            | Event::WatchEvent { id, .. }
            | Event::Error { id, .. } => *id,
            Event::Ready | Event::SetupFailed { .. } => continue,
        };
        let last = matches!(ev, Event::Exited { .. } | Event::FileResult { .. });
        let tx = {
            let Ok(mut routes) = conn.routes.lock() else {
                break;
            };
            let Some(route) = routes.get(&id) else {
                continue;
            };
            let tx = route.tx.clone();
            if last && !route.stream {
                routes.remove(&id);
            }
            tx
        };
        // Back-pressure: a reader that falls behind makes this sandbox's guest wait.
        let _ = tx.send(ev).await;
    }
    conn.close();
}

impl Conn {
    /// Ends every request: their receivers see the end of their events.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut routes) = self.routes.lock() {
            routes.clear();
        }
    }

    /// Registers a new id, sends the request built for it, returns its events.
    pub async fn request(&self, make: impl FnOnce(u32) -> Request) -> Result<(u32, Events), Error> {
        self.register(make, false).await
    }

    /// Like [`Conn::request`], for requests whose events keep coming until forgotten.
    pub async fn request_stream(&self, make: impl FnOnce(u32) -> Request) -> Result<(u32, Events), Error> {
        self.register(make, true).await
    }

    async fn register(&self, make: impl FnOnce(u32) -> Request, stream: bool) -> Result<(u32, Events), Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(BUFFERED_EVENTS);
        {
            let mut routes = self.routes.lock().map_err(|_| Error::Poisoned)?;
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Gone);
            }
            routes.insert(id, Route { tx, stream });
        }
        if let Err(e) = self.send(&make(id)).await {
            self.forget(id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Sends a request that has no reply.
    pub async fn send(&self, req: &Request) -> Result<(), Error> {
        let frame = proto::encode(req);
        if frame.len() > proto::MAX_FRAME {
            return Err(Error::Invalid(format!("request of {} bytes is too large", frame.len())));
        }
        let mut w = self.writer.lock().await;
        w.write_all(&frame).await.map_err(|_| Error::Gone)
    }

    pub fn forget(&self, id: u32) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&id);
        }
    }
}
