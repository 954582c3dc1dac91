package httpapi_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// TestSameIDInTwoTenants: connection ids are scoped to the tenant (G9). Another tenant creating
// a taken id gets 201, exactly as for a free id (before scoping it got 409 while GET answered 404:
// existence leaked); the same tenant gets 409. The two connections are fully independent: what
// is queued, cleared or held on one never shows on the other.
func TestSameIDInTwoTenants(t *testing.T) {
	e := start(t, apitestOptions())
	a, b := e.admin(), e.key(otherTenant, auth.RoleAdmin)
	phoneA, phoneB := newPhone(), newPhone()
	wantStatus(t, e.do(a, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": phoneA}, nil), 201)
	wantStatus(t, e.do(b, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": phoneB}, nil), 201)
	wantProblem(t, e.do(a, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": newPhone()}, nil), 409, "already_registered")
	wantProblem(t, e.do(b, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": newPhone()}, nil), 409, "already_registered")

	for i, key := range []string{a, a, a, b, b} {
		r := e.do(key, "POST", "/v1/connections/shop-1/messages", map[string]any{"recipient": newPhone(), "text": "hi"},
			map[string]string{"Idempotency-Key": "same-key-" + string(rune('0'+i%3))})
		wantStatus(t, r, 202)
	}
	e.sync()
	queue := func(key string) map[string]any {
		t.Helper()
		r := e.do(key, "GET", "/v1/connections/shop-1/queue", nil, nil)
		wantStatus(t, r, 200)
		return r.Map()
	}
	if qa, qb := num(queue(a), "pending"), num(queue(b), "pending"); qa != 3 || qb != 2 {
		t.Fatalf("pending = %d and %d, want 3 and 2", qa, qb)
	}
	if ca := e.do(a, "GET", "/v1/connections/shop-1", nil, nil).Map(); str(ca, "phone") != phoneA {
		t.Fatalf("tenant A sees %v", ca)
	}
	if cb := e.do(b, "GET", "/v1/connections/shop-1", nil, nil).Map(); str(cb, "phone") != phoneB {
		t.Fatalf("tenant B sees %v", cb)
	}

	// Clear A's queue: B's is untouched.
	c := e.do(a, "POST", "/v1/connections/shop-1/queue/clear", map[string]any{"reason": "scoping", "confirm": phoneA},
		map[string]string{"Idempotency-Key": "clear-1"})
	wantStatus(t, c, 202)
	clearID := str(c.Map(), "clear_id")
	waitFor(t, "A's clear done", func() bool { return str(queue(a), "status") == "open" && num(queue(a), "pending") == 0 })
	e.sync()
	if qb := queue(b); num(qb, "pending") != 2 || str(qb, "status") != "open" {
		t.Fatalf("B's queue after A's clear: %v", qb)
	}
	wantProblem(t, e.do(b, "GET", "/v1/connections/shop-1/clears/"+clearID, nil, nil), 404, "not_found")
	// The same idempotency key in B asks for B's own clear, not a replay of A's.
	cb := e.do(b, "POST", "/v1/connections/shop-1/queue/clear", map[string]any{"reason": "scoping", "confirm": phoneB},
		map[string]string{"Idempotency-Key": "clear-1"})
	wantStatus(t, cb, 202)
	if str(cb.Map(), "clear_id") == clearID {
		t.Fatal("tenant B's clear replayed tenant A's")
	}
	waitFor(t, "B's clear done", func() bool { return num(queue(b), "pending") == 0 })

	// Hold B: A stays open. Histories, audit and analytics stay apart.
	wantStatus(t, e.do(b, "POST", "/v1/connections/shop-1/queue/hold", map[string]any{"note": "x"}, nil), 200)
	e.sync()
	if st := str(queue(a), "status"); st != "open" {
		t.Fatalf("A's queue is %s after B's hold", st)
	}
	for _, path := range []string{"/v1/connections/shop-1/history", "/v1/audit?connection=shop-1", "/v1/analytics/daily?connection=shop-1"} {
		ra, rb := e.do(a, "GET", path, nil, nil), e.do(b, "GET", path, nil, nil)
		wantStatus(t, ra, 200)
		wantStatus(t, rb, 200)
		if strings.Contains(string(ra.Body), phoneB) || strings.Contains(string(rb.Body), phoneA) {
			t.Errorf("GET %s shows the other tenant's connection", path)
		}
		if strings.Contains(string(ra.Body), otherTenant) || strings.Contains(string(rb.Body), `"`+e.Tenant+`"`) {
			t.Errorf("GET %s names the other tenant:\nA: %.300s\nB: %.300s", path, ra.Body, rb.Body)
		}
	}
}

// TestLegacyDatabaseUpgrade: a database written before ids were scoped (streams
// "connection-<id>", all of tenant default, read models projected from them) is read correctly
// by this version, which keeps writing the default tenant's connections to their old streams;
// another tenant can then create the same id beside them.
func TestLegacyDatabaseUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	dir := t.TempDir()
	if err := server.Migrate(ctx, server.Options{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	// Today's data: a connection of tenant default with three pending messages, on the stream
	// named as before scoping.
	const legacyStream = "connection-shop-1"
	func() {
		db, err := sqlitedb.Open(filepath.Join(dir, "waqueue.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		store, err := sqlite.New(ctx, db, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		s, err := clearkit.Register(ctx, store, "default", "shop-1", "+491701234567", time.Now().UTC())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := clearkit.SeedPending(ctx, s, 3, time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		if evs, err := store.ReadStream(ctx, legacyStream, eventstore.Forwards, 0, 0); err != nil || len(evs) != 5 {
			t.Fatalf("legacy stream %s: %d events, %v (want registration, broadcast, 3 messages)", legacyStream, len(evs), err)
		}
	}()

	e := start(t, apitest.Options{Dir: dir})
	if e.Tenant != "default" {
		t.Fatalf("bootstrap tenant %q", e.Tenant)
	}
	e.sync()
	a := e.admin()
	card := e.do(a, "GET", "/v1/connections/shop-1", nil, nil)
	wantStatus(t, card, 200)
	if m := card.Map(); num(m, "pending") != 3 || str(m, "id") != "shop-1" {
		t.Fatalf("legacy connection reads %s", card.Body)
	}
	wantStatus(t, e.do(a, "POST", "/v1/connections/shop-1/messages", map[string]any{"recipient": newPhone(), "text": "after the upgrade"},
		map[string]string{"Idempotency-Key": "k1"}), 202)
	evs, err := e.Store.ReadStream(ctx, legacyStream, eventstore.Forwards, 0, 0)
	if err != nil || len(evs) != 6 {
		t.Fatalf("legacy stream after the upgrade: %d events, %v; want the new message appended to it", len(evs), err)
	}
	if _, err := e.Store.ReadStream(ctx, "connection-default:shop-1", eventstore.Forwards, 0, 0); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("a second stream for the default tenant's connection: %v", err)
	}
	wantProblem(t, e.do(a, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": newPhone()}, nil), 409, "already_registered")

	// Another tenant creates the same id: its own stream, its own queue.
	b := e.key(otherTenant, auth.RoleAdmin)
	wantStatus(t, e.do(b, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": newPhone()}, nil), 201)
	if _, err := e.Store.ReadStream(ctx, "connection-"+otherTenant+":shop-1", eventstore.Forwards, 0, 0); err != nil {
		t.Fatalf("the other tenant's stream: %v", err)
	}
	e.sync()
	if m := e.do(b, "GET", "/v1/connections/shop-1/queue", nil, nil).Map(); num(m, "pending") != 0 {
		t.Fatalf("the other tenant's new connection shows the legacy queue: %v", m)
	}
	if m := e.do(a, "GET", "/v1/connections/shop-1/queue", nil, nil).Map(); num(m, "pending") != 4 {
		t.Fatalf("the legacy queue after the other tenant's registration: %v", m)
	}
	h := e.do(a, "GET", "/v1/connections/shop-1/history", nil, nil)
	wantStatus(t, h, 200)
	if n := len(h.Map()["events"].([]any)); n != 6 {
		t.Fatalf("legacy history has %d events, want 6: %.400s", n, h.Body)
	}
}

// waitFor polls cond until it holds, failing after a generous safety-net timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
