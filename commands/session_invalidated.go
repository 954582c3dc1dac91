package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// SessionInvalidated records a session logged out (SessionInvalidated, plus QueueHeld: G7).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type SessionInvalidated struct {
	ConnectionID string `json:"connection_id"`
	// Reason is the transport's reason (e.g. a logout reason code).
	Reason string `json:"reason,omitempty"`
}

// SessionInvalidatedHandler handles SessionInvalidated.
type SessionInvalidatedHandler struct {
	repo *Repository
	now  Clock
}

// NewSessionInvalidatedHandler returns a handler; repo and now must not be nil.
func NewSessionInvalidatedHandler(repo *Repository, now Clock) (*SessionInvalidatedHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewSessionInvalidatedHandler: nil dependency")
	}
	return &SessionInvalidatedHandler{repo: repo, now: now}, nil
}

// Handle records the decision of SessionInvalidated; see the type's doc.
func (h *SessionInvalidatedHandler) Handle(ctx context.Context, cmd SessionInvalidated) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.InvalidateSession(connection.InvalidateSession{Reason: cmd.Reason, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
