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

/// Starts a local sandbox runtime with `zygotes` helpers and `embryos`
/// sandboxes prepared ahead (`REINS_EMBRYOS` overrides it).
pub fn runtime(data_dir: &std::path::Path, zygotes: usize, embryos: usize) -> Result<Runtime> {
    let mut opts = RuntimeOptions::new(data_dir.to_path_buf())?;
    opts.zygotes = zygotes;
    opts.embryos = std::env::var("REINS_EMBRYOS").ok().and_then(|v| v.parse().ok()).unwrap_or(embryos);
    Runtime::start(opts).with_context(|| {
        format!("starting the sandbox runtime in {} (Reins needs root, or the privileges to create user namespaces and cgroups)", data_dir.display())
    })
}
