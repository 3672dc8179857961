//! Sandboxes as the control plane records them: owner, node, state, expiry,
//! metadata. The quota check and the insert are one transaction.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{now_ms, Error, Store};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
    /// Files kept on its node, no process; the next request wakes it.
    Hibernated,
    Ended,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Hibernated => "hibernated",
            Self::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "paused" => Some(Self::Paused),
            "hibernated" => Some(Self::Hibernated),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// Why a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Deleted through the API.
    Deleted,
    /// Its timeout passed.
    Timeout,
    /// Its node no longer has it (node restarted or the sandbox died).
    Lost,
    /// Its node failed to start it.
    Failed,
    /// The agent turn it was made for ended.
    Completed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Timeout => "timeout",
            Self::Lost => "lost",
            Self::Failed => "failed",
            Self::Completed => "completed",
        }
    }
}

/// A sandbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxRow {
    pub id: String,
    pub tenant_id: String,
    pub node_id: String,
    pub template: String,
    pub state: SandboxState,
    /// The creation request as JSON (limits, env, …), opaque to the store.
    pub spec: String,
    /// The network policy as JSON (secret names, never values), opaque to the store.
    pub network: String,
    /// Ingress settings as JSON (sealed access token, public ports), opaque to the store.
    pub access: String,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub ended_ms: Option<i64>,
    pub end_reason: Option<String>,
    /// What its timeout does: `release` or `pause`.
    pub on_timeout: String,
    /// Hibernated after this long without activity.
    pub idle_timeout_ms: Option<i64>,
    /// The snapshot it was made from.
    pub snapshot_id: Option<String>,
}

/// What [`Store::insert_sandbox`] needs.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub id: String,
    pub tenant_id: String,
    pub node_id: String,
    pub template: String,
    pub spec: String,
    pub network: String,
    pub access: String,
    pub metadata: BTreeMap<String, String>,
    /// It expires this long after its row is written (its `created_ms`).
    pub timeout_ms: i64,
    pub idle_timeout_ms: Option<i64>,
    pub snapshot_id: Option<String>,
}

/// Which sandboxes to list.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Any of these states; every live one (running, paused, hibernated) when empty.
    pub states: Vec<SandboxState>,
    /// Every pair must match.
    pub metadata: BTreeMap<String, String>,
    /// From [`Page::next`].
    pub cursor: Option<String>,
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<SandboxRow>,
    /// Pass back as [`SandboxFilter::cursor`] for the next page; `None` at the end.
    pub next: Option<String>,
}

/// Live rows, as the `(state, …)` indexes can find them (`state <> 'ended'`
/// would walk every ended row too: ended rows pile up until purged).
const LIVE: &str = "state IN ('running', 'paused', 'hibernated')";

const COLUMNS: &str = "id, tenant_id, node_id, template, state, spec, metadata, created_ms, expires_ms, ended_ms, \
                       end_reason, network, access, on_timeout, idle_timeout_ms, snapshot_id";

fn sandbox(row: &AnyRow) -> Result<SandboxRow, Error> {
    let state: String = row.try_get("state")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(SandboxRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        node_id: row.try_get("node_id")?,
        template: row.try_get("template")?,
        state: SandboxState::parse(&state).ok_or_else(|| Error::Conflict(format!("unknown state {state}")))?,
        spec: row.try_get("spec")?,
        network: row.try_get("network")?,
        access: row.try_get("access")?,
        metadata: serde_json::from_str(&metadata)?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        end_reason: row.try_get("end_reason")?,
        on_timeout: row.try_get("on_timeout")?,
        idle_timeout_ms: row.try_get("idle_timeout_ms")?,
        snapshot_id: row.try_get("snapshot_id")?,
    })
}

fn encode_cursor(row: &SandboxRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", row.created_ms, row.id))
}

/// A cursor back into (created_ms, id); `None` when it is not one of ours.
pub(crate) fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (ms, id) = raw.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

impl Store {
    /// Records a new running sandbox if its tenant is under quota, in one
    /// transaction (the tenant's counter is the lock).
    pub async fn insert_sandbox(&self, new: &NewSandbox) -> Result<SandboxRow, Error> {
        let _w = self.writing().await;
        let mut tx = self.pool().begin().await?;
        let took = sqlx::query("UPDATE tenants SET active = active + 1 WHERE id = $1 AND active < max_sandboxes")
            .bind(&new.tenant_id)
            .execute(&mut *tx)
            .await?;
        if took.rows_affected() == 0 {
            let limit: Option<i64> = sqlx::query_scalar("SELECT max_sandboxes FROM tenants WHERE id = $1")
                .bind(&new.tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(limit.map_or(Error::NotFound, |limit| Error::Quota { limit }));
        }
        let created_ms = now_ms();
        let row = SandboxRow {
            id: new.id.clone(),
            tenant_id: new.tenant_id.clone(),
            node_id: new.node_id.clone(),
            template: new.template.clone(),
            state: SandboxState::Running,
            spec: new.spec.clone(),
            network: new.network.clone(),
            access: new.access.clone(),
            metadata: new.metadata.clone(),
            created_ms,
            expires_ms: created_ms.saturating_add(new.timeout_ms),
            ended_ms: None,
            end_reason: None,
            on_timeout: "release".to_owned(),
            idle_timeout_ms: new.idle_timeout_ms,
            snapshot_id: new.snapshot_id.clone(),
        };
        sqlx::query(&format!(
            "INSERT INTO sandboxes ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11, $12, $13, $14)"
        ))
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.node_id)
        .bind(&row.template)
        .bind(row.state.as_str())
        .bind(&row.spec)
        .bind(serde_json::to_string(&row.metadata)?)
        .bind(row.created_ms)
        .bind(row.expires_ms)
        .bind(&row.network)
        .bind(&row.access)
        .bind(&row.on_timeout)
        .bind(row.idle_timeout_ms)
        .bind(&row.snapshot_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::unique(e, "sandbox id already exists"))?;
        for (k, v) in &row.metadata {
            sqlx::query("INSERT INTO sandbox_metadata (sandbox_id, key, value) VALUES ($1, $2, $3)")
                .bind(&row.id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// A tenant's sandbox; another tenant's is [`Error::NotFound`].
    pub async fn sandbox(&self, tenant_id: &str, id: &str) -> Result<SandboxRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        sandbox(&row)
    }

    /// A page of a tenant's sandboxes, oldest first.
    pub async fn sandboxes(&self, tenant_id: &str, filter: &SandboxFilter) -> Result<Page, Error> {
        let states = if filter.states.is_empty() {
            vec![SandboxState::Running, SandboxState::Paused, SandboxState::Hibernated]
        } else {
            filter.states.clone()
        };
        let limit = filter.limit.clamp(1, 1000);
        let mut sql = format!("SELECT {COLUMNS} FROM sandboxes s WHERE tenant_id = $1");
        let mut args: Vec<String> = vec![tenant_id.to_owned()];
        let param = |args: &mut Vec<String>, v: String| {
            args.push(v);
            format!("${}", args.len())
        };
        let placeholders: Vec<String> = states.iter().map(|s| param(&mut args, s.as_str().to_owned())).collect();
        sql += &format!(" AND state IN ({})", placeholders.join(", "));
        for (k, v) in &filter.metadata {
            let (pk, pv) = (param(&mut args, k.clone()), param(&mut args, v.clone()));
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM sandbox_metadata m WHERE m.sandbox_id = s.id AND m.key = {pk} AND m.value = {pv})"
            );
        }
        let cursor = match &filter.cursor {
            Some(c) => Some(decode_cursor(c).ok_or_else(|| Error::Conflict("invalid cursor".into()))?),
            None => None,
        };
        if let Some((_, id)) = &cursor {
            let pid = param(&mut args, id.clone());
            // The timestamp is bound as a number below; it is the next parameter.
            let pms = format!("${}", args.len() + 1);
            sql += &format!(" AND (created_ms > {pms} OR (created_ms = {pms} AND id > {pid}))");
        }
        sql += &format!(" ORDER BY created_ms, id LIMIT {}", limit + 1);
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = query.bind(a.clone());
        }
        if let Some((ms, _)) = cursor {
            query = query.bind(ms);
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut items = rows.iter().map(sandbox).collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Switches between running and paused; [`Error::NotFound`] when the
    /// sandbox is not the tenant's or has ended.
    pub async fn set_sandbox_state(&self, tenant_id: &str, id: &str, state: SandboxState) -> Result<(), Error> {
        let done = sqlx::query("UPDATE sandboxes SET state = $3 WHERE id = $1 AND tenant_id = $2 AND state <> 'ended'")
            .bind(id)
            .bind(tenant_id)
            .bind(state.as_str())
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Marks a running or paused sandbox hibernated by its node, keeping it
    /// at least until `keep_until_ms`; false when it was not so.
    pub async fn mark_hibernated(&self, id: &str, keep_until_ms: i64) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = 'hibernated', \
             expires_ms = CASE WHEN expires_ms < $2 THEN $2 ELSE expires_ms END \
             WHERE id = $1 AND state IN ('running', 'paused')",
        )
        .bind(id)
        .bind(keep_until_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a hibernated sandbox running again (its node woke it); false when it was not hibernated.
    pub async fn mark_woken(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE sandboxes SET state = 'running' WHERE id = $1 AND state = 'hibernated'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves a live sandbox's expiry.
    pub async fn set_sandbox_expiry(&self, tenant_id: &str, id: &str, expires_ms: i64) -> Result<(), Error> {
        let done =
            sqlx::query("UPDATE sandboxes SET expires_ms = $3 WHERE id = $1 AND tenant_id = $2 AND state <> 'ended'")
                .bind(id)
                .bind(tenant_id)
                .bind(expires_ms)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Replaces a live sandbox's network policy.
    pub async fn set_sandbox_network(&self, tenant_id: &str, id: &str, network: &str) -> Result<(), Error> {
        self.set_live_text(tenant_id, id, "network", network).await
    }

    /// Replaces a live sandbox's ingress settings.
    pub async fn set_sandbox_access(&self, tenant_id: &str, id: &str, access: &str) -> Result<(), Error> {
        self.set_live_text(tenant_id, id, "access", access).await
    }

    /// Sets one text column (a constant of this module) of a live sandbox of the tenant.
    async fn set_live_text(&self, tenant_id: &str, id: &str, column: &'static str, value: &str) -> Result<(), Error> {
        let sql = format!("UPDATE sandboxes SET {column} = $3 WHERE id = $1 AND tenant_id = $2 AND state <> 'ended'");
        let done = sqlx::query(&sql).bind(id).bind(tenant_id).bind(value).execute(self.pool()).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// A live sandbox by id alone, whatever its tenant (ingress, which is
    /// authorized by the sandbox's own token).
    pub async fn live_sandbox(&self, id: &str) -> Result<SandboxRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1 AND state <> 'ended'"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        sandbox(&row)
    }

    /// Marks a sandbox ended and frees its quota, once: returns false when it
    /// had already ended.
    pub async fn end_sandbox(&self, id: &str, reason: EndReason) -> Result<bool, Error> {
        let _w = self.writing().await;
        let mut tx = self.pool().begin().await?;
        let ended = end_in(&mut tx, id, reason).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Live sandboxes whose expiry is before `now_ms`.
    pub async fn expired_sandboxes(&self, now_ms: i64) -> Result<Vec<SandboxRow>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE {LIVE} AND expires_ms <= $1"))
            .bind(now_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(sandbox).collect()
    }

    /// Sets what a live sandbox's timeout does (`release` or `pause`).
    pub async fn set_sandbox_on_timeout(&self, tenant_id: &str, id: &str, on_timeout: &str) -> Result<(), Error> {
        let done =
            sqlx::query("UPDATE sandboxes SET on_timeout = $3 WHERE tenant_id = $1 AND id = $2 AND state <> 'ended'")
                .bind(tenant_id)
                .bind(id)
                .bind(on_timeout)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Live sandboxes placed on `node_id`.
    pub async fn node_sandboxes(&self, node_id: &str) -> Result<Vec<SandboxRow>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE node_id = $1 AND {LIVE}"))
            .bind(node_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(sandbox).collect()
    }

    /// Live sandboxes per state, for metrics.
    pub async fn sandbox_counts(&self) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query(&format!("SELECT state, COUNT(*) AS n FROM sandboxes WHERE {LIVE} GROUP BY state"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
    }

    /// Deletes ended sandboxes older than `before_ms`; returns how many.
    pub async fn purge_ended(&self, before_ms: i64) -> Result<u64, Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM sandbox_metadata WHERE sandbox_id IN \
             (SELECT id FROM sandboxes WHERE state = 'ended' AND ended_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM sandboxes WHERE state = 'ended' AND ended_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// Ends one sandbox inside a transaction; the tenant counter drops with it.
async fn end_in(conn: &mut AnyConnection, id: &str, reason: EndReason) -> Result<bool, Error> {
    let tenant: Option<String> = sqlx::query_scalar(
        "UPDATE sandboxes SET state = 'ended', ended_ms = $2, end_reason = $3 \
         WHERE id = $1 AND state <> 'ended' RETURNING tenant_id",
    )
    .bind(id)
    .bind(now_ms())
    .bind(reason.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(tenant) = tenant else { return Ok(false) };
    sqlx::query("UPDATE tenants SET active = active - 1 WHERE id = $1 AND active > 0")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}
