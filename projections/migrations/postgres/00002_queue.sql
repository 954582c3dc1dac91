-- +goose Up
-- Pending queue (projection "queue"). Purges are recorded as Seq ranges (queue_purges) and a
-- per-connection watermark (queue_conns.purged_upto), never by deleting rows synchronously;
-- the collector deletes purged rows later, in chunks.
CREATE TABLE queue_conns (
    conn_id       TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL DEFAULT '',
    held          BIGINT NOT NULL DEFAULT 0,
    clearing_id   TEXT NOT NULL DEFAULT '',
    pending       BIGINT NOT NULL DEFAULT 0,
    in_flight     BIGINT NOT NULL DEFAULT 0,
    purged_upto   BIGINT NOT NULL DEFAULT 0,
    last_seq      BIGINT NOT NULL DEFAULT 0,
    updated_at_us BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE queue_messages (
    conn_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    message_id       TEXT NOT NULL,
    broadcast_id     TEXT NOT NULL DEFAULT '',
    recipient        TEXT NOT NULL,
    text             TEXT NOT NULL DEFAULT '',
    expires_at_us    BIGINT NOT NULL DEFAULT 0,
    queued_at_us     BIGINT NOT NULL,
    dispatched_at_us BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conn_id, seq)
);
CREATE INDEX queue_messages_in_flight ON queue_messages (conn_id, seq) WHERE dispatched_at_us <> 0;
CREATE TABLE queue_broadcasts (
    conn_id      TEXT NOT NULL,
    broadcast_id TEXT NOT NULL,
    text         TEXT NOT NULL,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    total        BIGINT NOT NULL,
    pending      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conn_id, broadcast_id)
);
CREATE INDEX queue_broadcasts_seq ON queue_broadcasts (conn_id, last_seq);
CREATE TABLE queue_purges (
    conn_id  TEXT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq   BIGINT NOT NULL,
    clear_id TEXT NOT NULL,
    gc_next  BIGINT NOT NULL,
    PRIMARY KEY (conn_id, from_seq)
);
CREATE TABLE queue_clears (
    clear_id        TEXT PRIMARY KEY,
    conn_id         TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    stream          TEXT NOT NULL,
    revision        BIGINT NOT NULL,
    broadcast_id    TEXT NOT NULL DEFAULT '',
    requested_by    TEXT NOT NULL,
    reason          TEXT NOT NULL,
    requested_at_us BIGINT NOT NULL,
    up_to_seq       BIGINT NOT NULL,
    purge_count     BIGINT NOT NULL,
    in_flight_count BIGINT NOT NULL,
    completed_at_us BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX queue_clears_open ON queue_clears (completed_at_us);

-- +goose Down
DROP TABLE queue_clears;
DROP TABLE queue_purges;
DROP TABLE queue_broadcasts;
DROP TABLE queue_messages;
DROP TABLE queue_conns;
