package commands

import (
	"context"

	"github.com/waqueue/waqueue/domain/connection"
)

// RecordOutcomeUnknown records that a dispatched message was never acknowledged
// (MessageOutcomeUnknown, final: it is never sent again).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordOutcomeUnknown struct {
	MessageRef
	// Cause says why the outcome is unknown (e.g. "timeout", "restart").
	Cause string `json:"cause"`
}

// RecordOutcomeUnknownHandler handles RecordOutcomeUnknown.
type RecordOutcomeUnknownHandler struct{ h outcomeHandler }

// NewRecordOutcomeUnknownHandler returns a handler; repo and now must not be nil.
func NewRecordOutcomeUnknownHandler(repo *Repository, now Clock) (*RecordOutcomeUnknownHandler, error) {
	h, err := newOutcomeHandler("RecordOutcomeUnknown", repo, now)
	if err != nil {
		return nil, err
	}
	return &RecordOutcomeUnknownHandler{h: h}, nil
}

// Handle records the outcome; see the type's doc.
func (h *RecordOutcomeUnknownHandler) Handle(ctx context.Context, cmd RecordOutcomeUnknown) (Result, error) {
	return h.h.record(ctx, cmd.ConnectionID, connection.Outcome{MessageID: cmd.MessageID, Seq: cmd.Seq, Kind: connection.MessageStatusUnknown, Detail: cmd.Cause})
}
