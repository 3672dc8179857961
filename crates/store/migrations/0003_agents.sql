-- Agents, their sessions and each session's append-only log, and skills.

CREATE TABLE agents (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    -- The agent's definition (JSON); secrets by name, never values.
    spec       TEXT NOT NULL,
    -- The node that holds the agent's volume (set at its first sandbox).
    volume_node TEXT,
    tokens_in  BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A session's row is its head: who holds it (lease owner and epoch: every
-- append names the epoch it was granted, so a superseded worker cannot
-- write), where its log ends, and what it waits for.
CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    -- idle (waits for a message) | running (a turn to drive) | waiting (an approval)
    status           TEXT NOT NULL,
    next_seq         BIGINT NOT NULL DEFAULT 1,
    lease_owner      TEXT,
    lease_epoch      BIGINT NOT NULL DEFAULT 0,
    lease_until_ms   BIGINT NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    sandbox_id       TEXT,
    tokens_in        BIGINT NOT NULL DEFAULT 0,
    tokens_out       BIGINT NOT NULL DEFAULT 0,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL
);
CREATE INDEX sessions_agent ON sessions(tenant_id, agent_id, created_ms);
CREATE INDEX sessions_runnable ON sessions(status, lease_until_ms);

CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Client idempotency keys of user messages: a repeated key names the same turn.
CREATE TABLE session_messages (
    session_id      TEXT NOT NULL REFERENCES sessions(id),
    idempotency_key TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (session_id, idempotency_key)
);

-- Skill bundles: versioned, content-addressed (the bundle is in the blob store).
CREATE TABLE skills (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    description TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
