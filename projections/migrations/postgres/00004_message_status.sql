-- +goose Up
-- Message status (projection "message_status"). A message covered by a clear keeps status
-- 'queued' here until the collector materializes it; reads resolve it through status_purges.
CREATE TABLE status_conns (
    conn_id   TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
CREATE TABLE status_messages (
    message_id       TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    conn_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    broadcast_id     TEXT NOT NULL DEFAULT '',
    recipient        TEXT NOT NULL,
    status           TEXT NOT NULL,
    queued_at_us     BIGINT NOT NULL,
    dispatched_at_us BIGINT NOT NULL DEFAULT 0,
    sent_at_us       BIGINT NOT NULL DEFAULT 0,
    delivered_at_us  BIGINT NOT NULL DEFAULT 0,
    read_at_us       BIGINT NOT NULL DEFAULT 0,
    failed_at_us     BIGINT NOT NULL DEFAULT 0,
    expired_at_us    BIGINT NOT NULL DEFAULT 0,
    purged_at_us     BIGINT NOT NULL DEFAULT 0,
    unknown_at_us    BIGINT NOT NULL DEFAULT 0,
    clear_id         TEXT NOT NULL DEFAULT '',
    fail_code        TEXT NOT NULL DEFAULT '',
    detail           TEXT NOT NULL DEFAULT '',
    server_id        TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX status_messages_seq ON status_messages (conn_id, seq);
CREATE INDEX status_messages_broadcast ON status_messages (broadcast_id) WHERE broadcast_id <> '';
CREATE TABLE status_broadcasts (
    broadcast_id TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    conn_id      TEXT NOT NULL,
    total        BIGINT NOT NULL,
    first_seq    BIGINT NOT NULL,
    started_at_us BIGINT NOT NULL,
    queued       BIGINT NOT NULL DEFAULT 0,
    dispatched   BIGINT NOT NULL DEFAULT 0,
    sent         BIGINT NOT NULL DEFAULT 0,
    delivered    BIGINT NOT NULL DEFAULT 0,
    read         BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    purged       BIGINT NOT NULL DEFAULT 0,
    expired      BIGINT NOT NULL DEFAULT 0,
    unknown      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX status_broadcasts_conn ON status_broadcasts (conn_id, first_seq);
CREATE TABLE status_purges (
    conn_id      TEXT NOT NULL,
    from_seq     BIGINT NOT NULL,
    to_seq       BIGINT NOT NULL,
    clear_id     TEXT NOT NULL,
    purged_at_us BIGINT NOT NULL,
    gc_next      BIGINT NOT NULL,
    PRIMARY KEY (conn_id, from_seq)
);

-- +goose Down
DROP TABLE status_purges;
DROP TABLE status_broadcasts;
DROP TABLE status_messages;
DROP TABLE status_conns;
