package dispatcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// A node with many registered connections and few with work starts a loop only for those with
// work (Config.Backlog: one query to the pending-queue projection); the idle ones cost a map
// entry, and with exclusive leases the renewals claim their leases in one call and connect their
// sessions without a loop. An idle connection that gets a message later dispatches it as usual,
// after the in-flight recovery of a first lease (issue 15.5). Before Backlog every registered
// connection got a loop at start (Stats.Loops = all of them).
func TestIdleConnectionsGetNoLoopAtStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		open   engine
		leases bool
		lazy   bool
	}{{"sqlite", openSQLite, false, false}, {"postgres-leases", openPostgres, true, false}, {"postgres-lazy", openPostgres, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.open)
			h.autoAdvance(100 * time.Millisecond)
			const idle, busy = 40, 3
			sys := commands.WithPrincipal(context.Background(), commands.SystemPrincipal(tenant))
			id := func(i int) string { return fmt.Sprintf("c%d", i) }
			for i := range idle + busy {
				h.registerOnly(id(i))
				if _, err := h.pair.Handle(sys, commands.PairingSucceeded{ConnectionID: id(i), JID: fmt.Sprintf("49151%08d:1@s.whatsapp.net", i)}); err != nil {
					t.Fatal(err)
				}
			}
			// One idle connection had work that is done: sent before this node starts.
			if err := h.sim.Connect(context.Background(), key(id(0))); err != nil {
				t.Fatal(err)
			}
			done := h.enqueueOne(id(0), "done", 0)
			first := h.start(nil)
			h.eventually("the earlier message sent", func() bool { return count[connection.MessageSent](h.history(id(0))) == 1 })
			first.stop()
			// One idle connection is retired: it must get no lease and no session.
			retire, err := commands.NewRetireConnectionHandler(h.repo, func() time.Time { return h.clock.Now().UTC() })
			if err != nil {
				t.Fatal(err)
			}
			retired := id(2)
			if _, err := retire.Handle(h.op(), commands.RetireConnection{ConnectionID: retired, Reason: "number given up"}); err != nil {
				t.Fatal(err)
			}
			h.waitProjections(h.lastPosition(retired, connection.TypeConnectionRetired), "cards")
			var last commands.EnqueueResult
			for i := idle; i < idle+busy; i++ {
				last = h.enqueueOne(id(i), "busy", 0)
			}
			// The last busy connection's message was dispatched by a process that died before
			// recording the outcome: in flight, nothing pending. It must be found busy and
			// recovered (recorded unknown, never resent).
			inflight := id(idle + busy - 1)
			dn, err := commands.NewDispatchNextHandler(h.repo, dispatcher.QueueMessages{DB: h.env.db, Queue: h.queue},
				func() time.Time { return h.clock.Now().UTC() })
			if err != nil {
				t.Fatal(err)
			}
			h.waitProjections(last.Position, "queue")
			res, err := dn.Handle(sys, commands.DispatchNext{ConnectionID: inflight})
			if err != nil || res.Message.MessageID != last.MessageID {
				t.Fatalf("dispatch by the dead process: %+v %v", res, err)
			}
			h.waitProjections(h.lastPosition(inflight, connection.TypeMessageDispatched), "queue")
			h.waitProjections(h.lastPosition(id(0), connection.TypeMessageSent), "queue")

			var l dispatcher.Leases
			if tc.leases {
				// Sessions follow the leases. They outlive any stall (stableTTL): with a 2 s
				// TTL a stalled renewal lost them, and the counts of held leases fell short.
				l = pgLeases(t, h, "n1", stableTTL)
			} else {
				for i := range idle + busy { // what the server's connector does without leases
					if err := h.sim.Connect(context.Background(), key(id(i))); err != nil {
						t.Fatal(err)
					}
				}
			}
			d := h.start(func(c *dispatcher.Config) {
				c.Backlog = dispatcher.QueueBacklog{DB: h.env.db, Queue: h.queue}
				if l != nil {
					c.Leases, c.LeaseRenewInterval = l, 500*time.Millisecond
				}
				c.LazySessions = tc.lazy
			})
			h.eventually("the dead process's message recovered", func() bool {
				return count[connection.MessageOutcomeUnknown](h.history(inflight)) == 1
			})
			h.idle(d, last.Position)
			for i := idle; i < idle+busy-1; i++ {
				if n := count[connection.MessageSent](h.history(id(i))); n != 1 {
					t.Fatalf("%s: %d sent, want 1", id(i), n)
				}
			}
			if n := h.sim.SendCount(last.MessageID); n != 0 {
				t.Fatalf("the message in flight at start was handed over %d times", n)
			}
			if got := d.Stats().Loops; got != busy {
				t.Fatalf("%d loops started at start, want %d (one per connection with work)", got, busy)
			}
			if tc.lazy {
				// Only the busy connections hold leases and run sessions; two renewals change nothing.
				heartbeat := func() (at time.Time) {
					if err := h.env.db.QueryRowContext(context.Background(), `SELECT max(expires_at) FROM dispatch_nodes WHERE node = 'n1' AND NOT ended`).Scan(&at); err != nil {
						t.Fatal(err)
					}
					return at
				}
				for range 2 { // two renewals after the start-up
					before := heartbeat()
					h.eventually("a renewal", func() bool { return heartbeat().After(before) })
				}
				if got := len(d.Held()); got != busy {
					t.Fatalf("%d leases held with lazy sessions, want %d", got, busy)
				}
				if st := h.sim.Status(key(id(1))).State; st == transport.StateConnected {
					t.Fatalf("an idle connection's session is %s with lazy sessions", st)
				}
			} else if tc.leases {
				// The renewals claim the idle connections' leases and connect their sessions.
				h.eventually("every lease held but the retired one's", func() bool { return len(d.Held()) == idle+busy-1 })
				h.eventually("every session connected but the retired one's", func() bool {
					for i := range idle + busy {
						if id(i) == retired {
							continue
						}
						if h.sim.Status(key(id(i))).State != transport.StateConnected {
							return false
						}
					}
					return true
				})
				if got := d.Stats().Loops; got != busy {
					t.Fatalf("%d loops after the renewals claimed the idle connections, want %d", got, busy)
				}
				for _, l := range d.Held() {
					if l.ConnectionID == retired {
						t.Fatal("the retired connection's lease is held")
					}
				}
				if st := h.sim.Status(key(retired)).State; st == transport.StateConnected {
					t.Fatalf("the retired connection's session is %s", st)
				}
			}
			// An idle connection gets work: its loop starts, recovers (nothing in flight) and sends
			// (with lazy sessions after claiming its lease and connecting its session).
			later := h.enqueueOne(id(1), "later", 0)
			h.idle(d, later.Position)
			hist := h.history(id(1))
			if n := count[connection.MessageSent](hist); n != 1 {
				t.Fatalf("the idle connection's message: %d sent, want 1", n)
			}
			if n := count[connection.MessageOutcomeUnknown](hist); n != 0 {
				t.Fatalf("%d unknown on a connection with nothing in flight", n)
			}
			for _, c := range []string{id(0), id(1), id(idle), inflight} {
				for _, v := range invariants.Check(h.history(c), h.sends(c)).Violations {
					t.Errorf("%s: %v", c, v)
				}
			}
			if h.sim.SendCount(done.MessageID) != 1 {
				t.Errorf("the earlier message was handed over %d times", h.sim.SendCount(done.MessageID))
			}
		})
	}
}
