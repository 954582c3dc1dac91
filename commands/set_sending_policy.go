package commands

import (
	"context"
	"errors"
	"time"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// SetSendingPolicy changes some settings of a connection's sending policy (pacing, daily cap,
// time zone, quiet hours); the settings the patch leaves nil keep their value. It needs
// connection.edit. The result is validated against the bounds (connection.SendingPolicy) and
// the time zone must load (time.LoadLocation); a refusal is a *connection.ValidationError
// (CodeInvalidSendingPolicy, CodeInvalidTimeZone) and records nothing. A patch that changes
// nothing is a no-op. The dispatcher applies the new policy from its next turn.
type SetSendingPolicy struct {
	ConnectionID string                        `json:"connection_id"`
	Patch        connection.SendingPolicyPatch `json:"patch"`
}

// SetSendingPolicyHandler handles SetSendingPolicy.
type SetSendingPolicyHandler struct {
	repo *Repository
	now  Clock
}

// NewSetSendingPolicyHandler returns a handler; repo and now must not be nil.
func NewSetSendingPolicyHandler(repo *Repository, now Clock) (*SetSendingPolicyHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewSetSendingPolicyHandler: nil dependency")
	}
	return &SetSendingPolicyHandler{repo: repo, now: now}, nil
}

// Handle records SendingPolicyChanged.
func (h *SetSendingPolicyHandler) Handle(ctx context.Context, cmd SetSendingPolicy) (Result, error) {
	if _, err := principal(ctx, auth.ConnectionEdit); err != nil {
		return Result{}, err
	}
	if err := CheckTimeZone(cmd.Patch); err != nil {
		return Result{}, err
	}
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.ConnectionEdit, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.ChangeSendingPolicy(connection.SetSendingPolicy{Patch: cmd.Patch, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}

// CheckTimeZone refuses a patch whose time zone is malformed or does not load
// (*connection.ValidationError, CodeInvalidTimeZone). The domain checks only the name's form:
// loading the zone database is I/O.
func CheckTimeZone(pt connection.SendingPolicyPatch) error {
	if pt.TimeZone == nil {
		return nil
	}
	if err := connection.ValidateTimeZoneName(*pt.TimeZone); err != nil {
		return err
	}
	if _, err := time.LoadLocation(*pt.TimeZone); err != nil {
		return &connection.ValidationError{Code: connection.CodeInvalidTimeZone, Field: "sending_policy.time_zone",
			Detail: "unknown IANA time zone " + *pt.TimeZone}
	}
	return nil
}
