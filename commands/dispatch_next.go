package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// QueuedMessage is a message waiting in a connection's queue, as the pending-queue projection
// knows it.
type QueuedMessage struct {
	MessageID uuid.UUID
	Seq       uint64
	// Recipient is the recipient's number in E.164.
	Recipient string
	// Text is the text to send (a broadcast message's is its broadcast's text).
	Text        string
	BroadcastID uuid.UUID
	// ExpiresAt is zero for a message that never expires.
	ExpiresAt time.Time
}

// QueuedMessages finds a queued message by its queue position. The pending-queue projection
// implements it for DispatchNext; it must know every message queued at or before the stream
// revision the caller's state includes (a projection that lags returns an error and DispatchNext
// fails without recording anything). It is called while the connection is locked in the
// Repository, so it must not call the Repository itself.
type QueuedMessages interface {
	// connKey is the connection's tenant-scoped key (connection.Key).
	QueuedMessage(ctx context.Context, connKey string, seq uint64) (QueuedMessage, error)
}

// CodeNothingToDispatch is the NotDispatchableError code when no message is pending.
const CodeNothingToDispatch connection.Code = "nothing_to_dispatch"

// ErrNotDispatchable: DispatchNext recorded nothing (*NotDispatchableError).
var ErrNotDispatchable = errors.New("commands: nothing dispatchable")

// NotDispatchableError says why DispatchNext recorded nothing: Code is CodeNothingToDispatch
// (Err is ErrNothingToDispatch) or the domain's refusal code (queue_clearing, queue_held,
// link_status, in_flight_limit, ...; Err is the domain error, so errors.Is(err,
// connection.ErrQueueHeld) works).
type NotDispatchableError struct {
	ConnectionID string
	Code         connection.Code
	Err          error
}

func (e *NotDispatchableError) Error() string {
	return fmt.Sprintf("commands: connection %q: nothing dispatchable (%s): %v", e.ConnectionID, e.Code, e.Err)
}

// Is makes errors.Is(err, ErrNotDispatchable) true.
func (e *NotDispatchableError) Is(target error) bool { return target == ErrNotDispatchable }

// Unwrap returns the reason.
func (e *NotDispatchableError) Unwrap() error { return e.Err }

// DispatchNext takes the head of the connection's queue for sending. It records
// MessageDispatched at the expected revision BEFORE anything is handed to the transport (G1, G5):
// the caller sends DispatchNextResult.Message only when Outcome is DispatchSend, and then
// records the outcome (RecordSent, RecordFailed, RecordOutcomeUnknown). A head whose TTL has
// passed is recorded MessageExpired instead (Outcome DispatchExpired: send nothing).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type DispatchNext struct {
	ConnectionID string `json:"connection_id"`
	// Epoch is the fencing token of the caller's lease on the connection (0 without leases),
	// recorded on MessageDispatched; the domain refuses an epoch below the highest recorded on
	// the stream (connection.ErrStaleEpoch, a *NotDispatchableError with code stale_epoch).
	Epoch uint64 `json:"epoch,omitempty"`
	// Head, when its Seq is not zero, is what the handler's QueuedMessages port answered the
	// caller for the seq it expects at the head: used in place of reading the port again when
	// the head is that seq (a queued message never changes), ignored otherwise. It must come
	// from that port: the domain tracks seqs, not ids, and cannot check it. It moves the read
	// off the time between a paced loop's wake-up and its recorded dispatch.
	Head QueuedMessage `json:"-"`
}

// DispatchOutcome says what DispatchNext recorded.
type DispatchOutcome int

const (
	// DispatchSend: MessageDispatched was recorded; hand the message to the transport.
	DispatchSend DispatchOutcome = iota + 1
	// DispatchExpired: the head had expired; MessageExpired was recorded; send nothing.
	DispatchExpired
)

func (o DispatchOutcome) String() string {
	switch o {
	case DispatchSend:
		return "send"
	case DispatchExpired:
		return "expired"
	}
	return "unknown"
}

// DispatchNextResult is the outcome of DispatchNext.
type DispatchNextResult struct {
	Result
	Outcome DispatchOutcome
	Message QueuedMessage
	// DispatchedAt is the recorded MessageDispatched's time (DispatchSend only): the reference
	// of the connection's pacing interval.
	DispatchedAt time.Time
}

// DispatchNextHandler handles DispatchNext.
type DispatchNextHandler struct {
	repo     *Repository
	messages QueuedMessages
	now      Clock
}

// NewDispatchNextHandler returns a handler; no argument may be nil.
func NewDispatchNextHandler(repo *Repository, messages QueuedMessages, now Clock) (*DispatchNextHandler, error) {
	if repo == nil || messages == nil || now == nil {
		return nil, errors.New("commands: NewDispatchNextHandler: nil dependency")
	}
	return &DispatchNextHandler{repo: repo, messages: messages, now: now}, nil
}

// Handle records the dispatch (or expiry) of the head, or returns a *NotDispatchableError.
func (h *DispatchNextHandler) Handle(ctx context.Context, cmd DispatchNext) (DispatchNextResult, error) {
	var outcome DispatchOutcome
	msg := cmd.Head
	// A claim unique to this call: a concurrent dispatcher deciding the same dispatch on the
	// same state must lose the append, not be told it won (see Repository.update).
	a, err := claimUpdate(ctx, h.repo, cmd.ConnectionID, auth.System, uuid.New(), func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		if c.LinkStatus() == connection.LinkStatusRetired {
			err := &connection.Error{Op: "dispatch", ConnectionID: cmd.ConnectionID, Err: connection.ErrConnectionRetired}
			return nil, &NotDispatchableError{ConnectionID: cmd.ConnectionID, Code: connection.CodeConnectionRetired, Err: err}
		}
		seq, ok := c.Head()
		if clr, clearing := c.CurrentClear(); !ok && clearing {
			// Report the clear rather than an empty queue: it is why nothing is pending.
			err := &connection.ClearingError{ConnectionID: cmd.ConnectionID, Op: "dispatch", ClearID: clr.ClearID, Since: clr.RequestedAt}
			return nil, &NotDispatchableError{ConnectionID: cmd.ConnectionID, Code: connection.CodeQueueClearing, Err: err}
		}
		if !ok {
			return nil, &NotDispatchableError{ConnectionID: cmd.ConnectionID, Code: CodeNothingToDispatch, Err: ErrNothingToDispatch}
		}
		if msg.Seq != seq {
			// Refusals that hold whatever the head is come before its read (a held queue's
			// loop, woken, reads nothing through the pool it would wait for).
			if err := c.DispatchRefused(cmd.Epoch); err != nil {
				code, _ := connection.ErrorCode(err)
				return nil, &NotDispatchableError{ConnectionID: cmd.ConnectionID, Code: code, Err: err}
			}
			m, err := h.messages.QueuedMessage(ctx, connection.Key(p.TenantID, cmd.ConnectionID), seq)
			if err != nil {
				return nil, fmt.Errorf("commands: dispatch %q: message at seq %d: %w", cmd.ConnectionID, seq, err)
			}
			if m.Seq != seq {
				return nil, fmt.Errorf("commands: dispatch %q: asked for seq %d, got %d", cmd.ConnectionID, seq, m.Seq)
			}
			msg = m
		}
		now := h.now()
		events, err := c.Dispatch(connection.DispatchMessage{MessageID: msg.MessageID, Seq: msg.Seq, ExpiresAt: msg.ExpiresAt, Epoch: cmd.Epoch}, now)
		if errors.Is(err, connection.ErrMessageExpired) {
			outcome = DispatchExpired
			return c.Expire(connection.ExpireMessage{MessageID: msg.MessageID, Seq: msg.Seq, ExpiresAt: msg.ExpiresAt}, now)
		}
		if err != nil {
			code, _ := connection.ErrorCode(err)
			return nil, &NotDispatchableError{ConnectionID: cmd.ConnectionID, Code: code, Err: err}
		}
		outcome = DispatchSend
		return events, nil
	})
	if err != nil {
		return DispatchNextResult{}, err
	}
	res := DispatchNextResult{Result: resultOf(a), Outcome: outcome, Message: msg}
	for _, e := range a.Events {
		if d, ok := e.(connection.MessageDispatched); ok {
			res.DispatchedAt = d.DispatchedAt
		}
	}
	return res, nil
}
