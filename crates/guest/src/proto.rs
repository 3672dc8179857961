//! The host <-> guest protocol: length-prefixed `postcard` frames over a Unix
//! stream socket. Every request carries an `id` chosen by the host; every
//! event echoes the id it belongs to.
//!
//! The host treats every byte from the guest as untrusted: [`decode`] never
//! panics and refuses frames over [`MAX_FRAME`].

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The largest frame either side accepts (4 MiB body).
pub const MAX_FRAME: usize = 4 << 20;

/// Largest chunk of process output or file data put in one frame.
pub const CHUNK: usize = 64 << 10;

/// A command to start inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments; the program is looked up in `PATH` of `env`.
    pub argv: Vec<String>,
    /// The complete environment of the command, `NAME=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Run on a new pseudo-terminal of this size (cols, rows) instead of pipes.
    pub pty: Option<(u16, u16)>,
}

/// Output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + N after signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

/// A file operation, performed with the file-system identity `uid`/`gid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    Read {
        path: String,
        offset: u64,
        limit: u64,
    },
    Write {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        append: bool,
        mode: u32,
    },
    List {
        path: String,
        depth: u32,
    },
    Stat {
        path: String,
    },
    Mkdir {
        path: String,
        parents: bool,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
}

/// Kind of a file-system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub path: String,
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub symlink_target: Option<String>,
}

/// A successful file operation's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileReply {
    Data {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        eof: bool,
    },
    Entries(Vec<EntryInfo>),
    Entry(EntryInfo),
    Done,
}

/// Why a file operation failed; maps onto `io::ErrorKind` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    NotEmpty,
    NoSpace,
    InvalidInput,
    /// In use: a mount point (such as `/`) or a running program.
    Busy,
    Other,
}

/// A failed file operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsError {
    pub kind: FsErrorKind,
    pub message: String,
}

/// Kind of change reported by a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Exec {
        id: u32,
        spec: ExecSpec,
    },
    /// Data for the command's stdin; an empty chunk closes it.
    Stdin {
        id: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Signal {
        id: u32,
        signal: i32,
    },
    Resize {
        id: u32,
        cols: u16,
        rows: u16,
    },
    File {
        id: u32,
        uid: u32,
        gid: u32,
        op: FileOp,
    },
    Watch {
        id: u32,
        path: String,
        recursive: bool,
    },
    Unwatch {
        id: u32,
    },
}

/// Guest -> host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The sandbox is set up and serving; the first event on a new socket.
    Ready,
    /// Setting the sandbox up failed; the guest exits after sending this.
    SetupFailed {
        message: String,
    },
    Started {
        id: u32,
        pid: i32,
    },
    Output {
        id: u32,
        stream: Stream,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The command ended and all of its output has been sent.
    Exited {
        id: u32,
        status: ExitStatus,
    },
    FileResult {
        id: u32,
        result: Result<FileReply, FsError>,
    },
    WatchEvent {
        id: u32,
        kind: WatchKind,
        path: String,
    },
    /// A request could not be served (unknown id, bad argument).
    Error {
        id: u32,
        message: String,
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Serialises `msg` into a frame: 4-byte little-endian length, then the body.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0u8; 4];
    // Serialising our own plain data types into a Vec cannot fail.
    let body = postcard::to_extend(msg, Vec::new()).unwrap_or_default();
    buf[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    buf
}

/// Decodes one frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    Ok(postcard::from_bytes(body)?)
}

/// Reads the length prefix of a frame and checks it.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Blocking read of one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<()>, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(prefix)?;
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(Some(()))
}

/// Blocking write of one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let ev = Event::Output { id: 7, stream: Stream::Stderr, data: b"hi".to_vec() };
        let frame = encode(&ev);
        let mut cursor = io::Cursor::new(frame);
        let mut buf = Vec::new();
        assert!(read_frame(&mut cursor, &mut buf).expect("read").is_some());
        assert_eq!(decode::<Event>(&buf).expect("decode"), ev);
        assert!(read_frame(&mut cursor, &mut buf).expect("eof").is_none());
    }

    #[test]
    fn oversized_prefix_is_refused() {
        let prefix = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(frame_len(prefix), Err(FrameError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Event>(&bytes);
            let _ = decode::<Request>(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..20) {
            let frame = encode(&Event::Exited { id: 1, status: ExitStatus::Code(3) });
            let cut = cut.min(frame.len() - 1);
            let mut cursor = io::Cursor::new(&frame[..cut]);
            let mut buf = Vec::new();
            let r = read_frame(&mut cursor, &mut buf);
            prop_assert!(matches!(r, Ok(None) | Err(_)));
        }
    }
}
