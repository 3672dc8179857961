//! `reins cleanup`: remove what idle slots keep for reuse.

use std::path::Path;

use anyhow::{Context, Result};

pub fn run(data_dir: &Path, json: bool) -> Result<u8> {
    let opts = crate::config::options(data_dir)?;
    let report = reins_sandbox::cleanup(&opts).context("cleaning up idle sandbox slots")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "removed {} idle slots ({} cgroup directories); {} slots in use were left alone",
            report.slots, report.cgroup_dirs, report.busy
        );
    }
    Ok(0)
}
