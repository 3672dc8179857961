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
    /// Largest template archive.
    pub max_template: u64,
    /// Sandbox ports are reached at `{port}-{id}.{sandbox_domain}`.
    pub sandbox_domain: String,
    /// How long a worker's hold on an agent session lasts without renewal
    /// (another replica takes the session over after that).
    pub session_lease: Duration,
    /// Model calls: attempts and first backoff.
    pub model_attempts: u32,
    pub model_backoff: Duration,
    /// A hibernated sandbox is kept at least this long after it hibernates, then released.
    pub hibernate_retention: Duration,
    /// Ended sandboxes' rows are purged after this long.
    pub ended_retention: Duration,
    /// E2B sandboxes with internet access also get a direct interface.
    pub e2b_direct: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            max_body: 1 << 20,
            max_upload: 1 << 30,
            max_template: 16 << 30,
            sandbox_domain: "localhost".to_owned(),
            session_lease: Duration::from_secs(15),
            model_attempts: 5,
            model_backoff: Duration::from_millis(500),
            hibernate_retention: Duration::from_secs(24 * 3600),
            ended_retention: Duration::from_secs(3600),
            e2b_direct: false,
        }
    }
}

/// Where sandboxes live: (tenant, node) by id. Both never change for a
/// sandbox, so an entry is never stale; the state (running, paused, gone) is
/// the node's to say. Saves a database read on every command and file call.
#[derive(Debug, Default)]
pub struct Places {
    map: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
}

impl Places {
    const MAX: usize = 200_000;

    pub fn get(&self, id: &str) -> Option<(String, String)> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn put(&self, id: &str, tenant: &str, node: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(id.to_owned(), (tenant.to_owned(), node.to_owned()));
    }

    pub fn forget(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// The control plane's shared state.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub nodes: Nodes,
    pub places: Places,
    pub keys: crate::auth::KeyCache,
    pub metrics: Metrics,
    pub limits: Limits,
    pub gateway_tls: Arc<ServerConfig>,
    pub gateway_cert_pem: String,
    /// `host:port` nodes are told to dial.
    pub gateway_addr: String,
    /// Where uploads wait until the nodes have them (template archives).
    pub upload_dir: std::path::PathBuf,
    /// Seals tenants' secrets at rest.
    pub sealing: crate::sealing::SealingKey,
    /// Sandboxes' ingress settings, recently used.
    pub ingress: crate::ingress::Cache,
    /// Agent sessions: workers, leases, live events.
    pub harness: crate::agents::Harness,
    /// Content-addressed blobs (skill bundles).
    pub blob_dir: std::path::PathBuf,
    /// E2B clients' polling directory watchers.
    pub e2b_watchers: crate::e2b::watch::Watchers,
}

pub type Shared = axum::extract::State<Arc<App>>;
