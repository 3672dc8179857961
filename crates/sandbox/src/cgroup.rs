//! Cgroup limits for sandboxes, on cgroup v2 and on v1/hybrid hosts.
//!
//! Directories are per *slot*, not per sandbox, and reused: on this class of
//! kernel every new memory cgroup makes the next one more expensive, so a
//! node keeps a bounded set of slot cgroups (one per concurrent sandbox at
//! peak) and rewrites their limits when a slot is taken.

use std::fs;
use std::path::{Path, PathBuf};

use reins_types::Limits;

use crate::Error;

const ROOT: &str = "/sys/fs/cgroup";
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 mounted at `/sys/fs/cgroup`.
    Unified,
    /// One hierarchy per controller (`/sys/fs/cgroup/memory`, …).
    Legacy,
}

/// The controllers Reins uses on a v1 host.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// Cgroup operations for one node, under a `reins` group of its own.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    group: String,
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|e| Error::Cgroup(format!("writing {value:?} to {}: {e}", path.display())))
}

impl Cgroups {
    /// Detects the layout; `group` names the parent group (`reins`).
    pub fn detect(group: &str) -> Result<Self, Error> {
        let layout = if Path::new(ROOT).join("cgroup.controllers").exists() {
            Layout::Unified
        } else if Path::new(ROOT).join("memory").is_dir() {
            Layout::Legacy
        } else {
            return Err(Error::Cgroup(format!("no cgroup hierarchy found under {ROOT}")));
        };
        let cg = Self { layout, group: group.to_owned() };
        cg.init()?;
        Ok(cg)
    }

    /// Moves process `pid` (all its threads; 0 is the caller) into the
    /// groups whose `cgroup.procs` files are `procs`. Blocks: on cgroup v1
    /// each move can wait for an RCU grace period.
    pub fn attach(procs: &[String], pid: i32) -> Result<(), Error> {
        procs.iter().try_for_each(|p| write(Path::new(p), &pid.to_string()))
    }

    /// Whether the host's cgroup2 mount has `favordynmods`, which spares
    /// every task move its wait for an RCU grace period (on v1 hierarchies
    /// too: the lock is shared). `None` without a cgroup2 mount.
    pub fn favordynmods() -> Option<bool> {
        let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
        let cgroup2 =
            mounts.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(2) == Some(&"cgroup2"))?;
        Some(cgroup2.get(3).is_some_and(|opts| opts.split(',').any(|o| o == "favordynmods")))
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn init(&self) -> Result<(), Error> {
        let parents = self.parents();
        parents.iter().try_for_each(|p| mkdir(p).map(drop))?;
        match self.layout {
            Layout::Unified => write(&parents[0].join("cgroup.subtree_control"), "+memory +pids +cpu"),
            Layout::Legacy => Ok(()),
        }
    }

    /// This node's group, one directory per hierarchy.
    fn parents(&self) -> Vec<PathBuf> {
        match self.layout {
            Layout::Unified => vec![Path::new(ROOT).join(&self.group)],
            Layout::Legacy => V1_CONTROLLERS.iter().map(|c| Path::new(ROOT).join(c).join(&self.group)).collect(),
        }
    }

    /// Every directory of slot `slot`, one per hierarchy.
    pub fn slot_dirs(&self, slot: u32) -> Vec<PathBuf> {
        let name = format!("s{slot}");
        self.parents().into_iter().map(|p| p.join(&name)).collect()
    }

    /// The record of `limits` kept with a slot (see [`Cgroups::prepare`]).
    pub fn key(limits: &Limits) -> String {
        format!("memory={} millicpus={} pids={}", limits.memory_bytes, limits.cpu.millicpus(), limits.pids)
    }

    /// Creates slot `slot` if needed, thaws it, applies `limits` unless
    /// `applied` (the slot's record) says they already are, and returns the
    /// `cgroup.procs` files a process must join.
    pub fn prepare(&self, slot: u32, limits: &Limits, applied: &str) -> Result<Vec<String>, Error> {
        let (procs, created) = self.make(slot)?;
        // A directory made just now has the kernel's defaults (no limits), whatever the record says.
        if created || applied != Self::key(limits) {
            self.apply(&self.slot_dirs(slot), limits)?;
        }
        Ok(procs)
    }

    /// Creates slot `slot` if needed (with `Limits::default()` then) and thaws
    /// it, otherwise leaving its limits as they are; returns the
    /// `cgroup.procs` files a process must join.
    pub fn ensure(&self, slot: u32) -> Result<Vec<String>, Error> {
        let (procs, created) = self.make(slot)?;
        if created {
            self.apply(&self.slot_dirs(slot), &Limits::default())?;
        }
        Ok(procs)
    }

    /// Creates the slot's directories; says whether any was new.
    fn make(&self, slot: u32) -> Result<(Vec<String>, bool), Error> {
        let dirs = self.slot_dirs(slot);
        let mut created = false;
        for d in &dirs {
            let made = match mkdir(d) {
                Ok(made) => made,
                // `reins cleanup` may have removed the group meanwhile: make it again.
                Err(_) => {
                    self.init()?;
                    mkdir(d)?
                }
            };
            created |= made;
        }
        // Always thaw: a host that died with a paused sandbox leaves its slot frozen.
        self.freeze(slot, false)?;
        Ok((dirs.iter().map(|d| d.join("cgroup.procs").to_string_lossy().into_owned()).collect(), created))
    }

    fn apply(&self, dirs: &[PathBuf], limits: &Limits) -> Result<(), Error> {
        let quota = u64::from(limits.cpu.millicpus()) * CPU_PERIOD_US / 1000;
        match self.layout {
            Layout::Unified => {
                let d = &dirs[0];
                write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &limits.pids.to_string())?;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
            }
            Layout::Legacy => {
                let [mem, pids, cpu] = [&dirs[0], &dirs[1], &dirs[2]];
                write(&mem.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())
            }
        }
    }

    /// Freezes (`true`) or thaws every process of slot `slot`.
    pub fn freeze(&self, slot: u32, frozen: bool) -> Result<(), Error> {
        let dirs = self.slot_dirs(slot);
        match self.layout {
            Layout::Unified => write(&dirs[0].join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Layout::Legacy => write(&dirs[3].join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" }),
        }
    }

    /// Processes still in slot `slot` (must be none after a sandbox is gone).
    /// Every hierarchy holds the same processes; the first one is read.
    pub fn procs(&self, slot: u32) -> Vec<i32> {
        let dirs = self.slot_dirs(slot);
        let body = fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap_or_default();
        body.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Removes every slot directory of this node's group and the group
    /// itself; fails if any still holds a process. For tests and uninstall:
    /// a running node keeps its slot directories for reuse.
    pub fn remove_group(&self) -> Result<(), Error> {
        let mut slots: Vec<u32> = self
            .existing_slot_dirs()
            .iter()
            .filter_map(|d| d.file_name()?.to_str()?.strip_prefix('s')?.parse().ok())
            .collect();
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            self.remove_slot(slot)?;
        }
        for parent in self.parents() {
            if parent.exists() {
                fs::remove_dir(&parent).map_err(|e| Error::Cgroup(format!("removing {}: {e}", parent.display())))?;
            }
        }
        Ok(())
    }

    /// Removes slot `slot`'s directories; fails (and keeps them) if a process is still in one.
    pub fn remove_slot(&self, slot: u32) -> Result<usize, Error> {
        if self.layout == Layout::Legacy {
            // Uncharge what the slot still holds (page cache) first, so the
            // kernel can free the memory cgroup at once instead of keeping a
            // "dying" one, which would slow later cgroup operations.
            let _ = fs::write(self.slot_dirs(slot)[0].join("memory.force_empty"), "0");
        }
        let mut removed = 0;
        for d in self.slot_dirs(slot).into_iter().filter(|d| d.exists()) {
            fs::remove_dir(&d).map_err(|e| Error::Cgroup(format!("removing {}: {e}", d.display())))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Every slot directory that exists now, one entry per hierarchy.
    pub fn existing_slot_dirs(&self) -> Vec<PathBuf> {
        self.parents()
            .iter()
            .filter_map(|p| fs::read_dir(p).ok())
            .flat_map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()))
            .collect()
    }

    /// CPU time used so far by the threads now in slot `slot`, in ns (from
    /// each thread's `schedstat`: the legacy hierarchy here has no CPU
    /// accounting per slot). Threads that have exited are not counted, so
    /// only the difference of two close samples means anything.
    pub fn cpu_ns(&self, slot: u32) -> u64 {
        let mut total = 0u64;
        for pid in self.procs(slot) {
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for t in tasks.flatten() {
                let stat = fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
                total += stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        total
    }

    /// Peak memory use of slot `slot` in bytes, where the kernel reports it.
    pub fn memory_current(&self, slot: u32) -> Option<u64> {
        let d = &self.slot_dirs(slot)[0];
        let file = match self.layout {
            Layout::Unified => "memory.current",
            Layout::Legacy => "memory.usage_in_bytes",
        };
        fs::read_to_string(d.join(file)).ok()?.trim().parse().ok()
    }
}

/// Creates a directory; `Ok(true)` when it did not exist before.
fn mkdir(path: &Path) -> Result<bool, Error> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::Cgroup(format!("creating {}: {e}", path.display()))),
    }
}
