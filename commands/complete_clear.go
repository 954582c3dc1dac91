package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// CompleteClear ends the clear in progress with its exact report (QueueCleared). The clearing
// process sends it once its read models have marked the purged messages. It is idempotent:
// exactly one QueueCleared is recorded per clear, however often it is called (also after a
// crash between the append and the answer); a repeated call answers AlreadyCompleted with the
// recorded report. Transport-originated: only the system principal (SystemPrincipal) may issue it.
type CompleteClear struct {
	ConnectionID string    `json:"connection_id"`
	ClearID      uuid.UUID `json:"clear_id"`
}

// CompleteClearResult is the outcome of CompleteClear.
type CompleteClearResult struct {
	Result
	// Cleared is the report recorded (by this call, or by an earlier one when AlreadyCompleted).
	Cleared          connection.QueueCleared
	AlreadyCompleted bool
}

// CompleteClearHandler handles CompleteClear.
type CompleteClearHandler struct {
	repo *Repository
	now  Clock
}

// NewCompleteClearHandler returns a handler; repo and now must not be nil.
func NewCompleteClearHandler(repo *Repository, now Clock) (*CompleteClearHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewCompleteClearHandler: nil dependency")
	}
	return &CompleteClearHandler{repo: repo, now: now}, nil
}

// Handle records QueueCleared, or finds the one recorded already. A clear that was never
// requested fails with connection.ErrNoClearInProgress.
func (h *CompleteClearHandler) Handle(ctx context.Context, cmd CompleteClear) (CompleteClearResult, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.CompleteClear(connection.CompleteClear{ClearID: cmd.ClearID, Actor: p.ID}, h.now())
	})
	if errors.Is(err, connection.ErrNoClearInProgress) || errors.Is(err, eventstore.ErrDuplicateEventID) {
		p, _ := PrincipalFromContext(ctx) // update authorized it and checked the tenant
		ev, found, ferr := h.repo.findBackwards(ctx, connection.Key(p.TenantID, cmd.ConnectionID), ReplayScan, connection.QueueCleared{ClearID: cmd.ClearID})
		if ferr != nil {
			return CompleteClearResult{}, ferr
		}
		if !found {
			return CompleteClearResult{}, err
		}
		return CompleteClearResult{Cleared: ev.(connection.QueueCleared), AlreadyCompleted: true}, nil
	}
	if err != nil {
		return CompleteClearResult{}, err
	}
	return CompleteClearResult{Result: resultOf(a), Cleared: a.Events[0].(connection.QueueCleared)}, nil
}
