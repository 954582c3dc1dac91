package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// SetOnBanPolicy changes what happens to an automatically held queue when the link recovers.
// It needs connection.edit. Setting the current policy again is a no-op.
type SetOnBanPolicy struct {
	ConnectionID string                 `json:"connection_id"`
	Policy       connection.OnBanPolicy `json:"policy"`
}

// SetOnBanPolicyHandler handles SetOnBanPolicy.
type SetOnBanPolicyHandler struct {
	repo *Repository
	now  Clock
}

// NewSetOnBanPolicyHandler returns a handler; repo and now must not be nil.
func NewSetOnBanPolicyHandler(repo *Repository, now Clock) (*SetOnBanPolicyHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewSetOnBanPolicyHandler: nil dependency")
	}
	return &SetOnBanPolicyHandler{repo: repo, now: now}, nil
}

// Handle records OnBanPolicyChanged.
func (h *SetOnBanPolicyHandler) Handle(ctx context.Context, cmd SetOnBanPolicy) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: cmd.Policy, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
