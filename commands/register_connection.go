package commands

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// RegisterConnection registers a WhatsApp number as a connection of the caller's tenant. It needs
// connection.edit. Connection ids are scoped to the tenant (connection.Key): registering an id
// that exists in the caller's tenant fails with connection.ErrAlreadyRegistered; the same id in
// another tenant is another connection.
type RegisterConnection struct {
	ConnectionID string `json:"connection_id"`
	// Phone is the connection's own number, in international format.
	Phone string `json:"phone"`
	// OnBan is the policy for automatically held queues; zero means connection.OnBanHold.
	OnBan connection.OnBanPolicy `json:"on_ban,omitzero"`
	// SendingPolicy, if set, changes the default sending policy from the start (see
	// SetSendingPolicy; recorded as a SendingPolicyChanged after the ConnectionRegistered).
	SendingPolicy *connection.SendingPolicyPatch `json:"sending_policy,omitempty"`
}

// RegisterConnectionHandler handles RegisterConnection.
type RegisterConnectionHandler struct {
	repo *Repository
	now  Clock
}

// NewRegisterConnectionHandler returns a handler; repo and now must not be nil.
func NewRegisterConnectionHandler(repo *Repository, now Clock) (*RegisterConnectionHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewRegisterConnectionHandler: nil dependency")
	}
	return &RegisterConnectionHandler{repo: repo, now: now}, nil
}

// Handle records ConnectionRegistered (and SendingPolicyChanged when the command sets a policy).
func (h *RegisterConnectionHandler) Handle(ctx context.Context, cmd RegisterConnection) (Result, error) {
	p, err := principal(ctx, auth.ConnectionEdit)
	if err != nil {
		return Result{}, err
	}
	if cmd.SendingPolicy != nil {
		if err := CheckTimeZone(*cmd.SendingPolicy); err != nil {
			return Result{}, err
		}
	}
	a, err := h.repo.Update(ctx, connection.Key(p.TenantID, cmd.ConnectionID), p.ID, func(c *connection.Connection) ([]connection.Event, error) {
		return c.Register(connection.RegisterConnection{
			ConnectionID: cmd.ConnectionID, TenantID: p.TenantID, Phone: cmd.Phone, OnBan: cmd.OnBan, SendingPolicy: cmd.SendingPolicy, Actor: p.ID,
		}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
