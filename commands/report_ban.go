package commands

import (
	"context"
	"errors"
	"time"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// ReportBan records a ban of the number (ConnectionBanned, plus QueueHeld: G7).
// Transport-originated: only the system principal (SystemPrincipal) may issue it.
type ReportBan struct {
	ConnectionID string             `json:"connection_id"`
	Kind         connection.BanKind `json:"kind"`
	// ExpiresAt is when a temporary ban is expected to end; zero for a permanent ban.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// ReasonCode is the transport's reason code.
	ReasonCode string `json:"reason_code,omitempty"`
}

// ReportBanHandler handles ReportBan.
type ReportBanHandler struct {
	repo *Repository
	now  Clock
}

// NewReportBanHandler returns a handler; repo and now must not be nil.
func NewReportBanHandler(repo *Repository, now Clock) (*ReportBanHandler, error) {
	if repo == nil || now == nil {
		return nil, errors.New("commands: NewReportBanHandler: nil dependency")
	}
	return &ReportBanHandler{repo: repo, now: now}, nil
}

// Handle records the decision of ReportBan; see the type's doc.
func (h *ReportBanHandler) Handle(ctx context.Context, cmd ReportBan) (Result, error) {
	a, err := update(ctx, h.repo, cmd.ConnectionID, auth.System, func(p auth.Principal, c *connection.Connection) ([]connection.Event, error) {
		return c.Ban(connection.BanConnection{Kind: cmd.Kind, ExpiresAt: cmd.ExpiresAt, ReasonCode: cmd.ReasonCode, Actor: p.ID}, h.now())
	})
	if err != nil {
		return Result{}, err
	}
	return resultOf(a), nil
}
