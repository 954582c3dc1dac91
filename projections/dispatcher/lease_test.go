package dispatcher_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
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

// stableTTL is the lease TTL of the tests in which no lease may lapse or move but by what the
// test does: no stall of a loaded machine comes near it. With a TTL of 2 s renewed every 500 ms, a
// renewal stalled for 1.5 s (a load of 30 on 2 cores) let a session lapse, its leases moved to the
// other node, and instant checks of Held() or of the sends through each owner failed. A test
// that needs a node gone ends its session (crash); none waits for a TTL.
var stableTTL = testwait.Limit

// renewEvery is the renewal interval of the nodes with stableTTL: short, so the live set, the
// balancing hand-overs and the retried claims follow a change within a fraction of a second.
const renewEvery = 250 * time.Millisecond

// stableNode starts a dispatcher with its own simulator and node's leases with stableTTL,
// renewed every renewEvery.
func (h *harness) stableNode(sim *simulator.Simulator, node string) (*running, *lease.Postgres) {
	h.t.Helper()
	l := pgLeases(h.t, h, node, stableTTL)
	return h.start(func(c *dispatcher.Config) {
		c.Transport, c.Leases, c.LeaseRenewInterval = sim, l, renewEvery
	}), l
}

// crash ends node's session as the database ends one that expired, through a handle of its own
// (the node's dispatcher is stopped first, without releasing its leases): every lease of it is
// free at once, with its owner and epoch kept, and the node leaves the live set. The takeover
// then follows at once, whatever the TTL; the expiry itself is the leasetest suite's subject.
func crash(t *testing.T, h *harness, node string) {
	t.Helper()
	if err := pgLeases(t, h, node, stableTTL).Release(context.Background(), nil); err != nil {
		t.Fatalf("ending %s's session: %v", node, err)
	}
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

// Two nodes on one PostgreSQL share the dispatch (issue 15.1-15.3): each message is handed over
// once, through the session of the node holding the connection's lease; once settled, every
// connection is held by exactly one node, the one rendezvous hashing ranks first among the live
// nodes, and its messages go through that node only. When a node crashes (its context ends
// without releasing its leases, then its session ends as an expired one does) its connections
// resume on the other, with a higher epoch, and nothing is handed over twice. The leases outlive
// any stall (stableTTL), so none moves before the crash.
func TestTwoNodesShareDispatchAndTakeOverAfterACrash(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	conns, per := 8, 20
	if testing.Short() {
		conns, per = 6, 8
	}
	simA, simB := nodeSim(t, h, 1), nodeSim(t, h, 2)
	sims := map[string]*simulator.Simulator{"a": simA, "b": simB}
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
		h.registerOnly(ids[i])
	}
	nodes := map[string]*running{}
	nodes["a"], _ = h.stableNode(simA, "a")
	nodes["b"], _ = h.stableNode(simB, "b")
	for _, id := range ids {
		h.startBroadcast(id, per)
	}
	sentAll := func(want int) {
		for _, id := range ids {
			h.eventually(fmt.Sprintf("%s: %d sent", id, want), func() bool { return count[connection.MessageSent](h.history(id)) >= want })
		}
	}
	check := func(id string, queued int) {
		t.Helper()
		rep := invariants.Check(h.history(id), sendsOn(id, simA, simB))
		for _, v := range rep.Violations {
			t.Errorf("%s: %s", id, v)
		}
		if rep.Queued != queued || len(rep.Pending) != 0 || len(rep.InFlight) != 0 {
			t.Errorf("%s: queued %d, pending %d, in flight %d", id, rep.Queued, len(rep.Pending), len(rep.InFlight))
		}
		if n := len(sendsOn(id, simA, simB)); n != queued {
			t.Errorf("%s: %d hand-overs for %d messages", id, n, queued)
		}
	}
	sentAll(per)
	for _, id := range ids {
		check(id, per)
	}

	// Settled: each connection held by the node rendezvous hashing ranks first.
	owner := map[string]string{}
	for _, id := range ids {
		owner[id] = dispatcher.Rendezvous(key(id), []string{"a", "b"})
	}
	holder := func(id string) string {
		var hs []string
		for name, n := range nodes {
			for _, l := range n.Held() {
				if l.ConnectionID == id {
					hs = append(hs, name)
				}
			}
		}
		if len(hs) != 1 {
			return fmt.Sprint(hs)
		}
		return hs[0]
	}
	for _, id := range ids {
		h.eventually(id+" held by "+owner[id], func() bool { return holder(id) == owner[id] })
	}
	onA := 0
	before := map[string]int{}
	for i, id := range ids {
		if owner[id] == "a" {
			onA++
		}
		before[id] = countOn(id, sims[owner[id]])
		h.enqueueOne(id, fmt.Sprint("settled-", i), 0)
	}
	t.Logf("node a holds %d connections, node b %d", onA, conns-onA)
	sentAll(per + 1)
	for _, id := range ids {
		if got := countOn(id, sims[owner[id]]) - before[id]; got != 1 {
			t.Errorf("%s: the message after settling went %d times through its owner %s", id, got, owner[id])
		}
		check(id, per+1)
	}

	// Crash the node with the most connections: its context ends, its leases are not released,
	// its session ends.
	victim, survivor := "a", "b"
	if onA*2 < conns {
		victim, survivor = "b", "a"
	}
	epochBefore := map[string]uint64{}
	for _, id := range ids {
		es := epochs(h.history(id))
		epochBefore[id] = es[len(es)-1]
		before[id] = countOn(id, sims[survivor])
	}
	nodes[victim].stop()
	crash(t, h, victim)
	for i, id := range ids {
		for j := range per {
			h.enqueueOne(id, fmt.Sprintf("after-%d-%d", i, j), 0)
		}
	}
	sentAll(2*per + 1)
	for _, id := range ids {
		if got := countOn(id, sims[survivor]) - before[id]; got != per {
			t.Errorf("%s (was on %s): %d of the %d new messages went through the survivor", id, owner[id], got, per)
		}
		es := epochs(h.history(id))
		if owner[id] == victim && es[len(es)-1] <= epochBefore[id] {
			t.Errorf("%s: epochs %v, want a higher one than %d after the takeover", id, es, epochBefore[id])
		}
		check(id, 2*per+1)
	}
	if n := len(nodes[survivor].Held()); n != conns {
		t.Errorf("survivor holds %d leases, want %d", n, conns)
	}
}

// Start-up recovery touches only the connections this node holds (issue 15.3): a second node
// starting while another holds a connection with a message in flight does not record it
// unknown; once the holder is gone (its session ended), the new owner does. a's lease outlives
// any stall (stableTTL): a ticker renewing a 2 s lease stalled past it under load, and b took
// the connection over before the check.
func TestRecoveryOnlyOnHeldConnections(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	ctx := context.Background()
	h.registerOnly("c1")
	if _, err := h.pair.Handle(commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant)),
		commands.PairingSucceeded{ConnectionID: "c1", JID: "4915112345678:1@s.whatsapp.net"}); err != nil {
		t.Fatal(err)
	}
	first := h.enqueueOne("c1", "first", 0)
	h.enqueueOne("c1", "second", 0)
	h.waitProjections(h.lastPosition("c1", connection.TypeMessageQueued), "queue")

	// Node a holds the lease and dispatched the first message; it is mid-send (in flight).
	la := pgLeases(t, h, "a", stableTTL)
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
	// not touch it while a's lease stands.
	simB := nodeSim(t, h, 2)
	b, _ := h.stableNode(simB, "b")
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

	// Node a crashes (its session ends): b takes over, records a's message unknown (never
	// resent) and sends the second.
	crash(t, h, "a")
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
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(time.Minute), Jitter: ptr(time.Duration(0))})
	simA := nodeSim(t, h, 1)
	// Node a, with a lease it trusts for an hour, paced one minute of the manual clock apart.
	a := h.start(func(c *dispatcher.Config) {
		c.Transport, c.Leases = simA, pgLeases(t, h, "a", time.Hour)
		c.LeaseRenewInterval = 20 * time.Minute
		c.Pacing = dispatcher.Pacing{}
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

// A node that joins takes over, from the node that held everything, exactly the idle
// connections rendezvous hashing ranks it first for, through fenced hand-overs (issue 15.2).
func TestJoiningNodeTakesItsShare(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	simA, simB := nodeSim(t, h, 1), nodeSim(t, h, 2)
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
		h.registerOnly(ids[i])
	}
	a, _ := h.stableNode(simA, "a")
	for i, id := range ids {
		h.enqueueOne(id, fmt.Sprint("first-", i), 0)
	}
	for _, id := range ids {
		h.eventually(id+" sent", func() bool { return count[connection.MessageSent](h.history(id)) == 1 })
	}
	if n := len(a.Held()); n != len(ids) {
		t.Fatalf("a alone holds %d of %d", n, len(ids))
	}
	b, _ := h.stableNode(simB, "b")
	want := map[string]string{}
	toB := 0
	for _, id := range ids {
		if want[id] = dispatcher.Rendezvous(key(id), []string{"a", "b"}); want[id] == "b" {
			toB++
		}
	}
	if toB == 0 || toB == len(ids) {
		t.Fatalf("rendezvous puts %d of %d on b; pick other ids", toB, len(ids))
	}
	h.eventually("b holds its share", func() bool { return len(b.Held()) == toB && len(a.Held()) == len(ids)-toB })
	for i, id := range ids {
		h.enqueueOne(id, fmt.Sprint("second-", i), 0)
	}
	for _, id := range ids {
		h.eventually(id+" second sent", func() bool { return count[connection.MessageSent](h.history(id)) == 2 })
		sim := simA
		if want[id] == "b" {
			sim = simB
		}
		if n := countOn(id, sim); (want[id] == "b" && n != 1) || (want[id] == "a" && n != 2) {
			t.Errorf("%s: %d sends through its owner %s", id, n, want[id])
		}
		for _, v := range invariants.Check(h.history(id), sendsOn(id, simA, simB)).Violations {
			t.Errorf("%s: %s", id, v)
		}
	}
}

// TestStrayLeaseIsReleased: node a's engine holds a lease its Dispatcher does not (one the
// Dispatcher stopped trusting while the engine still renewed it, e.g. a claim that finished
// after a renewal began, which the renewal reported "not renewed") on a connection b ranks first.
// a's renewals must release it, or they would renew it forever, keep it from b, and the
// connection would never send. The stray lease is made by claiming it through a's adapter
// before the connection is registered.
func TestStrayLeaseIsReleased(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	simA, simB := nodeSim(t, h, 1), nodeSim(t, h, 2)
	ids := make([]string, 8)
	toB := 0
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
		h.registerOnly(ids[i])
		if dispatcher.Rendezvous(key(ids[i]), []string{"a", "b"}) == "b" {
			toB++
		}
	}
	stray := ""
	for i := 0; stray == ""; i++ {
		if id := fmt.Sprintf("stray%d", i); dispatcher.Rendezvous(key(id), []string{"a", "b"}) == "b" {
			stray = id
		}
	}
	if toB == 0 || toB == len(ids) {
		t.Fatalf("rendezvous puts %d of %d on b; pick other ids", toB, len(ids))
	}
	_, la := h.stableNode(simA, "a")
	for i, id := range ids {
		h.enqueueOne(id, fmt.Sprint("first-", i), 0)
	}
	for _, id := range ids {
		h.eventually(id+" sent", func() bool { return count[connection.MessageSent](h.history(id)) == 1 })
	}
	b, _ := h.stableNode(simB, "b")
	h.eventually("b holds its share (a knows b is live)", func() bool { return len(b.Held()) == toB })

	if got, err := la.Claim(context.Background(), []dispatcher.LeaseKey{{Tenant: tenant, ConnectionID: stray}}); err != nil || len(got) != 1 {
		t.Fatalf("stray claim: %v %v", got, err)
	}
	h.registerOnly(stray)
	h.enqueueOne(stray, "to-the-stray", 0)
	h.eventually(stray+" sent through b", func() bool { return countOn(stray, simB) == 1 })
	if n := countOn(stray, simA); n != 0 {
		t.Errorf("%s: %d sends through a, which b ranks first", stray, n)
	}
	for _, v := range invariants.Check(h.history(stray), sendsOn(stray, simA, simB)).Violations {
		t.Errorf("%s: %s", stray, v)
	}
}
