-- +goose Up
-- Guarantee G9: a delivery's number in the API is its number within its webhook (seq: 1, 2, 3…),
-- never the table's id, which counts every tenant's deliveries. webhooks.last_delivery_seq is
-- the number of the webhook's newest delivery (0 before the first); the outbox bumps it in the
-- transaction that inserts the deliveries. Existing deliveries are numbered in id order.
ALTER TABLE webhooks ADD COLUMN last_delivery_seq BIGINT NOT NULL DEFAULT 0;
-- No default: a binary older than this migration, inserting without seq, fails instead of
-- numbering a delivery 0.
ALTER TABLE webhook_deliveries ADD COLUMN seq BIGINT;
UPDATE webhook_deliveries SET seq = n.seq
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY id) AS seq FROM webhook_deliveries) AS n
    WHERE webhook_deliveries.id = n.id;
ALTER TABLE webhook_deliveries ALTER COLUMN seq SET NOT NULL;
UPDATE webhooks SET last_delivery_seq = (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = webhooks.id);
CREATE UNIQUE INDEX webhook_deliveries_seq ON webhook_deliveries (webhook_id, seq);

-- +goose Down
DROP INDEX webhook_deliveries_seq;
ALTER TABLE webhook_deliveries DROP COLUMN seq;
ALTER TABLE webhooks DROP COLUMN last_delivery_seq;
