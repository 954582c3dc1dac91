package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// A receipt for a message WhatsApp never had from us (queued, never dispatched) is refused by
// the domain: nothing is recorded, the dispatcher counts and logs it and goes on (issue 10.4).
func TestRefusedReceiptCountedNotFatal(t *testing.T) {
	ctx := context.Background()
	x := newInternal(t)
	store, d, promReg := x.store, x.d, x.reg
	enq, _ := commands.NewEnqueueMessageHandler(x.repo, commands.SystemClock)
	m, err := enq.Handle(x.op, commands.EnqueueMessage{ConnectionID: "c1", IdempotencyKey: "k", Recipient: "+4915112345679", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
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
