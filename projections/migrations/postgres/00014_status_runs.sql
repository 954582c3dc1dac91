-- +goose Up
-- Message status (projection "message_status"): a broadcast's queued messages held as runs
-- instead of one status_messages row each (issue 12). A run is the Seqs first_seq … last_seq of
-- one BroadcastQueued chunk, its recipients packed at 16 characters (E.164, space-padded, as in
-- queue_runs); status_run_ids finds a message's run from its id (message ids of a broadcast are
-- hashes: they cannot be computed back into a position). A message of a run has status queued
-- (or purged, through status_purges, which are kept while they cover a run) until its first
-- state change gives it its status_messages row, which from then on answers for it. Nothing is
-- converted: existing status_messages rows stay as they are.
CREATE TABLE status_runs (
    conn_id      TEXT NOT NULL,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    tenant_id    TEXT NOT NULL,
    broadcast_id TEXT NOT NULL,
    recipients   TEXT NOT NULL,
    queued_at_us BIGINT NOT NULL,
    PRIMARY KEY (conn_id, first_seq)
);
ALTER TABLE status_runs ALTER COLUMN recipients SET STORAGE EXTERNAL;
CREATE TABLE status_run_ids (
    message_id TEXT PRIMARY KEY,
    conn_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL
);

-- +goose Down
DROP TABLE status_run_ids;
DROP TABLE status_runs;
