package projections_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// measureSQLite runs clearkit.MeasureClear on a fresh embedded database (one file).
func measureSQLite(tb testing.TB, pending int) clearkit.ClearTiming {
	ctx := context.Background()
	path := filepath.Join(tb.TempDir(), "bench.db")
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer store.Close()
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer sdb.Close()
	db := &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := projections.Migrate(ctx, db); err != nil {
		tb.Fatal(err)
	}
	tm, err := clearkit.MeasureClear(ctx, clearkit.MeasureConfig{Store: store, DB: db, Pending: pending})
	if err != nil {
		tb.Fatal(err)
	}
	if tm.Purged != uint64(pending) {
		tb.Fatalf("purged %d, want %d", tm.Purged, pending)
	}
	return tm
}

// TestMeasureClear checks the measuring helper itself on a small queue (speed is not asserted).
func TestMeasureClear(t *testing.T) {
	tm := measureSQLite(t, 2500)
	if tm.Clear <= 0 || tm.Dropped > tm.Clear || tm.Seed <= 0 {
		t.Errorf("timing = %+v", tm)
	}
}

// BenchmarkClear measures a whole-queue clear on SQLite with WAQUEUE_BENCH_PENDING messages
// pending (default 1,000,000; 10,000 with -short). Seeding dominates the run time; the
// reported clear_ms is the figure of G4.
func BenchmarkClear(b *testing.B) {
	pending := 1_000_000
	if testing.Short() {
		pending = 10_000
	}
	if v, err := strconv.Atoi(os.Getenv("WAQUEUE_BENCH_PENDING")); err == nil && v > 0 {
		pending = v
	}
	for b.Loop() {
		tm := measureSQLite(b, pending)
		b.ReportMetric(float64(tm.Clear.Microseconds())/1000, "clear_ms")
		b.ReportMetric(float64(tm.Dropped.Microseconds())/1000, "dropped_ms")
		b.ReportMetric(tm.Seed.Seconds(), "seed_s")
		b.ReportMetric(tm.CatchUp.Seconds(), "catchup_s")
	}
}
