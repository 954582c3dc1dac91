-- +goose Up
-- Pending queue (projection "queue"): a broadcast's queued messages held as runs instead of one
-- queue_messages row each (issue 12). A run is the Seqs first_seq … last_seq of one broadcast, its
-- recipients packed at a fixed width of 16 characters (E.164, space-padded), message ids derived
-- (connection.BroadcastMessageID(broadcast_id, first_index + seq - first_seq)), text from
-- queue_broadcasts. Positions below live_from and those in queue_run_gone have left the run
-- (dispatched: their row is in queue_messages from then on; cancelled; expired); gone_count
-- counts the run's queue_run_gone rows. Existing queue_messages rows stay valid as they are:
-- nothing is converted, no rebuild is needed.
CREATE TABLE queue_runs (
    conn_id       TEXT NOT NULL,
    first_seq     BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    live_from     BIGINT NOT NULL,
    gone_count    BIGINT NOT NULL DEFAULT 0,
    broadcast_id  TEXT NOT NULL,
    first_index   BIGINT NOT NULL,
    recipients    TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL DEFAULT 0,
    queued_at_us  BIGINT NOT NULL,
    PRIMARY KEY (conn_id, first_seq)
);
ALTER TABLE queue_runs ALTER COLUMN recipients SET STORAGE EXTERNAL;
CREATE INDEX queue_runs_last ON queue_runs (conn_id, last_seq);
CREATE TABLE queue_run_gone (
    conn_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (conn_id, seq)
);

-- +goose Down
DROP TABLE queue_run_gone;
DROP TABLE queue_runs;
