//! The node protocol: what the control plane asks of an execution node.
//!
//! It is HTTP/2 over mutually authenticated TLS. The node dials the control
//! plane's node gateway (so nodes behind NAT work) and then serves these
//! routes on that connection; the control plane is the HTTP client. Bodies
//! are JSON, exec output is a stream of newline-delimited [`ExecFrame`]s,
//! and errors are [`crate::ErrorBody`] with an HTTP status.

use std::collections::BTreeMap;

use reins_types::{SandboxNetwork, SandboxSpec};
use serde::{Deserialize, Serialize};

/// Route prefix of every node route.
pub const PREFIX: &str = "/node/v1";

/// On `ANY /node/v1/sandboxes/{id}/ports/{port}`: the path and query the
/// sandbox's server gets.
pub const PORT_PATH_HEADER: &str = "x-reins-port-path";
/// On the same route: relay raw bytes both ways instead of one HTTP request.
pub const PORT_TUNNEL_HEADER: &str = "x-reins-port-tunnel";

/// On the answer of `GET /node/v1/sandboxes/{id}/exec/{pid}/attach`: `1`
/// when the command runs on a terminal (its output is the terminal's).
pub const EXEC_PTY_HEADER: &str = "x-reins-exec-pty";

/// `POST /node/v1/sandboxes`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSandbox {
    /// Chosen by the control plane; unique in the cluster.
    pub id: String,
    pub spec: SandboxSpec,
    /// Its network policy and the credentials its proxy adds (values included:
    /// they travel only on the node protocol's mutual TLS, and the node keeps
    /// them in memory).
    #[serde(default)]
    pub network: SandboxNetwork,
    /// The node's own directories to mount: agent volumes and skill bundles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Start from this snapshot of the node (its layers under the writable one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Hibernate after this long without activity (no command, stream,
    /// file request or ingress traffic); the next request wakes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// `POST /node/v1/sandboxes/{id}/snapshots`: capture the sandbox's files as snapshot `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeSnapshot {
    pub id: String,
}

/// A snapshot a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    /// Bytes of files its capture wrote (the new layer, or the merged one).
    pub bytes: u64,
    /// Layers it stacks (merged into one beyond a depth).
    pub layers: u32,
}

/// One warm pool: `PUT /node/v1/pools` takes the whole list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub template: String,
    pub limits: reins_types::Limits,
    pub min: u32,
    pub max: u32,
}

/// A pool as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub template: String,
    pub limits: reins_types::Limits,
    /// Started, never used, ready to be claimed.
    pub ready: u32,
    /// How many it keeps ready now (between min and max, from the claim rate).
    pub target: u32,
    /// Claims since the node started.
    pub claims: u64,
}

/// A directory the node keeps, mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the sandbox.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A persistent volume of the node, by name (made on first use; files owned by `user`).
    Volume { name: String },
    /// A skill bundle the node holds (`PUT /node/v1/skills/{sha256}`), always read-only.
    Skill { sha256: String },
}

/// `GET /node/v1/status`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub version: String,
    pub capacity: Capacity,
    /// Sandboxes this node runs now, by id.
    pub sandboxes: Vec<String>,
    /// Memory promised to running sandboxes (sum of their limits).
    pub memory_reserved_bytes: u64,
    /// Of `sandboxes`, those hibernated (files kept, no process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hibernated: Vec<String>,
    /// Warm pools and how full they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
    /// Egress proxy totals since the node started.
    #[serde(default)]
    pub egress: EgressCounters,
}

/// `GET /node/v1/network/events?after=SEQ`: the node's egress audit feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetFeed {
    /// The node process's boot id; sequence numbers restart with it.
    pub boot: String,
    /// Events after `after` the node no longer holds (it keeps the latest 100,000).
    pub dropped: u64,
    pub events: Vec<FeedEvent>,
}

/// One event of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub seq: u64,
    pub sandbox: String,
    pub event: reins_types::NetEvent,
}

/// Connection attempts through the egress proxies of a node, and their traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressCounters {
    pub allowed: u64,
    pub denied: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// What a node can host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub max_sandboxes: u32,
    pub memory_bytes: u64,
    /// Sum of the pids limits it accepts.
    #[serde(default)]
    pub pids: u64,
    pub cpus: u32,
}

/// `POST /node/v1/sandboxes/{id}/exec`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Run as root (still without capabilities) instead of `user`.
    pub root: bool,
    /// Written to stdin first.
    pub stdin: Vec<u8>,
    /// Keep stdin open for later writes; otherwise it is closed after `stdin`.
    pub keep_stdin: bool,
    /// Run on a terminal of (cols, rows).
    pub pty: Option<(u16, u16)>,
    pub timeout_ms: u64,
}

/// One line of an exec's output stream. Data is base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ExecFrame {
    Start { pid: i32 },
    Stdout { b64: String },
    Stderr { b64: String },
    Exit { code: Option<i32>, signal: Option<i32>, timed_out: bool },
    Error { code: String, message: String },
}

/// `GET /node/v1/sandboxes/{id}/metrics`: a sample of a sandbox's use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetrics {
    /// CPUs busy on average over the sample (0.5 = half of one CPU).
    pub cpus_used: f64,
    pub mem_used_bytes: u64,
    /// The writable layer's use and size.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// `GET /node/v1/sandboxes/{id}/execs`: a running command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecInfo {
    pub pid: i32,
    pub cmd: Vec<String>,
    pub cwd: Option<String>,
}

/// `POST /node/v1/sandboxes/{id}/exec/{pid}/signal`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub signal: i32,
}

/// `POST /node/v1/sandboxes/{id}/exec/{pid}/resize`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub cols: u16,
    pub rows: u16,
}

/// Query of the node's file routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileQuery {
    pub path: String,
    #[serde(default)]
    pub root: bool,
    #[serde(default)]
    pub depth: Option<u32>,
    #[serde(default)]
    pub recursive: Option<bool>,
    #[serde(default)]
    pub parents: Option<bool>,
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /v1/nodes/join` on the control plane's public API: a node proves a
/// one-time token and registers its self-signed client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// A name for the node (its host name by default).
    pub name: String,
    /// The node's client certificate, PEM; its SHA-256 becomes the node's identity.
    pub cert_pem: String,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinResponse {
    pub node_id: String,
    /// `host:port` of the node gateway to dial.
    pub gateway: String,
    /// The gateway's certificate, PEM: the node trusts exactly this one.
    pub gateway_cert_pem: String,
}
