package commands

import (
	"github.com/waqueue/waqueue/domain/connection"
)

// ReplayScan bounds how many of a stream's latest events a replayed command (same idempotency
// key, or a clear completed twice) reads to find the original's figures. A replay older than
// that still answers with the same id, without the figures the stream no longer shows cheaply.
const ReplayScan = 50_000

// requireKey refuses an empty or too long idempotency key with the domain's validation error.
func requireKey(key string) error {
	if key == "" || len(key) > connection.MaxKeyLen {
		return &connection.ValidationError{Code: connection.CodeMissingIdempotencyKey, Field: "idempotency_key",
			Detail: "must be 1 to 255 bytes"}
	}
	return nil
}
