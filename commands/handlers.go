package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// NewHandlers builds every handler the HTTP API, the command processor and the clearing process
// use, all on repo and now. DispatchNext is built by the dispatcher, which also needs the
// pending-queue read model.
func NewHandlers(repo *Repository, now Clock) (Handlers, error) {
	var (
		h    Handlers
		errs []error
	)
	add := func(err error) { errs = append(errs, err) }
	var err error
	h.RegisterConnection, err = NewRegisterConnectionHandler(repo, now)
	add(err)
	h.SetOnBanPolicy, err = NewSetOnBanPolicyHandler(repo, now)
	add(err)
	h.SetSendingPolicy, err = NewSetSendingPolicyHandler(repo, now)
	add(err)
	h.PairingSucceeded, err = NewPairingSucceededHandler(repo, now)
	add(err)
	h.SessionInvalidated, err = NewSessionInvalidatedHandler(repo, now)
	add(err)
	h.ReportBan, err = NewReportBanHandler(repo, now)
	add(err)
	h.LiftBan, err = NewLiftBanHandler(repo, now)
	add(err)
	h.EnqueueMessage, err = NewEnqueueMessageHandler(repo, now)
	add(err)
	h.StartBroadcast, err = NewStartBroadcastHandler(repo, now)
	add(err)
	h.RecordSent, err = NewRecordSentHandler(repo, now)
	add(err)
	h.RecordDelivered, err = NewRecordDeliveredHandler(repo, now)
	add(err)
	h.RecordRead, err = NewRecordReadHandler(repo, now)
	add(err)
	h.RecordFailed, err = NewRecordFailedHandler(repo, now)
	add(err)
	h.RecordOutcomeUnknown, err = NewRecordOutcomeUnknownHandler(repo, now)
	add(err)
	h.ExpireMessage, err = NewExpireMessageHandler(repo, now)
	add(err)
	h.HoldQueue, err = NewHoldQueueHandler(repo, now)
	add(err)
	h.ResumeQueue, err = NewResumeQueueHandler(repo, now)
	add(err)
	h.RequestClear, err = NewRequestClearHandler(repo, now)
	add(err)
	h.CancelMessage, err = NewCancelMessageHandler(repo, now)
	add(err)
	h.CompleteClear, err = NewCompleteClearHandler(repo, now)
	add(err)
	h.RecordTransportProblem, err = NewRecordTransportProblemHandler(repo, now)
	add(err)
	h.UnpairConnection, err = NewUnpairConnectionHandler(repo, now)
	add(err)
	h.RetireConnection, err = NewRetireConnectionHandler(repo, now)
	add(err)
	h.HoldForTenant, err = NewHoldForTenantHandler(repo, now)
	add(err)
	h.ResumeForTenant, err = NewResumeForTenantHandler(repo, now)
	add(err)
	return h, errors.Join(errs...)
}

// ClearCompleter completes clears for the clearing process (projections.ClearCompleter): it
// acts as the system principal of the connection's tenant and calls CompleteClearHandler, so a
// clear completed already is a no-op (exactly one QueueCleared per request).
type ClearCompleter struct {
	repo    *Repository
	handler *CompleteClearHandler
}

// NewClearCompleter returns a ClearCompleter on repo and handler (both required; a nil one
// makes every call fail with an error rather than panic).
func NewClearCompleter(repo *Repository, handler *CompleteClearHandler) *ClearCompleter {
	return &ClearCompleter{repo: repo, handler: handler}
}

// CompleteClear records QueueCleared for clearID on connection connID, once.
func (c *ClearCompleter) CompleteClear(ctx context.Context, connID string, clearID uuid.UUID) error {
	if c.repo == nil || c.handler == nil {
		return errors.New("commands: ClearCompleter without repository or handler")
	}
	var tenant string
	if err := c.repo.View(ctx, connID, func(cn *connection.Connection) error { tenant = cn.TenantID(); return nil }); err != nil {
		return err
	}
	_, err := c.handler.Handle(WithPrincipal(ctx, SystemPrincipal(tenant)), CompleteClear{ConnectionID: connID, ClearID: clearID})
	return err
}
