//! Tenants' secrets: what they are bound to and their sealed values. The
//! store never sees a value in the clear: the control plane seals it
//! before [`Store::put_secret`] and opens it after reading.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, Error, Store};

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRow {
    pub tenant_id: String,
    pub name: String,
    /// JSON array of the host rules it is sent to.
    pub hosts: String,
    pub header_name: String,
    /// The header's value with `{secret}` where the value goes.
    pub header_format: String,
    /// The sealed value (opaque to the store); not serialized.
    #[serde(skip)]
    pub sealed: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "tenant_id, name, hosts, header_name, header_format, sealed, created_ms, updated_ms";

fn secret(row: &AnyRow) -> Result<SecretRow, Error> {
    Ok(SecretRow {
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        hosts: row.try_get("hosts")?,
        header_name: row.try_get("header_name")?,
        header_format: row.try_get("header_format")?,
        sealed: row.try_get("sealed")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

impl Store {
    /// Creates or replaces a tenant's secret (its creation time is kept).
    pub async fn put_secret(&self, s: &SecretRow) -> Result<SecretRow, Error> {
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO secrets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET hosts = $3, header_name = $4, header_format = $5, \
             sealed = $6, updated_ms = $7"
        ))
        .bind(&s.tenant_id)
        .bind(&s.name)
        .bind(&s.hosts)
        .bind(&s.header_name)
        .bind(&s.header_format)
        .bind(&s.sealed)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.secret(&s.tenant_id, &s.name).await
    }

    /// A tenant's secret by name; another tenant's is [`Error::NotFound`].
    pub async fn secret(&self, tenant_id: &str, name: &str) -> Result<SecretRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM secrets WHERE tenant_id = $1 AND name = $2"))
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        secret(&row)
    }

    /// A tenant's secrets by name.
    pub async fn secrets(&self, tenant_id: &str) -> Result<Vec<SecretRow>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM secrets WHERE tenant_id = $1 ORDER BY name"))
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(secret).collect()
    }

    /// Deletes a tenant's secret; [`Error::NotFound`] when it has none of that name.
    pub async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}
