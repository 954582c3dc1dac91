package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
)

// TestLiveWakeUpPlansUseTheIndex: the statements a subscription runs on every live wake-up (its
// page, and whether anything past the cursor is held back) must read the primary key, not the
// whole log, also on a table PostgreSQL has no statistics for yet — a fresh node's, or a
// benchmark's. They were planned as sequential scans there (an EXISTS with a condition on the
// snapshot horizon): every wake-up of every subscription then read every event stored.
func TestLiveWakeUpPlansUseTheIndex(t *testing.T) {
	url := pgtest.URL(t)
	st := openStore(t, url, postgres.Options{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// No statistics: autovacuum must not analyse the table while the test looks at the plans.
	if _, err := conn.Exec(ctx, `ALTER TABLE waqueue_events SET (autovacuum_enabled = off)`); err != nil {
		t.Fatal(err)
	}
	var last eventstore.Position
	for s := range 20 {
		res, err := st.Append(ctx, fmt.Sprintf("plan-%02d", s), eventstore.NoStream, events(500, "E")...)
		if err != nil {
			t.Fatal(err)
		}
		last = res.Position
	}
	var analysed bool
	if err := conn.QueryRow(ctx, `SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL
		FROM pg_stat_user_tables WHERE relname = 'waqueue_events'`).Scan(&analysed); err != nil {
		t.Fatal(err)
	}
	if analysed {
		t.Fatal("the table was analysed: the test cannot show the plan without statistics")
	}
	for _, cursor := range []eventstore.Position{last, {Commit: last.Commit - 5, Prepare: 0}, eventstore.Start} {
		for _, f := range []eventstore.Filter{{}, {EventTypes: []string{"E"}}} {
			plan, err := st.ExplainPage(ctx, cursor, f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(plan, "Seq Scan") {
				t.Errorf("page after %s, filter %+v: a sequential scan of the log:\n%s", cursor, f, plan)
			}
		}
	}
}
