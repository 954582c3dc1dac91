package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// RetireConnection retires a connection for good (ConnectionRetired). It needs connection.edit.
// It is refused with *connection.QueueNotEmptyError while messages are pending or in flight or
// a clear is in progress: to clear and retire in one step, RequestClear with Then
// connection.ClearThenRetire. A retired connection is refused (connection.ErrConnectionRetired).
type RetireConnection struct {
	ConnectionID string `json:"connection_id"`
	// Reason says why; required.
	Reason string `json:"reason"`
}

// RetireConnectionHandler handles RetireConnection.
type RetireConnectionHandler struct {
	repo *Repository
	now  Clock
}

// NewRetireConnectionHandler returns a handler; repo and now must not be nil.
func NewRetireConnectionHandler(repo *Repository, now Clock) (*RetireConnectionHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewRetireConnectionHandler: nil dependency")
	}
	return &RetireConnectionHandler{repo: repo, now: now}, nil
}

// Handle records the decision of RetireConnection; see the type's doc.
func (h *RetireConnectionHandler) Handle(ctx context.Context, cmd RetireConnection) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Retire(connection.Retire{Reason: cmd.Reason, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
