-- +goose Up
CREATE TABLE projection_checkpoints (
    name          TEXT PRIMARY KEY,
    commit_pos    BIGINT NOT NULL,
    prepare_pos   BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

-- +goose Down
DROP TABLE projection_checkpoints;
