package pgcluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/pgcluster"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestLifecycle checks that data committed before a crash (Kill) and before a clean Stop
// survives Restart, that the URL stays valid across restarts, and that the settings are durable.
func TestLifecycle(t *testing.T) {
	c := pgtest.Start(t, pgcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	if err := c.CreateDatabase(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.URL("life"))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	count := func() int {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.TCPURL("life"))
		if err != nil {
			t.Fatalf("connect over TCP: %v", err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	setting := func(name string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.URL("life"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, s := range []string{"fsync", "synchronous_commit"} {
		if got := setting(s); got != "on" {
			t.Errorf("%s = %q, want on", s, got)
		}
	}

	exec("CREATE TABLE t (x int)")
	exec("INSERT INTO t VALUES (1)")
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if c.Running() {
		t.Fatal("Running() after Kill")
	}
	if _, err := pgx.Connect(ctx, c.URL("life")); err == nil {
		t.Fatal("connected to a killed cluster")
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 1 {
		t.Fatalf("rows after crash and restart = %d, want 1", got)
	}
	exec("INSERT INTO t VALUES (2)")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("rows after stop and restart = %d, want 2", got)
	}
	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("cluster directory %s still there after Close (stat: %v)", dir, err)
	}
}

// TestURLGivesFreshDatabases checks that pgtest.URL hands out distinct, empty databases.
func TestURLGivesFreshDatabases(t *testing.T) {
	ctx := context.Background()
	seen := map[string]bool{}
	for range 2 {
		u := pgtest.URL(t)
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var db string
		var tables int
		err = conn.QueryRow(ctx, "SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')").Scan(&db, &tables)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[db] {
			t.Fatalf("database %s handed out twice", db)
		}
		seen[db] = true
		if tables != 0 {
			t.Fatalf("fresh database %s has %d tables", db, tables)
		}
	}
}

func TestMain(m *testing.M) { pgtest.Main(m) }
