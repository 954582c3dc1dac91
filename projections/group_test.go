package projections_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/bus"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
)

// counter is a projection of the events of streams "grp-…" that counts, in its own table, how
// many times each event was applied (a committed event's count must be exactly 1). hook, if
// set, runs before each Apply and can fail it or hold it.
type counter struct {
	name string
	hook func(ctx context.Context, evs []eventstore.RecordedEvent) error
}

func (c *counter) Name() string { return c.name }
func (*counter) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{"grp-"}}
}

func (c *counter) Apply(ctx context.Context, tx *projections.Tx, evs []eventstore.RecordedEvent) error {
	if c.hook != nil {
		if err := c.hook(ctx, evs); err != nil {
			return err
		}
	}
	for _, e := range evs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+c.name+` (event_id, n) VALUES ($1, 1)
ON CONFLICT (event_id) DO UPDATE SET n = `+c.name+`.n + 1`, e.ID.String()); err != nil {
			return err
		}
	}
	return nil
}

func (c *counter) Reset(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM `+c.name)
	return err
}

// newCounters creates the tables of n counters named grp_<i>.
func newCounters(t *testing.T, e *env, n int) []*counter {
	t.Helper()
	var cs []*counter
	for i := range n {
		c := &counter{name: fmt.Sprintf("grp_%d", i)}
		if _, err := e.db.ExecContext(context.Background(), `CREATE TABLE `+c.name+` (event_id TEXT PRIMARY KEY, n INT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

// appendGrp appends n events to streams grp-0…grp-2 and returns them in log order.
func appendGrp(t *testing.T, e *env, n int) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := tryAppendGrp(e, n)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func tryAppendGrp(e *env, n int) ([]eventstore.RecordedEvent, error) {
	ctx := context.Background()
	ids := map[uuid.UUID]bool{}
	for i := range n {
		id := uuid.New()
		if _, err := e.store.Append(ctx, fmt.Sprintf("grp-%d", i%3), eventstore.Any,
			eventstore.EventData{ID: id, Type: "GrpEvent", Data: []byte(`{}`)}); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	all, err := e.store.ReadAll(ctx, eventstore.Start, 0, (&counter{}).Filter())
	if err != nil {
		return nil, err
	}
	var out []eventstore.RecordedEvent
	for _, ev := range all {
		if ids[ev.ID] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// counts returns event id → times applied, of counter c's table.
func counts(t *testing.T, e *env, c *counter) map[string]int {
	t.Helper()
	rows, err := e.db.QueryContext(context.Background(), `SELECT event_id, n FROM `+c.name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantAppliedOnce fails unless every event of evs, and nothing else, was applied exactly once by c.
func wantAppliedOnce(t *testing.T, e *env, c *counter, evs []eventstore.RecordedEvent) {
	t.Helper()
	got := counts(t, e, c)
	if len(got) != len(evs) {
		t.Errorf("%s applied %d events, want %d", c.name, len(got), len(evs))
	}
	for _, ev := range evs {
		if got[ev.ID.String()] != 1 {
			t.Errorf("%s applied event %s %d times, want 1", c.name, ev.Position, got[ev.ID.String()])
		}
	}
}

// storedCheckpoint reads name's checkpoint from the read-model database.
func storedCheckpoint(t *testing.T, e *env, name string) eventstore.Position {
	t.Helper()
	var c, p int64
	err := e.db.QueryRowContext(context.Background(), `SELECT commit_pos, prepare_pos FROM projection_checkpoints WHERE name = $1`, name).Scan(&c, &p)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Start
	}
	if err != nil {
		t.Fatalf("checkpoint of %s: %v", name, err)
	}
	return eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
}

func status(r *projections.Runner, name string) projections.Status {
	for _, st := range r.Statuses() {
		if st.Name == name {
			return st
		}
	}
	return projections.Status{}
}

// handlersOf records which router handlers handled (without error) batches holding each event.
type handlersOf struct {
	mu   sync.Mutex
	seen map[uuid.UUID][]string
}

func (h *handlersOf) middleware(next message.HandlerFunc) message.HandlerFunc {
	return func(m *message.Message) ([]*message.Message, error) {
		out, err := next(m)
		if evs, derr := bus.DecodeBatch(m); derr == nil && err == nil {
			h.mu.Lock()
			for _, ev := range evs {
				h.seen[ev.ID] = append(h.seen[ev.ID], message.HandlerNameFromCtx(m.Context()))
			}
			h.mu.Unlock()
		}
		return out, err
	}
}

func startGroup(t *testing.T, e *env, mw []message.HandlerMiddleware, ps ...projections.Projection) *running {
	t.Helper()
	return startGroups(t, e, mw, nil, ps...)
}

func startGroups(t *testing.T, e *env, mw []message.HandlerMiddleware, groups [][]string, ps ...projections.Projection) *running {
	t.Helper()
	return startRunnerConfig(t, e, projections.RunnerConfig{Projections: ps, BatchSize: 16, Logger: silentLogger, Middleware: mw, Groups: groups})
}

// TestGroupMemberFailsWhileOthersAdvance: one projection of the group fails on one event; the
// others apply every event (in the group's transactions) while it stays before that event,
// running alone; once it no longer fails it catches up, joins the group again, and the next
// event is applied by the group to all of them. Every event is applied exactly once by each.
func TestGroupMemberFailsWhileOthersAdvance(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		cs := newCounters(t, e, 4)
		first := appendGrp(t, e, 10)
		poison := first[4]
		var broken atomic.Bool
		broken.Store(true)
		cs[2].hook = func(_ context.Context, evs []eventstore.RecordedEvent) error {
			for _, ev := range evs {
				if ev.ID == poison.ID && broken.Load() {
					return errors.New("poisoned event")
				}
			}
			return nil
		}
		var ps []projections.Projection
		for _, c := range cs {
			ps = append(ps, c)
		}
		seen := &handlersOf{seen: map[uuid.UUID][]string{}}
		r := startGroup(t, e, []message.HandlerMiddleware{seen.middleware}, ps...)
		more := appendGrp(t, e, 20) // while it runs: batches of the group and of the failing one interleave
		end := more[len(more)-1].Position
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit) // a safety net only
		defer cancel()
		healthy := []string{cs[0].name, cs[1].name, cs[3].name}
		if err := r.runner.WaitFor(ctx, healthy, end); err != nil {
			t.Fatalf("the healthy projections did not reach the end: %v (%+v)", err, r.runner.Statuses())
		}
		waitUntil(t, "the failure to show", func() (bool, error) {
			st := status(r.runner, cs[2].name)
			return st.Failures > 0 && st.Alone, nil
		})
		if cp := storedCheckpoint(t, e, cs[2].name); !cp.Less(poison.Position) {
			t.Errorf("the failing projection's checkpoint %s passed the poisoned event at %s", cp, poison.Position)
		}
		for _, n := range healthy {
			if st := status(r.runner, n); st.Failures != 0 || st.Alone {
				t.Errorf("healthy projection: %+v", st)
			}
			if cp := storedCheckpoint(t, e, n); cp != end {
				t.Errorf("%s: stored checkpoint %s, want the group's %s", n, cp, end)
			}
		}
		if n := counts(t, e, cs[2])[poison.ID.String()]; n != 0 {
			t.Errorf("the poisoned event is in the failing projection's rows (%d)", n)
		}

		broken.Store(false) // the fix
		if err := r.runner.WaitFor(ctx, []string{cs[2].name}, end); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the fixed projection to join the group", func() (bool, error) {
			return !status(r.runner, cs[2].name).Alone, nil
		})
		last := appendGrp(t, e, 1)
		if err := r.runner.WaitFor(ctx, []string{cs[0].name, cs[1].name, cs[2].name, cs[3].name}, last[0].Position); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the handler of the last event to return", func() (bool, error) {
			seen.mu.Lock()
			defer seen.mu.Unlock()
			return len(seen.seen[last[0].ID]) > 0, nil
		})
		seen.mu.Lock()
		if got := seen.seen[last[0].ID]; !slices.Equal(got, []string{projections.GroupHandler}) {
			t.Errorf("the last event was handled by %v, want the group's handler alone", got)
		}
		if got := seen.seen[poison.ID]; !slices.Contains(got, projections.GroupHandler) || !slices.Contains(got, cs[2].name) {
			t.Errorf("the poisoned event was handled by %v, want the group's handler and the failing projection's own", got)
		}
		seen.mu.Unlock()
		all := slices.Concat(first, more, last)
		for _, c := range cs {
			wantAppliedOnce(t, e, c, all)
			if st := status(r.runner, c.name); st.Failures != 0 || st.Alone || st.Checkpoint != last[0].Position {
				t.Errorf("after the fix: %+v", st)
			}
		}
	})
}

// TestRebuiltProjectionCatchesUpAlone: a projection rebuilt while the others are ahead runs
// alone from the start of the log; held back (failing until released: a transaction held open
// would hold back the PostgreSQL store's horizon, and so every reader of the log), it holds
// nothing else back (the others apply new events meanwhile), and released it catches up and
// joins the group. Its rows equal those of a rebuild run alone.
func TestRebuiltProjectionCatchesUpAlone(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit) // a safety net only
		defer cancel()
		cs := newCounters(t, e, 3)
		ps := []projections.Projection{cs[0], cs[1], cs[2]}
		first := appendGrp(t, e, 40)
		r := startGroup(t, e, nil, ps...)
		if err := r.runner.WaitFor(ctx, []string{cs[0].name, cs[1].name, cs[2].name}, first[len(first)-1].Position); err != nil {
			t.Fatal(err)
		}
		r.stop()
		if err := r.runner.Rebuild(ctx, cs[1].name); err != nil {
			t.Fatal(err)
		}

		var released atomic.Bool
		held := make(chan struct{}, 1)
		cs[1].hook = func(ctx context.Context, _ []eventstore.RecordedEvent) error {
			select {
			case held <- struct{}{}:
			default:
			}
			if !released.Load() {
				return errors.New("held back")
			}
			return nil
		}
		r2 := startGroup(t, e, nil, ps...)
		select { // the rebuilt projection is inside its first Apply, alone
		case <-held:
		case <-ctx.Done():
			t.Fatal("the rebuilt projection never applied")
		}
		if st := status(r2.runner, cs[1].name); !st.Alone {
			t.Errorf("the rebuilt projection is not alone: %+v", st)
		}
		more := appendGrp(t, e, 30)
		end := more[len(more)-1].Position
		if err := r2.runner.WaitFor(ctx, []string{cs[0].name, cs[2].name}, end); err != nil {
			t.Fatalf("the others waited for the rebuilt projection: %v (%+v)", err, r2.runner.Statuses())
		}
		if cp := storedCheckpoint(t, e, cs[1].name); !cp.IsZero() {
			t.Errorf("the held projection's checkpoint moved to %s", cp)
		}
		released.Store(true)
		if err := r2.runner.WaitFor(ctx, []string{cs[1].name}, end); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the rebuilt projection to join the group", func() (bool, error) {
			return !status(r2.runner, cs[1].name).Alone, nil
		})
		all := slices.Concat(first, more)
		for _, c := range cs {
			wantAppliedOnce(t, e, c, all)
		}
		rows := dump(t, e.db, cs[1].name)
		r2.stop()

		cs[1].hook = nil
		if err := r2.runner.Rebuild(ctx, cs[1].name); err != nil {
			t.Fatal(err)
		}
		alone := startGroup(t, e, nil, cs[1])
		if err := alone.runner.WaitFor(ctx, []string{cs[1].name}, end); err != nil {
			t.Fatal(err)
		}
		if again := dump(t, e.db, cs[1].name); again != rows {
			t.Errorf("rebuilt behind the group:\n%s\nrebuilt alone:\n%s", rows, again)
		}
	})
}

// TestGroupCrashMidBatch: the runner stops (its context ends: a crash as far as the database is
// concerned) inside a group transaction, after some projections applied their share: no
// projection's rows or checkpoint of that batch remain. Restarted, every event is applied once.
func TestGroupCrashMidBatch(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit) // a safety net only
		defer cancel()
		cs := newCounters(t, e, 3)
		ps := []projections.Projection{cs[0], cs[1], cs[2]}
		crashed := make(chan struct{})
		var once sync.Once
		var armed atomic.Bool
		cs[1].hook = func(ctx context.Context, _ []eventstore.RecordedEvent) error {
			if !armed.Load() {
				return nil
			}
			once.Do(func() { close(crashed) })
			<-ctx.Done() // the process dies here: cs[0] applied its share in the same transaction
			return ctx.Err()
		}
		first := appendGrp(t, e, 5)
		r := startGroup(t, e, nil, ps...)
		if err := r.runner.WaitFor(ctx, []string{cs[0].name, cs[1].name, cs[2].name}, first[len(first)-1].Position); err != nil {
			t.Fatal(err)
		}
		before := storedCheckpoint(t, e, cs[0].name)
		armed.Store(true)
		// One append (on SQLite the held transaction holds the database's write lock).
		var batch []eventstore.EventData
		for range 5 {
			batch = append(batch, eventstore.EventData{ID: uuid.New(), Type: "GrpEvent", Data: []byte(`{}`)})
		}
		if _, err := e.store.Append(ctx, "grp-9", eventstore.Any, batch...); err != nil {
			t.Fatal(err)
		}
		select {
		case <-crashed:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		r.stop()
		for _, c := range cs {
			if cp := storedCheckpoint(t, e, c.name); cp != before {
				t.Errorf("%s: checkpoint %s after the crash, want %s (before the batch)", c.name, cp, before)
			}
			wantAppliedOnce(t, e, c, first)
			if st := status(r.runner, c.name); st.Alone {
				t.Errorf("%s was taken out of the group by the crash: %+v", c.name, st)
			}
		}

		// The append's own read of the log may have missed the events after the held
		// transaction (the PostgreSQL store's horizon): read them again now.
		more, err := e.store.ReadAll(ctx, first[len(first)-1].Position, 0, cs[0].Filter())
		if err != nil || len(more) != 5 {
			t.Fatalf("events after the crash: %d, %v", len(more), err)
		}
		cs[1].hook = nil
		r2 := startGroup(t, e, nil, ps...)
		end := more[len(more)-1].Position
		if err := r2.runner.WaitFor(ctx, []string{cs[0].name, cs[1].name, cs[2].name}, end); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			wantAppliedOnce(t, e, c, slices.Concat(first, more))
			if cp := storedCheckpoint(t, e, c.name); cp != end {
				t.Errorf("%s: checkpoint %s, want %s", c.name, cp, end)
			}
		}
	})
}

// TestTwoRunnersShareGroupBatches is two nodes on one PostgreSQL read-model database running
// the same projections while events are appended — the first as one group, the second as two
// (RunnerConfig.Groups), so their transactions lock different sets of checkpoints: every event
// is applied exactly once by each projection, whichever node's group (or a projection running
// alone after a failure on one node) applied it, and both nodes see every checkpoint at the end.
func TestTwoRunnersShareGroupBatches(t *testing.T) {
	t.Parallel()
	e, _ := postgresEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit) // a safety net only
	defer cancel()
	cs := newCounters(t, e, 3)
	// On the second node one projection fails its first batches: it runs alone there while
	// the first node's group applies it.
	var fails atomic.Int32
	fails.Store(3)
	flaky := &counter{name: cs[2].name, hook: func(context.Context, []eventstore.RecordedEvent) error {
		if fails.Add(-1) >= 0 {
			return errors.New("injected failure on node 2")
		}
		return nil
	}}
	first := appendGrp(t, e, 30)
	n1 := startGroup(t, e, nil, cs[0], cs[1], cs[2])
	n2 := startGroups(t, e, nil, [][]string{{cs[1].name}}, &counter{name: cs[0].name}, &counter{name: cs[1].name}, flaky)
	var wg sync.WaitGroup
	var more [2][]eventstore.RecordedEvent
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				evs, err := tryAppendGrp(e, 10)
				if err != nil {
					t.Error(err)
					return
				}
				more[w] = append(more[w], evs...)
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(first, more[0], more[1])
	var end eventstore.Position
	for _, ev := range all {
		if end.Less(ev.Position) {
			end = ev.Position
		}
	}
	names := []string{cs[0].name, cs[1].name, cs[2].name}
	for i, r := range []*running{n1, n2} {
		if err := r.runner.WaitReached(ctx, names, end); err != nil {
			t.Fatalf("node %d: %v (%+v)", i+1, err, r.runner.Statuses())
		}
	}
	n1.stop()
	n2.stop()
	for _, c := range cs {
		wantAppliedOnce(t, e, c, all)
		if cp := storedCheckpoint(t, e, c.name); cp != end {
			t.Errorf("%s: checkpoint %s, want %s", c.name, cp, end)
		}
	}
}

// TestRunnerGroupsConfig: a group naming an unknown projection, or one projection twice, is
// refused, and so is a projection named like a group handler.
func TestRunnerGroupsConfig(t *testing.T) {
	e := &env{store: nil, db: &projections.DB{}}
	a, b := &counter{name: "a"}, &counter{name: "b"}
	for name, cfg := range map[string]projections.RunnerConfig{
		"unknown":      {Projections: []projections.Projection{a, b}, Groups: [][]string{{"c"}}},
		"twice":        {Projections: []projections.Projection{a, b}, Groups: [][]string{{"a"}, {"a"}}},
		"handler name": {Projections: []projections.Projection{a, &counter{name: projections.GroupHandler + "_1"}}},
	} {
		cfg.DB, cfg.Store = e.db, nullStore{}
		if _, err := projections.NewRunner(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: nullStore{}, Projections: []projections.Projection{a, b},
		Groups: [][]string{{"a"}, {"b"}}}); err != nil {
		t.Errorf("two groups of one: %v", err)
	}
}

// nullStore is an event store for configuration tests only.
type nullStore struct{ eventstore.Store }
