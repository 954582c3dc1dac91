-- +goose Up
-- One token bucket per tenant, shared by every node on this read-model database (package
-- ratelimit, Shared). tokens is what the bucket held at at_us (unix microseconds, the leasing
-- node's clock; it never goes back); per_second and burst are the limit of the latest lease;
-- leased is what the latest lease took (what its RETURNING answers).
CREATE TABLE rate_buckets (
    tenant_id  TEXT PRIMARY KEY,
    per_second DOUBLE PRECISION NOT NULL,
    burst      BIGINT NOT NULL,
    tokens     DOUBLE PRECISION NOT NULL,
    at_us      BIGINT NOT NULL,
    leased     BIGINT NOT NULL
);

-- +goose Down
DROP TABLE rate_buckets;
