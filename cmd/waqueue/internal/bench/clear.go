package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// ClearConfig configures the clear benchmark.
type ClearConfig struct {
	// Sizes are the pending-message counts measured. Empty means 1,000, 100,000, 1,000,000.
	Sizes []int
	// Clears is how many clears are measured per size (each on a freshly seeded connection);
	// p50 and p99 are over these. Zero means 5 below 100,000 pending, 3 below 1,000,000, 2 above.
	Clears int
}

// coldPending caps the pending messages of the untimed first clear of a node (clearSize).
const coldPending = 1000

// QuickSizes are the sizes of --quick.
var QuickSizes = []int{1000, 10_000}

func (c ClearConfig) clears(size int) int {
	switch {
	case c.Clears > 0:
		return c.Clears
	case size < 100_000:
		return 5
	case size < 1_000_000:
		return 3
	default:
		return 2
	}
}

// Clear measures, per engine and size, the clear latency (request appended → QueueCleared
// projected and the queue open again; dropped_p99_ms: until the pending read model shows
// nothing pending, i.e. ClearQueueRequested projected) against a plain SQL DELETE of as many rows from a table
// shaped like the pending queue, and the Queue projection's catch-up over the seeded events
// against the store's raw Subscribe of the same events (timed right before the catch-up and
// again after the clear: baseline_per_s is from the mean of the two; both the catch-up and
// these reads find the log read once before, see clearkit.MeasureClear). It prints
//
//	BENCH clear/<engine>/pending=<n> p50_ms=… p99_ms=… dropped_p99_ms=… cold_ms=… clears=… baseline=delete baseline_ms=… ratio=<p99/baseline> rss_mib=…
//	BENCH catchup/<engine>/events=<n> events_per_s=… baseline=subscribe baseline_per_s=… ratio=… rss_mib=…
//
// cold_ms is the node's first clear (of at most 1,000 pending), which runs before the measured
// ones and is not in p50 or p99.
func Clear(ctx context.Context, env *Env, cfg ClearConfig, w io.Writer) error {
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []int{1000, 100_000, 1_000_000}
	}
	for _, engine := range env.Adapters {
		for _, size := range cfg.Sizes {
			if size <= 0 {
				return fmt.Errorf("bench: clear size %d is not positive", size)
			}
			if err := clearSize(ctx, env, engine, size, cfg.clears(size), w); err != nil {
				return err
			}
		}
	}
	return nil
}

func clearSize(ctx context.Context, env *Env, engine string, size, clears int, w io.Writer) (err error) {
	node, err := env.node(ctx, engine, func(o *server.Options) { o.NoDispatcher = true })
	if err != nil {
		return err
	}
	defer func() {
		if cerr := node.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	// The node's first clear meets cold caches: its database backends have not yet used the
	// read models' tables and statements (about 45 ms more than the next ones on PostgreSQL,
	// measured 2026-12-02). It runs once, untimed in p50/p99, at min(size, coldPending)
	// pending, and is printed as cold_ms: p50 and p99 are the steady state.
	cold, err := clearkit.MeasureClear(ctx, clearkit.MeasureConfig{Store: node.Events, DB: node.DB, Pending: min(size, coldPending)})
	if err != nil {
		return fmt.Errorf("bench: clear/%s/pending=%d: the first clear: %w", engine, size, err)
	}
	var lat, dropped []time.Duration
	var catchEvents int
	var catchTime, subTime time.Duration
	for i := range clears {
		// The Queue projection of MeasureClear resumes at its checkpoint in node.DB: the
		// events it catches up on are those after it.
		before, err := queueCheckpoint(ctx, node.DB)
		if err != nil {
			return err
		}
		// The raw read is timed right before the catch-up and again after the clear; the
		// baseline is their mean, so that a change of the machine's load between the two
		// figures weighs on both alike.
		var subBefore time.Duration
		var subEvents int
		mc := clearkit.MeasureConfig{Store: node.Events, DB: node.DB, Pending: size}
		if i == 0 {
			mc.BeforeCatchUp = func(ctx context.Context, from, last eventstore.Position) error {
				n, d, err := readTo(ctx, node.Events, from, last)
				subEvents, subBefore = n, d
				return err
			}
		}
		tm, err := clearkit.MeasureClear(ctx, mc)
		if err != nil {
			return fmt.Errorf("bench: clear/%s/pending=%d: %w", engine, size, err)
		}
		if int(tm.Purged) != size {
			return fmt.Errorf("bench: clear/%s/pending=%d purged %d messages", engine, size, tm.Purged)
		}
		lat = append(lat, tm.Clear)
		dropped = append(dropped, tm.Dropped)
		if i == 0 {
			// Catch-up: the events the projection applied before the clear, against the raw
			// read of the same events through Subscribe.
			n, err := countAfter(ctx, node.Events, before)
			if err != nil {
				return err
			}
			// Events appended by the clear itself are not part of the catch-up.
			after, err := countClearEvents(ctx, node.Events, before)
			if err != nil {
				return err
			}
			catchEvents, catchTime = n-after, tm.CatchUp
			if subEvents != catchEvents {
				return fmt.Errorf("bench: catch-up baseline read %d events, the catch-up %d", subEvents, catchEvents)
			}
			_, d, err := catchUp(node.Events, Config{CatchUpEvents: catchEvents}, before)(ctx, 0)
			if err != nil {
				return fmt.Errorf("bench: catch-up baseline: %w", err)
			}
			subTime = (subBefore + d) / 2
		}
	}
	base, err := deleteBaseline(ctx, node, size)
	if err != nil {
		return err
	}
	p99 := percentile(lat, 99)
	if err := emit(w, fmt.Sprintf("clear/%s/pending=%d", engine, size),
		"p50_ms", ms(percentile(lat, 50)), "p99_ms", ms(p99), "dropped_p99_ms", ms(percentile(dropped, 99)), "cold_ms", ms(cold.Clear), "clears", len(lat),
		"baseline", "delete", "baseline_ms", ms(base), "ratio", ratio(ms(p99), ms(base))); err != nil {
		return err
	}
	rate, subRate := perSecond(catchEvents, catchTime), perSecond(catchEvents, subTime)
	return emit(w, fmt.Sprintf("catchup/%s/events=%d", engine, catchEvents),
		"events_per_s", rate, "baseline", "subscribe", "baseline_per_s", subRate, "ratio", ratio(rate, subRate))
}

// countClearEvents counts the clear's own events after pos (ClearQueueRequested and
// QueueCleared), which MeasureClear appends after the catch-up it timed.
func countClearEvents(ctx context.Context, st eventstore.Store, pos eventstore.Position) (int, error) {
	n := 0
	for {
		evs, err := st.ReadAll(ctx, pos, 10_000, eventstore.Filter{EventTypes: []string{connection.TypeClearQueueRequested, connection.TypeQueueCleared}})
		if err != nil {
			return 0, fmt.Errorf("bench: count clear events: %w", err)
		}
		if len(evs) == 0 {
			return n, nil
		}
		n += len(evs)
		pos = evs[len(evs)-1].Position
	}
}

// queueCheckpoint reads the checkpoint of the "queue" projection (Start if it has none).
func queueCheckpoint(ctx context.Context, db *projections.DB) (eventstore.Position, error) {
	var c, p int64
	err := db.QueryRowContext(ctx, `SELECT commit_pos, prepare_pos FROM projection_checkpoints WHERE name = $1`, projections.QueueName).Scan(&c, &p)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Start, nil
	}
	if err != nil {
		return eventstore.Start, fmt.Errorf("bench: queue checkpoint: %w", err)
	}
	return eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}, nil
}

// The baseline table has the columns and primary key of the pending queue (queue_messages).
const pendingPlainTable = `CREATE TABLE bench_pending (
    conn_id       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    message_id    TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    queued_at_us  BIGINT NOT NULL,
    PRIMARY KEY (conn_id, seq)
)`

// deleteBaseline fills bench_pending with n rows of one connection (untimed) and times one
// DELETE of them, in the node's read-model database.
func deleteBaseline(ctx context.Context, node *server.Node, n int) (time.Duration, error) {
	db := node.DB
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS bench_pending`); err != nil {
		return 0, fmt.Errorf("bench: drop bench_pending: %w", err)
	}
	if _, err := db.ExecContext(ctx, pendingPlainTable); err != nil {
		return 0, fmt.Errorf("bench: create bench_pending: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_pending`)
	conn := "plain-" + uuid.NewString()[:8]
	fill := `WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $2)
INSERT INTO bench_pending (conn_id, seq, message_id, recipient, text, queued_at_us)
SELECT $1, g, hex(randomblob(16)), '+49151' || g, 'seeded message', 0 FROM s`
	if node.Options.IsPostgres() {
		fill = `INSERT INTO bench_pending (conn_id, seq, message_id, recipient, text, queued_at_us)
SELECT $1, g, md5(g::text), '+49151' || g, 'seeded message', 0 FROM generate_series(1, $2::bigint) g`
	}
	if _, err := db.ExecContext(ctx, fill, conn, n); err != nil {
		return 0, fmt.Errorf("bench: fill bench_pending: %w", err)
	}
	start := time.Now()
	res, err := db.ExecContext(ctx, `DELETE FROM bench_pending WHERE conn_id = $1`, conn)
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("bench: delete baseline: %w", err)
	}
	if got, err := res.RowsAffected(); err != nil || got != int64(n) {
		return 0, fmt.Errorf("bench: delete baseline removed %d of %d rows (%v)", got, n, err)
	}
	return d, nil
}

// readTo reads the log after from up to and including last through Subscribe and returns how
// many events that was and how long it took (until last was handled).
func readTo(ctx context.Context, st eventstore.Store, from, last eventstore.Position) (int, time.Duration, error) {
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	var d time.Duration
	start := time.Now()
	err := st.Subscribe(subCtx, from, eventstore.Filter{}, func(e eventstore.RecordedEvent) error {
		n++
		if !e.Position.Less(last) {
			d = time.Since(start)
			cancel()
		}
		return nil
	})
	if d == 0 {
		return n, 0, fmt.Errorf("bench: catch-up baseline: read %d events, not through %s: %w", n, last, err)
	}
	return n, d, nil
}
