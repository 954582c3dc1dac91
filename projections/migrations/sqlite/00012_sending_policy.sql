-- +goose Up
-- The connection's sending policy (SendingPolicyChanged, as its JSON; '' for the defaults) and
-- the messages dispatched on its current local day (the day's first instant and the count), for
-- the card's "today against the cap".
ALTER TABLE card_connections ADD COLUMN sending_policy TEXT NOT NULL DEFAULT '';
ALTER TABLE card_connections ADD COLUMN day_start_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE card_connections ADD COLUMN day_count BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE card_connections DROP COLUMN day_count;
ALTER TABLE card_connections DROP COLUMN day_start_us;
ALTER TABLE card_connections DROP COLUMN sending_policy;
