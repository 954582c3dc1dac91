package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/projections"
)

// ErrNotProjected: the pending-queue projection does not show the message the aggregate asks
// for yet (it lags the stream). DispatchNext then records nothing and the loop retries shortly.
var ErrNotProjected = errors.New("dispatcher: message not in the pending-queue projection yet")

// NotProjectedError carries the message the projection does not show.
type NotProjectedError struct {
	ConnectionID string
	Seq          uint64
}

func (e *NotProjectedError) Error() string {
	return fmt.Sprintf("dispatcher: connection %q: no pending message at seq %d in the projection yet", e.ConnectionID, e.Seq)
}

// Is makes errors.Is(err, ErrNotProjected) true.
func (e *NotProjectedError) Is(target error) bool { return target == ErrNotProjected }

// QueueMessages implements commands.QueuedMessages over the pending-queue projection.
type QueueMessages struct {
	DB    *projections.DB
	Queue *projections.Queue
}

var _ commands.QueuedMessages = QueueMessages{}

// QueuedMessage returns the pending message at seq, or a *NotProjectedError when the projection
// does not show it (yet). It reads one row (Queue.Pending), whatever the queue's length.
func (m QueueMessages) QueuedMessage(ctx context.Context, connID string, seq uint64) (commands.QueuedMessage, error) {
	if seq == 0 {
		return commands.QueuedMessage{}, &NotProjectedError{ConnectionID: connID, Seq: seq}
	}
	// A point read (not NextPending): one row per dispatch, however long the queue.
	p, err := m.Queue.Pending(ctx, m.DB, connID, seq)
	if errors.Is(err, projections.ErrNotFound) {
		return commands.QueuedMessage{}, &NotProjectedError{ConnectionID: connID, Seq: seq}
	}
	if err != nil {
		return commands.QueuedMessage{}, fmt.Errorf("dispatcher: pending message %q/%d: %w", connID, seq, err)
	}
	return commands.QueuedMessage{MessageID: p.MessageID, Seq: p.Seq, Recipient: p.Recipient, Text: p.Text,
		BroadcastID: p.BroadcastID, ExpiresAt: p.ExpiresAt}, nil
}

// MessageLocator finds the queue position of one of a connection's messages, for receipts.
// It returns an error matching projections.ErrNotFound (or any error) when it does not know it.
type MessageLocator interface {
	MessageSeq(ctx context.Context, tenant, connID string, id uuid.UUID) (uint64, error)
}

// StatusLocator implements MessageLocator over the message-status projection.
type StatusLocator struct {
	DB     *projections.DB
	Status *projections.MessageStatus
}

var _ MessageLocator = StatusLocator{}

// MessageSeq returns the message's Seq, or projections.ErrNotFound for an unknown message or one
// of another connection.
func (l StatusLocator) MessageSeq(ctx context.Context, tenant, connID string, id uuid.UUID) (uint64, error) {
	v, err := l.Status.Message(ctx, l.DB, tenant, id)
	if err != nil {
		return 0, err
	}
	if v.ConnectionID != connID {
		return 0, fmt.Errorf("dispatcher: message %s belongs to connection %q, not %q: %w", id, v.ConnectionID, connID, projections.ErrNotFound)
	}
	return v.Seq, nil
}

// Backlog tells the Dispatcher, at start, which connections may have work, so that a node with
// many idle connections starts a loop only for the others (see the package doc, "Start-up").
type Backlog interface {
	// Busy returns a position of the event log and the connections (keys) that had pending or
	// in-flight messages as of it: every other connection had nothing to dispatch and nothing
	// to recover then, and only an event after the position can change that. Start and no
	// connection is a valid answer (everything is then found by the replay).
	Busy(ctx context.Context) (eventstore.Position, []string, error)
}

// QueueBacklog implements Backlog over the pending-queue projection (Queue.Busy).
type QueueBacklog struct {
	DB    *projections.DB
	Queue *projections.Queue
}

var _ Backlog = QueueBacklog{}

// Busy returns the Queue projection's checkpoint and its connections with pending or in-flight
// messages.
func (b QueueBacklog) Busy(ctx context.Context) (eventstore.Position, []string, error) {
	return b.Queue.Busy(ctx, b.DB)
}
