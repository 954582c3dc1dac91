package dispatcher_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// TestQueuedMessageReadsOneRow: the dispatcher's read of the message at the head of the queue
// costs one row on PostgreSQL whatever the queue's length (issue 10.9). It used to ask the
// pending-queue projection for "the first pending message after seq-1" (ORDER BY seq LIMIT 1);
// on a table filled since its last ANALYZE the planner sorts every pending row after seq-1 and
// joins each with its broadcast, so one connection's dispatch cost grew with the rest of the
// queue (~20 messages a second with 4,000 pending). The test counts the index entries and heap
// rows PostgreSQL read for the lookups of one session, so it does not depend on the machine's
// speed.
func TestQueuedMessageReadsOneRow(t *testing.T) {
	const n = 3000
	h := newHarness(t, openPostgres)
	h.autoAdvance(100 * time.Millisecond)
	h.registerOnly("c1")
	bc := h.startBroadcast("c1", n)
	h.waitProjections(bc.Position, projections.QueueName)

	ctx := context.Background()
	sdb, err := sql.Open("pgx", h.env.url)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	sdb.SetMaxOpenConns(1) // one session: its counters are flushed below
	one := &projections.DB{SQL: sdb, Dialect: projections.Postgres}
	read := func() int64 {
		t.Helper()
		if _, err := sdb.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		var rows int64
		// The pending queue is its rows and (issue 12) its broadcasts' runs.
		if err := sdb.QueryRowContext(ctx, `SELECT COALESCE((SELECT SUM(idx_tup_read) FROM pg_stat_user_indexes WHERE relname IN ('queue_messages', 'queue_runs', 'queue_run_gone')), 0)
+ COALESCE((SELECT SUM(seq_tup_read) FROM pg_stat_user_tables WHERE relname IN ('queue_messages', 'queue_runs', 'queue_run_gone')), 0)`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	m := dispatcher.QueueMessages{DB: one, Queue: h.queue}
	for _, seq := range []uint64{1, n / 2, n} {
		before := read()
		got, err := m.QueuedMessage(ctx, key("c1"), seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if got.Seq != seq || got.Text != "offer" || got.Recipient != recipient(int(seq-1)) {
			t.Fatalf("seq %d: got %+v", seq, got)
		}
		rows := read() - before
		if rows == 0 {
			t.Fatalf("QueuedMessage(seq %d) read no row of the pending queue's tables: the statistics query no longer sees them", seq)
		}
		if rows > 10 {
			t.Errorf("QueuedMessage(seq %d of %d) read %d rows of the pending queue, want at most 10 (a point read)", seq, n, rows)
		}
	}
	if _, err := m.QueuedMessage(ctx, key("c1"), n+1); !errors.Is(err, dispatcher.ErrNotProjected) {
		t.Fatalf("seq past the queue: %v, want ErrNotProjected", err)
	}
}
