package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// RequestClear asks to clear the connection's queue, or one broadcast's pending messages. It
// needs connection.edit. It records ClearQueueRequested, which fixes the exact purged set and
// flips the queue to clearing; the clearing process completes it (CompleteClear). The clear id
// is connection.ClearIDFor(tenant, connection, key): a retry with the same key records nothing
// and answers with the same clear (Replayed). A different clear while one is in progress fails
// with *connection.ClearingError.
type RequestClear struct {
	ConnectionID   string `json:"connection_id"`
	IdempotencyKey string `json:"idempotency_key"`
	// BroadcastID limits the clear to one broadcast; zero clears the whole queue.
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
	Reason      string    `json:"reason"`
}

// RequestClearResult is the outcome of RequestClear.
type RequestClearResult struct {
	Result
	ClearID uuid.UUID
	// Requested is the request with its report figures (UpToSeq, Purge, PurgeCount, InFlight).
	// On a replay whose original lies further back than ReplayScan events only ClearID is set.
	Requested connection.ClearQueueRequested
	Replayed  bool
}

// RequestClearHandler handles RequestClear.
type RequestClearHandler struct {
	repo *Repository
	now  Clock
}

// NewRequestClearHandler returns a handler; repo and now must not be nil.
func NewRequestClearHandler(repo *Repository, now Clock) (*RequestClearHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewRequestClearHandler: nil dependency")
	}
	return &RequestClearHandler{repo: repo, now: now}, nil
}

// Handle records ClearQueueRequested, or answers a replay of the same key.
func (h *RequestClearHandler) Handle(ctx context.Context, cmd RequestClear) (RequestClearResult, error) {
	if err := requireKey(cmd.IdempotencyKey); err != nil {
		return RequestClearResult{}, err
	}
	var (
		id         uuid.UUID
		inProgress connection.ClearQueueRequested
	)
	scope := connection.WholeQueue
	if cmd.BroadcastID != uuid.Nil {
		scope = connection.BroadcastScope(cmd.BroadcastID)
	}
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		id = connection.ClearIDFor(p.TenantID, cmd.ConnectionID, cmd.IdempotencyKey)
		inProgress, _ = c.CurrentClear()
		return c.RequestClear(connection.RequestClear{ClearID: id, Scope: scope, Reason: cmd.Reason, Actor: p.ID}, h.now())
	})
	switch {
	case errors.Is(err, eventstore.ErrDuplicateEventID):
		// Requested (and probably completed) already.
		ev, found, ferr := h.repo.findBackwards(ctx, cmd.ConnectionID, ReplayScan, connection.ClearQueueRequested{ClearID: id})
		if ferr != nil {
			return RequestClearResult{}, ferr
		}
		res := RequestClearResult{ClearID: id, Replayed: true}
		if found {
			res.Requested = ev.(connection.ClearQueueRequested)
		}
		return res, nil
	case err != nil:
		return RequestClearResult{}, err
	case len(a.Events) == 0:
		// The same clear is in progress: an idempotent no-op.
		return RequestClearResult{Result: resultOf(a), ClearID: id, Requested: inProgress, Replayed: true}, nil
	}
	return RequestClearResult{Result: resultOf(a), ClearID: id, Requested: a.Events[0].(connection.ClearQueueRequested)}, nil
}
