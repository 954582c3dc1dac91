package commands

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// transportCalls are the commands only the node's own transport, dispatcher and processes may
// issue (issue 11.2): facts that WhatsApp asserts, and the completion of the node's own work.
func transportCalls() []call {
	var out []call
	for _, c := range calls() {
		switch c.name {
		case "pairing succeeded", "session invalidated", "report ban", "lift ban", "dispatch next", "record sent",
			"record delivered", "record read", "record failed", "record outcome unknown", "expire", "complete clear",
			"record transport problem":
			out = append(out, c)
		}
	}
	return out
}

// TestTenantAdminCannotAssertTransportFacts (issue 11.2): a tenant admin — what every tenant's
// admin API key authenticates as — is refused every transport-originated command, so it cannot
// lift a permanent ban (and then resume), fake a pairing or inject receipts. The system
// principal is accepted.
func TestTenantAdminCannotAssertTransportFacts(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	if _, err := h.ban.Handle(as(ctx, system), ReportBan{ConnectionID: "c-1", Kind: connection.BanPermanent, ReasonCode: "406"}); err != nil {
		t.Fatal(err)
	}
	before := streamLen(t, ctx, store, "c-1")
	admin := auth.Principal{TenantID: tenant, ID: "key_admin", Role: auth.RoleAdmin}
	calls := transportCalls()
	if len(calls) != 13 {
		t.Fatalf("%d transport calls, want 13", len(calls))
	}
	for _, c := range calls {
		if err := c.run(as(ctx, admin), h, "c-1"); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s as a tenant admin: err = %v, want auth.ErrForbidden", c.name, err)
		}
	}
	if after := streamLen(t, ctx, store, "c-1"); after != before {
		t.Fatalf("a tenant admin recorded %d transport facts", after-before)
	}
	if _, err := h.lift.Handle(as(ctx, system), LiftBan{ConnectionID: "c-1"}); err != nil {
		t.Fatalf("the system principal lifting the ban: %v", err)
	}
}

// TestTransportCommandsAreNotOnTheBus (issue 11.2): the command processor does not subscribe to
// any transport-originated command, even when given their handlers, so a bus or broker message
// cannot carry one; a LiftBan sent with a tenant admin's credential leaves the ban in place.
func TestTransportCommandsAreNotOnTheBus(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	if _, err := h.ban.Handle(as(ctx, system), ReportBan{ConnectionID: "c-1", Kind: connection.BanPermanent, ReasonCode: "406"}); err != nil {
		t.Fatal(err)
	}
	all := must(NewHandlers(h.repo, SystemClock))
	pubsub := NewInProcessPubSub(nil)
	router := must(NewRouter(nil))
	admin := auth.Principal{TenantID: tenant, ID: "key_admin", Role: auth.RoleAdmin}
	if _, err := RegisterProcessor(ProcessorConfig{
		Router: router, Subscriber: pubsub, Authenticator: keys{"admin-key": admin}, Handlers: all,
	}); err != nil {
		t.Fatal(err)
	}
	transport := map[string]bool{NamePairingSucceeded: true, NameSessionInvalidated: true, NameReportBan: true,
		NameLiftBan: true, NameDispatchNext: true, NameRecordSent: true, NameRecordDelivered: true, NameRecordRead: true,
		NameRecordFailed: true, NameRecordOutcomeUnknown: true, NameExpireMessage: true, NameCompleteClear: true,
		NameRecordTransportProblem: true}
	served := 0
	for name := range router.Handlers() {
		served++
		if transport[name] {
			t.Errorf("the command processor serves transport-originated %s", name)
		}
	}
	if served == 0 {
		t.Fatal("the processor serves nothing")
	}

	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	<-router.Running()
	bus := must(NewCommandBus(pubsub, nil))
	for _, cmd := range []Command{LiftBan{ConnectionID: "c-1"}, ResumeQueue{ConnectionID: "c-1"},
		SetOnBanPolicy{ConnectionID: "c-1", Policy: connection.OnBanResume}} {
		if err := bus.Send(ctx, tenant, "admin-key", cmd); err != nil {
			t.Fatal(err)
		}
	}
	// The policy change is the marker that the processor got this far.
	deadline := time.Now().Add(testwait.Limit)
	for countTypes(first(history(t, ctx, store, "c-1")))[connection.TypeOnBanPolicyChanged] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the bus command was not applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := countTypes(first(history(t, ctx, store, "c-1")))
	if n[connection.TypeBanLifted] != 0 || n[connection.TypeQueueResumed] != 0 {
		t.Fatalf("a tenant admin lifted the ban over the bus: %v", n)
	}
}

func first[A, B any](a A, _ B) A { return a }
