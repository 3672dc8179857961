//! Resolving the CLI's configuration: flags, then environment, then defaults.

use std::path::PathBuf;

use anyhow::{Context, Result};
use reins_sandbox::{Runtime, RuntimeOptions};

/// `--data-dir`, else `$XDG_DATA_HOME/reins`, else `~/.local/share/reins`.
pub fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("reins"));
    }
    let home = std::env::var_os("HOME").context("neither --data-dir, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/reins"))
}

/// Runtime options for `data_dir`; `REINS_RUN_DIR` and `REINS_CGROUP`
/// override the host-wide run directory and cgroup group (for separate
/// instances on one host, and for tests).
pub fn options(data_dir: &std::path::Path) -> Result<RuntimeOptions> {
    let mut opts = RuntimeOptions::new(data_dir.to_path_buf())?;
    if let Some(dir) = std::env::var_os("REINS_RUN_DIR").filter(|d| !d.is_empty()) {
        opts.run_dir = PathBuf::from(dir);
    }
    if let Ok(group) = std::env::var("REINS_CGROUP") {
        anyhow::ensure!(
            !group.is_empty() && group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "REINS_CGROUP `{group}` must be a plain name of letters, digits, - and _"
        );
        opts.cgroup = group;
    }
    Ok(opts)
}

/// Starts a local sandbox runtime with `zygotes` helpers and `embryos`
/// sandboxes prepared ahead (`REINS_EMBRYOS` overrides it).
pub fn runtime(data_dir: &std::path::Path, zygotes: usize, embryos: usize) -> Result<Runtime> {
    let mut opts = options(data_dir)?;
    opts.zygotes = zygotes;
    opts.embryos = std::env::var("REINS_EMBRYOS").ok().and_then(|v| v.parse().ok()).unwrap_or(embryos);
    Runtime::start(opts).with_context(|| {
        format!("starting the sandbox runtime in {} (Reins needs root, or the privileges to create user namespaces and cgroups)", data_dir.display())
    })
}
