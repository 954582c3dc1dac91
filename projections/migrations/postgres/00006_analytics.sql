-- +goose Up
-- Analytics (projection "analytics"): one row per tenant, connection and UTC day (YYYY-MM-DD of
-- the event's recorded time). Each column counts the events of that day: queued (MessageQueued),
-- dispatched, sent, delivered, read, failed, expired, unknown (outcome unknown), purged (messages
-- purged by the clears requested that day), bans (ConnectionBanned), clears (ClearQueueRequested).
CREATE TABLE analytics_daily (
    tenant_id  TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    day        TEXT NOT NULL,
    queued     BIGINT NOT NULL DEFAULT 0,
    dispatched BIGINT NOT NULL DEFAULT 0,
    sent       BIGINT NOT NULL DEFAULT 0,
    delivered  BIGINT NOT NULL DEFAULT 0,
    read       BIGINT NOT NULL DEFAULT 0,
    failed     BIGINT NOT NULL DEFAULT 0,
    expired    BIGINT NOT NULL DEFAULT 0,
    purged     BIGINT NOT NULL DEFAULT 0,
    unknown    BIGINT NOT NULL DEFAULT 0,
    bans       BIGINT NOT NULL DEFAULT 0,
    clears     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, conn_id, day)
);
CREATE INDEX analytics_daily_day ON analytics_daily (tenant_id, day);
CREATE TABLE analytics_conns (
    conn_id   TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);

-- +goose Down
DROP TABLE analytics_conns;
DROP TABLE analytics_daily;
