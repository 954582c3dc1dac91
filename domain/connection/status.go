package connection

import (
	"errors"

	"github.com/google/uuid"
)

// MessageEvent describes what a message event means for its message, for projections.
type MessageEvent struct {
	MessageID uuid.UUID
	Seq       uint64
	// Status is the status the event moves the message to.
	Status MessageStatus
}

// MessageEventOf returns what e means for one message: MessageQueued → queued,
// MessageDispatched → dispatched, MessageSent → sent, MessageDelivered → delivered, MessageRead
// → read, MessageFailed → failed, MessageExpired → expired, MessageOutcomeUnknown → unknown,
// MessageCancelled → cancelled.
// It returns false for every other event. Purges are not per-message events: a message is
// purged when a QueueCleared (or, from the request on, a ClearQueueRequested) Covers its Seq.
func MessageEventOf(e Event) (MessageEvent, bool) {
	switch e := e.(type) {
	case MessageQueued:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusQueued}, true
	case MessageDispatched:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusDispatched}, true
	case MessageSent:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusSent}, true
	case MessageDelivered:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusDelivered}, true
	case MessageRead:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusRead}, true
	case MessageFailed:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusFailed}, true
	case MessageExpired:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusExpired}, true
	case MessageOutcomeUnknown:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusUnknown}, true
	case MessageCancelled:
		return MessageEvent{e.MessageID, e.Seq, MessageStatusCancelled}, true
	}
	return MessageEvent{}, false
}

// CanBecome reports whether a message in status s moves to next. Projections use it to keep a
// message's status monotonic when receipts arrive late or twice:
//
//	queued → dispatched | purged | expired | cancelled
//	dispatched → sent | delivered | read | failed | unknown
//	sent → delivered | read;  delivered → read
//
// Final statuses (read, failed, purged, expired, unknown, cancelled) never change.
func (s MessageStatus) CanBecome(next MessageStatus) bool {
	switch s {
	case MessageStatusQueued:
		return next == MessageStatusDispatched || next == MessageStatusPurged || next == MessageStatusExpired ||
			next == MessageStatusCancelled
	case MessageStatusDispatched:
		return next == MessageStatusSent || next == MessageStatusDelivered || next == MessageStatusRead ||
			next == MessageStatusFailed || next == MessageStatusUnknown
	case MessageStatusSent:
		return next == MessageStatusDelivered || next == MessageStatusRead
	case MessageStatusDelivered:
		return next == MessageStatusRead
	}
	return false
}

// Covers reports whether the clear purges the message queued at seq.
func (e ClearQueueRequested) Covers(seq uint64) bool { return coveredBy(e.Purge, seq) }

// Covers reports whether the clear purged the message queued at seq.
func (e QueueCleared) Covers(seq uint64) bool { return coveredBy(e.Purged, seq) }

func coveredBy(ranges []SeqRange, seq uint64) bool {
	for _, r := range ranges {
		if r.Contains(seq) {
			return true
		}
	}
	return false
}

// Stable codes of refusals, for the HTTP layer and the command bus (validation failures carry
// their own Code). Never change one: API clients match on them.
const (
	CodeQueueClearing       Code = "queue_clearing"
	CodeQueueHeld           Code = "queue_held"
	CodeLinkStatus          Code = "link_status"
	CodeNotRegistered       Code = "not_registered"
	CodeAlreadyRegistered   Code = "already_registered"
	CodeAlreadyHeld         Code = "already_held"
	CodeNotHeld             Code = "not_held"
	CodeNoClearInProgress   Code = "no_clear_in_progress"
	CodeBroadcastNotPending Code = "broadcast_not_pending"
	CodeAlreadyDisposed     Code = "already_disposed"
	CodeNotHead             Code = "not_head"
	CodeUnknownMessage      Code = "unknown_message"
	CodeMessagePurged       Code = "message_purged"
	CodeMessageExpired      Code = "message_expired"
	CodeNotExpired          Code = "not_expired"
	CodeNotInFlight         Code = "not_in_flight"
	CodeInFlightLimit       Code = "in_flight_limit"
	CodeSendInterrupted     Code = "send_interrupted"
	// CodeMessageNotPending: a cancel of a message no longer queued (dispatched, expired, purged).
	CodeMessageNotPending Code = "message_not_pending"
	// CodeMessageCancelled: a dispatch or expiry of a cancelled message.
	CodeMessageCancelled Code = "message_cancelled"
	// CodeStaleEpoch: a dispatch by a dispatcher whose lease was taken over (ErrStaleEpoch).
	CodeStaleEpoch Code = "stale_epoch"
	// CodeIdempotencyKeyReused: the key was accepted before with another request (HTTP 422).
	CodeIdempotencyKeyReused Code = "idempotency_key_reused"
	// CodeConnectionRetired: a command on a retired connection, or registering its id again.
	CodeConnectionRetired Code = "connection_retired"
	// CodeQueueNotEmpty: a retire while messages are pending or in flight (HTTP 409).
	CodeQueueNotEmpty Code = "queue_not_empty"
)

var errorCodes = []struct {
	err  error
	code Code
}{
	{ErrQueueClearing, CodeQueueClearing},
	{ErrQueueHeld, CodeQueueHeld},
	{ErrLinkStatus, CodeLinkStatus},
	{ErrNotRegistered, CodeNotRegistered},
	{ErrAlreadyRegistered, CodeAlreadyRegistered},
	{ErrAlreadyHeld, CodeAlreadyHeld},
	{ErrNotHeld, CodeNotHeld},
	{ErrNoClearInProgress, CodeNoClearInProgress},
	{ErrBroadcastNotPending, CodeBroadcastNotPending},
	{ErrAlreadyDisposed, CodeAlreadyDisposed},
	{ErrNotNext, CodeNotHead},
	{ErrUnknownMessage, CodeUnknownMessage},
	{ErrMessagePurged, CodeMessagePurged},
	{ErrMessageExpired, CodeMessageExpired},
	{ErrNotExpired, CodeNotExpired},
	{ErrNotInFlight, CodeNotInFlight},
	{ErrInFlightLimit, CodeInFlightLimit},
	{ErrSendInterrupted, CodeSendInterrupted},
	{ErrMessageNotPending, CodeMessageNotPending},
	{ErrMessageCancelled, CodeMessageCancelled},
	{ErrStaleEpoch, CodeStaleEpoch},
	{ErrIdempotencyKeyReused, CodeIdempotencyKeyReused},
	{ErrConnectionRetired, CodeConnectionRetired},
	{ErrQueueNotEmpty, CodeQueueNotEmpty},
}

// ErrorCode returns the stable code of a domain refusal anywhere in err's chain: the Code of a
// *ValidationError, or one of the Code… constants above. It returns "" and false for an error
// that is not a refusal of this package.
func ErrorCode(err error) (Code, bool) {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Code, true
	}
	for _, ec := range errorCodes {
		if errors.Is(err, ec.err) {
			return ec.code, true
		}
	}
	return "", false
}
