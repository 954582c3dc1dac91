-- +goose Up
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    url           TEXT NOT NULL,
    event_types   TEXT NOT NULL,
    secret        TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    deleted_at_us BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, deleted_at_us);

CREATE TABLE webhook_deliveries (
    id                 BIGSERIAL PRIMARY KEY,
    webhook_id         TEXT NOT NULL REFERENCES webhooks (id),
    tenant_id          TEXT NOT NULL,
    event_id           TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    payload            TEXT NOT NULL,
    created_at_us      BIGINT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us BIGINT NOT NULL,
    claimed_until_us   BIGINT NOT NULL DEFAULT 0,
    last_status        INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT NOT NULL DEFAULT '',
    delivered_at_us    BIGINT NOT NULL DEFAULT 0,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (delivered_at_us, next_attempt_at_us);

CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id),
    attempt     INTEGER NOT NULL,
    at_us       BIGINT NOT NULL,
    status_code INTEGER NOT NULL,
    error       TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- +goose Down
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
