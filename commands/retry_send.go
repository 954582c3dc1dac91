package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// RetrySend fences the retry of a deferred hand-over: it records MessageSendRetried at the
// expected revision BEFORE the message is handed to the transport again, exactly as DispatchNext
// records MessageDispatched before the first hand-over (G1). The caller hands the message over
// only when RetrySend succeeded, and passes Result.Version to the transport as the hand-over's
// fence. A clear, hold, ban or session loss recorded since the message was dispatched makes
// the domain refuse (connection.ErrSendInterrupted, ErrQueueClearing, ErrQueueHeld,
// ErrLinkStatus); a message a clear failed not_sent meanwhile is refused with ErrNotInFlight.
// After a refusal the message was never handed over: record it failed connection.FailureNotSent.
// Transport-originated: only the system principal (SystemPrincipal) may issue it. Not served by
// the command bus.
type RetrySend struct {
	MessageRef
	// Epoch is the caller's lease epoch, as for DispatchNext.Epoch.
	Epoch uint64 `json:"epoch,omitempty"`
}

// RetrySendHandler handles RetrySend.
type RetrySendHandler struct {
	repo *Repository
	now  Clock
}

// NewRetrySendHandler returns a handler; repo and now must not be nil.
func NewRetrySendHandler(repo *Repository, now Clock) (*RetrySendHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewRetrySendHandler: nil dependency")
	}
	return &RetrySendHandler{repo: repo, now: now}, nil
}

// Handle records the retry's fence; Result.Version is its stream revision.
func (h *RetrySendHandler) Handle(ctx context.Context, cmd RetrySend) (Result, error) {
	// A claim unique to this call, as for DispatchNext: two callers deciding the same retry on
	// the same state must not both be told they appended it (G5).
	a, err := claimUpdate(ctx, h.repo, cmd.ConnectionID, auth.System, uuid.New(), func(_ auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.RetrySend(connection.RetrySend{MessageID: cmd.MessageID, Seq: cmd.Seq, Epoch: cmd.Epoch}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
