//! `reins cleanup`: removing what idle slots keep for reuse.

use crate::cgroup::Cgroups;
use crate::{Error, RuntimeOptions};

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cleanup {
    /// Idle slots whose cgroups, skeleton and lock were removed.
    pub slots: usize,
    pub cgroup_dirs: usize,
    /// Slots still in use by a running sandbox (left alone).
    pub busy: usize,
}

/// Removes what idle slots keep for reuse (cgroup directories, skeleton
/// layers, lock files), so that a host where no sandbox runs holds nothing of
/// Reins but its data directory. Slots in use are left alone. Safe to run
/// beside running Reins processes.
pub fn cleanup(opts: &RuntimeOptions) -> Result<Cleanup, Error> {
    let cgroups = Cgroups::detect(&opts.cgroup)?;
    let slots_dir = opts.run_dir.join("slots");
    let total = std::fs::read_dir(&slots_dir).map_or(0, |d| d.count());
    let mut report = Cleanup::default();
    for slot in crate::slots::idle_slots(&slots_dir)? {
        report.cgroup_dirs += cgroups.remove_slot(slot.index)?;
        let skel = opts.run_dir.join("skel").join(format!("s{}", slot.index));
        for path in [skel.with_extension("done"), skel.clone()] {
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        report.slots += 1;
    }
    report.busy = total - report.slots;
    if report.busy == 0 {
        // The group directories themselves, once empty.
        let _ = cgroups.remove_group();
    }
    Ok(report)
}
