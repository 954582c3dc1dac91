package commands

import (
	"context"

	"github.com/waqueue/waqueue/domain/connection"
)

// RecordDelivered records a delivery receipt (MessageDelivered).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordDelivered struct {
	MessageRef
}

// RecordDeliveredHandler handles RecordDelivered.
type RecordDeliveredHandler struct{ h outcomeHandler }

// NewRecordDeliveredHandler returns a handler; repo and now must not be nil.
func NewRecordDeliveredHandler(repo *Repository, now Clock) (*RecordDeliveredHandler, error) {
	h, err := newOutcomeHandler("RecordDelivered", repo, now)
	if err != nil {
		return nil, err
	}
	return &RecordDeliveredHandler{h: h}, nil
}

// Handle records the outcome; see the type's doc.
func (h *RecordDeliveredHandler) Handle(ctx context.Context, cmd RecordDelivered) (Result, error) {
	return h.h.record(ctx, cmd.ConnectionID, connection.Outcome{MessageID: cmd.MessageID, Seq: cmd.Seq, Kind: connection.MessageStatusDelivered})
}
