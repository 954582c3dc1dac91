package dispatcher_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/simulator"
	)

func TestZZRate(t *testing.T) {
	total, banAfter := 5000, 1000
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	h.sim.SetScript("c1", simulator.Script{BanAfter: banAfter, Ban: simulator.Ban{Code: 104, Expire: 10_000 * time.Hour}})
	d := h.start(nil)
	h.registerPaired("c1", d)
	bc := h.startBroadcast("c1", total)
	_ = bc
	h.eventually("first", func() bool { return len(h.sends("c1")) >= 100 })
	sdb, _ := sql.Open("pgx", h.env.url)
	defer sdb.Close()
	stat := func() (x, ws, wr int64) {
		sdb.Exec(`SELECT pg_stat_force_next_flush()`)
		sdb.QueryRow(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&x)
		sdb.QueryRow(`SELECT wal_sync, wal_records FROM pg_stat_wal`).Scan(&ws, &wr)
		return
	}
	x0, s0, r0 := stat()
	start := time.Now()
	h.eventually("sent", func() bool { return len(h.sends("c1")) >= banAfter })
	el := time.Since(start)
	x1, s1, r1 := stat()
	banAfter -= 100
	fmt.Fprintf(os.Stderr, "RATE %d msgs in %v = %.1f/s; commits/msg %.2f (whole cluster wal_sync/msg %.2f, wal_records/msg %.1f)\n",
		banAfter, el.Round(time.Millisecond), float64(banAfter)/el.Seconds(), float64(x1-x0)/float64(banAfter), float64(s1-s0)/float64(banAfter), float64(r1-r0)/float64(banAfter))
	_ = context.Background
}
