-- +goose Up
-- Cancelled messages (MessageCancelled): when a message was cancelled (its detail holds the
-- reason), a broadcast's count of cancelled messages and the analytics day's.
ALTER TABLE status_messages ADD COLUMN cancelled_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE status_broadcasts ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE analytics_daily ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
-- The transport's reason code of the session loss while the link is session_invalid (the card
-- explains it in words with connection.ExplainLogout).
ALTER TABLE card_connections ADD COLUMN logout_reason TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE card_connections DROP COLUMN logout_reason;
ALTER TABLE analytics_daily DROP COLUMN cancelled;
ALTER TABLE status_broadcasts DROP COLUMN cancelled;
ALTER TABLE status_messages DROP COLUMN cancelled_at_us;
