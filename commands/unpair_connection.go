package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// UnpairConnection records an operator's logout of the connection's WhatsApp session
// (SessionInvalidated with the operator as actor, reason "unpaired"; the queue held, G7). It
// needs connection.edit. On a link without a session (unpaired, session_invalid) it records
// nothing, so the caller may always end the transport session after it. A retired connection
// is refused (connection.ErrConnectionRetired).
type UnpairConnection struct {
	ConnectionID string `json:"connection_id"`
}

// UnpairConnectionHandler handles UnpairConnection.
type UnpairConnectionHandler struct {
	repo *Repository
	now  Clock
}

// NewUnpairConnectionHandler returns a handler; repo and now must not be nil.
func NewUnpairConnectionHandler(repo *Repository, now Clock) (*UnpairConnectionHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewUnpairConnectionHandler: nil dependency")
	}
	return &UnpairConnectionHandler{repo: repo, now: now}, nil
}

// Handle records the decision of UnpairConnection; see the type's doc.
func (h *UnpairConnectionHandler) Handle(ctx context.Context, cmd UnpairConnection) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Unpair(connection.Unpair{Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
