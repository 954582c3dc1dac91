package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// ResumeQueue resumes a held queue by an operator's decision (QueueResumed). It needs
// connection.edit.
type ResumeQueue struct {
	ConnectionID string `json:"connection_id"`
	Note         string `json:"note,omitempty"`
}

// ResumeQueueHandler handles ResumeQueue.
type ResumeQueueHandler struct {
	repo *Repository
	now  Clock
}

// NewResumeQueueHandler returns a handler; repo and now must not be nil.
func NewResumeQueueHandler(repo *Repository, now Clock) (*ResumeQueueHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewResumeQueueHandler: nil dependency")
	}
	return &ResumeQueueHandler{repo: repo, now: now}, nil
}

// Handle records the decision of ResumeQueue; see the type's doc.
func (h *ResumeQueueHandler) Handle(ctx context.Context, cmd ResumeQueue) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Resume(connection.ResumeQueue{Note: cmd.Note, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
