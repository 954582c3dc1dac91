package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// LiftBan records the end of a ban (BanLifted; the queue stays held unless the policy is resume:
// G7). Transport-originated: only the system principal (SystemPrincipal) may issue it.
type LiftBan struct {
	ConnectionID string `json:"connection_id"`
	Reason       string `json:"reason,omitempty"`
}

// LiftBanHandler handles LiftBan.
type LiftBanHandler struct {
	repo *Repository
	now  Clock
}

// NewLiftBanHandler returns a handler; repo and now must not be nil.
func NewLiftBanHandler(repo *Repository, now Clock) (*LiftBanHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewLiftBanHandler: nil dependency")
	}
	return &LiftBanHandler{repo: repo, now: now}, nil
}

// Handle records the decision of LiftBan; see the type's doc.
func (h *LiftBanHandler) Handle(ctx context.Context, cmd LiftBan) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.LiftBan(connection.LiftBan{Reason: cmd.Reason, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
