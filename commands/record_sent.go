package commands

import (
	"context"

	"github.com/waqueue/waqueue/domain/connection"
)

// RecordSent records WhatsApp's server acknowledgement of a dispatched message (MessageSent).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type RecordSent struct {
	MessageRef
	// ServerID is the id WhatsApp assigned, if any.
	ServerID string `json:"server_id,omitempty"`
}

// RecordSentHandler handles RecordSent.
type RecordSentHandler struct{ h outcomeHandler }

// NewRecordSentHandler returns a handler; repo and now must not be nil.
func NewRecordSentHandler(repo *Repository, now Clock) (*RecordSentHandler, error) {
	h, err := newOutcomeHandler("RecordSent", repo, now)
	if err != nil {
		return nil, err
	}
	return &RecordSentHandler{h: h}, nil
}

// Handle records the outcome; see the type's doc.
func (h *RecordSentHandler) Handle(ctx context.Context, cmd RecordSent) (Result, error) {
	return h.h.record(ctx, cmd.ConnectionID, connection.Outcome{MessageID: cmd.MessageID, Seq: cmd.Seq, Kind: connection.MessageStatusSent, ServerID: cmd.ServerID})
}
