package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// HoldForTenant holds a connection's queue because its tenant is suspended (QueueHeld, reason
// tenant_suspended; connection.Connection.HoldForTenant says when nothing is recorded). It
// needs connection.edit in the connection's tenant: the platform operator sends it as the
// principal auth.Principal.ActingIn returns. It is not a broker command.
type HoldForTenant struct {
	ConnectionID string `json:"connection_id"`
	Note         string `json:"note,omitempty"`
}

// HoldForTenantHandler handles HoldForTenant.
type HoldForTenantHandler struct {
	repo *Repository
	now  Clock
}

// NewHoldForTenantHandler returns a handler; repo and now must not be nil.
func NewHoldForTenantHandler(repo *Repository, now Clock) (*HoldForTenantHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewHoldForTenantHandler: nil dependency")
	}
	return &HoldForTenantHandler{repo: repo, now: now}, nil
}

// Handle records the decision of HoldForTenant; see the type's doc. It is idempotent.
func (h *HoldForTenantHandler) Handle(ctx context.Context, cmd HoldForTenant) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.HoldForTenant(connection.HoldForTenant{Note: cmd.Note, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
