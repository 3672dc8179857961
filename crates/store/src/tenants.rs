//! Tenants: the unit of isolation and of quotas.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{new_id, now_ms, Error, Store};

/// The tenant of the first admin key; it always exists.
pub const DEFAULT_TENANT: &str = "tn_default";

/// Concurrent sandboxes a tenant may run unless set otherwise.
const DEFAULT_MAX_SANDBOXES: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub max_sandboxes: i64,
    /// Sandboxes that have not ended.
    pub active: i64,
    pub created_ms: i64,
}

fn tenant(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        max_sandboxes: row.try_get("max_sandboxes")?,
        active: row.try_get("active")?,
        created_ms: row.try_get("created_ms")?,
    })
}

const COLUMNS: &str = "id, name, max_sandboxes, active, created_ms";

impl Store {
    pub(crate) async fn ensure_default_tenant(&self) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO tenants (id, name, max_sandboxes, active, created_ms) VALUES ($1, 'default', $2, 0, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(DEFAULT_TENANT)
        .bind(DEFAULT_MAX_SANDBOXES)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Creates a tenant; [`Error::Conflict`] when the name is taken.
    pub async fn create_tenant(&self, name: &str, max_sandboxes: Option<i64>) -> Result<Tenant, Error> {
        let t = Tenant {
            id: new_id("tn"),
            name: name.to_owned(),
            max_sandboxes: max_sandboxes.unwrap_or(DEFAULT_MAX_SANDBOXES),
            active: 0,
            created_ms: now_ms(),
        };
        sqlx::query("INSERT INTO tenants (id, name, max_sandboxes, active, created_ms) VALUES ($1, $2, $3, 0, $4)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.max_sandboxes)
            .bind(t.created_ms)
            .execute(self.pool())
            .await
            .map_err(|e| Error::unique(e, &format!("a tenant named `{name}` already exists")))?;
        Ok(t)
    }

    pub async fn tenant(&self, id: &str) -> Result<Tenant, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        Ok(tenant(&row)?)
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants ORDER BY created_ms, id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(tenant).collect::<Result<_, _>>()?)
    }

    /// Sets a tenant's concurrent-sandbox quota.
    pub async fn set_tenant_quota(&self, id: &str, max_sandboxes: i64) -> Result<(), Error> {
        let done = sqlx::query("UPDATE tenants SET max_sandboxes = $2 WHERE id = $1")
            .bind(id)
            .bind(max_sandboxes)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}
