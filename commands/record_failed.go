package commands

import (
	"context"

	"github.com/waqueue/waqueue/domain/connection"
)

// RecordFailed records that WhatsApp refused a dispatched message (MessageFailed, final).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordFailed struct {
	MessageRef
	// Code is a stable failure code (e.g. "not_on_whatsapp"); required.
	Code   string `json:"code"`
	Detail string `json:"detail,omitempty"`
}

// RecordFailedHandler handles RecordFailed.
type RecordFailedHandler struct{ h outcomeHandler }

// NewRecordFailedHandler returns a handler; repo and now must not be nil.
func NewRecordFailedHandler(repo *Repository, now Clock) (*RecordFailedHandler, error) {
	h, err := newOutcomeHandler("RecordFailed", repo, now)
	if err != nil {
		return nil, err
	}
	return &RecordFailedHandler{h: h}, nil
}

// Handle records the outcome; see the type's doc.
func (h *RecordFailedHandler) Handle(ctx context.Context, cmd RecordFailed) (Result, error) {
	return h.h.record(ctx, cmd.ConnectionID, connection.Outcome{MessageID: cmd.MessageID, Seq: cmd.Seq, Kind: connection.MessageStatusFailed, Code: cmd.Code, Detail: cmd.Detail})
}
