-- Network policies and ingress settings of sandboxes (JSON, with secret names, never values) and
-- tenants' secrets (sealed by the control plane; the store sees ciphertext).

ALTER TABLE sandboxes ADD COLUMN network TEXT NOT NULL DEFAULT '{}';
-- Ingress: the sealed per-sandbox access token and the ports made public (JSON).
ALTER TABLE sandboxes ADD COLUMN access TEXT NOT NULL DEFAULT '{}';

CREATE TABLE secrets (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    hosts         TEXT NOT NULL,
    header_name   TEXT NOT NULL,
    header_format TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Egress audit: every connection attempt through a sandbox's proxy, as its
-- node reported it (node, node boot, sequence number identify it once).
CREATE TABLE network_events (
    node_id    TEXT NOT NULL,
    boot       TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    sandbox_id TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    event      TEXT NOT NULL,
    PRIMARY KEY (node_id, boot, seq)
);
CREATE INDEX network_events_sandbox ON network_events(tenant_id, sandbox_id, at_ms);
CREATE INDEX network_events_age ON network_events(at_ms);
