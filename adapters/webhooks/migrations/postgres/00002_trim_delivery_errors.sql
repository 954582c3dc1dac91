-- +goose Up
-- Issue 11.7: the delivery log keeps an error class, not the raw error text (addresses, ports,
-- internal messages). Rewrite what older versions stored to the class it falls under.
UPDATE webhook_attempts SET error = CASE
        WHEN status_code BETWEEN 300 AND 399 THEN 'redirect_not_followed'
        WHEN status_code <> 0 THEN 'http_status'
        ELSE 'request_failed' END
    WHERE error <> '' AND error NOT IN ('address_refused', 'dns_failed', 'connect_failed', 'timeout',
        'tls_failed', 'redirect_not_followed', 'http_status', 'request_failed');
UPDATE webhook_deliveries SET last_error = CASE
        WHEN last_status BETWEEN 300 AND 399 THEN 'redirect_not_followed'
        WHEN last_status <> 0 THEN 'http_status'
        ELSE 'request_failed' END
    WHERE last_error <> '' AND last_error NOT IN ('address_refused', 'dns_failed', 'connect_failed', 'timeout',
        'tls_failed', 'redirect_not_followed', 'http_status', 'request_failed');

-- +goose Down
SELECT 1;
