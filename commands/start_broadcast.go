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

// StartBroadcast queues one text to up to connection.MaxRecipients recipients: BroadcastStarted
// and one MessageQueued per recipient, in one atomic append. It needs broadcast.manage. The
// broadcast id is connection.BroadcastIDFor(tenant, connection, key): a retry queues nothing and
// answers with the same id (Replayed) in any state, if its fingerprint (normalised recipients in
// order, text, TTL) matches the one recorded; another request under the key fails with
// *connection.KeyReusedError. While the queue is clearing a new broadcast fails with
// *connection.ClearingError (G2).
type StartBroadcast struct {
	ConnectionID   string        `json:"connection_id"`
	IdempotencyKey string        `json:"idempotency_key"`
	Recipients     []string      `json:"recipients"`
	Text           string        `json:"text"`
	TTL            time.Duration `json:"ttl,omitempty"`
}

// StartBroadcastResult is the outcome of StartBroadcast.
type StartBroadcastResult struct {
	Result
	BroadcastID uuid.UUID
	// Count is the number of messages queued; FirstSeq the queue position of the first (message
	// i is at FirstSeq+i, id connection.BroadcastMessageID(BroadcastID, i)). Both are 0 on a
	// replay whose original lies further back than ReplayScan events.
	Count    int
	FirstSeq uint64
	Replayed bool
}

// StartBroadcastHandler handles StartBroadcast.
type StartBroadcastHandler struct {
	repo *Repository
	now  Clock
}

// NewStartBroadcastHandler returns a handler; repo and now must not be nil.
func NewStartBroadcastHandler(repo *Repository, now Clock) (*StartBroadcastHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewStartBroadcastHandler: nil dependency")
	}
	return &StartBroadcastHandler{repo: repo, now: now}, nil
}

// Handle validates the recipients once (seconds for 100,000 numbers), then decides and appends
// in the retry loop.
func (h *StartBroadcastHandler) Handle(ctx context.Context, cmd StartBroadcast) (StartBroadcastResult, error) {
	p, err := principal(ctx, auth.BroadcastMgmt)
	if err != nil {
		return StartBroadcastResult{}, err
	}
	if err := requireKey(cmd.IdempotencyKey); err != nil {
		return StartBroadcastResult{}, err
	}
	var region string
	if err := h.repo.View(ctx, connection.Key(p.TenantID, cmd.ConnectionID), func(c *connection.Connection) error {
		region = c.Region()
		return visible(p, cmd.ConnectionID, c)
	}); err != nil {
		return StartBroadcastResult{}, err
	}
	id := connection.BroadcastIDFor(p.TenantID, bareID(p, cmd.ConnectionID), cmd.IdempotencyKey)
	prepared, err := connection.PrepareBroadcast(connection.StartBroadcast{
		BroadcastID: id, Recipients: cmd.Recipients, Text: cmd.Text, TTL: cmd.TTL, Actor: p.ID,
	}, region)
	if err != nil {
		return StartBroadcastResult{}, err
	}
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.BroadcastMgmt, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.StartPreparedBroadcast(prepared, h.now())
	})
	if err == nil && !a.Existing {
		b := a.Events[0].(connection.BroadcastStarted)
		return StartBroadcastResult{Result: resultOf(a), BroadcastID: id, Count: b.Count, FirstSeq: b.FirstSeq}, nil
	}
	if err != nil && !mayBeReplay(err) {
		return StartBroadcastResult{}, err
	}
	// The key may have been accepted before: answer the original in any state (G5).
	ev, rec, found, ferr := h.repo.originalRecord(ctx, connection.Key(p.TenantID, cmd.ConnectionID), connection.BroadcastStarted{BroadcastID: id})
	switch {
	case ferr != nil:
		return StartBroadcastResult{}, ferr
	case !found && err != nil && !errors.Is(err, eventstore.ErrDuplicateEventID):
		return StartBroadcastResult{}, err // a refusal, and the key is new
	case !found:
		// Stored, but further back than a store without an id index lets us look.
		return StartBroadcastResult{BroadcastID: id, Replayed: true}, nil
	}
	b := ev.(connection.BroadcastStarted)
	if err := connection.CheckReplay(cmd.ConnectionID, "broadcast", b.Fingerprint, prepared.Fingerprint()); err != nil {
		return StartBroadcastResult{}, err
	}
	// The original was answered with the position of its last event: its last BroadcastQueued
	// chunk (in streams written before chunks, its last MessageQueued).
	pos, err := h.repo.broadcastEnd(ctx, rec, b)
	if err != nil {
		return StartBroadcastResult{}, err
	}
	return StartBroadcastResult{Result: Result{Position: pos, Version: a.Version}, BroadcastID: id, Count: b.Count, FirstSeq: b.FirstSeq, Replayed: true}, nil
}
