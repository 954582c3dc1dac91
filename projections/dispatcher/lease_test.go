package dispatcher_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// pgLeases returns node's leases on the harness's PostgreSQL database.
func pgLeases(t *testing.T, h *harness, node string, ttl time.Duration) *lease.Postgres {
	t.Helper()
	db, err := sql.Open("pgx", h.env.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	l, err := lease.NewPostgres(context.Background(), db, node, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// nodeSim is one node's transport: a simulator of its own, so a session runs only on the node
// that connected it.
func nodeSim(t *testing.T, h *harness, seed uint64) *simulator.Simulator {
	s := simulator.New(simulator.Options{Seed: seed, Clock: h.clock, AssumePaired: true})
	t.Cleanup(s.Close)
	return s
}

// node starts a dispatcher with its own simulator and leases.
func (h *harness) node(sim *simulator.Simulator, l dispatcher.Leases) *running {
	return h.start(func(c *dispatcher.Config) {
		c.Transport, c.Leases = sim, l
		if l.TTL() > 0 {
			c.LeaseRenewInterval = l.TTL() / 4
		}
	})
}

// sendsOn returns the hand-overs of connID through every simulator, for the invariants checker.
func sendsOn(connID string, sims ...*simulator.Simulator) []invariants.Send {
	var out []invariants.Send
	for _, s := range sims {
		for i, r := range s.Sends() {
			if r.ConnectionID == key(connID) {
				out = append(out, invariants.Send{MessageID: r.MessageID, Order: i, Fence: r.Fence})
			}
		}
	}
	return out
}

func countOn(connID string, s *simulator.Simulator) int {
	n := 0
	for _, r := range s.Sends() {
		if r.ConnectionID == key(connID) {
			n++
		}
	}
	return n
}

// epochs returns the lease epochs of the connection's MessageDispatched events, in order.
func epochs(hist []invariants.Recorded) []uint64 {
	var out []uint64
	for _, r := range hist {
		if d, ok := r.Event.(connection.MessageDispatched); ok {
			out = append(out, d.Epoch)
		}
	}
	return out
}

// Two nodes on one PostgreSQL share the dispatch (issue 15.1, 15.3): every connection is
// dispatched by exactly one node, through that node's session, with no double hand-over; when
// a node crashes (its context ends without releasing its leases) its connections resume on the
// other once the leases expire, with a higher epoch, and nothing is handed over twice.
func TestTwoNodesShareDispatchAndTakeOverAfterACrash(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	conns, per := 6, 20
	if testing.Short() {
		conns, per = 4, 8
	}
	ttl := 2 * time.Second
	simA, simB := nodeSim(t, h, 1), nodeSim(t, h, 2)
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
		h.registerOnly(ids[i])
	}
	a := h.node(simA, pgLeases(t, h, "a", ttl))
	b := h.node(simB, pgLeases(t, h, "b", ttl))
	for _, id := range ids {
		h.startBroadcast(id, per)
	}
	sentAll := func(want int) {
		for _, id := range ids {
			h.eventually(fmt.Sprintf("%s: %d sent", id, want), func() bool { return count[connection.MessageSent](h.history(id)) >= want })
		}
	}
	sentAll(per)

	owner := map[string]string{}
	onA := 0
	for _, id := range ids {
		na, nb := countOn(id, simA), countOn(id, simB)
		switch {
		case na == per && nb == 0:
			owner[id] = "a"
			onA++
		case nb == per && na == 0:
			owner[id] = "b"
		default:
			t.Fatalf("%s: %d sends through node a, %d through node b; want all %d through one", id, na, nb, per)
		}
		es := epochs(h.history(id))
		for _, e := range es {
			if e == 0 || e != es[0] {
				t.Fatalf("%s: dispatch epochs %v, want one non-zero epoch", id, es)
			}
		}
		if rep := invariants.Check(h.history(id), sendsOn(id, simA, simB)); len(rep.Violations) > 0 {
			t.Fatalf("%s: %v", id, rep.Violations)
		}
	}
	t.Logf("node a dispatched %d connections, node b %d", onA, conns-onA)

	// Crash the node with the most connections: its context ends, its leases are not released.
	victim, survivor, victimName, survivorSim := a, b, "a", simB
	if onA*2 < conns {
		victim, survivor, victimName, survivorSim = b, a, "b", simA
	}
	before := map[string]int{}
	for _, id := range ids {
		before[id] = countOn(id, survivorSim)
	}
	victim.stop()
	for i, id := range ids {
		for j := range per {
			h.enqueueOne(id, fmt.Sprintf("after-%d-%d", i, j), 0)
		}
	}
	sentAll(2 * per)
	for _, id := range ids {
		hist := h.history(id)
		if got := countOn(id, survivorSim) - before[id]; got != per {
			t.Errorf("%s (was on %s): %d of the %d new messages went through the survivor", id, owner[id], got, per)
		}
		es := epochs(hist)
		if owner[id] == victimName && es[len(es)-1] <= es[0] {
			t.Errorf("%s: epochs %v, want a higher one after the takeover", id, es)
		}
		rep := invariants.Check(hist, sendsOn(id, simA, simB))
		for _, v := range rep.Violations {
			t.Errorf("%s: %s", id, v)
		}
		if rep.Queued != 2*per || len(rep.Pending) != 0 || len(rep.InFlight) != 0 {
			t.Errorf("%s: queued %d, pending %d, in flight %d", id, rep.Queued, len(rep.Pending), len(rep.InFlight))
		}
	}
	if n := len(survivor.Held()); n != conns {
		t.Errorf("survivor holds %d leases, want %d", n, conns)
	}
}

// Start-up recovery touches only the connections this node holds (issue 15.3): a second node
// starting while another holds a connection with a message in flight does not record it
// unknown; once the holder is gone (its lease expires), the new owner does.
func TestRecoveryOnlyOnHeldConnections(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	ctx := context.Background()
	ttl := 2 * time.Second
	h.registerOnly("c1")
	if _, err := h.pair.Handle(commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant)),
		commands.PairingSucceeded{ConnectionID: "c1", JID: "4915112345678:1@s.whatsapp.net"}); err != nil {
		t.Fatal(err)
	}
	first := h.enqueueOne("c1", "first", 0)
	h.enqueueOne("c1", "second", 0)
	h.waitProjections(h.lastPosition("c1", connection.TypeMessageQueued), "queue")

	// Node a holds the lease and dispatched the first message; it is mid-send (in flight).
	la := pgLeases(t, h, "a", ttl)
	got, err := la.Claim(ctx, []dispatcher.LeaseKey{{Tenant: tenant, ConnectionID: "c1"}})
	if err != nil || len(got) != 1 {
		t.Fatalf("a's claim: %v %v", got, err)
	}
	dn, err := commands.NewDispatchNextHandler(h.repo, dispatcher.QueueMessages{DB: h.env.db, Queue: h.queue}, func() time.Time { return h.clock.Now().UTC() })
	if err != nil {
		t.Fatal(err)
	}
	res, err := dn.Handle(commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant)), commands.DispatchNext{ConnectionID: "c1", Epoch: got[0].Epoch})
	if err != nil || res.Message.MessageID != first.MessageID {
		t.Fatalf("a's dispatch: %+v %v", res, err)
	}

	// Node b starts: it sees the connection (its wake events from the start of the log) but may
	// not touch it while a's lease stands. Renew a's lease until b has seen everything, so the
	// check below does not depend on timing.
	simB := nodeSim(t, h, 2)
	b := h.node(simB, pgLeases(t, h, "b", ttl))
	stopRenew := make(chan struct{})
	renewed := make(chan struct{})
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopRenew) }); <-renewed }
	t.Cleanup(stop) // before the database closes, also when the test fails early
	go func() {
		defer close(renewed)
		tick := time.NewTicker(ttl / 8)
		defer tick.Stop()
		for {
			select {
			case <-stopRenew:
				return
			case <-tick.C:
				if _, err := la.Renew(ctx); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	h.idle(b, h.lastPosition("c1", connection.TypeMessageQueued))
	hist := h.history("c1")
	if n := count[connection.MessageOutcomeUnknown](hist); n != 0 {
		t.Fatalf("node b recorded %d messages unknown on a connection node a holds", n)
	}
	if n := count[connection.MessageDispatched](hist); n != 1 {
		t.Fatalf("%d dispatches; node b dispatched on a connection node a holds", n)
	}
	if len(b.Held()) != 0 || len(simB.Sends()) != 0 {
		t.Fatalf("node b holds %v and sent %d", b.Held(), len(simB.Sends()))
	}

	// Node a crashes: b takes over after the expiry, records a's message unknown (never resent)
	// and sends the second.
	stop()
	h.eventually("second sent by b", func() bool { return count[connection.MessageSent](h.history("c1")) == 1 })
	hist = h.history("c1")
	if n := count[connection.MessageOutcomeUnknown](hist); n != 1 {
		t.Fatalf("%d unknown after the takeover, want a's message", n)
	}
	if simB.SendCount(first.MessageID) != 0 {
		t.Fatal("the message a had in flight was resent")
	}
	if es := epochs(hist); len(es) != 2 || es[1] != es[0]+1 {
		t.Fatalf("epochs %v, want a's and a's + 1", es)
	}
	for _, v := range invariants.Check(hist, sendsOn("c1", simB)).Violations {
		t.Error(v)
	}
}

// A stale owner — a node whose lease lapsed unseen and was taken over while it still trusts it
// (a long GC pause, a partition) — is refused by the stream fence: the domain refuses its
// dispatch with the older epoch, nothing is handed over, and it drops the lease (issue 15.1).
// Deterministic: node a is held between two dispatches by its pacing interval on the manual
// clock while its lease is taken over and node b dispatches.
func TestStaleOwnerRefusedByTheStreamFence(t *testing.T) {
	h := newHarness(t, openPostgres)
	ctx := context.Background()
	sys := commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant))
	h.registerOnly("c1")
	simA := nodeSim(t, h, 1)
	// Node a, with a lease it trusts for an hour, paced one minute of the manual clock apart.
	a := h.start(func(c *dispatcher.Config) {
		c.Transport, c.Leases = simA, pgLeases(t, h, "a", time.Hour)
		c.LeaseRenewInterval = 20 * time.Minute
		c.Pacing = dispatcher.Pacing{MinInterval: time.Minute, Jitter: -1, DailyCap: -1}
	})
	h.enqueueOne("c1", "m1", 0)
	h.eventually("m1 sent by a", func() bool { return count[connection.MessageSent](h.history("c1")) == 1 })
	held := a.Held()
	if len(held) != 1 {
		t.Fatalf("a holds %v", held)
	}
	// a's lease lapses unseen: the row expires (released here through a's node id), node b
	// takes it over and dispatches m2 with the new epoch while a waits out its pacing interval.
	if err := pgLeases(t, h, "a", time.Hour).Release(ctx, nil); err != nil {
		t.Fatal(err)
	}
	gotB, err := pgLeases(t, h, "b", time.Hour).Claim(ctx, []dispatcher.LeaseKey{held[0].LeaseKey})
	if err != nil || len(gotB) != 1 || gotB[0].Epoch != held[0].Epoch+1 {
		t.Fatalf("b's claim: %v %v (a's epoch %d)", gotB, err, held[0].Epoch)
	}
	m2 := h.enqueueOne("c1", "m2", 0)
	h.waitProjections(h.lastPosition("c1", connection.TypeMessageQueued), "queue")
	dn, err := commands.NewDispatchNextHandler(h.repo, dispatcher.QueueMessages{DB: h.env.db, Queue: h.queue}, func() time.Time { return h.clock.Now().UTC() })
	if err != nil {
		t.Fatal(err)
	}
	res, err := dn.Handle(sys, commands.DispatchNext{ConnectionID: "c1", Epoch: gotB[0].Epoch})
	if err != nil || res.Message.MessageID != m2.MessageID {
		t.Fatalf("b's dispatch of m2: %+v %v", res, err)
	}
	// a still trusts its lease; its pacing interval ends and it tries m3: refused.
	m3 := h.enqueueOne("c1", "m3", 0)
	h.clock.Advance(2 * time.Minute)
	h.eventually("a dropped the stale lease", func() bool { return len(a.Held()) == 0 })
	h.idle(a, h.lastPosition("c1", connection.TypeMessageQueued))
	if len(simA.Sends()) != 1 || simA.SendCount(m3.MessageID) != 0 {
		t.Fatalf("the stale owner handed over %d messages, want only m1", len(simA.Sends()))
	}
	hist := h.history("c1")
	if es := epochs(hist); len(es) != 2 || es[0] != held[0].Epoch || es[1] != gotB[0].Epoch {
		t.Fatalf("dispatch epochs %v, want a's %d then b's %d only", es, held[0].Epoch, gotB[0].Epoch)
	}
	for _, v := range invariants.Check(hist, sendsOn("c1", simA)).Violations {
		t.Error(v)
	}
}

// A graceful shutdown releases the node's leases: another node claims them at once, without
// waiting for the expiry (issue 15.2).
func TestGracefulShutdownReleasesLeases(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	ctx := context.Background()
	h.registerOnly("c1")
	simA := nodeSim(t, h, 1)
	a := h.node(simA, pgLeases(t, h, "a", time.Hour))
	h.enqueueOne("c1", "m1", 0)
	h.eventually("m1 sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 1 })
	held := a.Held()
	if len(held) != 1 {
		t.Fatalf("a holds %v", held)
	}
	lb := pgLeases(t, h, "b", time.Hour)
	if got, err := lb.Claim(ctx, []dispatcher.LeaseKey{held[0].LeaseKey}); err != nil || len(got) != 0 {
		t.Fatalf("b claimed a lease a holds: %v %v", got, err)
	}
	a.stop()
	if err := a.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := lb.Claim(ctx, []dispatcher.LeaseKey{held[0].LeaseKey})
	if err != nil || len(got) != 1 || got[0].Epoch != held[0].Epoch+1 {
		t.Fatalf("b's claim after a's release: %v %v", got, err)
	}
}
