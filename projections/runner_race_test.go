package projections_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/bus"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
)

// firstBatchGate holds the first Apply of any runner until a second runner is either inside
// Apply too (the checkpoint did not serialise them) or waiting on a lock in this database (it
// did). It makes the start-up race of two nodes certain instead of likely, without sleeps.
type firstBatchGate struct {
	monitor *sql.DB
	mu      sync.Mutex
	arrived int
	second  chan struct{}
}

func (g *firstBatchGate) arrive(ctx context.Context) error {
	g.mu.Lock()
	g.arrived++
	n := g.arrived
	g.mu.Unlock()
	switch n {
	case 1:
	case 2:
		close(g.second)
		return nil
	default:
		return nil
	}
	deadline := time.Now().Add(3 * time.Minute) // a safety net only
	for {
		select {
		case <-g.second:
			return nil
		default:
		}
		var waiting int
		if err := g.monitor.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			return err
		}
		if waiting > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the second runner neither applied nor waited on a lock")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not waiting for progress
	}
}

// countingProjection counts, in its own table, how many times each event was applied; the
// count of a committed event must be exactly 1.
type countingProjection struct{ gate *firstBatchGate }

func (*countingProjection) Name() string { return "race_counter" }
func (*countingProjection) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{"race-"}}
}

func (p *countingProjection) Apply(ctx context.Context, tx *projections.Tx, evs []eventstore.RecordedEvent) error {
	if err := p.gate.arrive(ctx); err != nil {
		return err
	}
	for _, e := range evs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO race_applied (event_id, n) VALUES ($1, 1)
ON CONFLICT (event_id) DO UPDATE SET n = race_applied.n + 1`, e.ID.String()); err != nil {
			return err
		}
	}
	return nil
}

func (*countingProjection) Reset(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM race_applied`)
	return err
}

// TestTwoRunnersStartTogetherOnEmptyReadModel is two nodes starting on one PostgreSQL database
// whose read models are empty (no checkpoint row yet): each event must be applied exactly once.
// Before the fix, SELECT … FOR UPDATE of the missing checkpoint row locked nothing and both
// runners applied the first batch.
func TestTwoRunnersStartTogetherOnEmptyReadModel(t *testing.T) {
	t.Parallel()
	e, monitor := postgresEnv(t)
	ctx := context.Background()
	if _, err := e.db.ExecContext(ctx, `CREATE TABLE race_applied (event_id TEXT PRIMARY KEY, n INT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const events = 20
	var last eventstore.Position
	for i := range events {
		res, err := e.store.Append(ctx, fmt.Sprintf("race-%d", i%3), eventstore.Any,
			eventstore.EventData{ID: uuid.New(), Type: "RaceEvent", Data: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Position
	}
	gate := &firstBatchGate{monitor: monitor, second: make(chan struct{})}

	// handledEnd is closed by each runner once it has handled (applied or skipped) the batch
	// holding the last event without error.
	type node struct {
		runner     *projections.Runner
		handledEnd chan struct{}
		once       sync.Once
	}
	start := make(chan struct{})
	var nodes []*node
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	for range 2 {
		n := &node{handledEnd: make(chan struct{})}
		mw := func(h message.HandlerFunc) message.HandlerFunc {
			return func(m *message.Message) ([]*message.Message, error) {
				out, err := h(m)
				if err == nil {
					if evs, derr := bus.DecodeBatch(m); derr == nil && len(evs) > 0 && evs[len(evs)-1].Position == last {
						n.once.Do(func() { close(n.handledEnd) })
					}
				}
				return out, err
			}
		}
		r, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store, BatchSize: 64, Logger: quietLogger,
			Projections: []projections.Projection{&countingProjection{gate: gate}}, Middleware: []message.HandlerMiddleware{mw}})
		if err != nil {
			t.Fatal(err)
		}
		n.runner = r
		nodes = append(nodes, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := r.Run(runCtx); err != nil {
				t.Errorf("runner: %v", err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	close(start)
	timeout := time.After(5 * time.Minute) // a safety net only
	for i, n := range nodes {
		select {
		case <-n.handledEnd:
		case <-timeout:
			t.Fatalf("runner %d never handled the batch ending at %s (statuses %+v)", i, last, n.runner.Statuses())
		}
	}
	// Both nodes, and a third whose runner never ran, see the read model at the last event,
	// whichever node applied it: a read asking for a position (Waqueue-Min-Position) on any
	// node returns. Before the fix only the node that applied a batch knew (the multi-node
	// fault test saw Waqueue-Position-Reached: false for minutes on the others).
	idle, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store, BatchSize: 64, Logger: quietLogger,
		Projections: []projections.Projection{&countingProjection{gate: gate}}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, testwait.Limit) // a safety net only
	defer wcancel()
	for i, r := range []*projections.Runner{nodes[0].runner, nodes[1].runner, idle} {
		if err := r.WaitReached(wctx, []string{"race_counter"}, last); err != nil {
			t.Fatalf("runner %d: WaitReached(%s): %v (statuses %+v)", i, last, err, r.Statuses())
		}
	}
	cancel()
	wg.Wait()

	rows, err := e.db.QueryContext(ctx, `SELECT event_id, n FROM race_applied`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		seen++
		if n != 1 {
			t.Errorf("event %s applied %d times, want exactly once", id, n)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != events {
		t.Errorf("%d events applied, want %d", seen, events)
	}
}
