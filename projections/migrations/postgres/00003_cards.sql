-- +goose Up
-- Connection cards (projection "cards").
CREATE TABLE card_connections (
    conn_id             TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    phone               TEXT NOT NULL,
    on_ban              TEXT NOT NULL,
    link_status         TEXT NOT NULL,
    held                BIGINT NOT NULL DEFAULT 0,
    pending             BIGINT NOT NULL DEFAULT 0,
    in_flight           BIGINT NOT NULL DEFAULT 0,
    ban_kind            TEXT NOT NULL DEFAULT '',
    ban_expires_at_us   BIGINT NOT NULL DEFAULT 0,
    ban_reason          TEXT NOT NULL DEFAULT '',
    ban_since_us        BIGINT NOT NULL DEFAULT 0,
    hold_reason         TEXT NOT NULL DEFAULT '',
    hold_actor          TEXT NOT NULL DEFAULT '',
    hold_note           TEXT NOT NULL DEFAULT '',
    hold_since_us       BIGINT NOT NULL DEFAULT 0,
    clear_id            TEXT NOT NULL DEFAULT '',
    clear_requested_by  TEXT NOT NULL DEFAULT '',
    clear_requested_at_us BIGINT NOT NULL DEFAULT 0,
    clear_scope         TEXT NOT NULL DEFAULT '',
    last_problem        TEXT NOT NULL DEFAULT '',
    last_problem_at_us  BIGINT NOT NULL DEFAULT 0,
    registered_at_us    BIGINT NOT NULL,
    updated_at_us       BIGINT NOT NULL
);
CREATE INDEX card_connections_tenant ON card_connections (tenant_id, conn_id);
CREATE TABLE card_in_flight (
    conn_id    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (conn_id, message_id)
);

-- +goose Down
DROP TABLE card_in_flight;
DROP TABLE card_connections;
