//! Snapshots (a sandbox's files, kept by the node that captured them) with
//! a per-tenant quota, and the warm pools' configuration.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, Error, Store};

/// A snapshot row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    pub id: String,
    pub tenant_id: String,
    pub node_id: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    pub template: String,
    /// The sandbox's spec as JSON (limits and environment a new sandbox inherits).
    pub spec: String,
    pub bytes: i64,
    pub created_ms: i64,
}

/// A warm pool: `min`..=`max` ready sandboxes of `template` with `limits` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolRow {
    pub template: String,
    /// A key of the limits, unique per template.
    pub shape: String,
    pub limits: String,
    pub min: i64,
    pub max: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "id, tenant_id, node_id, sandbox_id, template, spec, bytes, created_ms";

fn snapshot(row: &AnyRow) -> Result<SnapshotRow, Error> {
    Ok(SnapshotRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        node_id: row.try_get("node_id")?,
        sandbox_id: row.try_get("sandbox_id")?,
        template: row.try_get("template")?,
        spec: row.try_get("spec")?,
        bytes: row.try_get("bytes")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn pool(row: &AnyRow) -> Result<PoolRow, Error> {
    Ok(PoolRow {
        template: row.try_get("template")?,
        shape: row.try_get("shape")?,
        limits: row.try_get("limits")?,
        min: row.try_get("min_ready")?,
        max: row.try_get("max_ready")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

impl Store {
    /// Records a snapshot if its tenant is under its snapshot quota, in one
    /// transaction (the tenant's counter is the lock). `bytes` is filled in
    /// by [`Store::set_snapshot_bytes`] once the node captured it.
    pub async fn insert_snapshot(&self, row: &SnapshotRow) -> Result<(), Error> {
        let _w = self.writing().await;
        let mut tx = self.pool().begin().await?;
        let took =
            sqlx::query("UPDATE tenants SET snapshots = snapshots + 1 WHERE id = $1 AND snapshots < max_snapshots")
                .bind(&row.tenant_id)
                .execute(&mut *tx)
                .await?;
        if took.rows_affected() == 0 {
            let limit: Option<i64> = sqlx::query_scalar("SELECT max_snapshots FROM tenants WHERE id = $1")
                .bind(&row.tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(limit.map_or(Error::NotFound, |limit| Error::Quota { limit }));
        }
        sqlx::query(&format!("INSERT INTO snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&row.id)
            .bind(&row.tenant_id)
            .bind(&row.node_id)
            .bind(&row.sandbox_id)
            .bind(&row.template)
            .bind(&row.spec)
            .bind(row.bytes)
            .bind(row.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::unique(e, "snapshot id already exists"))?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_snapshot_bytes(&self, id: &str, bytes: i64) -> Result<(), Error> {
        sqlx::query("UPDATE snapshots SET bytes = $2 WHERE id = $1").bind(id).bind(bytes).execute(self.pool()).await?;
        Ok(())
    }

    /// A tenant's snapshot; another tenant's is [`Error::NotFound`].
    pub async fn snapshot(&self, tenant_id: &str, id: &str) -> Result<SnapshotRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        snapshot(&row)
    }

    /// A tenant's snapshots, oldest first (at most 1,000).
    pub async fn snapshots(&self, tenant_id: &str) -> Result<Vec<SnapshotRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE tenant_id = $1 ORDER BY created_ms, id LIMIT 1000"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(snapshot).collect()
    }

    /// Removes a tenant's snapshot row and gives its quota back; false when there was none.
    pub async fn delete_snapshot(&self, tenant_id: &str, id: &str) -> Result<bool, Error> {
        let _w = self.writing().await;
        let mut tx = self.pool().begin().await?;
        let gone = sqlx::query("DELETE FROM snapshots WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE tenants SET snapshots = snapshots - 1 WHERE id = $1 AND snapshots > 0")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Creates or replaces the pool of (`template`, `shape`).
    pub async fn put_pool(
        &self,
        template: &str,
        shape: &str,
        limits: &str,
        min: i64,
        max: i64,
    ) -> Result<PoolRow, Error> {
        let _w = self.writing().await;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO pools (template, shape, limits, min_ready, max_ready, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (template, shape) DO UPDATE SET limits = $3, min_ready = $4, max_ready = $5, updated_ms = $6",
        )
        .bind(template)
        .bind(shape)
        .bind(limits)
        .bind(min)
        .bind(max)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(PoolRow { template: template.into(), shape: shape.into(), limits: limits.into(), min, max, updated_ms: now })
    }

    /// Every pool, by template and shape.
    pub async fn pools(&self) -> Result<Vec<PoolRow>, Error> {
        let rows = sqlx::query(
            "SELECT template, shape, limits, min_ready, max_ready, updated_ms FROM pools ORDER BY template, shape",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(pool).collect()
    }

    /// Removes the pool of (`template`, `shape`); false when there was none.
    pub async fn delete_pool(&self, template: &str, shape: &str) -> Result<bool, Error> {
        let _w = self.writing().await;
        let gone = sqlx::query("DELETE FROM pools WHERE template = $1 AND shape = $2")
            .bind(template)
            .bind(shape)
            .execute(self.pool())
            .await?;
        Ok(gone.rows_affected() > 0)
    }
}
