package pairing_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/pairing"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engines runs body on a migrated SQLite and a migrated PostgreSQL read-model database.
func engines(t *testing.T, body func(t *testing.T, ctx context.Context, db *projections.DB)) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
			defer cancel()
			var db *projections.DB
			if engine == "sqlite" {
				sdb, err := sqlitedb.Open(filepath.Join(t.TempDir(), "p.db"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sdb.Close() })
				db = &projections.DB{SQL: sdb, Dialect: projections.SQLite}
			} else {
				db = openPostgres(t)
			}
			for range 2 { // safe at every start
				if err := pairing.Migrate(ctx, db); err != nil {
					t.Fatal(err)
				}
			}
			body(t, ctx, db)
		})
	}
}

// openPostgres opens a fresh PostgreSQL database (not migrated), closed when the test ends.
func openPostgres(t *testing.T) *projections.DB {
	t.Helper()
	pdb, err := sql.Open("pgx", pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pdb.Close() })
	return &projections.DB{SQL: pdb, Dialect: projections.Postgres}
}

// node is one node's pairing manager with its own simulator; the simulators share one
// simulated WhatsApp (simulator.Devices), as the nodes of a deployment share WhatsApp.
type node struct {
	*pairing.Manager
	sim *simulator.Simulator
}

func newNode(t *testing.T, db *projections.DB, devs *simulator.Devices, id string, now func() time.Time) node {
	t.Helper()
	sim := simulator.New(simulator.Options{Seed: 1, Devices: devs})
	t.Cleanup(sim.Close)
	m, err := pairing.New(pairing.Config{DB: db, Transport: sim, NodeID: id, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return node{Manager: m, sim: sim}
}

// waitFor polls cond until it holds (ctx is the safety net).
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func latest(t *testing.T, ctx context.Context, n node, tenant, id string) (pairing.QR, bool) {
	t.Helper()
	q, ok, err := n.Latest(ctx, tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return q, ok
}

// TestPairingSharedAcrossNodes: a QR pairing started on node a is read on node b (the same
// code, rotated codes too), a start on b joins it (no second PairQR anywhere), another tenant's
// reads of the same connection id see nothing, and once the pairing ends (scanned) neither node
// answers a code.
func TestPairingSharedAcrossNodes(t *testing.T) {
	engines(t, func(t *testing.T, ctx context.Context, db *projections.DB) {
		devs := simulator.NewDevices()
		a, b := newNode(t, db, devs, "a", nil), newNode(t, db, devs, "b", nil)
		const tenant, other, id = "t1", "t2", "shop-1"
		key := connection.Key(tenant, id)
		a.sim.HoldQR(key)
		b.sim.HoldQR(key)

		if _, ok := latest(t, ctx, b, tenant, id); ok {
			t.Fatal("a code before any pairing")
		}
		qa, err := a.Start(ctx, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		if qa.Code == "" || !qa.Running || qa.NodeID != "a" {
			t.Fatalf("start on a: %+v", qa)
		}
		qb, ok := latest(t, ctx, b, tenant, id)
		if !ok || qb.Code != qa.Code || !qb.Running || qb.NodeID != "a" || !qb.ExpiresAt.After(qb.UpdatedAt) {
			t.Fatalf("b reads %+v (ok %v), want a's code %q", qb, ok, qa.Code)
		}
		joined, err := b.Start(ctx, tenant, id)
		if err != nil || joined.Code != qa.Code || joined.NodeID != "a" {
			t.Fatalf("start on b: %+v, %v; want to join a's pairing", joined, err)
		}
		if na, nb := a.sim.QRPairings(key), b.sim.QRPairings(key); na != 1 || nb != 0 {
			t.Fatalf("PairQR calls: a %d, b %d; want 1, 0", na, nb)
		}

		// Another tenant's connection of the same id: nothing on either node, and its own
		// key is not the first tenant's.
		for _, n := range []node{a, b} {
			if q, ok := latest(t, ctx, n, other, id); ok {
				t.Fatalf("tenant %s reads tenant %s's code: %+v", other, tenant, q)
			}
		}

		// WhatsApp rotates the code: b follows.
		next, err := a.sim.RotateQR(key)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "b sees the rotated code", func() bool {
			q, ok := latest(t, ctx, b, tenant, id)
			return ok && q.Code == next
		})

		// Scanned: the pairing ends; no node answers its code any more.
		if err := a.sim.ScanQR(key); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "the pairing ended on a", func() bool { _, ok := latest(t, ctx, a, tenant, id); return !ok })
		if q, ok := latest(t, ctx, b, tenant, id); ok {
			t.Fatalf("b reads an ended pairing: %+v", q)
		}
		var state, code string
		if err := db.QueryRowContext(ctx, `SELECT state, code FROM qr_pairings WHERE tenant_id = $1 AND connection_id = $2`,
			tenant, id).Scan(&state, &code); err != nil || state != "ended" || code != "" {
			t.Fatalf("row after the end: %q %q %v", state, code, err)
		}
		// Paired now: a new start on b asks its transport, which refuses.
		if _, err := b.Start(ctx, tenant, id); !errors.Is(err, transport.ErrAlreadyPaired) {
			t.Fatalf("start after pairing: %v, want ErrAlreadyPaired", err)
		}
		if st := rowState(t, ctx, db, tenant, id); st != "ended" {
			t.Fatalf("row after a pairing that failed to start: %q, want ended", st)
		}
	})
}

// TestConcurrentStartsRunOnePairing: starts of one connection racing on two nodes run one
// pairing: one PairQR in all, and every caller gets its code.
func TestConcurrentStartsRunOnePairing(t *testing.T) {
	engines(t, func(t *testing.T, ctx context.Context, db *projections.DB) {
		devs := simulator.NewDevices()
		a, b := newNode(t, db, devs, "a", nil), newNode(t, db, devs, "b", nil)
		const tenant, id = "t1", "shop-2"
		key := connection.Key(tenant, id)
		a.sim.HoldQR(key)
		b.sim.HoldQR(key)
		var wg sync.WaitGroup
		codes := make([]string, 8)
		errs := make([]error, len(codes))
		for i := range codes {
			n := []node{a, b}[i%2]
			wg.Go(func() {
				q, err := n.Start(ctx, tenant, id)
				codes[i], errs[i] = q.Code, err
			})
		}
		wg.Wait()
		for i := range codes {
			if errs[i] != nil || codes[i] == "" || codes[i] != codes[0] {
				t.Fatalf("start %d: %q, %v (first %q)", i, codes[i], errs[i], codes[0])
			}
		}
		if n := a.sim.QRPairings(key) + b.sim.QRPairings(key); n != 1 {
			t.Fatalf("%d PairQR calls, want 1", n)
		}
	})
}

// TestStaleRowIsIgnored: a row whose node stopped updating it (a node killed mid-pairing) no
// longer counts once older than Config.Fresh: other nodes answer no code, and a start runs a
// new pairing. (Node b's clock runs a minute ahead instead of the test waiting.)
func TestStaleRowIsIgnored(t *testing.T) {
	engines(t, func(t *testing.T, ctx context.Context, db *projections.DB) {
		devs := simulator.NewDevices()
		a := newNode(t, db, devs, "a", nil)
		b := newNode(t, db, devs, "b", func() time.Time { return time.Now().Add(time.Minute) })
		const tenant, id = "t1", "shop-3"
		key := connection.Key(tenant, id)
		a.sim.HoldQR(key)
		b.sim.HoldQR(key)
		qa, err := a.Start(ctx, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		if q, ok := latest(t, ctx, b, tenant, id); ok {
			t.Fatalf("b reads a stale row: %+v", q)
		}
		qb, err := b.Start(ctx, tenant, id)
		if err != nil || qb.NodeID != "b" || qb.Code == "" || qa.NodeID != "a" {
			t.Fatalf("start on b over a stale row: %+v, %v", qb, err)
		}
		if n := b.sim.QRPairings(key); n != 1 {
			t.Fatalf("b's PairQR calls %d, want 1", n)
		}
	})
}

// TestCloseEndsTheRows: a node closing ends its pairings; their rows say ended.
func TestCloseEndsTheRows(t *testing.T) {
	engines(t, func(t *testing.T, ctx context.Context, db *projections.DB) {
		devs := simulator.NewDevices()
		a, b := newNode(t, db, devs, "a", nil), newNode(t, db, devs, "b", nil)
		const tenant, id = "t1", "shop-4"
		a.sim.HoldQR(connection.Key(tenant, id))
		if _, err := a.Start(ctx, tenant, id); err != nil {
			t.Fatal(err)
		}
		if _, ok := latest(t, ctx, b, tenant, id); !ok {
			t.Fatal("b does not see a's pairing")
		}
		a.Close()
		if q, ok := latest(t, ctx, b, tenant, id); ok {
			t.Fatalf("b reads the pairing of a closed node: %+v", q)
		}
	})
}

func rowState(t *testing.T, ctx context.Context, db *projections.DB, tenant, id string) string {
	t.Helper()
	var state string
	if err := db.QueryRowContext(ctx, `SELECT state FROM qr_pairings WHERE tenant_id = $1 AND connection_id = $2`,
		tenant, id).Scan(&state); err != nil {
		t.Fatal(err)
	}
	return state
}

// TestTimedOutPairingEnds: a pairing past Config.Timeout ends; its row says ended and no node
// answers its code.
func TestTimedOutPairingEnds(t *testing.T) {
	engines(t, func(t *testing.T, ctx context.Context, db *projections.DB) {
		devs := simulator.NewDevices()
		sim := simulator.New(simulator.Options{Seed: 1, Devices: devs})
		t.Cleanup(sim.Close)
		a, err := pairing.New(pairing.Config{DB: db, Transport: sim, NodeID: "a", Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		b := newNode(t, db, devs, "b", nil)
		const tenant, id = "t1", "shop-5"
		sim.HoldQR(connection.Key(tenant, id))
		if _, err := a.Start(ctx, tenant, id); err != nil && !errors.Is(err, pairing.ErrNoCode) {
			t.Fatal(err)
		}
		// The run ends its row first and its memory after: wait for both on a.
		waitFor(t, ctx, "the timed-out pairing ended on its node", func() bool {
			_, ok, err := a.Latest(ctx, tenant, id)
			return !ok && err == nil
		})
		if s := rowState(t, ctx, db, tenant, id); s != "ended" {
			t.Fatalf("the timed-out pairing's row is %q, want ended", s)
		}
		for _, n := range []*pairing.Manager{a, b.Manager} {
			if q, ok, err := n.Latest(ctx, tenant, id); ok || err != nil {
				t.Fatalf("%s reads a timed-out pairing: %+v %v", n.NodeID(), q, err)
			}
		}
	})
}

// TestSlowClaimHoldsUpOnlyItsConnection: a Start whose claim of its row waits (here on a row
// lock another transaction holds; in production a busy database) does not hold up another
// tenant's Start on the same node. The claim used to run under the manager's mutex, so every
// Start of the node waited for the slowest claim. Then the held Start completes once the lock
// is gone, and a Start after Close fails with ErrClosed.
func TestSlowClaimHoldsUpOnlyItsConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	db := openPostgres(t)
	pdb := db.SQL
	if err := pairing.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	a := newNode(t, db, simulator.NewDevices(), "a", nil)

	// Hold the row of t1/slow: an uncommitted insert of the same key makes the claim's upsert wait.
	blocker, err := pdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback() }()
	if _, err := blocker.ExecContext(ctx, `INSERT INTO qr_pairings (tenant_id, connection_id, run_id, node_id, state,
		started_at_us, updated_at_us, expires_at_us) VALUES ('t1', 'slow', 'x', 'gone', 'ended', 0, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		q   pairing.QR
		err error
	}
	slow := make(chan result, 1)
	go func() {
		q, err := a.Start(ctx, "t1", "slow")
		slow <- result{q, err}
	}()
	waitFor(t, ctx, "the slow Start's claim waiting on the row lock", func() bool {
		var n int
		if err := pdb.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO qr_pairings%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})

	q, err := a.Start(ctx, "t2", "fast")
	if err != nil || q.Code == "" {
		t.Fatalf("another tenant's Start while a claim waits: %+v, %v", q, err)
	}
	select {
	case r := <-slow:
		t.Fatalf("the held Start returned before its row was released: %+v, %v", r.q, r.err)
	default:
	}

	if err := blocker.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-slow:
		if r.err != nil || r.q.Code == "" {
			t.Fatalf("the held Start after the row was released: %+v, %v", r.q, r.err)
		}
	case <-ctx.Done():
		t.Fatal("the held Start never returned")
	}

	a.Close()
	if _, err := a.Start(ctx, "t3", "late"); !errors.Is(err, pairing.ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
}
