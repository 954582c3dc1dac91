package commands

import (
	"context"

	"github.com/waqueue/waqueue/domain/connection"
)

// RecordRead records a read receipt (MessageRead).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordRead struct {
	MessageRef
}

// RecordReadHandler handles RecordRead.
type RecordReadHandler struct{ h outcomeHandler }

// NewRecordReadHandler returns a handler; repo and now must not be nil.
func NewRecordReadHandler(repo *Repository, now Clock) (*RecordReadHandler, error) {
	h, err := newOutcomeHandler("RecordRead", repo, now)
	if err != nil {
		return nil, err
	}
	return &RecordReadHandler{h: h}, nil
}

// Handle records the outcome; see the type's doc.
func (h *RecordReadHandler) Handle(ctx context.Context, cmd RecordRead) (Result, error) {
	return h.h.record(ctx, cmd.ConnectionID, connection.Outcome{MessageID: cmd.MessageID, Seq: cmd.Seq, Kind: connection.MessageStatusRead})
}
