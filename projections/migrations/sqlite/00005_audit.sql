-- +goose Up
-- Audit trail (projection "audit"): rows are only ever inserted; each is chained to the
-- previous row of its tenant by hash = SHA-256(prev_hash || canonical entry bytes).
CREATE TABLE audit_conns (
    conn_id   TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
CREATE TABLE audit_entries (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    stream     TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at_us      BIGINT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE UNIQUE INDEX audit_entries_event ON audit_entries (event_id);
CREATE INDEX audit_entries_conn ON audit_entries (tenant_id, conn_id, seq);

-- +goose Down
DROP TABLE audit_entries;
DROP TABLE audit_conns;
