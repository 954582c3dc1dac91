package server_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// TestPairingAndLogoutThroughTheNodeWithoutTheLease runs two composed nodes on one PostgreSQL
// with their simulators sharing one simulated WhatsApp (simulator.Devices: one stream per
// device, as WhatsApp allows). Node a holds the connection's lease; every operator request goes
// to node b, as a load balancer may send it (issue 15) — b dispatching too, or API-only. A
// logout through b ends a's session (a logs the device out); a QR pairing through b ends with
// exactly one client of the device connected, a's — no stream replaced —, and the messages go
// out through a; a retirement through b ends a's session.
func TestPairingAndLogoutThroughTheNodeWithoutTheLease(t *testing.T) {
	for _, apiOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "b dispatches", true: "b API-only"}[apiOnly], func(t *testing.T) {
			pairThroughNonOwner(t, apiOnly)
		})
	}
}

func pairThroughNonOwner(t *testing.T, apiOnly bool) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
	defer cancel()
	url := pgtest.URL(t)
	devs := simulator.NewDevices()
	// The lease stays on a whatever the load: its TTL outlives any stall (with 2 s, a stalled
	// renewal moved it to b and the session or the send went through b); the renewals are
	// frequent, so each node learns the other is live within a fraction of a second.
	start := func(name string) (*server.Node, *httptest.Server) {
		n := startNode(ctx, t, server.Options{DB: url, NodeID: name, LeaseTTL: testwait.Limit, LeaseRenewInterval: 250 * time.Millisecond, NoPacing: true,
			Simulator: simulator.Options{Seed: 1, Devices: devs}, NoDispatcher: apiOnly && name == "b"})
		srv := httptest.NewServer(contract(t, n.Handler))
		t.Cleanup(srv.Close)
		return n, srv
	}
	a, _ := start("a")
	b, srvB := start("b")
	c := &client{t: t, base: srvB.URL, key: a.AdminKey} // every request through b
	var id string
	for i := 0; id == ""; i++ {
		if cand := "shop-" + string(rune('a'+i%26)) + string(rune('a'+i/26)); dispatcher.Rendezvous(connection.Key("default", cand), []string{"a", "b"}) == "a" {
			id = cand
		}
	}
	const phone = "+491701234567"
	key := connection.Key("default", id)
	live := func(n *server.Node) bool {
		st := n.Simulator.Status(key).State
		return st == transport.StateConnected || st == transport.StateTemporarilyBanned
	}
	held := func(n *server.Node) bool {
		if n.Dispatcher == nil {
			return false
		}
		return slices.ContainsFunc(n.Dispatcher.Held(), func(l dispatcher.Lease) bool { return l.ConnectionID == id })
	}
	card := func() map[string]any {
		var v map[string]any
		c.do("GET", "/v1/connections/"+id, nil, nil, http.StatusOK, &v)
		return v
	}

	c.do("POST", "/v1/connections", map[string]any{"id": id, "phone": phone}, nil, http.StatusCreated, nil)
	waitFor(t, ctx, "lease on a, session on a", func() bool {
		return held(a) && !held(b) && live(a) && card()["link_status"] == "active"
	})

	// Logout through b: b has no client, so no remote logout there; a ends its session.
	var out struct {
		RemoteLogout bool `json:"remote_logout"`
	}
	c.do("POST", "/v1/connections/"+id+"/logout", nil, nil, http.StatusOK, &out)
	if out.RemoteLogout {
		t.Fatal("remote_logout true from the node without the session")
	}
	waitFor(t, ctx, "a's session ended", func() bool { return a.Simulator.Status(key).State == transport.StateUnpaired })
	if devs.Paired(key) || live(a) || live(b) {
		t.Fatalf("after the logout: stored %v, a live %v, b live %v", devs.Paired(key), live(a), live(b))
	}

	// QR pairing through b: the session ends up on a only.
	var qr struct {
		Code string `json:"code"`
	}
	c.do("POST", "/v1/connections/"+id+"/pairing/qr", nil, map[string]string{"Accept": "application/json"}, http.StatusOK, &qr)
	if qr.Code == "" {
		t.Fatal("no QR code")
	}
	waitFor(t, ctx, "paired, session on a", func() bool { return card()["link_status"] == "active" && live(a) })
	if live(b) || devs.Replaced() != 0 {
		t.Fatalf("after pairing through b: b live %v, %d streams replaced", live(b), devs.Replaced())
	}
	c.do("POST", "/v1/connections/"+id+"/queue/resume", map[string]any{"note": "paired again"}, nil, http.StatusOK, nil)
	c.do("POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": "+491709876543", "text": "hello"}, nil, http.StatusAccepted, nil)
	waitFor(t, ctx, "sent through a", func() bool { return len(a.Simulator.Sends()) == 1 })
	if n := len(b.Simulator.Sends()); n != 0 {
		t.Fatalf("%d messages handed over through b", n)
	}

	// Retirement through b (once the message is settled, the queue is empty).
	waitFor(t, ctx, "queue empty", func() bool {
		v := card()
		return v["pending"] == float64(0) && v["in_flight"] == float64(0)
	})
	c.do("POST", "/v1/connections/"+id+"/retire", map[string]any{"reason": "number returned", "confirm": phone}, nil, http.StatusOK, nil)
	waitFor(t, ctx, "a's session of the retired connection ended", func() bool { return !live(a) })
	if live(b) || devs.Replaced() != 0 {
		t.Fatalf("after retiring: b live %v, %d streams replaced", live(b), devs.Replaced())
	}
}

// TestLeaseRenewalDoesNotQueueBehindTheMainPool: the PostgreSQL leases use a connection pool of
// their own, so a renewal — which keeps the node's session, and so every lease it holds, alive —
// goes through while every connection of the node's main pool is busy (10,000 sending loops at
// 100,000 / 10,000 in bench scale, under load: the renewal waited for the shared pool past the
// TTL and the node dropped all its leases, leases_held=0). Fails with the shared pool: the
// renewal waits until its context ends.
func TestLeaseRenewalDoesNotQueueBehindTheMainPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	n := newNode(ctx, t, server.Options{DB: pgtest.URL(t), NodeID: "busy", NoPacing: true})
	if n.Leases == nil {
		t.Fatal("no PostgreSQL leases on a PostgreSQL node")
	}
	// Take every connection of the main pool (its default size; a few more requests would
	// only queue) and keep them until the end of the test.
	var held []*sql.Conn
	for range postgres.DefaultMaxConns {
		c, err := n.SQL.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	// The main pool is exhausted: a query on it waits (bounded here by a short context).
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	err := n.SQL.PingContext(short)
	stop()
	if err == nil {
		t.Fatal("the main pool still had a free connection: the test does not exhaust it")
	}
	rctx, stop := context.WithTimeout(ctx, testwait.AtLeast(20*time.Second))
	defer stop()
	if _, err := n.Leases.Renew(rctx); err != nil {
		t.Fatalf("renewing the leases with the main pool exhausted: %v", err)
	}
}
