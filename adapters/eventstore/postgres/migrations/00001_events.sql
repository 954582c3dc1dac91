-- The global log of the event store. See the package doc of adapters/eventstore/postgres for
-- why the global order is (tx_id, seq) and not seq alone.

-- +goose Up
CREATE TABLE waqueue_events (
    -- tx_id is the id of the appending transaction (assigned on its first write); seq orders the
    -- events within it. eventstore.Position is {Commit: tx_id, Prepare: seq}.
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq            bigserial   NOT NULL,
    id             uuid        NOT NULL,
    stream         text        NOT NULL,
    revision       bigint      NOT NULL CHECK (revision >= 0),
    type           text        NOT NULL,
    -- json, not jsonb: the body is stored and returned byte for byte.
    data           json,
    tenant_id      text        NOT NULL DEFAULT '',
    actor          text        NOT NULL DEFAULT '',
    correlation_id text        NOT NULL DEFAULT '',
    causation_id   text        NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL,
    CONSTRAINT waqueue_events_pkey PRIMARY KEY (tx_id, seq),
    CONSTRAINT waqueue_events_stream_revision_key UNIQUE (stream, revision),
    CONSTRAINT waqueue_events_id_key UNIQUE (id)
);

-- +goose Down
DROP TABLE waqueue_events;
