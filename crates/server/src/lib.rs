//! `reins-server` is the control plane: the public API (`/v1`), API keys and
//! tenants, placement of sandboxes on nodes, the node gateway, the reaper
//! of expired sandboxes, agent sessions (driven by `reins-harness` under
//! leases), and metrics.
//!
//! It reaches sandboxes only through nodes, over the node protocol
//! ([`reins_api::node`]); in `reins up` the local node dials this process's
//! gateway over loopback like any other node.

mod agents;
mod app;
mod auth;
mod e2b;
mod error;
mod gateway;
mod ingress;
mod metrics;
mod netlog;
mod nodes;
mod openapi;
mod reaper;
mod reconcile;
mod routes;
mod sealing;
mod serve;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use reins_store::{Store, DEFAULT_TENANT};
use reins_tls::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use openapi::document as openapi_document;
pub use state::Limits;

/// How to run a control plane.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where the gateway's identity is kept.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub gateway_listen: SocketAddr,
    /// `host:port` nodes dial; the gateway's bound address when `None`.
    pub gateway_advertise: Option<String>,
    /// TLS for the public API (certificate chain and key).
    pub tls: Option<Identity>,
    pub limits: Limits,
    /// The key that seals secrets at rest, unless `REINS_SECRET_KEY` is set;
    /// `DATA/secret.key` (generated on first start) when `None`.
    pub secret_key_file: Option<PathBuf>,
}

/// A running control plane.
#[derive(Debug)]
pub struct Server {
    pub api_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    store: Store,
    app: Arc<state::App>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the store, binds both listeners and starts serving.
    pub async fn start(opts: ServerOptions) -> Result<Self> {
        let store = Store::connect(&opts.database_url)
            .await
            .with_context(|| format!("opening the database {}", redact(&opts.database_url)))?;
        let key_file = opts.secret_key_file.clone().unwrap_or_else(|| opts.data_dir.join("secret.key"));
        let sealing = sealing::SealingKey::load(&key_file)?;
        let gw_identity = Identity::load_or_generate(&opts.data_dir.join("gateway"), reins_tls::GATEWAY_NAME)?;
        let gateway_tls = Arc::new(reins_tls::gateway_server(&gw_identity)?);
        let api =
            TcpListener::bind(opts.listen).await.with_context(|| format!("binding the API to {}", opts.listen))?;
        let gw = TcpListener::bind(opts.gateway_listen)
            .await
            .with_context(|| format!("binding the node gateway to {}", opts.gateway_listen))?;
        let (api_addr, gateway_addr) = (api.local_addr()?, gw.local_addr()?);
        let app = Arc::new(state::App {
            store: store.clone(),
            nodes: nodes::Nodes::default(),
            places: state::Places::default(),
            keys: auth::KeyCache::default(),
            metrics: metrics::Metrics::default(),
            limits: opts.limits.clone(),
            gateway_tls,
            gateway_cert_pem: gw_identity.cert_pem.clone(),
            gateway_addr: opts.gateway_advertise.clone().unwrap_or_else(|| gateway_addr.to_string()),
            upload_dir: opts.data_dir.join("uploads"),
            sealing,
            ingress: ingress::Cache::default(),
            harness: agents::Harness::new(
                agents::instance_id(&opts.data_dir)?,
                opts.limits.session_lease,
                reins_harness::model::Retry {
                    attempts: opts.limits.model_attempts,
                    first: opts.limits.model_backoff,
                    max: std::time::Duration::from_secs(30),
                },
            ),
            blob_dir: opts.data_dir.join("blobs"),
            e2b_watchers: e2b::watch::Watchers::default(),
        });
        let (tx, rx) = watch::channel(false);
        let api_tls = opts.tls.as_ref().map(reins_tls::api_server).transpose()?.map(Arc::new);
        let tasks = vec![
            tokio::spawn(serve::run(api, app::router(Arc::clone(&app)), api_tls, rx.clone())),
            tokio::spawn(gateway::run(gw, Arc::clone(&app), rx.clone())),
            tokio::spawn(reaper::run(Arc::clone(&app), rx.clone())),
            tokio::spawn(agents::recover(Arc::clone(&app), rx)),
        ];
        tracing::info!(%api_addr, %gateway_addr, "control plane listening");
        Ok(Self { api_addr, gateway_addr, store, app, shutdown: tx, tasks })
    }

    /// Attaches a node running in this process (`reins up`): it has joined
    /// like any node (its identity is recorded), and its router is called
    /// directly instead of over the gateway. Detached when `stop` turns true.
    pub async fn attach_local(
        &self,
        node_id: &str,
        router: axum::Router,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let node =
            self.store.nodes().await?.into_iter().find(|n| n.id == node_id).context("the local node has not joined")?;
        let conn = Arc::new(nodes::NodeConn::new(node.id, node.name, nodes::Transport::Local(router)));
        let app = Arc::clone(&self.app);
        let done = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            if let Err(e) = gateway::attend(app, conn, done, shutdown).await {
                tracing::warn!(error = %e, "local node detached");
            }
        });
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates the first admin key if none exists; returns its secret then.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>> {
        if self.store.has_admin_key().await? {
            return Ok(None);
        }
        let (_, secret) = self.store.create_key(DEFAULT_TENANT, "admin", true).await?;
        Ok(Some(secret))
    }

    /// A one-time token for a node to join with.
    pub async fn join_token(&self) -> Result<String> {
        Ok(self.store.create_join_token(600_000).await?)
    }

    /// Stops accepting, lets open requests finish (up to a few seconds), closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.close().await;
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
