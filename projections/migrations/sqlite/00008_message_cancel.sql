-- +goose Up
-- Cancelled messages (MessageCancelled): when a message was cancelled (its detail holds the
-- reason), a broadcast's count of cancelled messages and the analytics day's.
ALTER TABLE status_messages ADD COLUMN cancelled_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE status_broadcasts ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE analytics_daily ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE analytics_daily DROP COLUMN cancelled;
ALTER TABLE status_broadcasts DROP COLUMN cancelled;
ALTER TABLE status_messages DROP COLUMN cancelled_at_us;
