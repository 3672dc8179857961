//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use reins_store::Store;
use reins_tls::rustls::ServerConfig;

use crate::metrics::Metrics;
use crate::nodes::Nodes;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Timeout of a sandbox created without one.
    pub default_timeout: Duration,
    /// Longest timeout a sandbox may have (or be extended to).
    pub max_timeout: Duration,
    /// Largest JSON request body.
    pub max_body: usize,
    /// Largest file upload.
    pub max_upload: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            max_body: 1 << 20,
            max_upload: 1 << 30,
        }
    }
}

/// The control plane's shared state.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub nodes: Nodes,
    pub keys: crate::auth::KeyCache,
    pub metrics: Metrics,
    pub limits: Limits,
    pub gateway_tls: Arc<ServerConfig>,
    pub gateway_cert_pem: String,
    /// `host:port` nodes are told to dial.
    pub gateway_addr: String,
}

pub type Shared = axum::extract::State<Arc<App>>;
