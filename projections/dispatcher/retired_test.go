package dispatcher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestRetiredConnectionReleasesItsSession: once a connection is retired its loop stops and the
// dispatcher disconnects its transport session; nothing is dispatched for it again.
func TestRetiredConnectionReleasesItsSession(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(nil)
	h.registerPaired("r1", d)
	m := h.enqueueOne("r1", "a", 0)
	h.eventually("sent and acknowledged", func() bool {
		var inFlight int
		_ = h.repo.View(context.Background(), key("r1"), func(c *connection.Connection) error { inFlight = len(c.InFlight()); return nil })
		return h.sim.SendCount(m.MessageID) == 1 && inFlight == 0
	})
	if st := h.sim.Status(key("r1")); st.State != transport.StateConnected {
		t.Fatalf("session before the retirement: %+v", st)
	}
	retire, err := commands.NewRetireConnectionHandler(h.repo, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := retire.Handle(h.op(), commands.RetireConnection{ConnectionID: "r1", Reason: "number sold"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("session released", func() bool { return h.sim.Status(key("r1")).State == transport.StateDisconnected })
	h.idle(d, h.lastPosition("r1", connection.TypeConnectionRetired))
	if got := d.ActiveLoops(); got != 0 {
		t.Fatalf("%d loops after the retirement, want 0", got)
	}
	if _, err := h.enqueue.Handle(h.op(), commands.EnqueueMessage{ConnectionID: "r1", IdempotencyKey: "b", Recipient: recipient(1), Text: "x"}); !errors.Is(err, connection.ErrConnectionRetired) {
		t.Fatalf("enqueue after the retirement: %v", err)
	}
	if got := len(h.sim.Sends()); got != 1 {
		t.Fatalf("sends %d, want 1", got)
	}
}
