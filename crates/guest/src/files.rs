//! File operations, performed with the caller's file-system identity
//! (`setfsuid`/`setfsgid`), so that permissions apply as they would to the
//! user inside the sandbox.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::proto::{EntryInfo, FileKind, FileOp, FileReply, FsError, FsErrorKind, MAX_FRAME};

/// Largest read returned at once; callers page with `offset`.
const MAX_READ: u64 = (MAX_FRAME - 1024) as u64;

/// Most entries one `List` returns.
const MAX_ENTRIES: usize = 10_000;

/// Performs `op` as `uid`/`gid` and restores the guest's identity afterwards.
pub(crate) fn perform(uid: u32, gid: u32, op: FileOp) -> Result<FileReply, FsError> {
    let _identity = FsIdentity::assume(uid, gid);
    run(op).map_err(|e| fs_error(&e))
}

struct FsIdentity;

impl FsIdentity {
    fn assume(uid: u32, gid: u32) -> Self {
        // SAFETY: setfsgid/setfsuid only change this (only) thread's fs credentials.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        Self
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: as above; back to root of the sandbox.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
    }
}

pub(crate) fn fs_error(e: &io::Error) -> FsError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) => FsErrorKind::NotFound,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => FsErrorKind::PermissionDenied,
        Some(libc::EEXIST) => FsErrorKind::AlreadyExists,
        Some(libc::ENOTDIR) => FsErrorKind::NotADirectory,
        Some(libc::EISDIR) => FsErrorKind::IsADirectory,
        Some(libc::ENOTEMPTY) => FsErrorKind::NotEmpty,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => FsErrorKind::NoSpace,
        Some(libc::EINVAL | libc::ENAMETOOLONG | libc::ELOOP | libc::EXDEV) => FsErrorKind::InvalidInput,
        Some(libc::EBUSY | libc::ETXTBSY) => FsErrorKind::Busy,
        _ if e.kind() == io::ErrorKind::InvalidInput => FsErrorKind::InvalidInput,
        _ => FsErrorKind::Other,
    };
    FsError { kind, message: e.to_string() }
}

fn checked(path: &str) -> io::Result<&Path> {
    if path.is_empty() || path.contains('\0') || !path.starts_with('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("path `{path}` must be absolute")));
    }
    Ok(Path::new(path))
}

fn run(op: FileOp) -> io::Result<FileReply> {
    match op {
        FileOp::Read { path, offset, limit } => read(checked(&path)?, offset, limit),
        FileOp::Write { path, data, append, mode } => write(checked(&path)?, &data, append, mode),
        FileOp::List { path, depth } => list(checked(&path)?, depth.clamp(1, 16)).map(FileReply::Entries),
        FileOp::Stat { path } => info(checked(&path)?).map(FileReply::Entry),
        FileOp::Mkdir { path, parents } => {
            let p = checked(&path)?;
            if parents { fs::create_dir_all(p) } else { fs::create_dir(p) }.map(|()| FileReply::Done)
        }
        FileOp::Remove { path, recursive } => remove(checked(&path)?, recursive).map(|()| FileReply::Done),
        FileOp::Rename { from, to } => fs::rename(checked(&from)?, checked(&to)?).map(|()| FileReply::Done),
    }
}

fn read(path: &Path, offset: u64, limit: u64) -> io::Result<FileReply> {
    let mut f = fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    f.seek(SeekFrom::Start(offset))?;
    let limit = if limit == 0 { MAX_READ } else { limit.min(MAX_READ) };
    let mut data = Vec::new();
    Read::by_ref(&mut f).take(limit).read_to_end(&mut data)?;
    let eof = (data.len() as u64) < limit || f.read(&mut [0u8; 1])? == 0;
    Ok(FileReply::Data { data, eof })
}

fn write(path: &Path, data: &[u8], append: bool, mode: u32) -> io::Result<FileReply> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .mode(if mode == 0 { 0o644 } else { mode & 0o7777 })
        .open(path)?;
    f.write_all(data)?;
    Ok(FileReply::Entry(info(path)?))
}

fn remove(path: &Path, recursive: bool) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    match (meta.is_dir(), recursive) {
        (true, true) => fs::remove_dir_all(path),
        (true, false) => fs::remove_dir(path),
        (false, _) => fs::remove_file(path),
    }
}

fn list(dir: &Path, depth: u32) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 1u32)];
    while let Some((d, level)) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let e = info(&entry.path())?;
            if e.kind == FileKind::Dir && level < depth {
                stack.push((entry.path(), level + 1));
            }
            out.push(e);
            if out.len() >= MAX_ENTRIES {
                return Ok(out);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub(crate) fn info(path: &Path) -> io::Result<EntryInfo> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let mtime_ns =
        meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128);
    Ok(EntryInfo {
        path: path.to_string_lossy().into_owned(),
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        kind,
        size: meta.len(),
        mode: meta.permissions().mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns,
        symlink_target: ft
            .is_symlink()
            .then(|| fs::read_link(path).ok())
            .flatten()
            .map(|p| p.to_string_lossy().into_owned()),
    })
}
