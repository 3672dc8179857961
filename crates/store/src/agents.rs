//! Agents (a tenant's named definitions, stored as JSON the harness owns)
//! and skill bundles (versioned; the bytes live in the blob store).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{new_id, now_ms, Error, Store};

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The definition, JSON.
    pub spec: String,
    /// The node that holds the agent's volume, once it has one.
    pub volume_node: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const AGENT_COLUMNS: &str = "id, tenant_id, name, spec, volume_node, tokens_in, tokens_out, created_ms, updated_ms";

fn agent(row: &AnyRow) -> Result<AgentRow, Error> {
    Ok(AgentRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        spec: row.try_get("spec")?,
        volume_node: row.try_get("volume_node")?,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// A version of a skill bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillRow {
    pub tenant_id: String,
    pub name: String,
    pub version: i64,
    pub description: String,
    /// SHA-256 of the bundle (a tar archive), its name in the blob store.
    pub sha256: String,
    pub size_bytes: i64,
    pub created_ms: i64,
}

const SKILL_COLUMNS: &str = "tenant_id, name, version, description, sha256, size_bytes, created_ms";

fn skill(row: &AnyRow) -> Result<SkillRow, Error> {
    Ok(SkillRow {
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        description: row.try_get("description")?,
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Creates an agent; a name the tenant already uses is [`Error::Conflict`].
    pub async fn create_agent(&self, tenant_id: &str, name: &str, spec: &str) -> Result<AgentRow, Error> {
        let id = new_id("ag");
        sqlx::query(&format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, NULL, 0, 0, $5, $5)"))
            .bind(&id)
            .bind(tenant_id)
            .bind(name)
            .bind(spec)
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(|e| Error::unique(e, &format!("an agent named `{name}` exists")))?;
        self.agent(tenant_id, &id).await
    }

    /// Replaces an agent's definition.
    pub async fn update_agent(&self, tenant_id: &str, id: &str, spec: &str) -> Result<AgentRow, Error> {
        let done = sqlx::query("UPDATE agents SET spec = $3, updated_ms = $4 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .bind(spec)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        self.agent(tenant_id, id).await
    }

    /// Records the node of an agent's volume, unless one is recorded; returns the node that holds it.
    pub async fn claim_volume_node(&self, agent_id: &str, node_id: &str) -> Result<String, Error> {
        sqlx::query("UPDATE agents SET volume_node = $2 WHERE id = $1 AND volume_node IS NULL")
            .bind(agent_id)
            .bind(node_id)
            .execute(self.pool())
            .await?;
        let node: Option<Option<String>> = sqlx::query_scalar("SELECT volume_node FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(self.pool())
            .await?;
        node.flatten().ok_or(Error::NotFound)
    }

    /// A tenant's agent by id or by name.
    pub async fn agent(&self, tenant_id: &str, id_or_name: &str) -> Result<AgentRow, Error> {
        let row =
            sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND (id = $2 OR name = $2)"))
                .bind(tenant_id)
                .bind(id_or_name)
                .fetch_optional(self.pool())
                .await?
                .ok_or(Error::NotFound)?;
        agent(&row)
    }

    /// A tenant's agents by name.
    pub async fn agents(&self, tenant_id: &str) -> Result<Vec<AgentRow>, Error> {
        let rows = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY name"))
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(agent).collect()
    }

    /// Deletes an agent with its sessions and their logs, in one transaction.
    pub async fn delete_agent(&self, tenant_id: &str, id: &str) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        crate::sessions::delete_sessions_in(&mut tx, tenant_id, "agent_id", id).await?;
        let done = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a new version of a skill (one more than its latest).
    pub async fn put_skill(
        &self,
        tenant_id: &str,
        name: &str,
        description: &str,
        sha256: &str,
        size_bytes: i64,
    ) -> Result<SkillRow, Error> {
        let mut tx = self.pool().begin().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM skills WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let version = latest.unwrap_or(0) + 1;
        sqlx::query(&format!("INSERT INTO skills ({SKILL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(tenant_id)
            .bind(name)
            .bind(version)
            .bind(description)
            .bind(sha256)
            .bind(size_bytes)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::unique(e, "a concurrent upload of this skill won; retry"))?;
        tx.commit().await?;
        self.skill(tenant_id, name, Some(version)).await
    }

    /// A skill's version, or its latest.
    pub async fn skill(&self, tenant_id: &str, name: &str, version: Option<i64>) -> Result<SkillRow, Error> {
        let row = sqlx::query(&format!(
            "SELECT {SKILL_COLUMNS} FROM skills WHERE tenant_id = $1 AND name = $2 AND ($3 < 0 OR version = $3) \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(name)
        .bind(version.unwrap_or(-1))
        .fetch_optional(self.pool())
        .await?
        .ok_or(Error::NotFound)?;
        skill(&row)
    }

    /// A tenant's skills: the latest version of each.
    pub async fn skills(&self, tenant_id: &str) -> Result<Vec<SkillRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {SKILL_COLUMNS} FROM skills s WHERE tenant_id = $1 AND version = \
             (SELECT MAX(version) FROM skills t WHERE t.tenant_id = s.tenant_id AND t.name = s.name) ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(skill).collect()
    }

    /// Deletes every version of a skill; returns their bundles' hashes.
    pub async fn delete_skill(&self, tenant_id: &str, name: &str) -> Result<Vec<String>, Error> {
        let shas: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM skills WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_all(self.pool())
            .await?;
        if shas.is_empty() {
            return Err(Error::NotFound);
        }
        sqlx::query("DELETE FROM skills WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(shas)
    }
}
