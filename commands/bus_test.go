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

// keys is a test Authenticator: API key → principal.
type keys map[string]auth.Principal

func (k keys) AuthenticateCommand(_ context.Context, c Credential) (auth.Principal, error) {
	p, ok := k[c.Token]
	if !ok {
		return auth.Principal{}, errors.New("unknown api key")
	}
	return p, nil
}

func TestCommandSentOnTheBusIsApplied(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")

	pubsub := NewInProcessPubSub(nil)
	router, err := NewRouter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RegisterProcessor(ProcessorConfig{
		Router: router, Subscriber: pubsub, Authenticator: keys{"key-sender": sender, "key-auditor": {TenantID: tenant, ID: "aud", Role: auth.RoleAuditor}},
		Handlers: Handlers{EnqueueMessage: h.enqueue, HoldQueue: h.hold},
	}); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	<-router.Running()

	bus, err := NewCommandBus(pubsub, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendFor := func(tn, cred string, cmd Command) {
		t.Helper()
		if err := bus.Send(WithCorrelationID(ctx, "corr-bus"), tn, cred, cmd); err != nil {
			t.Fatal(err)
		}
	}
	send := func(cred string, cmd Command) { t.Helper(); sendFor(tenant, cred, cmd) }
	// Refused ones first (unknown key, a role without the right, a domain refusal): acknowledged,
	// nothing written; then the accepted one. The processor handles one topic's messages in order,
	// and the refused enqueues share the accepted one's topic.
	send("no-such-key", EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k0", Recipient: "+491709999999", Text: "x"})
	// A valid credential on a message for another tenant than its own is refused before any
	// handler runs (on NATS the tenant is the subject's).
	sendFor("tenant-b", "key-sender", EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "kb", Recipient: "+491709999999", Text: "x"})
	send("key-auditor", EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k1", Recipient: "+491709999999", Text: "x"})
	send("key-sender", EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k2", Recipient: "not a number", Text: "x"})
	send("key-sender", EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k3", Recipient: "+491709999999", Text: "via bus"})

	deadline := time.Now().Add(testwait.Limit)
	for {
		hist, recs := history(t, ctx, store, "c-1")
		n := countTypes(hist)[connection.TypeMessageQueued]
		if n > 0 {
			last := hist[len(hist)-1].Event.(connection.MessageQueued)
			if n != 1 || last.IdempotencyKey != "k3" || last.QueuedBy != sender.ID {
				t.Fatalf("queued %d messages, last %+v; want only k3 by %s", n, last, sender.ID)
			}
			md := recs[len(recs)-1].Metadata
			if md.CorrelationID != "corr-bus" || md.CausationID == "" || md.Actor != sender.ID {
				t.Fatalf("metadata %+v: want correlation corr-bus, a causation id, actor %s", md, sender.ID)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the command sent on the bus was not applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandNamesAreExplicitAndUnique(t *testing.T) {
	// Pointers, as the processor's handlers make them (NewCommand returns *T).
	cmds := []Command{&RegisterConnection{}, &SetOnBanPolicy{}, &PairingSucceeded{}, &SessionInvalidated{}, &ReportBan{}, &LiftBan{},
		&EnqueueMessage{}, &StartBroadcast{}, &DispatchNext{}, &RecordSent{}, &RecordDelivered{}, &RecordRead{}, &RecordFailed{},
		&RecordOutcomeUnknown{}, &ExpireMessage{}, &HoldQueue{}, &ResumeQueue{}, &RequestClear{}, &CompleteClear{},
		&RecordTransportProblem{}, &SetSendingPolicy{}, &CancelMessage{}}
	seen := map[string]bool{}
	for _, c := range cmds {
		n := c.CommandName()
		if seen[n] || len(n) < len("waqueue.X") || n[:8] != "waqueue." {
			t.Errorf("command name %q: duplicate or not waqueue.<Name>", n)
		}
		seen[n] = true
		if got := marshaler.Name(c); got != n {
			t.Errorf("marshaler names %T %q, want %q", c, got, n)
		}
	}
	if len(cqrsHandlers(Handlers{})) != 0 {
		t.Error("handlers registered for nil handlers")
	}
}
