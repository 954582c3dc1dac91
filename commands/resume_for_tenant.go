package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// ResumeForTenant resumes a connection's queue held for its tenant's suspension (QueueResumed,
// reason tenant_resumed; connection.Connection.ResumeForTenant says when nothing is recorded). It
// needs connection.edit in the connection's tenant: the platform operator sends it as the
// principal auth.Principal.ActingIn returns. It is not a broker command.
type ResumeForTenant struct {
	ConnectionID string `json:"connection_id"`
	Note         string `json:"note,omitempty"`
}

// ResumeForTenantHandler handles ResumeForTenant.
type ResumeForTenantHandler struct {
	repo *Repository
	now  Clock
}

// NewResumeForTenantHandler returns a handler; repo and now must not be nil.
func NewResumeForTenantHandler(repo *Repository, now Clock) (*ResumeForTenantHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewResumeForTenantHandler: nil dependency")
	}
	return &ResumeForTenantHandler{repo: repo, now: now}, nil
}

// Handle records the decision of ResumeForTenant; see the type's doc. It is idempotent.
func (h *ResumeForTenantHandler) Handle(ctx context.Context, cmd ResumeForTenant) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.ResumeForTenant(connection.ResumeForTenant{Note: cmd.Note, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
