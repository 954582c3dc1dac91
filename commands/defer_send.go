package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// DeferSend records that the transport refused to take a dispatched message (not connected,
// rate limited: provably nothing was sent) — MessageSendDeferred. The hand-over fenced by the
// message's MessageDispatched (or last MessageSendRetried) is then closed: WhatsApp does not
// have the message, a clear that covers it fails it not_sent instead of reporting it in flight,
// and it is handed over again only after RetrySend. Transport-originated: only the system
// principal (SystemPrincipal) may issue it. Not served by the command bus (the dispatcher calls it).
type DeferSend struct {
	MessageRef
	// Reason is the transport's answer ("not_connected", "rate_limited"); required.
	Reason string `json:"reason"`
}

// DeferSendHandler handles DeferSend.
type DeferSendHandler struct {
	repo *Repository
	now  Clock
}

// NewDeferSendHandler returns a handler; repo and now must not be nil.
func NewDeferSendHandler(repo *Repository, now Clock) (*DeferSendHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewDeferSendHandler: nil dependency")
	}
	return &DeferSendHandler{repo: repo, now: now}, nil
}

// Handle records the deferral. A message that is not in flight, or already deferred, is refused
// with a *connection.NotInFlightError.
func (h *DeferSendHandler) Handle(ctx context.Context, cmd DeferSend) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(_ auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.DeferSend(connection.SendRefused{MessageID: cmd.MessageID, Seq: cmd.Seq, Reason: cmd.Reason}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
