package commands

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// EnqueueMessage queues one 1:1 message. It needs message.send. The idempotency key makes it
// idempotent: the message id is connection.MessageIDFor(tenant, connection, key), and a retry
// queues nothing and answers with the same message id (Replayed). While the queue is clearing
// it fails with *connection.ClearingError (G2, HTTP 409 queue_clearing).
type EnqueueMessage struct {
	ConnectionID   string `json:"connection_id"`
	IdempotencyKey string `json:"idempotency_key"`
	// Recipient is a phone number; without a leading '+' it is read in the connection's region.
	Recipient string `json:"recipient"`
	Text      string `json:"text"`
	// TTL, if positive, makes the message expire instead of being sent after it.
	TTL time.Duration `json:"ttl,omitempty"`
}

// EnqueueResult is the outcome of EnqueueMessage.
type EnqueueResult struct {
	Result
	MessageID uuid.UUID
	// Seq is the message's queue position. On a replay whose original lies further back than
	// ReplayScan events it is 0 (read it from the message projection).
	Seq uint64
	// Replayed is true when the key had been used already: nothing was queued this time.
	Replayed bool
}

// EnqueueMessageHandler handles EnqueueMessage.
type EnqueueMessageHandler struct {
	repo *Repository
	now  Clock
}

// NewEnqueueMessageHandler returns a handler; repo and now must not be nil.
func NewEnqueueMessageHandler(repo *Repository, now Clock) (*EnqueueMessageHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewEnqueueMessageHandler: nil dependency")
	}
	return &EnqueueMessageHandler{repo: repo, now: now}, nil
}

// Handle records MessageQueued, or answers a replay of the same key.
func (h *EnqueueMessageHandler) Handle(ctx context.Context, cmd EnqueueMessage) (EnqueueResult, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.MessageSend, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Enqueue(connection.EnqueueMessage{
			IdempotencyKey: cmd.IdempotencyKey, Recipient: cmd.Recipient, Text: cmd.Text, TTL: cmd.TTL, Actor: p.ID,
		}, h.now())
	})
	if errors.Is(err, eventstore.ErrDuplicateEventID) {
		p, _ := PrincipalFromContext(ctx) // update authorized it and checked the tenant
		id := connection.MessageIDFor(p.TenantID, cmd.ConnectionID, cmd.IdempotencyKey)
		ev, found, ferr := h.repo.findBackwards(ctx, cmd.ConnectionID, ReplayScan, connection.MessageQueued{MessageID: id})
		if ferr != nil {
			return EnqueueResult{}, ferr
		}
		res := EnqueueResult{MessageID: id, Replayed: true}
		if found {
			res.Seq = ev.(connection.MessageQueued).Seq
		}
		return res, nil
	}
	if err != nil {
		return EnqueueResult{}, err
	}
	q := a.Events[0].(connection.MessageQueued)
	return EnqueueResult{Result: resultOf(a), MessageID: q.MessageID, Seq: q.Seq}, nil
}
