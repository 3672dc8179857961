//! Agent sessions: each one's head row and append-only event log.
//!
//! Exactly one worker drives a session at a time. It holds the session's
//! *lease* (an owner, an expiry, and an epoch that grows with every grant);
//! every append names the epoch it was granted under and is refused with
//! [`Error::Fenced`] once another worker has taken the session over, so a
//! stalled worker that wakes up cannot write behind its successor's back.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{new_id, now_ms, Error, Store};

/// Deletes a tenant's sessions whose `column` (`id` or `agent_id`) is
/// `value`, with their logs and idempotency keys, in `tx`; how many went.
pub(crate) async fn delete_sessions_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
    column: &'static str,
    value: &str,
) -> Result<u64, Error> {
    let which = format!("SELECT id FROM sessions WHERE tenant_id = $1 AND {column} = $2");
    for table in ["session_events", "session_messages"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE session_id IN ({which})"))
            .bind(tenant_id)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    let done = sqlx::query(&format!("DELETE FROM sessions WHERE tenant_id = $1 AND {column} = $2"))
        .bind(tenant_id)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// A session's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    /// `idle`, `running` or `waiting`.
    pub status: String,
    /// Sequence number the next event gets.
    pub next_seq: i64,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_until_ms: i64,
    pub cancel_requested: bool,
    pub sandbox_id: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "id, tenant_id, agent_id, status, next_seq, lease_owner, lease_until_ms, cancel_requested, \
                       sandbox_id, tokens_in, tokens_out, created_ms, updated_ms";

fn session(row: &AnyRow) -> Result<SessionRow, Error> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        agent_id: row.try_get("agent_id")?,
        status: row.try_get("status")?,
        next_seq: row.try_get("next_seq")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        cancel_requested: row.try_get::<i32, _>("cancel_requested")? != 0,
        sandbox_id: row.try_get("sandbox_id")?,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// The right to append to one session, until another worker takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session_id: String,
    pub owner: String,
    pub epoch: i64,
}

/// One entry of a session's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    /// JSON.
    pub body: String,
    pub at_ms: i64,
}

/// What an append also changes on the session's head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendEffects<'a> {
    /// New status.
    pub status: Option<&'a str>,
    /// Tokens used (input, output), added to the session's and the agent's counts.
    pub tokens: Option<(i64, i64)>,
    /// Clears a cancel request (the turn it asked to stop has ended).
    pub clear_cancel: bool,
    /// A user message's idempotency key, recorded with the event's seq.
    pub idempotency_key: Option<&'a str>,
}

impl Store {
    /// Starts an idle session of an agent.
    pub async fn create_session(&self, tenant_id: &str, agent_id: &str) -> Result<SessionRow, Error> {
        let id = new_id("ses");
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, agent_id, status, created_ms, updated_ms) \
             VALUES ($1, $2, $3, 'idle', $4, $4)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(agent_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.session(tenant_id, &id).await
    }

    /// A tenant's session; another tenant's is [`Error::NotFound`].
    pub async fn session(&self, tenant_id: &str, id: &str) -> Result<SessionRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sessions WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        session(&row)
    }

    /// A session by id alone, for workers (which hold no principal).
    pub async fn session_by_id(&self, id: &str) -> Result<SessionRow, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(Error::NotFound)?;
        session(&row)
    }

    /// A tenant's sessions, newest first, optionally of one agent.
    pub async fn sessions(&self, tenant_id: &str, agent_id: Option<&str>) -> Result<Vec<SessionRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE tenant_id = $1 AND ($2 = '' OR agent_id = $2) \
             ORDER BY created_ms DESC, id LIMIT 1000"
        ))
        .bind(tenant_id)
        .bind(agent_id.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session).collect()
    }

    /// Deletes a session and its log.
    pub async fn delete_session(&self, tenant_id: &str, id: &str) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        if delete_sessions_in(&mut tx, tenant_id, "id", id).await? == 0 {
            return Err(Error::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes a session's lease for `ttl_ms` when nobody holds it (or the
    /// holder's has expired). `None` when another worker holds it.
    pub async fn acquire_lease(&self, session_id: &str, owner: &str, ttl_ms: i64) -> Result<Option<Lease>, Error> {
        let now = now_ms();
        let _w = self.writing().await;
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET lease_owner = $2, lease_epoch = lease_epoch + 1, lease_until_ms = $3 \
             WHERE id = $1 AND (lease_owner IS NULL OR lease_until_ms < $4) RETURNING lease_epoch",
        )
        .bind(session_id)
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(epoch.map(|epoch| Lease { session_id: session_id.to_owned(), owner: owner.to_owned(), epoch }))
    }

    /// Extends a lease; [`Error::Fenced`] when it was taken over.
    pub async fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<(), Error> {
        let _w = self.writing().await;
        let done = sqlx::query("UPDATE sessions SET lease_until_ms = $3 WHERE id = $1 AND lease_epoch = $2")
            .bind(&lease.session_id)
            .bind(lease.epoch)
            .bind(now_ms() + ttl_ms)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Fenced);
        }
        Ok(())
    }

    /// Gives a lease up, leaving the session in `status`.
    pub async fn release_lease(&self, lease: &Lease, status: &str) -> Result<(), Error> {
        let _w = self.writing().await;
        let done = sqlx::query(
            "UPDATE sessions SET lease_owner = NULL, lease_until_ms = 0, status = $3, updated_ms = $4 \
             WHERE id = $1 AND lease_epoch = $2",
        )
        .bind(&lease.session_id)
        .bind(lease.epoch)
        .bind(status)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Fenced);
        }
        Ok(())
    }

    /// Appends one event under `lease` and applies `effects`, atomically;
    /// returns the event's sequence number. [`Error::Fenced`] when the lease
    /// was taken over; [`Error::Conflict`] when `idempotency_key` was used.
    pub async fn append_event(
        &self,
        lease: &Lease,
        kind: &str,
        body: &str,
        effects: AppendEffects<'_>,
    ) -> Result<i64, Error> {
        let now = now_ms();
        let (tin, tout) = effects.tokens.unwrap_or((0, 0));
        let _w = self.writing().await;
        let mut tx = self.pool().begin().await?;
        let seq: Option<(i64, String)> = sqlx::query_as(
            "UPDATE sessions SET next_seq = next_seq + 1, updated_ms = $3, status = COALESCE($4, status), \
             tokens_in = tokens_in + $5, tokens_out = tokens_out + $6, \
             cancel_requested = CASE WHEN $7 = 1 THEN 0 ELSE cancel_requested END \
             WHERE id = $1 AND lease_epoch = $2 RETURNING next_seq - 1, agent_id",
        )
        .bind(&lease.session_id)
        .bind(lease.epoch)
        .bind(now)
        .bind(effects.status)
        .bind(tin)
        .bind(tout)
        .bind(i32::from(effects.clear_cancel))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((seq, agent_id)) = seq else { return Err(Error::Fenced) };
        sqlx::query("INSERT INTO session_events (session_id, seq, kind, body, at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(&lease.session_id)
            .bind(seq)
            .bind(kind)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = effects.idempotency_key {
            sqlx::query("INSERT INTO session_messages (session_id, idempotency_key, seq) VALUES ($1, $2, $3)")
                .bind(&lease.session_id)
                .bind(key)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::unique(e, "idempotency key used"))?;
        }
        if tin != 0 || tout != 0 {
            sqlx::query("UPDATE agents SET tokens_in = tokens_in + $2, tokens_out = tokens_out + $3 WHERE id = $1")
                .bind(&agent_id)
                .bind(tin)
                .bind(tout)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// The turn (message seq) a client idempotency key started, if any.
    pub async fn message_by_key(&self, session_id: &str, key: &str) -> Result<Option<i64>, Error> {
        Ok(sqlx::query_scalar("SELECT seq FROM session_messages WHERE session_id = $1 AND idempotency_key = $2")
            .bind(session_id)
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events(&self, session_id: &str, after: i64, limit: i64) -> Result<Vec<EventRow>, Error> {
        let rows = sqlx::query(
            "SELECT seq, kind, body, at_ms FROM session_events WHERE session_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(session_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    body: r.try_get("body")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    /// Asks the worker driving a session to stop its turn.
    pub async fn request_cancel(&self, tenant_id: &str, id: &str) -> Result<(), Error> {
        let done = sqlx::query("UPDATE sessions SET cancel_requested = 1 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Records the sandbox a session works in (`None`: released).
    pub async fn set_session_sandbox(&self, lease: &Lease, sandbox_id: Option<&str>) -> Result<(), Error> {
        let _w = self.writing().await;
        let done = sqlx::query("UPDATE sessions SET sandbox_id = $3 WHERE id = $1 AND lease_epoch = $2")
            .bind(&lease.session_id)
            .bind(lease.epoch)
            .bind(sandbox_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Fenced);
        }
        Ok(())
    }

    /// Expires the leases held by earlier runs of this server instance
    /// (owners `PREFIX…` other than `current`): those processes are gone, so
    /// their sessions need not wait for the leases to run out.
    pub async fn expire_leases_of(&self, prefix: &str, current: &str) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE sessions SET lease_until_ms = 0 WHERE lease_owner IS NOT NULL AND lease_owner <> $2 \
             AND SUBSTR(lease_owner, 1, $3) = $1",
        )
        .bind(prefix)
        .bind(current)
        .bind(prefix.len() as i64)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Sessions with a turn to drive whose lease is free or expired.
    pub async fn orphaned_sessions(&self, limit: i64) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM sessions WHERE status = 'running' AND (lease_owner IS NULL OR lease_until_ms < $1) \
             ORDER BY updated_ms LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
