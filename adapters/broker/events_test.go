package broker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

// TestIntegrationEventsOverNATS runs the integration publisher as a projection on a real event
// store and read-model database, publishing through NATS; a subscriber gets every event once,
// with its deterministic id, and a republished event is dropped by JetStream.
func TestIntegrationEventsOverNATS(t *testing.T) {
	ctx := testCtx(t)
	pub, sub := openNATS(t, startNATS(t))
	st := openStore(t)
	sdb, err := sqlitedb.Open(t.TempDir() + "/rm.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	db := &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := projections.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ip, err := integration.NewPublisher(pub)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := projections.NewRunner(projections.RunnerConfig{DB: db, Store: st, Projections: []projections.Projection{ip}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Subscribe(ctx, integration.Topic)
	if err != nil {
		t.Fatal(err)
	}

	repo, err := commands.NewRepository(st, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	op := commands.WithPrincipal(ctx, auth.Principal{TenantID: tenant, ID: "op", Role: auth.RoleOperator})
	reg, _ := commands.NewRegisterConnectionHandler(repo, now)
	enq, _ := commands.NewEnqueueMessageHandler(repo, now)
	clr, _ := commands.NewRequestClearHandler(repo, now)
	if _, err := reg.Handle(op, commands.RegisterConnection{ConnectionID: "c1", Phone: "+491701234567"}); err != nil {
		t.Fatal(err)
	}
	res, err := enq.Handle(op, commands.EnqueueMessage{ConnectionID: "c1", IdempotencyKey: "k", Recipient: "+491701111111", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clr.Handle(op, commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "c", Reason: "ban"}); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	// The domain events that have an integration event, in order.
	recorded, err := st.ReadAll(ctx, eventstore.Start, 0, integration.Filter())
	if err != nil {
		t.Fatal(err)
	}
	var want []integration.Event
	for _, e := range recorded {
		ie, ok, err := integration.Translate(e)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			want = append(want, ie)
		}
	}
	if len(want) != 2 || want[0].Type != integration.TypeMessageStatusChanged || want[1].Type != integration.TypeClearRequested {
		t.Fatalf("translated events = %+v; want message.status_changed then clear.requested", want)
	}
	for i := range want {
		m := <-msgs
		m.Ack()
		got, err := integration.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if m.UUID != want[i].ID.String() || got.ID != want[i].ID || got.Type != want[i].Type || got.TenantID != tenant || got.ConnectionID != "c1" {
			t.Fatalf("event %d = %s %+v; want %+v", i, m.UUID, got, want[i])
		}
		if m.Metadata.Get(integration.MetaType) != want[i].Type {
			t.Errorf("metadata type %q, want %q", m.Metadata.Get(integration.MetaType), want[i].Type)
		}
	}
	if want[0].ID != integration.EventID(recorded[0].ID, integration.TypeMessageStatusChanged) {
		t.Errorf("integration id not derived from the domain event id")
	}
	var body integration.MessageStatusChanged
	if err := jsonUnmarshal(want[0].Data, &body); err != nil {
		t.Fatal(err)
	}
	if body.MessageID != res.MessageID || body.Status != connection.MessageStatusQueued.String() {
		t.Errorf("status body %+v; want message %s queued", body, res.MessageID)
	}

	// A republished event (a crash between publish and checkpoint) is dropped by JetStream.
	again, err := integration.NewMessage(want[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(integration.Topic, again); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		t.Fatalf("duplicate delivered: %s", m.UUID)
	case <-time.After(500 * time.Millisecond):
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
