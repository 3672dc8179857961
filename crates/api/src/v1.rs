//! The public API's request and response bodies. Requests reject unknown
//! fields; times are milliseconds since the Unix epoch (`*_ms`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/sandboxes`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Template name; `base` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub template: Option<String>,
    /// CPUs (fractions allowed), default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01, maximum = 1024)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB, default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 8, maximum = 1048576)]
    pub memory_mb: Option<u64>,
    /// Process limit, default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 8, maximum = 4194304)]
    pub pids: Option<u32>,
    /// Writable-layer size limit in MiB, default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1048576)]
    pub disk_mb: Option<u64>,
    /// Environment of every command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Free-form labels to find the sandbox by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Seconds until the sandbox is released; the server's default (300) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
    /// Network policy; `none` (loopback only) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Hibernate after this many seconds without activity (no command,
    /// open stream, file request or ingress traffic): files are kept,
    /// processes end, memory is freed; the next request wakes it. Never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub idle_timeout_secs: Option<u64>,
    /// Start from this snapshot's files (its template and limits unless given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A sandbox's network policy (`PUT /v1/sandboxes/{id}/network`, and at create).
///
/// Rules are `HOST[:PORTS]`: a domain (`api.openai.com`), a wildcard
/// (`*.pypi.org`, names below it), an IP address or CIDR (`10.0.0.0/8`,
/// `[fd00::/8]:443`); ports are `*`, `443`, `8000-8100` or a comma list.
/// Deny rules win. Private, loopback, link-local and the host's own
/// addresses are refused unless an allow rule names them by address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `none` (default), `allowlist` or `open` (every public address; audited).
    #[serde(default = "default_mode")]
    #[schema(pattern = "^(none|allowlist|open)$")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Names of the tenant's secrets the proxy adds to requests for their hosts
    /// (reached as `http://HOST.reins.internal/…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Besides the proxy, a network interface (`eth0`) with a route out, for
    /// programs that cannot use a proxy: the host lets through only the
    /// addresses and ports the IP and CIDR rules name (domain rules need the
    /// proxy). Needs mode `allowlist` or `open`; IPv4 only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

fn default_mode() -> String {
    "none".to_owned()
}

impl Default for Network {
    /// `none`: loopback only.
    fn default() -> Self {
        Self { mode: default_mode(), allow: Vec::new(), deny: Vec::new(), secrets: Vec::new(), direct: false }
    }
}

/// `PUT /v1/secrets/{name}`: a secret and where it is sent. The value is
/// never returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    pub value: String,
    /// Domain rules of the hosts it is sent to (`api.openai.com`, `*.example.com:443`).
    pub hosts: Vec<String>,
    /// Header it goes in; `Authorization` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The header's value, with `{secret}` where the value goes; `Bearer {secret}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A secret as listed: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub name: String,
    pub hosts: Vec<String>,
    pub header: String,
    pub format: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One connection attempt through a sandbox's egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkEvent {
    pub sandbox: String,
    pub tenant: String,
    pub at_ms: i64,
    /// `connect`, `http`, `socks5`, `credential` or `proxy`.
    pub protocol: String,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

impl NetworkEvent {
    /// The view of a node's event of `sandbox` of `tenant`.
    pub fn of(sandbox: &str, tenant: &str, e: reins_types::NetEvent) -> Self {
        Self {
            sandbox: sandbox.to_owned(),
            tenant: tenant.to_owned(),
            at_ms: e.at_ms,
            protocol: e.protocol,
            host: e.host,
            port: e.port,
            addr: e.addr,
            allowed: e.allowed,
            reason: e.reason,
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            duration_ms: e.duration_ms,
        }
    }
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
    /// Files kept, no process; the next command, file request or ingress request wakes it.
    Hibernated,
    Ended,
}

/// A sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub template: String,
    pub state: SandboxState,
    pub node_id: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub pids: u32,
    pub disk_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: i64,
    /// When it will be released unless extended.
    pub expires_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// `deleted`, `timeout`, `lost` or `failed`, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    pub network: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// The snapshot it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The token for its private ports (`X-Access-Token`); only in the answer to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// A snapshot: a sandbox's files at one moment, kept on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    pub template: String,
    pub node_id: String,
    /// Bytes of files the capture wrote.
    pub bytes: i64,
    pub created_ms: i64,
}

/// `GET /v1/snapshots`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub items: Vec<Snapshot>,
}

/// `POST /v1/sandboxes/{id}/fork`: a snapshot and `count` new sandboxes made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    /// How many sandboxes, 1 to 32 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 32)]
    pub count: Option<u32>,
    /// Seconds until each new sandbox is released (the server's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
}

/// The answer to a fork.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Forked {
    pub snapshot: Snapshot,
    pub sandboxes: Vec<Sandbox>,
}

/// `PUT /v1/pools/{template}`: keep `min`..=`max` sandboxes of this template
/// and shape started ahead; creates with the same template and limits take
/// one. Limits default as for a create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPool {
    pub min: u32,
    pub max: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// A warm pool and, summed over connected nodes, how full it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub template: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub pids: u32,
    pub disk_mb: u64,
    /// Per node.
    pub min: u32,
    pub max: u32,
    /// Ready now, over all nodes.
    pub ready: u32,
    /// What the nodes aim to keep ready now.
    pub target: u32,
    /// Creates served from the pool since the nodes started.
    pub claims: u64,
}

/// `GET /v1/pools`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    pub items: Vec<Pool>,
}

/// `PUT /v1/sandboxes/{id}/ports/{port}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPortAccess {
    /// Reachable without the access token.
    pub public: bool,
}

/// A port's access after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortAccess {
    pub port: u16,
    pub public: bool,
    /// Every public port of the sandbox.
    pub public_ports: Vec<u16>,
}

/// `GET /v1/sandboxes` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListSandboxes {
    /// Comma-separated states (`running,paused,ended`); running and paused when absent.
    pub state: Option<String>,
    /// Comma-separated `key=value` pairs that must all match.
    pub metadata: Option<String>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub items: Vec<Sandbox>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/sandboxes/{id}/timeout`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Seconds from now until release.
    #[schema(minimum = 1)]
    pub timeout_secs: u64,
}

/// Who a command or file operation runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum User {
    #[default]
    User,
    Root,
}

/// `POST /v1/sandboxes/{id}/exec` and `/exec/stream`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// Program and arguments, run without a shell.
    #[schema(min_items = 1)]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: User,
    /// Given to the command on stdin, then end-of-file; stdin is empty otherwise
    /// (a streamed exec keeps it open for `POST …/exec/{pid}/stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The command is killed after this many seconds (default 60, at most the sandbox's life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Run on a terminal of this size (stdout and stderr are then one stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
}

/// A terminal's size in characters; also `POST /v1/sandboxes/{id}/exec/{pid}/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PtySize {
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: u16,
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: u16,
}

impl PtySize {
    /// Both sides between 1 and 1000.
    pub fn is_valid(&self) -> bool {
        (1..=1000).contains(&self.cols) && (1..=1000).contains(&self.rows)
    }
}

/// A control message a client sends as a WebSocket *text* frame on
/// `GET /v1/sandboxes/{id}/exec/ws`, after the first frame (an [`Exec`]).
/// *Binary* frames from the client are stdin bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum WsControl {
    /// Close the command's stdin.
    Eof,
    /// Resize the command's terminal.
    Resize { cols: u16, rows: u16 },
    /// Send a signal (number or name, as in [`Signal`]).
    Signal { signal: String },
}

/// Channel byte that starts every *binary* WebSocket frame the server sends:
/// the rest of the frame is output of that stream.
pub mod ws_channel {
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
}

/// The result of a buffered exec. Output is UTF-8 (lossy); at most 16 MiB of each stream is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    /// The exit code, or 128 + N after signal N.
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// True when the exec timeout killed it.
    #[serde(default)]
    pub timed_out: bool,
    /// True when output beyond the limit was dropped.
    #[serde(default)]
    pub truncated: bool,
}

/// One event of a streamed exec (`data:` of a Server-Sent Event; the event name is `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecEvent {
    /// The command runs; `pid` addresses it for stdin and signals.
    Start {
        pid: i32,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        #[serde(default)]
        timed_out: bool,
    },
    Error {
        code: String,
        message: String,
    },
}

/// One Server-Sent Event of a streamed exec, as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecSseEvent {
    /// `start`, `stdout`, `stderr`, `exit` or `error`.
    #[schema(pattern = "^(start|stdout|stderr|exit|error)$")]
    pub event: String,
    /// An [`ExecEvent`] in JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `POST /v1/sandboxes/{id}/exec/{pid}/stdin`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stdin {
    #[serde(default)]
    pub data: String,
    /// Close stdin after `data`.
    #[serde(default)]
    pub eof: bool,
}

/// `POST /v1/sandboxes/{id}/exec/{pid}/signal`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// A signal number (1–64) or name such as `SIGTERM` or `KILL`.
    pub signal: String,
}

/// The kind of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A file or directory in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub path: String,
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, such as 420 (0644).
    pub mode: u32,
    pub mtime_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileEventKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

/// One event of `GET /v1/sandboxes/{id}/files/watch` (the `data:` of a
/// Server-Sent Event named `file`, or of a final `error` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEvent {
    pub kind: FileEventKind,
    /// Absolute path of the entry inside the sandbox.
    pub path: String,
}

/// `GET /v1/sandboxes/{id}/files/watch` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// An absolute path of a directory inside the sandbox.
    pub path: String,
    /// Watch subdirectories too (also those created later).
    pub recursive: Option<bool>,
}

/// Query of the file endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// `user` (default) or `root`.
    pub user: Option<User>,
    /// For listings: how many levels (1–16, default 1).
    pub depth: Option<u32>,
    /// For removal: remove directories with their contents.
    pub recursive: Option<bool>,
}

/// `POST /v1/sandboxes/{id}/files/mkdir`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mkdir {
    pub path: String,
    #[serde(default)]
    pub parents: bool,
    #[serde(default)]
    pub user: User,
}

/// `POST /v1/sandboxes/{id}/files/move`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub user: User,
}

/// `POST /v1/tenants`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1–64 characters of letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Concurrent sandboxes allowed (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_sandboxes: Option<u32>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub max_sandboxes: i64,
    /// Sandboxes running or paused now.
    pub active: i64,
    pub created_ms: i64,
}

/// `POST /v1/keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for the key.
    pub name: String,
    /// The tenant to create it for; only admin keys may name another tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// An admin key manages tenants and keys (admin keys only).
    #[serde(default)]
    pub admin: bool,
}

/// An API key as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The secret's first characters.
    pub prefix: String,
    pub admin: bool,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

/// A new key with its secret, shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: Key,
    pub secret: String,
}

/// A template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// Content digest (`sha256:…`).
    pub digest: String,
}

/// `POST /v1/nodes/tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    /// Give it to `reins node --join URL --token TOKEN`; it works once, for `ttl_secs`.
    pub token: String,
    pub ttl_secs: u64,
}

/// An execution node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub connected: bool,
    pub joined_ms: i64,
    pub seen_ms: i64,
}

/// A list answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}
