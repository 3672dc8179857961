//! The node's own directories that sandboxes mount: agent volumes
//! (`DATA/volumes/NAME`, persistent, files with the sandbox's inner ids,
//! mounted id-mapped) and skill bundles (`DATA/skills/SHA256`, unpacked
//! once, read-only). The control plane names them; the node alone decides
//! where they are, so no request reaches an arbitrary host path.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;
use reins_api::node::{Mount, MountSource};
use reins_types::Volume;

use crate::error::ApiError;

/// Largest skill bundle.
pub const MAX_SKILL: u64 = 64 << 20;
/// Inner uid/gid of the sandbox's `user`.
const USER_ID: u32 = 1000;

#[derive(Debug)]
pub struct Mounts {
    dir: Option<PathBuf>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ApiError + '_ {
    move |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node_error", format!("{what}: {e}"))
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg)
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

/// A SHA-256 in lower-case hex.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Mounts {
    /// Keeps volumes and skills under `dir` (made private); without one, mounts are refused.
    pub fn new(dir: Option<PathBuf>) -> Result<Self, String> {
        if let Some(d) = &dir {
            for sub in ["volumes", "skills", "skills/.staging"] {
                private_dir(&d.join(sub)).map_err(|e| format!("creating {}: {e}", d.join(sub).display()))?;
            }
        }
        Ok(Self { dir })
    }

    fn dir(&self) -> Result<&Path, ApiError> {
        self.dir.as_deref().ok_or_else(|| invalid("this node keeps no volumes or skills (it has no data directory)"))
    }

    /// The host directories of `mounts`, checked; volumes are made on first use.
    pub fn resolve(&self, mounts: &[Mount]) -> Result<Vec<Volume>, ApiError> {
        if mounts.len() > 64 {
            return Err(invalid("at most 64 mounts"));
        }
        let mut out: Vec<Volume> = Vec::with_capacity(mounts.len());
        for m in mounts {
            let target = PathBuf::from(&m.target);
            let clean = target.is_absolute()
                && target.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            let system = ["/proc", "/dev", "/sys", "/tmp"].iter().any(|s| target.starts_with(s));
            if !clean || target == Path::new("/") || system || out.iter().any(|v| v.sandbox == target) {
                return Err(invalid(format!("mount target {:?} must be a clean absolute path of its own", m.target)));
            }
            let (host, read_only) = match &m.source {
                MountSource::Volume { name } => (self.volume(name)?, m.read_only),
                MountSource::Skill { sha256 } => (self.skill(sha256)?, true),
            };
            out.push(Volume { host, sandbox: target, read_only, idmap: true });
        }
        Ok(out)
    }

    fn volume(&self, name: &str) -> Result<PathBuf, ApiError> {
        if !reins_types::is_plain_name(name) {
            return Err(invalid(format!("volume name {name:?} must be letters, digits, `.`, `_`, `-`")));
        }
        let path = self.dir()?.join("volumes").join(name);
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => std::os::unix::fs::chown(&path, Some(USER_ID), Some(USER_ID)).map_err(io("owning a volume"))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating a volume")(e)),
        }
        Ok(path)
    }

    fn skill(&self, sha: &str) -> Result<PathBuf, ApiError> {
        let path = self.skill_path(sha)?;
        if !path.is_dir() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "skill_missing",
                format!("skill bundle {sha} is not on this node"),
            ));
        }
        Ok(path)
    }

    fn skill_path(&self, sha: &str) -> Result<PathBuf, ApiError> {
        if !is_sha256(sha) {
            return Err(invalid("a skill bundle is named by its SHA-256 in lower-case hex"));
        }
        Ok(self.dir()?.join("skills").join(sha))
    }

    pub fn has_skill(&self, sha: &str) -> Result<bool, ApiError> {
        Ok(self.skill_path(sha)?.is_dir())
    }

    /// Where an upload of bundle `sha` is spooled.
    pub fn skill_spool(&self, sha: &str) -> Result<PathBuf, ApiError> {
        self.skill_path(sha)?;
        Ok(self.dir()?.join("skills/.staging").join(format!("{sha}.{}.tar", std::process::id())))
    }

    /// Checks the spooled archive's hash and unpacks it as bundle `sha`
    /// (regular files and directories only, world-readable, owned by root inside).
    pub fn install_skill(&self, sha: &str, archive: &Path) -> Result<(), ApiError> {
        use sha2::Digest;
        let dest = self.skill_path(sha)?;
        let bytes = std::fs::read(archive).map_err(io("reading the bundle"))?;
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        if got != sha {
            return Err(invalid(format!("the bundle's SHA-256 is {got}, not {sha}")));
        }
        let staging = self.dir()?.join("skills/.staging").join(format!("{sha}.{}.d", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let unpacked = unpack(&bytes, &staging);
        let done = unpacked.and_then(|()| match std::fs::rename(&staging, &dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => Ok(()), // another upload of the same bundle won
            Err(e) => Err(io("installing the bundle")(e)),
        });
        let _ = std::fs::remove_dir_all(&staging);
        done
    }

    /// Deletes a volume and its files.
    pub fn delete_volume(&self, name: &str) -> Result<(), ApiError> {
        if !reins_types::is_plain_name(name) {
            return Err(invalid("bad volume name"));
        }
        match std::fs::remove_dir_all(self.dir()?.join("volumes").join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("deleting a volume")(e)),
            _ => Ok(()),
        }
    }
}

fn unpack(bytes: &[u8], dest: &Path) -> Result<(), ApiError> {
    let bad = |e: std::io::Error| invalid(format!("the bundle is not a valid tar archive: {e}"));
    std::fs::DirBuilder::new().mode(0o755).create(dest).map_err(io("staging the bundle"))?;
    let mut ar = tar::Archive::new(bytes);
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue; // no links, devices or fifos in a skill
        }
        let exec = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
        if !entry.unpack_in(dest).map_err(bad)? {
            return Err(invalid("the bundle has a path outside itself"));
        }
        let rel = entry.path().map_err(bad)?.into_owned();
        let path = dest.join(rel);
        let mode = if kind.is_dir() || exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io("bundle permissions"))?;
        std::os::unix::fs::lchown(&path, Some(0), Some(0)).map_err(io("bundle owner"))?;
    }
    Ok(())
}
