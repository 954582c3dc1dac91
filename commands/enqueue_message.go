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
// queues nothing and answers with the same message id (Replayed) in any state; the same key
// with another request fails with *connection.KeyReusedError (HTTP 422 idempotency_key_reused).
// While the queue is clearing a new message fails with *connection.ClearingError (G2, HTTP 409
// queue_clearing).
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

// Handle records MessageQueued, or answers a replay of the same key. A key accepted before
// answers the original message (Replayed) in any state — also while clearing, held or banned,
// and after the message was sent or purged — if the request's fingerprint
// (connection.EnqueueFingerprint) matches the one recorded (or none was recorded); otherwise it
// fails with *connection.KeyReusedError and nothing is queued.
func (h *EnqueueMessageHandler) Handle(ctx context.Context, cmd EnqueueMessage) (EnqueueResult, error) {
	var fp string // the request's fingerprint, once the decision ran
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.MessageSend, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		dcmd := connection.EnqueueMessage{
			IdempotencyKey: cmd.IdempotencyKey, Recipient: cmd.Recipient, Text: cmd.Text, TTL: cmd.TTL, Actor: p.ID,
		}
		evs, err := c.Enqueue(dcmd, h.now())
		switch {
		case err == nil:
			fp = evs[0].(connection.MessageQueued).Fingerprint
		case mayBeReplay(err):
			fp, _ = c.EnqueueFingerprint(dcmd)
		}
		return evs, err
	})
	if err == nil && !a.Existing {
		q := a.Events[0].(connection.MessageQueued)
		return EnqueueResult{Result: resultOf(a), MessageID: q.MessageID, Seq: q.Seq}, nil
	}
	if err != nil && !mayBeReplay(err) {
		return EnqueueResult{}, err
	}
	p, _ := PrincipalFromContext(ctx) // update authorized it and checked the tenant
	id := connection.MessageIDFor(p.TenantID, bareID(p, cmd.ConnectionID), cmd.IdempotencyKey)
	ev, pos, found, ferr := h.repo.original(ctx, connection.Key(p.TenantID, cmd.ConnectionID), connection.MessageQueued{MessageID: id})
	switch {
	case ferr != nil:
		return EnqueueResult{}, ferr
	case !found && err != nil && !errors.Is(err, eventstore.ErrDuplicateEventID):
		return EnqueueResult{}, err // a refusal, and the key is new
	case !found:
		// Stored, but further back than a store without an id index lets us look.
		return EnqueueResult{MessageID: id, Replayed: true}, nil
	}
	q := ev.(connection.MessageQueued)
	if err := connection.CheckReplay(cmd.ConnectionID, "enqueue", q.Fingerprint, fp); err != nil {
		return EnqueueResult{}, err
	}
	return EnqueueResult{Result: Result{Position: pos, Version: a.Version}, MessageID: id, Seq: q.Seq, Replayed: true}, nil
}
