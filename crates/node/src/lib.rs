//! `reins-node` is the execution plane: it owns a sandbox runtime and serves
//! the node protocol ([`reins_api::node`]) to the control plane.
//!
//! A node never listens. It joins a control plane once with a one-time token
//! ([`join`]), keeping the identity it registered, then dials the control
//! plane's gateway and serves HTTP/2 on that connection ([`serve`]), redialing
//! whenever it drops. Everything a request may do is checked here again:
//! the control plane is trusted to choose *what* runs, never to reach the
//! host (no host paths: the node's own volumes and skill bundles are named,
//! and the node decides where they live).

mod dial;
mod direct;
mod error;
mod files;
mod identity;
mod lifecycle;
mod mounts;
mod net;
mod nflog;
mod pools;
mod ports;
mod routes;
mod snapshots;
mod state;

pub use dial::serve;
pub use direct::DEFAULT_SUBNET as DIRECT_SUBNET;
pub use identity::{join, NodeIdentity};
pub use routes::router;
pub use state::{Node, NodeOptions};
