//! The `ns` backend: Linux namespaces, an overlay root, seccomp and cgroups.
//!
//! The tokio process never forks. It starts one or more *zygotes*: the same
//! binary re-executed with [`ZYGOTE_ARG`], single-threaded from its first
//! instruction. A zygote receives [`SpawnRequest`]s over a `SOCK_SEQPACKET`
//! socket and `clone(2)`s each sandbox's PID 1 into fresh user, PID, mount,
//! network, IPC and UTS namespaces, and writes its id maps; the child moves
//! itself into its cgroups (a parked child is moved by the host). The child
//! then builds its root file system ([`setup`]), installs seccomp and
//! becomes `reins-guest`.

pub mod client;
pub mod fdpass;
mod idmap;
pub mod iface;
pub mod netjoin;
pub mod netns;
pub mod seccomp;
pub mod setup;
pub mod zygote;

use serde::{Deserialize, Serialize};

/// First argument that turns the binary into a zygote.
pub const ZYGOTE_ARG: &str = "__reins-zygote";

/// Size of the id range each sandbox gets in the host's user namespace.
pub const ID_RANGE: u32 = 65_536;

/// One directory to bind into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub host: String,
    /// Absolute path inside the sandbox.
    pub target: String,
    pub read_only: bool,
    /// Mount it id-mapped: ids stored in the directory are the sandbox's own
    /// (0 is root inside, 1000 is `user`), whichever id range the sandbox
    /// has, so one directory serves sandboxes of every slot.
    #[serde(default)]
    pub idmap: bool,
}

/// What a zygote needs to start one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The template's root file system, the overlay's lower layer.
    pub rootfs: String,
    /// Template directories bound read-only (the `base` template's `/usr`)
    /// followed by the user's volumes.
    pub binds: Vec<Bind>,
    /// Size of the writable layer (a tmpfs) in bytes.
    pub disk_bytes: u64,
    /// First host uid/gid of the sandbox's id range.
    pub id_base: u32,
    /// `cgroup.procs` files the sandbox's PID 1 is written to.
    pub cgroup_procs: Vec<String>,
    /// Empty directory where the sandbox mounts its root, in its own mount namespace.
    pub mount_dir: String,
    /// The slot's skeleton layer (built on first use, then reused).
    pub skeleton: String,
    /// Snapshot layers between the writable layer and the skeleton, top
    /// first, with inner ids: mounted read-only and id-mapped.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// What the host asks a zygote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZygoteRequest {
    /// Clone a sandbox PID 1 and park it until [`ZygoteRequest::Hatch`]: the
    /// costly steps happen before any request needs them. The host moves it
    /// into its slot's cgroups (on cgroup v1 a move that can wait for an RCU
    /// grace period) before it counts as ready. It has run no foreign code.
    Conceive,
    /// Hand a parked child its sandbox; the guest socket travels along.
    Hatch { pid: i32, req: SpawnRequest },
    /// Clone a sandbox and start it at once; the guest socket travels along.
    Spawn { req: SpawnRequest },
}

/// The zygote's answer; with `Ok` for `Conceive` and `Spawn`, a pidfd of the
/// sandbox's PID 1 travels along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnReply {
    Ok { pid: i32 },
    Err { message: String },
}
