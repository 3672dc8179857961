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
