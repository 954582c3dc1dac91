package projections_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
	"github.com/waqueue/waqueue/projections/projtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// quietLogger keeps warnings and errors only: watermill logs every handler start at info.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// env is one engine's event store and read-model database.
type env struct {
	store eventstore.Store
	db    *projections.DB
}

// eachEngine runs body against SQLite (events and read models in one file, as in the embedded
// mode) and PostgreSQL (one fresh database).
func eachEngine(t *testing.T, body func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		body(t, sqliteEnv(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		e, _ := postgresEnv(t)
		body(t, e)
	})
}

// sqliteEnv is one SQLite file holding both the events and the read models.
func sqliteEnv(t *testing.T) *env {
	t.Helper()
	e := projtest.SQLite(t, sqlite.Options{PollInterval: 50 * time.Millisecond, Clock: storeClock})
	return &env{store: e.Store, db: e.DB}
}

// postgresEnv is one fresh PostgreSQL database holding both the events and the read models,
// and its handle.
func postgresEnv(t *testing.T) (*env, *sql.DB) {
	t.Helper()
	e := projtest.Postgres(t, postgres.Options{IdlePoll: 200 * time.Millisecond, Clock: storeClock})
	return &env{store: e.Store, db: e.DB}, e.DB.SQL
}

// registerA registers tenantA's connA (phone +491701234567, at(0)) in e's store and returns
// do, which appends what decide decides on the connection as actor; an error fails the test.
func registerA(t *testing.T, e *env, actor string) (do func(decide func(c *connection.Connection) ([]connection.Event, error)) eventstore.AppendResult) {
	t.Helper()
	ctx := context.Background()
	s, err := clearkit.Register(ctx, e.store, tenantA, connA, "+491701234567", at(0))
	if err != nil {
		t.Fatal(err)
	}
	return func(decide func(c *connection.Connection) ([]connection.Event, error)) eventstore.AppendResult {
		t.Helper()
		res, err := s.Do(ctx, actor, decide)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
}

// running is a Runner started in the background.
type running struct {
	runner *projections.Runner
	cancel context.CancelFunc
	done   chan error
}

func startRunner(t *testing.T, e *env, ps ...projections.Projection) *running {
	t.Helper()
	return startRunnerLogged(t, e, quietLogger, ps...)
}

// silentLogger is for tests that inject failures on purpose.
var silentLogger = slog.New(slog.DiscardHandler)

func startRunnerLogged(t *testing.T, e *env, logger *slog.Logger, ps ...projections.Projection) *running {
	t.Helper()
	return startRunnerConfig(t, e, projections.RunnerConfig{Projections: ps, BatchSize: 64, Logger: logger})
}

// startRunnerConfig starts a Runner of cfg on e's store and database in the background; it
// stops when t ends.
func startRunnerConfig(t *testing.T, e *env, cfg projections.RunnerConfig) *running {
	t.Helper()
	cfg.DB, cfg.Store = e.db, e.store
	r, err := projections.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{runner: r, cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(run.stop)
	return run
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// startProcess runs a ClearProcess in the background until the test ends or stop is called.
func startProcess(t *testing.T, e *env, q *projections.Queue, c projections.ClearCompleter) (*projections.ClearProcess, func()) {
	t.Helper()
	p, err := projections.NewClearProcess(projections.ClearProcessConfig{DB: e.db, Store: e.store, Queue: q, Completer: c,
		RetryInterval: 100 * time.Millisecond, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	var once atomic.Bool
	stop := func() {
		if once.CompareAndSwap(false, true) {
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return p, stop
}

// waitFor waits until every projection has applied the store's last event it selects.
func (r *running) waitFor(t *testing.T, e *env, ps ...projections.Projection) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	for _, p := range ps {
		evs, err := e.store.ReadAll(ctx, eventstore.Start, 0, p.Filter())
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			continue
		}
		if err := r.runner.WaitFor(ctx, []string{p.Name()}, evs[len(evs)-1].Position); err != nil {
			t.Fatalf("%s did not catch up: %v (statuses %+v)", p.Name(), err, r.runner.Statuses())
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dump returns the rows of tables, sorted, as text: the state a rebuild must reproduce.
func dump(t *testing.T, db *projections.DB, tables ...string) string {
	t.Helper()
	var out []string
	for _, tbl := range tables {
		rows, err := db.QueryContext(context.Background(), `SELECT * FROM `+tbl)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for i, v := range vals {
				if bs, ok := v.([]byte); ok {
					v = string(bs)
				}
				fmt.Fprintf(&b, "%s=%v ", cols[i], v)
			}
			lines = append(lines, b.String())
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		sort.Strings(lines)
		out = append(out, fmt.Sprintf("== %s (%d rows)", tbl, len(lines)))
		out = append(out, lines...)
	}
	return strings.Join(out, "\n")
}

// countEvents counts the events of type typ in stream.
func countEvents(t *testing.T, e *env, stream, typ string) int {
	t.Helper()
	evs, err := e.store.ReadStream(context.Background(), stream, eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// storeClock stamps every event's RecordedAt: a fixed time keeps the analytics days (and the
// audit times) deterministic, whatever the hour the tests run at.
func storeClock() time.Time { return t0.Add(12 * time.Hour) }
