package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// HoldQueue holds the queue by an operator's decision (QueueHeld). It needs connection.edit.
type HoldQueue struct {
	ConnectionID string `json:"connection_id"`
	Note         string `json:"note,omitempty"`
}

// HoldQueueHandler handles HoldQueue.
type HoldQueueHandler struct {
	repo *Repository
	now  Clock
}

// NewHoldQueueHandler returns a handler; repo and now must not be nil.
func NewHoldQueueHandler(repo *Repository, now Clock) (*HoldQueueHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewHoldQueueHandler: nil dependency")
	}
	return &HoldQueueHandler{repo: repo, now: now}, nil
}

// Handle records the decision of HoldQueue; see the type's doc.
func (h *HoldQueueHandler) Handle(ctx context.Context, cmd HoldQueue) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Hold(connection.HoldQueue{Note: cmd.Note, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
