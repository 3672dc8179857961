-- One schema for SQLite and PostgreSQL: TEXT ids, BIGINT milliseconds since
-- the epoch, JSON as TEXT, booleans as BIGINT 0/1. Every statement of the
-- store runs unchanged on both engines.

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    max_sandboxes BIGINT NOT NULL,
    active        BIGINT NOT NULL DEFAULT 0,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    admin        BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    revoked_ms   BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_ms);

CREATE TABLE join_tokens (
    hash       TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms    BIGINT
);

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    joined_ms   BIGINT NOT NULL,
    seen_ms     BIGINT NOT NULL
);

CREATE TABLE sandboxes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    node_id     TEXT NOT NULL,
    template    TEXT NOT NULL,
    state       TEXT NOT NULL,
    spec        TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    ended_ms    BIGINT,
    end_reason  TEXT
);
CREATE INDEX sandboxes_tenant ON sandboxes(tenant_id, created_ms, id);
CREATE INDEX sandboxes_expiry ON sandboxes(state, expires_ms);
CREATE INDEX sandboxes_node ON sandboxes(node_id, state);

CREATE TABLE sandbox_metadata (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
);
CREATE INDEX sandbox_metadata_kv ON sandbox_metadata(key, value);
