-- +goose Up
-- events is the event log. position is the rowid: assigned as max+1 by the single writer
-- that holds SQLite's write lock, so position order is commit order and a reader's snapshot
-- is always a gapless prefix of the log. Rows are never updated or deleted.
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    id          BLOB    NOT NULL UNIQUE,  -- the caller-given UUID, 16 bytes
    type        TEXT    NOT NULL,
    data        BLOB,                     -- JSON as given; NULL when empty
    metadata    TEXT,                     -- JSON of eventstore.Metadata; NULL when zero
    recorded_at INTEGER NOT NULL,         -- Unix nanoseconds, UTC, from the store's clock
    UNIQUE (stream, revision)
) STRICT;

-- +goose Down
DROP TABLE events;
