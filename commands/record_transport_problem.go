package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// RecordTransportProblem records a connection problem the WhatsApp transport observed that is
// neither a ban nor a session loss (TransportProblemObserved: stream replaced, client outdated,
// keep-alive timeout, connect failure). It changes no link or queue state; it is recorded so
// operators see it on the connection card and in the audit trail.
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordTransportProblem struct {
	ConnectionID string                          `json:"connection_id"`
	Kind         connection.TransportProblemKind `json:"kind"`
	// Reason is the transport's short reason (e.g. a WhatsApp failure code), if any.
	Reason string `json:"reason,omitempty"`
	// Detail is free text from the transport, at most connection.MaxNoteLen bytes.
	Detail string `json:"detail,omitempty"`
}

// RecordTransportProblemHandler handles RecordTransportProblem.
type RecordTransportProblemHandler struct {
	repo *Repository
	now  Clock
}

// NewRecordTransportProblemHandler returns a handler; repo and now must not be nil.
func NewRecordTransportProblemHandler(repo *Repository, now Clock) (*RecordTransportProblemHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewRecordTransportProblemHandler: nil dependency")
	}
	return &RecordTransportProblemHandler{repo: repo, now: now}, nil
}

// Handle records the decision of RecordTransportProblem; see the type's doc.
func (h *RecordTransportProblemHandler) Handle(ctx context.Context, cmd RecordTransportProblem) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(_ auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.ObserveTransportProblem(connection.ObserveTransportProblem{Kind: cmd.Kind, Reason: cmd.Reason, Detail: cmd.Detail}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
