package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// CancelMessage cancels one message still waiting in a connection's queue. It needs
// connection.edit, like a clear: it withdraws a message someone else may have queued, and keys
// do not own messages (a sender key issues message.send for a whole tenant).
//
// It records MessageCancelled (who, why) at the stream's expected revision, so a cancel racing
// the message's dispatch, expiry or a clear either wins (the dispatcher skips the message, a
// clear does not count it) or is refused with *connection.MessageNotPendingError (HTTP 409
// message_not_pending): exactly one wins. A cancel of a message cancelled already records
// nothing and answers that cancel (Replayed), whatever its reason. A message id unknown on the
// connection, or the connection of another tenant, fails with *MessageNotFoundError / a
// *NotFoundError (both ErrNotFound).
type CancelMessage struct {
	ConnectionID string    `json:"connection_id"`
	MessageID    uuid.UUID `json:"message_id"`
	// Reason says why; required (code missing_reason).
	Reason string `json:"reason"`
	// BroadcastID and Seq say where a broadcast message recorded in a BroadcastQueued chunk
	// (which has no event of its own to look up by id) may be: a hint, e.g. from the message
	// status read model. The handler believes it only if the broadcast, recorded on this
	// connection, holds MessageID at Seq; a wrong hint is a 404 like an unknown id.
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
	Seq         uint64    `json:"seq,omitempty"`
}

// CancelMessageResult is the outcome of CancelMessage.
type CancelMessageResult struct {
	Result
	// Cancelled is the event recorded (or, on a replay, the one recorded before).
	Cancelled connection.MessageCancelled
	Replayed  bool
}

// MessageNotFoundError reports a message id that was never queued on the connection.
// errors.Is(err, ErrNotFound): to a caller it is as missing as a foreign connection (G9).
type MessageNotFoundError struct {
	ConnectionID string
	MessageID    uuid.UUID
}

func (e *MessageNotFoundError) Error() string {
	return fmt.Sprintf("commands: connection %q: message %s not found", e.ConnectionID, e.MessageID)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *MessageNotFoundError) Is(target error) bool { return target == ErrNotFound }

// CancelMessageHandler handles CancelMessage.
type CancelMessageHandler struct {
	repo *Repository
	now  Clock
}

// NewCancelMessageHandler returns a handler; repo and now must not be nil.
func NewCancelMessageHandler(repo *Repository, now Clock) (*CancelMessageHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewCancelMessageHandler: nil dependency")
	}
	return &CancelMessageHandler{repo: repo, now: now}, nil
}

// Handle records MessageCancelled, or answers the cancel recorded before. The message's queue
// position comes from its MessageQueued, found by its event id (the store's id index; stores
// without one look back ReplayScan events).
func (h *CancelMessageHandler) Handle(ctx context.Context, cmd CancelMessage) (CancelMessageResult, error) {
	p, err := principal(ctx, auth.ConnectionEdit)
	if err != nil {
		return CancelMessageResult{}, err
	}
	key := connection.Key(p.TenantID, cmd.ConnectionID)
	notFound := &MessageNotFoundError{ConnectionID: cmd.ConnectionID, MessageID: cmd.MessageID}
	if cmd.MessageID == uuid.Nil {
		return CancelMessageResult{}, notFound
	}
	ev, _, found, err := h.repo.original(ctx, key, connection.MessageQueued{MessageID: cmd.MessageID})
	if err == nil && !found && cmd.BroadcastID != uuid.Nil {
		ev, found, err = h.broadcastMessage(ctx, key, cmd)
	}
	switch {
	case err != nil:
		return CancelMessageResult{}, err
	case !found:
		// Also for a connection that does not exist: the update below would say so, but the
		// answer is the same 404 either way.
		return CancelMessageResult{}, notFound
	}
	q := ev.(connection.MessageQueued)
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Cancel(connection.CancelMessage{MessageID: q.MessageID, Seq: q.Seq, Reason: cmd.Reason, Actor: p.ID}, h.now())
	})
	switch {
	case err == nil && !a.Existing:
		return CancelMessageResult{Result: resultOf(a), Cancelled: a.Events[0].(connection.MessageCancelled)}, nil
	case err != nil && !errors.Is(err, connection.ErrMessageNotPending) && !errors.Is(err, eventstore.ErrDuplicateEventID):
		return CancelMessageResult{}, err
	}
	// Cancelled before (by this caller's retry or another), or not pending for another reason.
	orig, pos, found, ferr := h.repo.original(ctx, key, connection.MessageCancelled{MessageID: cmd.MessageID})
	switch {
	case ferr != nil:
		return CancelMessageResult{}, ferr
	case !found && err != nil:
		return CancelMessageResult{}, err
	case !found:
		return CancelMessageResult{}, fmt.Errorf("commands: cancel %s on %q: stored, but not found", cmd.MessageID, cmd.ConnectionID)
	}
	return CancelMessageResult{Result: Result{Position: pos, Version: a.Version}, Cancelled: orig.(connection.MessageCancelled), Replayed: true}, nil
}

// broadcastMessage returns the MessageQueued that cmd's hint (BroadcastID, Seq) stands for, if
// the broadcast was started on the connection (its BroadcastStarted found by id) and the
// message at Seq is cmd.MessageID: a BroadcastQueued chunk's message has no event of its own.
func (h *CancelMessageHandler) broadcastMessage(ctx context.Context, key string, cmd CancelMessage) (connection.Event, bool, error) {
	ev, _, found, err := h.repo.original(ctx, key, connection.BroadcastStarted{BroadcastID: cmd.BroadcastID})
	if err != nil || !found {
		return nil, false, err
	}
	b := ev.(connection.BroadcastStarted)
	if cmd.Seq < b.FirstSeq || cmd.Seq > b.LastSeq() {
		return nil, false, nil
	}
	i := int(cmd.Seq - b.FirstSeq)
	if connection.BroadcastMessageID(b.BroadcastID, i) != cmd.MessageID {
		return nil, false, nil
	}
	return connection.MessageQueued{MessageID: cmd.MessageID, Seq: cmd.Seq, BroadcastID: b.BroadcastID, BroadcastIndex: i,
		ExpiresAt: b.ExpiresAt, QueuedBy: b.StartedBy, QueuedAt: b.StartedAt}, true, nil
}
