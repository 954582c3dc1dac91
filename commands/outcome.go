package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// outcomeHandler records a transport outcome; the Record… handlers share it.
type outcomeHandler struct {
	repo *Repository
	now  Clock
}

func newOutcomeHandler(name string, repo *Repository, now Clock) (outcomeHandler, error) {
	if repo == nil || now == nil {
		return outcomeHandler{}, errors.New("commands: New" + name + "Handler: nil dependency")
	}
	return outcomeHandler{repo: repo, now: now}, nil
}

// record decides RecordOutcome. A second report of the same outcome is refused by the domain
// (sent, failed, unknown: *connection.NotInFlightError) or by the store (a receipt's event id is
// keyed by the message: eventstore.ErrDuplicateEventID); nothing is written twice.
func (h outcomeHandler) record(ctx context.Context, connID string, o connection.Outcome) (Result, error) {
	a, err := update(ctx, h.repo, connID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.RecordOutcome(o, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}

// MessageRef names a dispatched message: its id and queue position, as DispatchNext returned them.
type MessageRef struct {
	ConnectionID string    `json:"connection_id"`
	MessageID    uuid.UUID `json:"message_id"`
	Seq          uint64    `json:"seq"`
}
