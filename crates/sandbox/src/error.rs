//! The errors of the sandbox runtime. Each variant says what the caller can do.

use std::path::{Path, PathBuf};

use reins_guest::proto::FsError;
use reins_types::{LimitsError, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: fix the request.
    #[error("template `{0}` not found: run `reins template ls` to see the available templates")]
    TemplateNotFound(String),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("volume source {0} does not exist or is not a directory: create it or fix the path")]
    VolumeNotFound(PathBuf),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("invalid template: {0}")]
    Template(String),

    /// The node is full: retry later or elsewhere.
    #[error("no capacity: {0}")]
    Capacity(String),

    /// Capturing or using a snapshot layer failed.
    #[error("snapshot failed: {0}")]
    Snapshot(String),

    /// The sandbox ended (destroyed, killed, or out of time).
    #[error("the sandbox is gone")]
    Gone,
    #[error("the sandbox ran out of time")]
    Timeout,

    /// The command could not be started (for example, the pids limit is reached).
    #[error("cannot run the command: {0}")]
    Exec(String),

    /// A file operation inside the sandbox failed.
    #[error("{}", .0.message)]
    Fs(FsError),

    /// Host-side faults: the node is misconfigured or broken.
    #[error("sandbox helper: {0}")]
    Helper(String),
    #[error("sandbox set-up failed: {0}")]
    Setup(String),
    #[error("cgroups: {0}")]
    Cgroup(String),
    #[error("guest protocol: {0}")]
    Protocol(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("internal lock poisoned")]
    Poisoned,
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    /// True when the request itself was wrong (a 4xx, not a 5xx).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::TemplateNotFound(_)
                | Self::Limits(_)
                | Self::Spec(_)
                | Self::VolumeNotFound(_)
                | Self::Invalid(_)
                | Self::Template(_)
                | Self::Fs(_)
        )
    }
}
