//! The egress audit log: connection attempts as nodes report them, kept
//! after their sandbox ended (until purged by age).

use sqlx::Row;

use crate::{Error, Store};

/// One recorded attempt; `event` is the node's JSON, opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLogRow {
    pub node_id: String,
    /// The node process's boot id: sequence numbers restart with it.
    pub boot: String,
    pub seq: i64,
    pub sandbox_id: String,
    pub tenant_id: String,
    pub at_ms: i64,
    pub event: String,
}

impl Store {
    /// Records events; one already recorded (same node, boot and sequence) is skipped.
    pub async fn insert_network_events(&self, rows: &[NetLogRow]) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO network_events (node_id, boot, seq, sandbox_id, tenant_id, at_ms, event) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node_id, boot, seq) DO NOTHING",
            )
            .bind(&r.node_id)
            .bind(&r.boot)
            .bind(r.seq)
            .bind(&r.sandbox_id)
            .bind(&r.tenant_id)
            .bind(r.at_ms)
            .bind(&r.event)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last `limit` events of a tenant's sandbox, oldest first.
    pub async fn network_events(&self, tenant_id: &str, sandbox_id: &str, limit: i64) -> Result<Vec<NetLogRow>, Error> {
        let rows = sqlx::query(
            "SELECT node_id, boot, seq, sandbox_id, tenant_id, at_ms, event FROM network_events \
             WHERE tenant_id = $1 AND sandbox_id = $2 ORDER BY at_ms DESC, seq DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(sandbox_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(NetLogRow {
                    node_id: r.try_get("node_id")?,
                    boot: r.try_get("boot")?,
                    seq: r.try_get("seq")?,
                    sandbox_id: r.try_get("sandbox_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    at_ms: r.try_get("at_ms")?,
                    event: r.try_get("event")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        out.reverse();
        Ok(out)
    }

    /// Deletes events older than `before_ms`; how many.
    pub async fn purge_network_events(&self, before_ms: i64) -> Result<u64, Error> {
        let done =
            sqlx::query("DELETE FROM network_events WHERE at_ms < $1").bind(before_ms).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// The tenant of a sandbox in any state, if it is still recorded.
    pub async fn sandbox_tenant(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT tenant_id FROM sandboxes WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }
}
