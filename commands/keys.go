package commands

import (
	"errors"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// ReplayScan bounds how many of a stream's latest events a replayed command (same idempotency
// key, or a clear completed twice) reads to find the original's figures when the store cannot
// look an event up by id (esdb). A replay older than that still answers with the same id,
// without the figures the stream no longer shows cheaply, and without a fingerprint check.
const ReplayScan = 50_000

// requireKey refuses an empty or too long idempotency key with the domain's validation error.
func requireKey(key string) error {
	if key == "" || len(key) > connection.MaxKeyLen {
		return &connection.ValidationError{Code: connection.CodeMissingIdempotencyKey, Field: "idempotency_key",
			Detail: "must be 1 to 255 bytes"}
	}
	return nil
}

// mayBeReplay reports whether err, returned for a command that carries an idempotency key
// (enqueue, broadcast, clear), may hide a replay of an accepted request, so that the handler
// looks the key's original up before answering (G5: a replay answers the original result in any
// state). That is the store finding the key's event id stored already, and every refusal that
// depends on the queue or link state the original request may have led to: clearing, held,
// link status, a broadcast no longer pending. Validation errors, authorization and not found
// are answered as they are: they do not depend on what happened since.
func mayBeReplay(err error) bool {
	return errors.Is(err, eventstore.ErrDuplicateEventID) || errors.Is(err, connection.ErrQueueClearing) ||
		errors.Is(err, connection.ErrQueueHeld) || errors.Is(err, connection.ErrLinkStatus) ||
		errors.Is(err, connection.ErrBroadcastNotPending)
}
