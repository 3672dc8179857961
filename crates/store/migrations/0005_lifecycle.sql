-- Elastic lifecycle: hibernation after an idle timeout, snapshots with a
-- per-tenant quota, and warm pools.
ALTER TABLE sandboxes ADD COLUMN idle_timeout_ms BIGINT;
ALTER TABLE sandboxes ADD COLUMN snapshot_id TEXT;

ALTER TABLE tenants ADD COLUMN max_snapshots BIGINT NOT NULL DEFAULT 100;
ALTER TABLE tenants ADD COLUMN snapshots BIGINT NOT NULL DEFAULT 0;

CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    template TEXT NOT NULL,
    spec TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX snapshots_tenant ON snapshots (tenant_id, created_ms);

CREATE TABLE pools (
    template TEXT NOT NULL,
    shape TEXT NOT NULL,
    limits TEXT NOT NULL,
    min_ready BIGINT NOT NULL,
    max_ready BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (template, shape)
);
