package dispatcher_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// sharedWhatsApp returns the simulators of nodes a and b sharing one simulated WhatsApp
// (simulator.Devices: stored devices shared as in the whatsmeow session store, one stream per
// device). Connections are not paired by Connect: they are paired through a node, as the API does.
func sharedWhatsApp(t *testing.T, h *harness) (a, b *simulator.Simulator, devs *simulator.Devices) {
	devs = simulator.NewDevices()
	a = simulator.New(simulator.Options{Seed: 1, Clock: h.clock, Devices: devs})
	b = simulator.New(simulator.Options{Seed: 2, Clock: h.clock, Devices: devs})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	return a, b, devs
}

// rankedFirst returns n connection ids that rendezvous hashing ranks node first for among nodes.
func rankedFirst(prefix, node string, nodes []string, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if dispatcher.Rendezvous(key(id), nodes) == node {
			out = append(out, id)
		}
	}
	return out
}

func holds(r *running, id string) bool {
	return slices.ContainsFunc(r.Held(), func(l dispatcher.Lease) bool { return l.ConnectionID == id })
}

// Pairing, logout and retirement through the node that does not hold the connection's lease
// (issue 15): the API serves them on whichever node receives the request. Node a holds the
// lease; the pairing runs on node b. Afterwards exactly one client of the device is connected,
// a's (no stream was replaced), and messages go out through a. A logout served by b (the command
// recorded, then b's transport unpaired, as the API's logout does) ends a's session: a logs the
// device out. A retirement served by b ends a's session too.
func TestPairLogoutAndRetireThroughTheNonOwner(t *testing.T) {
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	simA, simB, devs := sharedWhatsApp(t, h)
	nodes := []string{"a", "b"}
	ids := rankedFirst("p", "a", nodes, 2)
	id, retiring := ids[0], ids[1]
	for _, c := range ids {
		h.registerOnly(c)
	}
	// Each node with its own Repository (its own aggregate cache), as separate processes. The
	// lease stays on a whatever the load (stableTTL): with a 2 s TTL a stalled renewal moved it to
	// b, and the pairing's or the send's node was b's.
	node := func(sim *simulator.Simulator, name string) *running {
		repo, err := commands.NewRepository(h.env.store, commands.RepositoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return h.start(func(c *dispatcher.Config) {
			c.Transport, c.Leases, c.Repository = sim, pgLeases(t, h, name, stableTTL), repo
			c.LeaseRenewInterval = renewEvery
		})
	}
	na, nb := node(simA, "a"), node(simB, "b")
	for _, c := range ids {
		h.eventually(c+": lease settled on a", func() bool { return holds(na, c) && !holds(nb, c) })
	}
	now := func() time.Time { return h.clock.Now().UTC() }
	unpair, err := commands.NewUnpairConnectionHandler(h.repo, now)
	if err != nil {
		t.Fatal(err)
	}
	retire, err := commands.NewRetireConnectionHandler(h.repo, now)
	if err != nil {
		t.Fatal(err)
	}
	live := func(s *simulator.Simulator, c string) bool {
		st := s.Status(key(c)).State
		return st == transport.StateConnected || st == transport.StateTemporarilyBanned
	}

	ctx := context.Background()
	for _, c := range ids {
		codes, err := simB.PairQR(ctx, key(c)) // the API's pairing, served by b
		if err != nil {
			t.Fatal(err)
		}
		for range codes {
		}
		h.eventually(c+": paired", func() bool { return h.linkStatus(c) == connection.LinkStatusActive })
		h.eventually(c+": session on the lease owner", func() bool { return live(simA, c) })
		if live(simB, c) {
			t.Fatalf("%s: the pairing node's client is connected too", c)
		}
	}
	if n := devs.Replaced(); n != 0 {
		t.Fatalf("%d streams replaced: two clients of one device were connected", n)
	}
	h.enqueueOne(id, "k1", 0)
	h.eventually("sent", func() bool { return count[connection.MessageSent](h.history(id)) == 1 })
	if a, b := countOn(id, simA), countOn(id, simB); a != 1 || b != 0 {
		t.Fatalf("hand-overs: %d through a, %d through b; want the one through a", a, b)
	}

	// Logout served by b: recorded first, then b's transport (no client there) deletes the session.
	if _, err := unpair.Handle(h.op(), commands.UnpairConnection{ConnectionID: id}); err != nil {
		t.Fatal(err)
	}
	u, err := simB.Unpair(ctx, key(id))
	if err != nil || u.Remote {
		t.Fatalf("b's Unpair = %+v, %v; want a local unpair (b has no client)", u, err)
	}
	h.eventually("a's session ended", func() bool { return simA.Status(key(id)).State == transport.StateUnpaired })
	if devs.Paired(key(id)) || live(simA, id) || live(simB, id) {
		t.Fatalf("after the logout: stored %v, a live %v, b live %v", devs.Paired(key(id)), live(simA, id), live(simB, id))
	}

	// Retirement served by b (the API disconnects b's session, which it does not have).
	if _, err := retire.Handle(h.op(), commands.RetireConnection{ConnectionID: retiring, Reason: "number returned"}); err != nil {
		t.Fatal(err)
	}
	if err := simB.Disconnect(ctx, key(retiring)); err != nil {
		t.Fatal(err)
	}
	h.eventually("a's session of the retired connection ended", func() bool { return !live(simA, retiring) })
	if live(simB, retiring) || devs.Replaced() != 0 {
		t.Fatalf("after retiring: b live %v, replaced %d", live(simB, retiring), devs.Replaced())
	}
}
