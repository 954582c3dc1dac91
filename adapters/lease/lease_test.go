package lease_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/dispatcher/leasetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openDB opens a fresh database of the test cluster, closed when t ends.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPostgres(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Opener {
		db := openDB(t)
		return func(node string, ttl time.Duration) dispatcher.Leases {
			l, err := lease.NewPostgres(context.Background(), db, node, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
	}, true)
}

// A renewal costs the same whatever the number of leases (issue 15.5: at 100,000 leases one
// renewal UPDATE of every lease row took longer than the TTL): it writes the node's session row
// and reads its leases, and writes no lease row (their xmin, the transaction that last wrote
// each row, stays the claim's).
func TestPostgresRenewalWritesNoLeaseRow(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	a, err := lease.NewPostgres(ctx, db, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]dispatcher.LeaseKey, 5000)
	for i := range keys {
		keys[i] = dispatcher.LeaseKey{Tenant: "t1", ConnectionID: fmt.Sprint("c", i)}
	}
	if got, err := a.Claim(ctx, keys); err != nil || len(got) != len(keys) {
		t.Fatalf("claimed %d of %d: %v", len(got), len(keys), err)
	}
	leaseVersions := func() (v string) {
		t.Helper()
		if err := db.QueryRowContext(ctx, `SELECT string_agg(DISTINCT xmin::text, ',') FROM dispatch_leases`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	nodeVersion := func() (v string) {
		t.Helper()
		if err := db.QueryRowContext(ctx, `SELECT xmin::text FROM dispatch_nodes WHERE session = $1`, a.Session()).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	leaseV := leaseVersions()
	for range 3 {
		got, err := a.Renew(ctx)
		if err != nil || len(got) != len(keys) {
			t.Fatalf("renewed %d of %d: %v", len(got), len(keys), err)
		}
		if l := leaseVersions(); l != leaseV {
			t.Fatalf("a renewal wrote lease rows (xmin %s, after the claim %s)", l, leaseV)
		}
	}
	// The renewal is the session's heartbeat: it writes the session row.
	nodeV := nodeVersion()
	if _, err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if nodeVersion() == nodeV {
		t.Fatal("a renewal did not write the node's session row (its heartbeat)")
	}
}

// Upgrading from the per-connection expiry: the old tables are migrated in place, the epochs are
// kept (the stream fence compares them with those recorded: restarting them would refuse every
// hand-over) and the old leases start free.
func TestPostgresMigratesPerConnectionLeases(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	if _, err := db.ExecContext(ctx, `
CREATE TABLE dispatch_leases (tenant_id TEXT NOT NULL, connection_id TEXT NOT NULL, owner TEXT NOT NULL,
	epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (tenant_id, connection_id));
CREATE INDEX dispatch_leases_owner ON dispatch_leases (owner, expires_at);
CREATE TABLE dispatch_nodes (node TEXT PRIMARY KEY, expires_at TIMESTAMPTZ NOT NULL);
INSERT INTO dispatch_leases VALUES ('t1', 'c1', 'old', 7, now() + interval '1 hour');
INSERT INTO dispatch_nodes VALUES ('old', now() + interval '1 hour');`); err != nil {
		t.Fatal(err)
	}
	a, err := lease.NewPostgres(ctx, db, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Claim(ctx, []dispatcher.LeaseKey{{Tenant: "t1", ConnectionID: "c1"}})
	if err != nil || len(got) != 1 || got[0].Epoch != 8 {
		t.Fatalf("claim after the migration: %v %v, want epoch 8", got, err)
	}
	if live, err := a.LiveNodes(ctx); err != nil || len(live) != 1 || live[0] != "a" {
		t.Fatalf("live nodes after the migration: %v %v", live, err)
	}
	if _, err := lease.NewPostgres(ctx, db, "b", time.Hour); err != nil { // idempotent
		t.Fatal(err)
	}
}

// Sessions that expired over an hour ago and hold no lease row are deleted when a session
// starts; one still named by a lease row is kept (the row's lease is free either way).
func TestPostgresForgetsOldSessions(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	a, err := lease.NewPostgres(ctx, db, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `
INSERT INTO dispatch_nodes (session, node, expires_at, ended) VALUES
	(1000001, 'gone', now() - interval '2 hours', true),
	(1000002, 'gone', now() - interval '2 hours', false),
	(1000003, 'recent', now() - interval '1 minute', true);
INSERT INTO dispatch_leases (tenant_id, connection_id, owner, session, epoch) VALUES ('t1', 'c1', 'gone', 1000002, 4);`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Renew(ctx); err != nil { // starts a's session
		t.Fatal(err)
	}
	var left []int64
	rows, err := db.QueryContext(ctx, `SELECT session FROM dispatch_nodes WHERE session >= 1000000 ORDER BY session`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		left = append(left, s)
	}
	if len(left) != 2 || left[0] != 1000002 || left[1] != 1000003 {
		t.Fatalf("sessions left %v, want [1000002 1000003]", left)
	}
	got, err := a.Claim(ctx, []dispatcher.LeaseKey{{Tenant: "t1", ConnectionID: "c1"}})
	if err != nil || len(got) != 1 || got[0].Epoch != 5 {
		t.Fatalf("claim of a long-dead session's lease: %v %v, want epoch 5", got, err)
	}
}
