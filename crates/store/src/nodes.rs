//! Execution nodes: their identities (certificate fingerprints) and the
//! one-time tokens they join with.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{hash_secret, new_secret, now_ms, Error, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// SHA-256 of the node's client certificate (DER), hex.
    pub cert_sha256: String,
    pub joined_ms: i64,
    pub seen_ms: i64,
}

fn node(row: &AnyRow) -> Result<Node, sqlx::Error> {
    Ok(Node {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cert_sha256: row.try_get("cert_sha256")?,
        joined_ms: row.try_get("joined_ms")?,
        seen_ms: row.try_get("seen_ms")?,
    })
}

impl Store {
    /// Creates a one-time join token valid for `ttl_ms`; returns the secret.
    pub async fn create_join_token(&self, ttl_ms: i64) -> Result<String, Error> {
        let secret = new_secret("join");
        let now = now_ms();
        sqlx::query("INSERT INTO join_tokens (hash, created_ms, expires_ms) VALUES ($1, $2, $3)")
            .bind(hash_secret(&secret))
            .bind(now)
            .bind(now + ttl_ms)
            .execute(self.pool())
            .await?;
        Ok(secret)
    }

    /// Uses up a join token and records the node it admitted, atomically:
    /// a token admits one node, once, before it expires.
    pub async fn join_node(&self, token: &str, node: &Node) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        let used =
            sqlx::query("UPDATE join_tokens SET used_ms = $2 WHERE hash = $1 AND used_ms IS NULL AND expires_ms > $2")
                .bind(hash_secret(token))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        if used.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        sqlx::query("INSERT INTO nodes (id, name, cert_sha256, joined_ms, seen_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(&node.id)
            .bind(&node.name)
            .bind(&node.cert_sha256)
            .bind(node.joined_ms)
            .bind(node.seen_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::unique(e, "this node has already joined"))?;
        tx.commit().await?;
        Ok(())
    }

    /// The node whose certificate has this fingerprint.
    pub async fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<Node>, Error> {
        let row = sqlx::query("SELECT id, name, cert_sha256, joined_ms, seen_ms FROM nodes WHERE cert_sha256 = $1")
            .bind(cert_sha256)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(node).transpose()?)
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, Error> {
        let rows = sqlx::query("SELECT id, name, cert_sha256, joined_ms, seen_ms FROM nodes ORDER BY joined_ms, id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(node).collect::<Result<_, _>>()?)
    }

    pub async fn node_seen(&self, id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE nodes SET seen_ms = $2 WHERE id = $1").bind(id).bind(now_ms()).execute(self.pool()).await?;
        Ok(())
    }

    /// Removes a node: its certificate stops being accepted.
    pub async fn remove_node(&self, id: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1").bind(id).execute(self.pool()).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}
