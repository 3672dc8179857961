//! `reins-store` keeps the control plane's state in SQL: tenants, API keys,
//! node identities and join tokens, sandboxes, secrets, egress events,
//! agents, their sessions' logs, and skills.
//!
//! One [`Store`] runs on SQLite (embedded, the default) or PostgreSQL (shared
//! by a cluster). Both engines run the same migrations and the same
//! statements: ids are TEXT, times BIGINT milliseconds, JSON is TEXT, and
//! parameters are `$N`, which both drivers bind by number. The conformance
//! tests in `tests/` run every repository against both engines.

mod agents;
mod error;
mod ids;
mod keys;
mod netlog;
mod nodes;
mod sandboxes;
mod secrets;
mod sessions;
mod snapshots;
mod tenants;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use agents::{AgentRow, SkillRow};
pub use error::Error;
pub use ids::{hash_secret, new_id, new_secret, sandbox_id};
pub use keys::{ApiKey, Principal};
pub use netlog::NetLogRow;
pub use nodes::Node;
pub use sandboxes::{EndReason, NewSandbox, Page, SandboxFilter, SandboxRow, SandboxState};
pub use secrets::SecretRow;
pub use sessions::{AppendEffects, EventRow, Lease, SessionRow};
pub use snapshots::{PoolRow, SnapshotRow};
pub use tenants::{Tenant, DEFAULT_TENANT};

/// The embedded migrations, identical for both engines.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which SQL engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// SQLite has one writer: writers of this process queue here instead of
    /// meeting `SQLITE_BUSY`, whose retry sleeps (1 ms growing to 100 ms)
    /// would dominate latency under load.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite
    /// file if needed, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let (engine, url) = if url.starts_with("sqlite:") {
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = if url.contains("mode=") { url.to_owned() } else { format!("{url}{sep}mode=rwc") };
            (Engine::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Engine::Postgres, url.to_owned())
        } else {
            return Err(Error::Url(url.to_owned()));
        };
        let opts = AnyConnectOptions::from_str(&url).map_err(|e| Error::Connect(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL: readers never block the writer; NORMAL sync keeps every
                        // committed transaction across a process crash (kill -9).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        MIGRATOR.run(&pool).await.map_err(|e| Error::Migrate(e.to_string()))?;
        let store = Self { pool, engine, writer: Default::default() };
        store.ensure_default_tenant().await?;
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Held around a write on SQLite (see [`Store::writer`]); nothing on PostgreSQL.
    pub(crate) async fn writing(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.engine {
            Engine::Sqlite => Some(self.writer.lock().await),
            Engine::Postgres => None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Connects without migrating, for administrative statements (tests
    /// create and drop their PostgreSQL schemas with it).
    pub async fn connect_raw(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let pool =
            AnyPoolOptions::new().max_connections(1).connect(url).await.map_err(|e| Error::Connect(e.to_string()))?;
        let engine = if url.starts_with("sqlite:") { Engine::Sqlite } else { Engine::Postgres };
        Ok(Self { pool, engine, writer: Default::default() })
    }

    /// Runs one statement as is.
    pub async fn execute_raw(&self, sql: &str) -> Result<(), Error> {
        self.pool.execute(sql).await?;
        Ok(())
    }
}
