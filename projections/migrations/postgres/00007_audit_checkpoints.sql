-- +goose Up
-- Signed checkpoints of each tenant's audit chain (projection "audit", from the
-- AuditCheckpointSigned events of the streams auditcp-<tenant>). Keyed by tenant: the chain is
-- per tenant, not per connection. The private key is never stored.
CREATE TABLE audit_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    head_hash  TEXT NOT NULL,
    at_us      BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- +goose Down
DROP TABLE audit_checkpoints;
