-- +goose Up
-- Clear reports (projection "clears"): one row per clear, from its ClearQueueRequested and its
-- QueueCleared, so that a clear is found and listed without reading the connection's history.
CREATE TABLE clear_conns (
    conn_id   TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
CREATE TABLE clear_reports (
    tenant_id        TEXT NOT NULL,
    conn_id          TEXT NOT NULL,
    clear_id         TEXT NOT NULL,
    -- request_revision is the stream revision of the ClearQueueRequested: it orders a
    -- connection's clears (newest first) and is the list's cursor.
    request_revision BIGINT NOT NULL,
    -- status is requested, then completed.
    status           TEXT NOT NULL,
    scope            TEXT NOT NULL,
    broadcast_id     TEXT NOT NULL DEFAULT '',
    requested_by     TEXT NOT NULL,
    reason           TEXT NOT NULL,
    requested_at_us  BIGINT NOT NULL,
    -- then_action is what the queue becomes after the clear: keep, hold or resume.
    then_action      TEXT NOT NULL,
    up_to_seq        BIGINT NOT NULL,
    -- purged_count, purged (JSON ranges of Seq), in_flight_count and in_flight (JSON) are the
    -- request's figures until completion, then the report's, as the events carry them.
    purged_count     BIGINT NOT NULL,
    purged           TEXT NOT NULL,
    in_flight_count  BIGINT NOT NULL,
    in_flight        TEXT NOT NULL,
    -- not_sent_count and not_sent (JSON): dispatched but never handed over, failed not_sent by
    -- the clear (0 and [] for clears recorded before it existed).
    not_sent_count   BIGINT NOT NULL DEFAULT 0,
    not_sent         TEXT NOT NULL DEFAULT '[]',
    completed_by     TEXT NOT NULL DEFAULT '',
    completed_at_us  BIGINT NOT NULL DEFAULT 0,
    -- queue_after is the queue status the clear left (held or open); '' until completed and
    -- in reports recorded before it existed.
    queue_after      TEXT NOT NULL DEFAULT '',
    -- request and report are the event bodies as recorded (report '' until completed).
    request          TEXT NOT NULL,
    report           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, conn_id, clear_id)
);
CREATE INDEX clear_reports_newest ON clear_reports (tenant_id, conn_id, request_revision);
-- What a clear in progress leaves the queue as, on the connection card.
ALTER TABLE card_connections ADD COLUMN clear_then TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE card_connections DROP COLUMN clear_then;
DROP TABLE clear_reports;
DROP TABLE clear_conns;
