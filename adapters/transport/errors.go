package transport

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Send outcome sentinels. Every error Send returns matches exactly one of them.
var (
	// ErrRateLimited: refused before anything was sent; retry with backoff.
	ErrRateLimited = errors.New("transport: rate limited, nothing sent")
	// ErrNotConnected: not logged in or not connected; nothing was sent.
	ErrNotConnected = errors.New("transport: connection not logged in or not connected, nothing sent")
	// ErrRejected: definite failure; the message was not and will not be accepted.
	ErrRejected = errors.New("transport: message rejected")
	// ErrOutcomeUnknown: the message may have been sent; never resend it automatically.
	ErrOutcomeUnknown = errors.New("transport: outcome unknown, message may have been sent")
)

// Lifecycle sentinels, returned by Connect, PairQR and PairPhone.
var (
	// ErrNotPaired: the connection has no stored session; pair it first.
	ErrNotPaired = errors.New("transport: connection not paired")
	// ErrAlreadyPaired: the connection has a stored session; pairing again needs a logout first.
	ErrAlreadyPaired = errors.New("transport: connection already paired")
	// ErrPairingInProgress: a pairing for the connection is already running.
	ErrPairingInProgress = errors.New("transport: pairing already in progress")
)

// SendError is the error Send returns. Kind is one of the four outcome sentinels, and errors.Is
// matches it; Err is the adapter's underlying cause, reachable through errors.Unwrap/As.
type SendError struct {
	// Kind is ErrRateLimited, ErrNotConnected, ErrRejected or ErrOutcomeUnknown.
	Kind         error
	ConnectionID string
	MessageID    uuid.UUID
	// RetryAfter is a backoff hint for ErrRateLimited; zero means "choose your own".
	RetryAfter time.Duration
	// Reason says in words why, e.g. "client has no logged-in session".
	Reason string
	// Err is the underlying cause, if any.
	Err error
}

// Error implements error.
func (e *SendError) Error() string {
	msg := fmt.Sprintf("%v: connection %s message %s", e.Kind, e.ConnectionID, e.MessageID)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is matches the outcome sentinel.
func (e *SendError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying cause.
func (e *SendError) Unwrap() error { return e.Err }

// Retryable reports whether err proves nothing was sent and a later retry is safe
// (ErrRateLimited or ErrNotConnected).
func Retryable(err error) bool {
	return errors.Is(err, ErrRateLimited) || errors.Is(err, ErrNotConnected)
}
