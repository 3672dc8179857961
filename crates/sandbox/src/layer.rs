//! Snapshot layers: a sandbox's writable layer copied out to disk, and
//! stacks of such layers merged into one.
//!
//! A layer is an overlayfs upper directory at rest: files, directories,
//! symlinks, FIFOs, whiteouts (character devices 0/0) and opaque directories
//! (`trusted.overlay.opaque`). Owners are the sandbox's *inner* ids (0 root,
//! 1000 `user`), so a layer serves a sandbox of any slot through an id-mapped
//! mount. Everything else a sandbox could leave in its upper directory
//! (sockets, device nodes other than whiteouts, extended attributes other
//! than the opaque mark) is dropped, and so are set-uid and set-gid bits'
//! effect on the host: layers live in a root-only directory and are mounted
//! `nosuid`.
//!
//! The caller guarantees the source does not change meanwhile (the sandbox
//! is frozen); the walk never follows a symlink.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{mkfifo, Gid, Uid};

/// The overlay's mark of an opaque directory (it hides the layers below).
const OPAQUE: &std::ffi::CStr = c"trusted.overlay.opaque";

/// Owner of files whose host id lies outside the sandbox's range.
const OVERFLOW_ID: u32 = 65_534;

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Bytes of regular files.
    pub bytes: u64,
    /// Entries of every kind.
    pub entries: u64,
}

/// Copies the writable layer `upper` of a sandbox whose id range starts at
/// `id_base` into the new directory `dst` (which must not exist), shifting
/// owners to inner ids.
pub fn capture(upper: &Path, dst: &Path, id_base: u32) -> io::Result<LayerStats> {
    let mut copier = Copier { shift: Some(id_base), merge: false, link: false, stats: LayerStats::default() };
    copier.entry(upper, dst)?;
    Ok(copier.stats)
}

/// Merges `layers` (top first) into the new directory `dst`: one layer that
/// shows through an overlay exactly what the stack showed. Files are hard
/// links to the (immutable) originals where the file system allows.
pub fn flatten(layers: &[PathBuf], dst: &Path) -> io::Result<LayerStats> {
    let mut copier = Copier { shift: None, merge: false, link: true, stats: LayerStats::default() };
    let mut bottom_up = layers.iter().rev();
    match bottom_up.next() {
        Some(first) => copier.entry(first, dst)?,
        None => fs::create_dir(dst)?,
    }
    copier.merge = true;
    for layer in bottom_up {
        copier.entry(layer, dst)?;
    }
    Ok(copier.stats)
}

/// Bytes of regular files under `dir` (not following symlinks).
pub fn size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_dir() {
            total += size(&e.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

struct Copier {
    /// Host id base to subtract from owners (`None`: ids are inner already).
    shift: Option<u32>,
    /// `dst` may hold entries of lower layers that `src` overrides.
    merge: bool,
    /// Hard-link regular files instead of copying them.
    link: bool,
    stats: LayerStats,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn opaque(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let path = cpath(dir)?;
    let mut buf = [0u8; 8];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), OPAQUE.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(buf[..n as usize].to_vec()))
}

fn set_opaque(dir: &Path, value: &[u8]) -> io::Result<()> {
    let path = cpath(dir)?;
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), OPAQUE.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Copier {
    fn owner(&self, id: u32) -> u32 {
        match self.shift {
            Some(base) if id >= base && id - base < crate::ns::ID_RANGE => id - base,
            Some(_) => OVERFLOW_ID,
            None => id,
        }
    }

    fn entry(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        let existing = if self.merge { fs::symlink_metadata(dst).ok() } else { None };
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.dir(src, dst, &meta, existing);
        }
        if existing.is_some() {
            remove_any(dst)?;
        }
        if ft.is_file() {
            if self.file(src, dst, &meta)? {
                self.stats.entries += 1;
                return Ok(());
            }
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        } else if is_whiteout(&meta) {
            mknod(dst, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
        } else if ft.is_fifo() {
            mkfifo(dst, Mode::from_bits_truncate(meta.mode() & 0o777))?;
        } else {
            // Sockets and device nodes: never copied.
            return Ok(());
        }
        self.finish(dst, &meta)
    }

    fn dir(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata, existing: Option<fs::Metadata>) -> io::Result<()> {
        let mark = opaque(src)?;
        let mut mark_new = mark.clone();
        let merging_into = match existing {
            Some(m) if m.is_dir() && mark.is_none() => true,
            Some(_) => {
                remove_any(dst)?;
                // Whatever it replaces, lower layers must not show through it.
                mark_new.get_or_insert_with(|| b"y".to_vec());
                false
            }
            None => false,
        };
        if !merging_into {
            fs::create_dir(dst)?;
        }
        if let Some(value) = &mark_new {
            set_opaque(dst, value)?;
        }
        let merge = self.merge;
        self.merge = merging_into;
        let mut result = Ok(());
        for e in fs::read_dir(src)? {
            let name = e?.file_name();
            result = self.entry(&src.join(&name), &dst.join(&name));
            if result.is_err() {
                break;
            }
        }
        self.merge = merge;
        result?;
        self.finish(dst, meta)
    }

    /// Copies (or links) a regular file; true when it is a link to the original.
    fn file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<bool> {
        self.stats.bytes += meta.len();
        if self.link && fs::hard_link(src, dst).is_ok() {
            return Ok(true);
        }
        let mut from = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(src)?;
        let mut to = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst)?;
        io::copy(&mut from, &mut to)?;
        Ok(false)
    }

    /// Owner, mode and times of a copied entry (symlinks: owner and times).
    fn finish(&mut self, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
        self.stats.entries += 1;
        let (uid, gid) = (self.owner(meta.uid()), self.owner(meta.gid()));
        nix::unistd::fchownat(
            None,
            dst,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let ft = meta.file_type();
        if !ft.is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        let (atime, mtime) =
            (TimeSpec::new(meta.atime(), meta.atime_nsec()), TimeSpec::new(meta.mtime(), meta.mtime_nsec()));
        utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink)?;
        Ok(())
    }
}
