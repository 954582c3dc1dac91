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
// and answers with the same clear (Replayed) in any state — in progress, completed, while
// another clear is in progress — if its fingerprint (scope, reason) matches the one recorded;
// another request under the key fails with *connection.KeyReusedError. A different clear while
// one is in progress fails with *connection.ClearingError.
type RequestClear struct {
	ConnectionID   string `json:"connection_id"`
	IdempotencyKey string `json:"idempotency_key"`
	// BroadcastID limits the clear to one broadcast; zero clears the whole queue.
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
	Reason      string    `json:"reason"`
	// Then is what the queue becomes when the clear completes (keep, hold or resume); zero is
	// keep. Resume is refused while the link is banned or logged out (*connection.LinkStatusError).
	Then connection.ClearThen `json:"then,omitzero"`
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
		id               uuid.UUID
		inProgress       connection.ClearQueueRequested
		inProgressReplay bool
	)
	scope := connection.WholeQueue
	if cmd.BroadcastID != uuid.Nil {
		scope = connection.BroadcastScope(cmd.BroadcastID)
	}
	dcmd := connection.RequestClear{Scope: scope, Reason: cmd.Reason, Then: cmd.Then}
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		id = connection.ClearIDFor(p.TenantID, bareID(p, cmd.ConnectionID), cmd.IdempotencyKey)
		inProgress, _ = c.CurrentClear()
		dcmd.ClearID, dcmd.Actor = id, p.ID
		return c.RequestClear(dcmd, h.now())
	})
	switch {
	case err == nil && a.Existing:
		// Another node recorded a request under this key first: answer it, or refuse below.
	case err != nil && !mayBeReplay(err):
		return RequestClearResult{}, err
	case err == nil && len(a.Events) == 0:
		// The same clear is in progress, the same request (the domain checked the fingerprint):
		// an idempotent no-op, answered below with the original's position (a no-op has none,
		// and a read asking for Waqueue-Min-Position must see the request).
		inProgressReplay = true
	case err == nil:
		return RequestClearResult{Result: resultOf(a), ClearID: id, Requested: a.Events[0].(connection.ClearQueueRequested)}, nil
	}
	// Requested (and perhaps completed) already, or refused in a state the original may have
	// led to (another clear in progress, its broadcast no longer pending): answer the original.
	p, _ := PrincipalFromContext(ctx) // update authorized it and checked the tenant
	ev, pos, found, ferr := h.repo.original(ctx, connection.Key(p.TenantID, cmd.ConnectionID), connection.ClearQueueRequested{ClearID: id})
	switch {
	case ferr != nil:
		return RequestClearResult{}, ferr
	case !found && err != nil && !errors.Is(err, eventstore.ErrDuplicateEventID):
		return RequestClearResult{}, err // a refusal, and the key is new
	case !found && inProgressReplay:
		return RequestClearResult{Result: resultOf(a), ClearID: id, Requested: inProgress, Replayed: true}, nil
	case !found:
		// Stored, but further back than a store without an id index lets us look.
		return RequestClearResult{ClearID: id, Replayed: true}, nil
	}
	req := ev.(connection.ClearQueueRequested)
	if err := connection.CheckReplay(cmd.ConnectionID, "clear", req.Fingerprint, connection.ClearFingerprint(dcmd)); err != nil {
		return RequestClearResult{}, err
	}
	return RequestClearResult{Result: Result{Position: pos, Version: a.Version}, ClearID: id, Requested: req, Replayed: true}, nil
}
