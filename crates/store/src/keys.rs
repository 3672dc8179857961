//! API keys: stored as hashes, scoped to one tenant, revocable.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{hash_secret, new_id, new_secret, now_ms, Error, Store};

/// An API key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    pub admin: bool,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// Who a request comes from, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub tenant_id: String,
    pub admin: bool,
}

fn key(row: &AnyRow) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        admin: row.try_get::<i64, _>("admin")? != 0,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
    })
}

const COLUMNS: &str = "id, tenant_id, name, prefix, admin, created_ms, revoked_ms";

impl Store {
    /// Creates a key and returns it with its secret, which is not stored.
    pub async fn create_key(&self, tenant_id: &str, name: &str, admin: bool) -> Result<(ApiKey, String), Error> {
        let secret = new_secret("reins");
        let k = ApiKey {
            id: new_id("key"),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            prefix: secret[..12].to_owned(),
            admin,
            created_ms: now_ms(),
            revoked_ms: None,
        };
        let done = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, admin, created_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(hash_secret(&secret))
        .bind(i64::from(admin))
        .bind(k.created_ms)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok((k, secret))
    }

    /// The principal of a presented secret, if it is a live key.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, Error> {
        self.authenticate_hash(&hash_secret(secret)).await
    }

    /// [`Store::authenticate`] for a secret already hashed with [`hash_secret`].
    pub async fn authenticate_hash(&self, hash: &str) -> Result<Option<Principal>, Error> {
        let row = sqlx::query("SELECT id, tenant_id, admin FROM api_keys WHERE hash = $1 AND revoked_ms IS NULL")
            .bind(hash)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Principal {
            key_id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            admin: row.try_get::<i64, _>("admin")? != 0,
        }))
    }

    /// A tenant's keys, oldest first.
    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_ms, id"))
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(key).collect::<Result<_, _>>()?)
    }

    /// Revokes a key of `tenant_id`; [`Error::NotFound`] for another tenant's key.
    pub async fn revoke_key(&self, tenant_id: &str, id: &str) -> Result<(), Error> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_ms = $3 WHERE id = $1 AND tenant_id = $2 AND revoked_ms IS NULL")
                .bind(id)
                .bind(tenant_id)
                .bind(now_ms())
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// True when any admin key exists (first start creates one otherwise).
    pub async fn has_admin_key(&self) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE admin = 1 AND revoked_ms IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }
}
