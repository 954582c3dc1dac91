package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// gatedTransport is the simulator whose first hand-over waits until released (it has been
// handed over: the simulator records it once the gate opens).
type gatedTransport struct {
	*simulator.Simulator
	entered, release chan struct{}
	first            chan struct{} // closed at the first Send
}

func newGatedTransport(sim *simulator.Simulator) *gatedTransport {
	g := &gatedTransport{Simulator: sim, entered: make(chan struct{}), release: make(chan struct{}), first: make(chan struct{}, 1)}
	g.first <- struct{}{}
	return g
}

func (g *gatedTransport) Send(ctx context.Context, req transport.SendRequest) (transport.SendResult, error) {
	select {
	case <-g.first:
		close(g.entered)
		<-g.release
	default:
	}
	return g.Simulator.Send(ctx, req)
}

// The loop reads a connection's next queue positions ahead, in one statement, and serves its next
// dispatches from memory (issue 12). That must never hand over a message the domain removed
// after the window was read: while the first message's hand-over is held in the transport (the
// window then holds the whole queue: 1:1 messages and a broadcast's run), an operator cancels
// two messages of the window, or clears the queue and queues new ones. No removed message may
// be handed over; every other one is, once; the invariants hold (G1, G5).
func TestWindowServesNoMessageTheDomainRemoved(t *testing.T) {
	for name, open := range map[string]engine{"sqlite": openSQLite, "postgres": openPostgres} {
		for _, clear := range []bool{false, true} {
			sub := name + "/cancel"
			if clear {
				sub = name + "/clear"
			}
			t.Run(sub, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, open)
				h.autoAdvance(50 * time.Millisecond)
				gate := newGatedTransport(h.sim)
				d := h.start(func(c *dispatcher.Config) { c.Transport = gate })
				h.registerPaired("c1", d)
				if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "fill"}); err != nil {
					t.Fatal(err)
				}
				var ones []commands.EnqueueResult
				for _, k := range []string{"a", "bb", "ccc"} {
					ones = append(ones, h.enqueueOne("c1", k, 0))
				}
				bc := h.startBroadcast("c1", 10)
				h.waitProjections(bc.Position, projections.QueueName)
				res, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "go"})
				if err != nil {
					t.Fatal(err)
				}
				last := res.Position // the last event that wakes the dispatcher
				select {
				case <-gate.entered:
				case <-time.After(5 * time.Minute): // a safety net only
					t.Fatal("no hand-over")
				}
				removed := map[uuid.UUID]bool{}
				var extra []uuid.UUID
				if !clear {
					now := func() time.Time { return h.clock.Now().UTC() }
					cancel, err := commands.NewCancelMessageHandler(h.repo, now)
					if err != nil {
						t.Fatal(err)
					}
					bid := connection.BroadcastMessageID(bc.BroadcastID, 3)
					for _, c := range []commands.CancelMessage{
						{ConnectionID: "c1", MessageID: ones[1].MessageID, Reason: "test"},
						{ConnectionID: "c1", MessageID: bid, Reason: "test", BroadcastID: bc.BroadcastID, Seq: bc.FirstSeq + 3},
					} {
						if _, err := cancel.Handle(h.op(), c); err != nil {
							t.Fatal(err)
						}
						removed[c.MessageID] = true
					}
					close(gate.release)
				} else {
					if _, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "mid-window", Reason: "test"}); err != nil {
						t.Fatal(err)
					}
					close(gate.release)
					h.eventually("QueueCleared", func() bool { return count[connection.QueueCleared](h.history("c1")) == 1 })
					for _, o := range ones[1:] {
						removed[o.MessageID] = true
					}
					for i := range 10 {
						removed[connection.BroadcastMessageID(bc.BroadcastID, i)] = true
					}
					for _, k := range []string{"after-1", "after-22"} {
						r := h.enqueueOne("c1", k, 0)
						extra, last = append(extra, r.MessageID), r.Position
					}
				}
				want := 13 - len(removed) + len(extra)
				h.eventually("every message not removed sent", func() bool {
					return count[connection.MessageSent](h.history("c1")) == want
				})
				h.idle(d, last)
				seen := map[uuid.UUID]int{}
				for _, s := range h.sends("c1") {
					seen[s.MessageID]++
				}
				for id := range removed {
					if seen[id] != 0 {
						t.Errorf("message %s handed over after it was removed", id)
					}
				}
				for id, n := range seen {
					if n != 1 {
						t.Errorf("message %s handed over %d times", id, n)
					}
				}
				for _, id := range extra {
					if seen[id] != 1 {
						t.Errorf("message %s queued after the clear handed over %d times, want 1", id, seen[id])
					}
				}
				if len(seen) != want {
					t.Errorf("%d messages handed over, want %d", len(seen), want)
				}
				h.checkInvariants("c1")
			})
		}
	}
}
