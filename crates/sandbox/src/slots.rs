//! Slots: the unit of reuse on a node. A slot owns an id range in the host's
//! user namespace and a set of cgroup directories. A sandbox holds one slot
//! for its lifetime; slots are shared safely between Reins processes on one
//! host by an `flock(2)` on a per-slot lock file, which the kernel releases
//! even when the holder is killed.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::ns::ID_RANGE;
use crate::Error;

/// First host uid of slot 0's range (well above any regular account).
pub const ID_BASE: u32 = 1 << 20;

/// Highest slot number, so that every id range fits in 32 bits.
pub const MAX_SLOTS: u32 = (u32::MAX - ID_BASE) / ID_RANGE - 1;

/// A slot held by one sandbox; released on drop.
#[derive(Debug)]
pub struct Slot {
    pub index: u32,
    lock: File,
    /// The cgroup limits last applied to this slot, by whichever process, as
    /// recorded in its lock file (empty when unknown).
    applied: String,
}

impl Slot {
    /// First host uid/gid of this slot's id range.
    pub fn id_base(&self) -> u32 {
        ID_BASE + self.index * ID_RANGE
    }

    /// The limits last applied to the slot's cgroups, if recorded.
    pub fn applied(&self) -> &str {
        &self.applied
    }

    /// Records the limits now applied (best effort: a failure only costs a
    /// rewrite of the limits next time).
    pub fn record(&mut self, applied: String) {
        use std::io::{Seek, Write};
        let ok = self.lock.set_len(0).is_ok()
            && self.lock.seek(std::io::SeekFrom::Start(0)).is_ok()
            && self.lock.write_all(applied.as_bytes()).is_ok();
        self.applied = if ok { applied } else { String::new() };
    }
}

/// Hands out slots; the lowest free index first, so cgroup directories are reused.
#[derive(Debug)]
pub struct Slots {
    dir: PathBuf,
    free: Mutex<Vec<u32>>,
    next: Mutex<u32>,
}

impl Slots {
    pub fn new(dir: PathBuf) -> Result<Self, Error> {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir, free: Mutex::new(Vec::new()), next: Mutex::new(0) })
    }

    /// Takes a free slot, skipping those other processes hold.
    pub fn acquire(&self) -> Result<Slot, Error> {
        loop {
            let index = self.candidate()?;
            if let Some(slot) = self.try_lock(index)? {
                return Ok(slot);
            }
        }
    }

    fn candidate(&self) -> Result<u32, Error> {
        if let Some(i) = self.free.lock().map_err(|_| Error::Poisoned)?.pop() {
            return Ok(i);
        }
        let mut next = self.next.lock().map_err(|_| Error::Poisoned)?;
        if *next >= MAX_SLOTS {
            return Err(Error::Capacity("every sandbox slot is in use".into()));
        }
        *next += 1;
        Ok(*next - 1)
    }

    fn try_lock(&self, index: u32) -> Result<Option<Slot>, Error> {
        let path = self.dir.join(format!("{index}.lock"));
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        // `reins cleanup` may have removed the file between our open and our
        // lock: a lock on an unlinked file guards nothing, so check it is still there.
        let current = |f: &File| -> bool {
            match (f.metadata(), fs::metadata(&path)) {
                (Ok(a), Ok(b)) => std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b),
                _ => false,
            }
        };
        if rc == 0 && !current(&file) {
            return self.try_lock(index);
        }
        if rc != 0 {
            return Ok(None);
        }
        let mut applied = String::new();
        let _ = std::io::Read::read_to_string(&mut &file, &mut applied);
        Ok(Some(Slot { index, lock: file, applied }))
    }

    /// Returns a slot whose sandbox is fully gone.
    pub fn release(&self, slot: Slot) {
        let index = slot.index;
        drop(slot);
        if let Ok(mut free) = self.free.lock() {
            free.push(index);
            // Lowest index at the end, so it is handed out first.
            free.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
}

/// Takes every slot of `dir` that no process holds, for clean-up: the caller
/// removes what belongs to each slot, then drops it (the lock file is deleted).
pub fn idle_slots(dir: &std::path::Path) -> Result<Vec<IdleSlot>, Error> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return Ok(out) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(index) = name.strip_suffix(".lock").and_then(|n| n.parse::<u32>().ok()) else { continue };
        let path = e.path();
        let file = OpenOptions::new().write(true).open(&path).map_err(|err| Error::io(&path, err))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            out.push(IdleSlot { index, path, _lock: file });
        }
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

/// A slot taken for clean-up; its lock file is removed on drop.
#[derive(Debug)]
pub struct IdleSlot {
    pub index: u32,
    path: PathBuf,
    _lock: File,
}

impl Drop for IdleSlot {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
