-- +goose Up
CREATE TABLE projection_checkpoints (
    name          TEXT PRIMARY KEY,
    commit_pos    INTEGER NOT NULL,
    prepare_pos   INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
);

-- +goose Down
DROP TABLE projection_checkpoints;
