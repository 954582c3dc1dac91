package commands

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// ExpireMessage records that the head of the queue outlived its TTL (MessageExpired).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type ExpireMessage struct {
	ConnectionID string    `json:"connection_id"`
	MessageID    uuid.UUID `json:"message_id"`
	Seq          uint64    `json:"seq"`
	// ExpiresAt is the message's expiry from its MessageQueued.
	ExpiresAt time.Time `json:"expires_at"`
}

// ExpireMessageHandler handles ExpireMessage.
type ExpireMessageHandler struct {
	repo *Repository
	now  Clock
}

// NewExpireMessageHandler returns a handler; repo and now must not be nil.
func NewExpireMessageHandler(repo *Repository, now Clock) (*ExpireMessageHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewExpireMessageHandler: nil dependency")
	}
	return &ExpireMessageHandler{repo: repo, now: now}, nil
}

// Handle records the decision of ExpireMessage; see the type's doc.
func (h *ExpireMessageHandler) Handle(ctx context.Context, cmd ExpireMessage) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Expire(connection.ExpireMessage{MessageID: cmd.MessageID, Seq: cmd.Seq, ExpiresAt: cmd.ExpiresAt}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
