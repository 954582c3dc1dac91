package dispatcher

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// A receipt for a message WhatsApp never had from us (queued, never dispatched) is refused by
// the domain: nothing is recorded, the dispatcher counts and logs it and goes on (issue 10.4).
func TestRefusedReceiptCountedNotFatal(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	repo, err := commands.NewRepository(store, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	op := commands.WithPrincipal(ctx, auth.Principal{TenantID: "t1", ID: "op", Role: auth.RoleAdmin})
	reg, _ := commands.NewRegisterConnectionHandler(repo, commands.SystemClock)
	if _, err := reg.Handle(op, commands.RegisterConnection{ConnectionID: "c1", Phone: "+4915112345678"}); err != nil {
		t.Fatal(err)
	}
	enq, _ := commands.NewEnqueueMessageHandler(repo, commands.SystemClock)
	m, err := enq.Handle(op, commands.EnqueueMessage{ConnectionID: "c1", IdempotencyKey: "k", Recipient: "+4915112345679", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(simulator.Options{})
	t.Cleanup(sim.Close)
	promReg := prometheus.NewRegistry()
	d, err := New(Config{Store: store, Repository: repo, Messages: QueueMessages{Queue: projections.NewQueue()},
		Transport: sim, Registerer: promReg})
	if err != nil {
		t.Fatal(err)
	}
	d.ctx = ctx
	d.remember(connection.Key("t1", "c1"), m.MessageID, m.Seq) // placed, as a message this process knows
	h := transport.EventHeader{ConnectionID: connection.Key("t1", "c1"), At: time.Now()}
	d.handleEvent(transport.Receipt{EventHeader: h, Kind: transport.ReceiptDelivered, MessageIDs: []uuid.UUID{m.MessageID}})
	d.handleEvent(transport.Receipt{EventHeader: h, Kind: transport.ReceiptRead, MessageIDs: []uuid.UUID{m.MessageID}})
	recs, err := store.ReadStream(ctx, connection.StreamName(connection.Key("t1", "c1")), eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Type == connection.TypeMessageDelivered || r.Type == connection.TypeMessageRead {
			t.Fatalf("recorded %s for a message never dispatched", r.Type)
		}
	}
	mfs, err := promReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "waqueue_dispatcher_receipts_refused_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["delivered"] != 1 || got["read"] != 1 {
		t.Fatalf("receipts_refused_total = %v, want delivered 1, read 1", got)
	}
	if n := counterValue(t, promReg, "waqueue_dispatcher_transport_events_total", "receipt_delivered", eventError); n != 0 {
		t.Errorf("a refused receipt counted as an error")
	}
}
