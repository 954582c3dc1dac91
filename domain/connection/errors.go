package connection

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Sentinel errors. Match with errors.Is; the typed errors below carry the values and match the
// sentinel named in their doc comment.
var (
	// ErrInvalidCommand: a command failed validation (*ValidationError).
	ErrInvalidCommand = errors.New("connection: invalid command")
	// ErrNotRegistered: the connection has no ConnectionRegistered (the stream is empty).
	ErrNotRegistered = errors.New("connection: not registered")
	// ErrAlreadyRegistered: Register on a registered connection.
	ErrAlreadyRegistered = errors.New("connection: already registered")
	// ErrQueueClearing: the queue is clearing (*ClearingError). HTTP 409, code queue_clearing.
	ErrQueueClearing = errors.New("connection: queue clearing")
	// ErrQueueHeld: dispatch refused because the queue is held (*QueueHeldError).
	ErrQueueHeld = errors.New("connection: queue held")
	// ErrAlreadyHeld: Hold on a held queue.
	ErrAlreadyHeld = errors.New("connection: queue already held")
	// ErrNotHeld: Resume on a queue that is not held.
	ErrNotHeld = errors.New("connection: queue not held")
	// ErrLinkStatus: the operation is not allowed in the connection's link status
	// (*LinkStatusError); dispatch needs an active link.
	ErrLinkStatus = errors.New("connection: not allowed in this link status")
	// ErrNoClearInProgress: CompleteClear while no clear is in progress, or for another clear id.
	ErrNoClearInProgress = errors.New("connection: no such clear in progress")
	// ErrBroadcastNotPending: a clear scoped to a broadcast that has no pending message on the
	// connection (unknown, fully dispatched, or already cleared) (*BroadcastNotPendingError).
	ErrBroadcastNotPending = errors.New("connection: broadcast has no pending message")
	// ErrAlreadyDisposed: dispatch or expiry of a message that was already dispatched, expired
	// or purged (*SequenceError). Together with the store's event ids this is G5.
	ErrAlreadyDisposed = errors.New("connection: message already dispatched, expired or purged")
	// ErrNotNext: dispatch or expiry of a message that is not the head of the queue
	// (*SequenceError); the queue is worked strictly in order.
	ErrNotNext = errors.New("connection: message is not the head of the queue")
	// ErrUnknownMessage: a Seq beyond the last queued message (*SequenceError).
	ErrUnknownMessage = errors.New("connection: no message queued at this position")
	// ErrMessagePurged: dispatch of a message a clear has purged (*MessagePurgedError) (G1).
	ErrMessagePurged = errors.New("connection: message purged by a clear")
	// ErrMessageExpired: dispatch of a message whose TTL has passed (*ExpiredError); record
	// Expire instead.
	ErrMessageExpired = errors.New("connection: message expired")
	// ErrNotExpired: Expire of a message whose TTL has not passed (*ExpiredError).
	ErrNotExpired = errors.New("connection: message not expired")
	// ErrInFlightLimit: dispatch refused because MaxInFlight messages are dispatched and not
	// yet acknowledged; record their outcomes (or MessageOutcomeUnknown) first.
	ErrInFlightLimit = errors.New("connection: too many messages in flight")
	// ErrNotInFlight: an acknowledgement (sent, failed, outcome unknown) for a message that is
	// not dispatched-and-unacknowledged (*NotInFlightError).
	ErrNotInFlight = errors.New("connection: message not in flight")
	// ErrSendInterrupted: the retry of a deferred hand-over is refused because a clear, hold,
	// ban or session loss was recorded since the message was dispatched (*SendInterruptedError).
	// The message was never handed over: record it failed FailureNotSent.
	ErrSendInterrupted = errors.New("connection: send interrupted since dispatch")
	// ErrStaleEpoch: a dispatch or retry carries a lease epoch lower than the highest one
	// already recorded on the stream (*StaleEpochError): another dispatcher took the
	// connection's lease over; the caller lost it and must hand nothing over.
	ErrStaleEpoch = errors.New("connection: stale lease epoch")
	// ErrIdempotencyKeyReused: an idempotency key already accepted with another request
	// (*KeyReusedError). HTTP 422, code idempotency_key_reused.
	ErrIdempotencyKeyReused = errors.New("connection: idempotency key reused with another request")
	// ErrMessageNotPending: a cancel of a message that is no longer queued — dispatched,
	// expired, purged or cancelled (*MessageNotPendingError). HTTP 409, code message_not_pending.
	ErrMessageNotPending = errors.New("connection: message not pending")
	// ErrMessageCancelled: dispatch or expiry of a cancelled message (*MessageCancelledError).
	ErrMessageCancelled = errors.New("connection: message cancelled")
	// ErrConnectionRetired: any command but a read, an acknowledgement of a message in flight
	// or the completion of a clear, on a retired connection; also registering a retired id
	// again (ids are never reused). HTTP 409, code connection_retired.
	ErrConnectionRetired = errors.New("connection: connection retired")
	// ErrQueueNotEmpty: Retire while messages are pending or in flight, or while a clear is in
	// progress (*QueueNotEmptyError). HTTP 409, code queue_not_empty.
	ErrQueueNotEmpty = errors.New("connection: queue not empty")
)

// QueueNotEmptyError refuses to retire a connection that still has messages pending or in
// flight, or a clear in progress (Clearing). errors.Is(err, ErrQueueNotEmpty).
type QueueNotEmptyError struct {
	ConnectionID string
	Pending      uint64
	InFlight     int
	Clearing     bool
}

func (e *QueueNotEmptyError) Error() string {
	return fmt.Sprintf("connection: retire %q: %d messages pending, %d in flight, clearing %t", e.ConnectionID,
		e.Pending, e.InFlight, e.Clearing)
}

// Is makes errors.Is(err, ErrQueueNotEmpty) true.
func (e *QueueNotEmptyError) Is(target error) bool { return target == ErrQueueNotEmpty }

// MessageNotPendingError refuses to cancel a message that is not pending any more.
// errors.Is(err, ErrMessageNotPending). Cancelled is true when the aggregate knows the message
// was cancelled already (an idempotent caller answers that cancel).
type MessageNotPendingError struct {
	ConnectionID string
	MessageID    uuid.UUID
	Seq          uint64
	Cancelled    bool
}

func (e *MessageNotPendingError) Error() string {
	what := "dispatched, expired or purged"
	if e.Cancelled {
		what = "cancelled"
	}
	return fmt.Sprintf("connection: cancel %q: message %s at seq %d is not pending (%s)", e.ConnectionID, e.MessageID, e.Seq, what)
}

// Is makes errors.Is(err, ErrMessageNotPending) true.
func (e *MessageNotPendingError) Is(target error) bool { return target == ErrMessageNotPending }

// MessageCancelledError refuses to dispatch or expire a cancelled message.
// errors.Is(err, ErrMessageCancelled).
type MessageCancelledError struct {
	ConnectionID string
	Op           string
	MessageID    uuid.UUID
	Seq          uint64
}

func (e *MessageCancelledError) Error() string {
	return fmt.Sprintf("connection: %s %q: message %s at seq %d was cancelled", e.Op, e.ConnectionID, e.MessageID, e.Seq)
}

// Is makes errors.Is(err, ErrMessageCancelled) true.
func (e *MessageCancelledError) Is(target error) bool { return target == ErrMessageCancelled }

// FailureNotSent is the MessageFailed code of a message dispatched but provably never handed
// to WhatsApp: the transport refused every attempt, or a clear, hold, ban or session loss
// recorded since its dispatch ended the retries.
const FailureNotSent = "not_sent"

// SendInterruptedError refuses the retry of a deferred hand-over (G1): Revision is the stream
// revision of the clear, hold, ban or session loss recorded since the dispatch at DispatchedAt.
// errors.Is(err, ErrSendInterrupted).
type SendInterruptedError struct {
	ConnectionID string
	MessageID    uuid.UUID
	Seq          uint64
	DispatchedAt int64
	Revision     int64
}

func (e *SendInterruptedError) Error() string {
	return fmt.Sprintf("connection: retry send %q: message %s at seq %d dispatched at revision %d, interrupted at revision %d",
		e.ConnectionID, e.MessageID, e.Seq, e.DispatchedAt, e.Revision)
}

// Is makes errors.Is(err, ErrSendInterrupted) true.
func (e *SendInterruptedError) Is(target error) bool { return target == ErrSendInterrupted }

// StaleEpochError refuses a dispatch or retry whose lease epoch (Epoch) is below the highest
// epoch recorded on the stream (Recorded): the stream fence of per-connection leases.
// errors.Is(err, ErrStaleEpoch).
type StaleEpochError struct {
	ConnectionID string
	Op           string
	Epoch        uint64
	Recorded     uint64
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("connection: %s %q: lease epoch %d is below epoch %d recorded on the stream", e.Op, e.ConnectionID, e.Epoch, e.Recorded)
}

// Is makes errors.Is(err, ErrStaleEpoch) true.
func (e *StaleEpochError) Is(target error) bool { return target == ErrStaleEpoch }

// Error is an operation on a connection that failed for a plain reason (Err, a sentinel).
type Error struct {
	Op           string
	ConnectionID string
	Err          error
}

func (e *Error) Error() string {
	return fmt.Sprintf("connection: %s %q: %s", e.Op, e.ConnectionID, bare(e.Err))
}

// bare returns err's text without this package's prefix, to nest it in another message.
func bare(err error) string { return strings.TrimPrefix(err.Error(), "connection: ") }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// ClearingError refuses an operation while a clear is in progress. errors.Is(err, ErrQueueClearing).
type ClearingError struct {
	ConnectionID string
	Op           string
	ClearID      uuid.UUID
	// Since is when the clear was requested.
	Since time.Time
}

func (e *ClearingError) Error() string {
	return fmt.Sprintf("connection: %s %q: queue clearing since %s (clear %s)", e.Op, e.ConnectionID,
		e.Since.UTC().Format(time.RFC3339), e.ClearID)
}

// Is makes errors.Is(err, ErrQueueClearing) true.
func (e *ClearingError) Is(target error) bool { return target == ErrQueueClearing }

// QueueHeldError refuses a dispatch from a held queue. errors.Is(err, ErrQueueHeld).
type QueueHeldError struct {
	ConnectionID string
	Reason       HoldReason
	Since        time.Time
}

func (e *QueueHeldError) Error() string {
	return fmt.Sprintf("connection: dispatch %q: queue held (%s) since %s", e.ConnectionID, e.Reason,
		e.Since.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrQueueHeld) true.
func (e *QueueHeldError) Is(target error) bool { return target == ErrQueueHeld }

// LinkStatusError refuses an operation in the connection's link status. errors.Is(err, ErrLinkStatus).
type LinkStatusError struct {
	ConnectionID string
	Op           string
	Status       LinkStatus
}

func (e *LinkStatusError) Error() string {
	return fmt.Sprintf("connection: %s %q: not allowed while link is %s", e.Op, e.ConnectionID, e.Status)
}

// Is makes errors.Is(err, ErrLinkStatus) true.
func (e *LinkStatusError) Is(target error) bool { return target == ErrLinkStatus }

// BroadcastNotPendingError refuses a clear of a broadcast with nothing pending.
// errors.Is(err, ErrBroadcastNotPending).
type BroadcastNotPendingError struct {
	ConnectionID string
	BroadcastID  uuid.UUID
}

func (e *BroadcastNotPendingError) Error() string {
	return fmt.Sprintf("connection: clear %q: broadcast %s has no pending message", e.ConnectionID, e.BroadcastID)
}

// Is makes errors.Is(err, ErrBroadcastNotPending) true.
func (e *BroadcastNotPendingError) Is(target error) bool { return target == ErrBroadcastNotPending }

// SequenceError refuses to dispatch or expire a message out of queue order. It matches
// ErrAlreadyDisposed (Seq < Next), ErrNotNext (Next < Seq <= Last) or ErrUnknownMessage
// (Seq > Last, or no message pending).
type SequenceError struct {
	ConnectionID string
	Op           string
	MessageID    uuid.UUID
	Seq          uint64
	// Next is the Seq of the head of the queue (0 if nothing is pending).
	Next uint64
	// Last is the Seq of the last message queued.
	Last uint64
}

func (e *SequenceError) Error() string {
	return fmt.Sprintf("connection: %s %q: message %s at seq %d: %s (head %d, last %d)", e.Op, e.ConnectionID,
		e.MessageID, e.Seq, bare(e.sentinel()), e.Next, e.Last)
}

func (e *SequenceError) sentinel() error {
	switch {
	case e.Seq == 0 || e.Seq > e.Last:
		return ErrUnknownMessage
	case e.Next == 0 || e.Seq < e.Next:
		return ErrAlreadyDisposed
	default:
		return ErrNotNext
	}
}

// Is makes errors.Is match the sentinel that applies.
func (e *SequenceError) Is(target error) bool { return target == e.sentinel() }

// MessagePurgedError refuses to dispatch a purged message. errors.Is(err, ErrMessagePurged).
type MessagePurgedError struct {
	ConnectionID string
	MessageID    uuid.UUID
	Seq          uint64
	ClearID      uuid.UUID
}

func (e *MessagePurgedError) Error() string {
	return fmt.Sprintf("connection: dispatch %q: message %s at seq %d purged by clear %s", e.ConnectionID,
		e.MessageID, e.Seq, e.ClearID)
}

// Is makes errors.Is(err, ErrMessagePurged) true.
func (e *MessagePurgedError) Is(target error) bool { return target == ErrMessagePurged }

// ExpiredError refuses to dispatch an expired message (Expired true, errors.Is(err,
// ErrMessageExpired)) or to expire a message that is not expired (Expired false,
// errors.Is(err, ErrNotExpired)).
type ExpiredError struct {
	ConnectionID string
	MessageID    uuid.UUID
	ExpiresAt    time.Time
	Now          time.Time
	Expired      bool
}

func (e *ExpiredError) Error() string {
	if e.Expired {
		return fmt.Sprintf("connection: dispatch %q: message %s expired at %s", e.ConnectionID, e.MessageID,
			e.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("connection: expire %q: message %s expires only at %s", e.ConnectionID, e.MessageID,
		e.ExpiresAt.UTC().Format(time.RFC3339))
}

// Is makes errors.Is match ErrMessageExpired or ErrNotExpired, whichever applies.
func (e *ExpiredError) Is(target error) bool {
	if e.Expired {
		return target == ErrMessageExpired
	}
	return target == ErrNotExpired
}

// NotInFlightError refuses an acknowledgement of a message that is not in flight.
// errors.Is(err, ErrNotInFlight).
type NotInFlightError struct {
	ConnectionID string
	Op           string
	MessageID    uuid.UUID
	Seq          uint64
}

func (e *NotInFlightError) Error() string {
	return fmt.Sprintf("connection: %s %q: message %s at seq %d is not in flight", e.Op, e.ConnectionID, e.MessageID, e.Seq)
}

// Is makes errors.Is(err, ErrNotInFlight) true.
func (e *NotInFlightError) Is(target error) bool { return target == ErrNotInFlight }

// KeyReusedError refuses a request whose idempotency key was accepted before with a request of
// another fingerprint (see CheckReplay). errors.Is(err, ErrIdempotencyKeyReused).
type KeyReusedError struct {
	ConnectionID string
	// Route is "enqueue", "broadcast" or "clear".
	Route string
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("connection: %s %q: idempotency key already used with another request", e.Route, e.ConnectionID)
}

// Is makes errors.Is(err, ErrIdempotencyKeyReused) true.
func (e *KeyReusedError) Is(target error) bool { return target == ErrIdempotencyKeyReused }
