package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// PairingSucceeded records that a WhatsApp session was paired with the number (SessionPaired,
// plus QueueResumed under the resume policy). Transport-originated: only the system principal (SystemPrincipal) may issue it.
type PairingSucceeded struct {
	ConnectionID string `json:"connection_id"`
	// JID is the WhatsApp device JID of the session, if known.
	JID string `json:"jid,omitempty"`
}

// PairingSucceededHandler handles PairingSucceeded.
type PairingSucceededHandler struct {
	repo *Repository
	now  Clock
}

// NewPairingSucceededHandler returns a handler; repo and now must not be nil.
func NewPairingSucceededHandler(repo *Repository, now Clock) (*PairingSucceededHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewPairingSucceededHandler: nil dependency")
	}
	return &PairingSucceededHandler{repo: repo, now: now}, nil
}

// Handle records the decision of PairingSucceeded; see the type's doc.
func (h *PairingSucceededHandler) Handle(ctx context.Context, cmd PairingSucceeded) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Pair(connection.PairSession{JID: cmd.JID, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
