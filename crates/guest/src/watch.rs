//! Directory watches over one inotify instance, created on first use so an
//! idle sandbox pays nothing for it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::proto::{Event, WatchKind};

/// Active watches: inotify descriptors mapped to (watch id, directory).
pub(crate) struct Watches {
    inotify: Option<Inotify>,
    by_wd: HashMap<WatchDescriptor, (u32, PathBuf)>,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
}

impl Watches {
    pub fn new() -> io::Result<Self> {
        Ok(Self { inotify: None, by_wd: HashMap::new() })
    }

    pub fn fd(&self) -> Option<RawFd> {
        self.inotify.as_ref().map(|i| i.as_fd().as_raw_fd())
    }

    pub fn add(&mut self, id: u32, path: &str, recursive: bool) -> io::Result<()> {
        if self.inotify.is_none() {
            self.inotify = Some(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?);
        }
        let mut dirs = vec![PathBuf::from(path)];
        while let Some(dir) = dirs.pop() {
            self.add_one(id, &dir)?;
            if recursive {
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    fn add_one(&mut self, id: u32, dir: &Path) -> io::Result<()> {
        let Some(inotify) = &self.inotify else {
            return Ok(());
        };
        let wd = inotify.add_watch(dir, mask())?;
        self.by_wd.insert(wd, (id, dir.to_path_buf()));
        Ok(())
    }

    pub fn remove(&mut self, id: u32) {
        let Some(inotify) = &self.inotify else { return };
        let wds: Vec<WatchDescriptor> = self.by_wd.iter().filter(|(_, (i, _))| *i == id).map(|(wd, _)| *wd).collect();
        for wd in wds {
            let _ = inotify.rm_watch(wd);
            self.by_wd.remove(&wd);
        }
    }

    pub fn read_events(&mut self) -> Vec<Event> {
        let Some(inotify) = &self.inotify else {
            return Vec::new();
        };
        let Ok(events) = inotify.read_events() else {
            return Vec::new();
        };
        events
            .into_iter()
            .filter_map(|ev| {
                let (id, dir) = self.by_wd.get(&ev.wd)?;
                let kind = kind_of(ev.mask)?;
                let path = match &ev.name {
                    Some(n) => dir.join(n),
                    None => dir.clone(),
                };
                Some(Event::WatchEvent { id: *id, kind, path: path.to_string_lossy().into_owned() })
            })
            .collect()
    }
}

fn kind_of(mask: AddWatchFlags) -> Option<WatchKind> {
    if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
        Some(WatchKind::Create)
    } else if mask.intersects(AddWatchFlags::IN_DELETE) {
        Some(WatchKind::Remove)
    } else if mask.intersects(AddWatchFlags::IN_MOVED_FROM) {
        Some(WatchKind::Rename)
    } else if mask.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MODIFY) {
        Some(WatchKind::Write)
    } else if mask.intersects(AddWatchFlags::IN_ATTRIB) {
        Some(WatchKind::Chmod)
    } else {
        None
    }
}
