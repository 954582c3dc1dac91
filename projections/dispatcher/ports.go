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

// QueuedWindow returns the pending messages at seq … seq+n-1 that the projection shows, in Seq
// order (Queue.PendingWindow: one statement, at most n rows read per table). The dispatcher's
// loop reads a connection's next messages this way and serves its next dispatches from memory
// (see window).
func (m QueueMessages) QueuedWindow(ctx context.Context, connID string, seq uint64, n int) ([]commands.QueuedMessage, error) {
	ps, err := m.Queue.PendingWindow(ctx, m.DB, connID, seq, n)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: pending messages %q/%d+%d: %w", connID, seq, n, err)
	}
	out := make([]commands.QueuedMessage, len(ps))
	for i, p := range ps {
		out[i] = commands.QueuedMessage{MessageID: p.MessageID, Seq: p.Seq, Recipient: p.Recipient, Text: p.Text,
			BroadcastID: p.BroadcastID, ExpiresAt: p.ExpiresAt}
	}
	return out, nil
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

// Backlog tells the Dispatcher, at start, which connections exist and which may have work, so
// that it neither replays the event log from its start nor starts a loop for an idle connection
// (see the package doc, "Start-up").
type Backlog interface {
	// Connections returns a position of the event log and every connection registered as of
	// it, each marked Busy when it had pending or in-flight messages then: every other
	// connection had nothing to dispatch and nothing to recover, and only an event after the
	// position can change that. Start and no connection is a valid answer (the replay then
	// starts at the beginning of the log).
	Connections(ctx context.Context) (eventstore.Position, []KnownConnection, error)
}

// KnownConnection is a connection a Backlog knows.
type KnownConnection struct {
	// ID is the connection's key (connection.Key).
	ID string
	// Busy: it had pending or in-flight messages.
	Busy bool
}

// QueueBacklog implements Backlog over the pending-queue projection (Queue.Connections).
type QueueBacklog struct {
	DB    *projections.DB
	Queue *projections.Queue
}

var _ Backlog = QueueBacklog{}

// Connections returns the Queue projection's checkpoint and its connections.
func (b QueueBacklog) Connections(ctx context.Context) (eventstore.Position, []KnownConnection, error) {
	pos, cs, err := b.Queue.Connections(ctx, b.DB)
	if err != nil {
		return eventstore.Start, nil, err
	}
	out := make([]KnownConnection, len(cs))
	for i, c := range cs {
		out[i] = KnownConnection{ID: c.ID, Busy: c.Busy}
	}
	return pos, out, nil
}
