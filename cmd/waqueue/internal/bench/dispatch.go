package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// DispatchConfig configures the dispatch benchmark.
type DispatchConfig struct {
	// Conns are the connection counts measured. Empty means 100, 1,000, 10,000.
	Conns []int
	// Messages is about how many messages each figure sends, spread evenly over the
	// connections (at least one per connection). Zero means 20,000.
	Messages int
	// SetupWorkers is how many goroutines register, hold, fill and connect the connections
	// (untimed). Zero means 16.
	SetupWorkers int
	// GroupCommit is server.Options.GroupCommit of the node measured (0: the server's default).
	GroupCommit int
	// CPUProfile, when set, is a file to write a CPU profile of the timed window to; with
	// several figures each gets its own, FILE.<engine>.<conns> (a --cpuprofile of the whole run
	// must not be running).
	CPUProfile string
	// HeapProfile, when set, is a file to write a heap profile of the process to (go tool
	// pprof): at the highest RSS sampled from the node's start to the read models' settling
	// (its in-use figures as of the last GC before it), or at the end when none was sampled.
	// FILE.setup and FILE.window hold the highest of the untimed setup and of the timed window
	// (to the settling); stderr says when each came and what the runtime held then (heap,
	// stacks, goroutines).
	// With several figures each gets its own file, suffixed .<engine>.<conns>.
	HeapProfile string
}

// effectiveWriters is the most appends the dispatcher can have in flight: one loop per
// connection, bounded by the store's connection pool (PostgreSQL); SQLite serializes writers
// whatever their number, and gets the same count of goroutines.
func effectiveWriters(conns int) int { return min(conns, postgres.DefaultMaxConns) }

// Dispatch measures, per engine and connection count, how fast the dispatcher moves queued
// messages to MessageSent with the zero-latency simulator and no pacing, and the events it
// appends per message, against single-row INSERT commits at the dispatcher's effective
// concurrency in the same database. It prints
//
//	BENCH dispatch/<engine>/conns=<n> msgs_per_s=… events_per_msg=… settled_s=… cpu_us_per_msg=… db_cpu_us_per_msg=…
//	      db_xacts_per_msg=… cpu_us_per_insert=… db_cpu_us_per_insert=… baseline=insert baseline_per_s=… ratio=… rss_mib=…
//
// settled_s is when every read model had applied the last event appended (from the start, as
// msgs_per_s's clock). cpu_us_per_msg is the process's CPU per message from the start until
// then (the dispatcher, the simulator, the read models), db_cpu_us_per_msg the PostgreSQL
// server's (0 on SQLite), db_xacts_per_msg its committed transactions per message. The
// baseline runs after that, on a database no longer busy with the read models;
// cpu_us_per_insert and db_cpu_us_per_insert are its costs per INSERT.
// The connections are registered, held, filled and connected before the clock starts; the
// clock runs from the first QueueResumed command to the last MessageSent recorded.
func Dispatch(ctx context.Context, env *Env, cfg DispatchConfig, w io.Writer) error {
	if len(cfg.Conns) == 0 {
		cfg.Conns = []int{100, 1000, 10_000}
	}
	if cfg.Messages <= 0 {
		cfg.Messages = 20_000
	}
	if cfg.SetupWorkers <= 0 {
		cfg.SetupWorkers = 16
	}
	several := len(env.Adapters)*len(cfg.Conns) > 1
	heap, cpu := cfg.HeapProfile, cfg.CPUProfile
	for _, engine := range env.Adapters {
		for _, conns := range cfg.Conns {
			if conns <= 0 {
				return fmt.Errorf("bench: dispatch conns %d is not positive", conns)
			}
			if heap != "" && several {
				cfg.HeapProfile = fmt.Sprintf("%s.%s.%d", heap, engine, conns)
			}
			if cpu != "" && several {
				cfg.CPUProfile = fmt.Sprintf("%s.%s.%d", cpu, engine, conns)
			}
			if err := dispatchOnce(ctx, env, engine, conns, cfg, w); err != nil {
				return fmt.Errorf("bench: dispatch/%s/conns=%d: %w", engine, conns, err)
			}
		}
	}
	return nil
}

func dispatchOnce(ctx context.Context, env *Env, engine string, conns int, cfg DispatchConfig, w io.Writer) (err error) {
	// With HeapProfile: one RSS watch over the setup (profile FILE.setup), one from the clock's
	// start to the read models' settling (FILE.window); FILE gets the higher one's.
	var watch *rssWatch
	var setupPeak rssSample
	opened := time.Now()
	if cfg.HeapProfile != "" {
		watch = watchRSSProfile(opened, cfg.HeapProfile+".setup")
		defer func() {
			if w := watch; w != nil {
				w.end()
			}
		}()
	}
	node, err := env.node(ctx, engine, func(o *server.Options) { o.NoPacing = true; o.GroupCommit = cfg.GroupCommit })
	if err != nil {
		return err
	}
	defer func() {
		if cerr := node.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := node.Start(runCtx); err != nil {
		return err
	}
	op := operator(ctx, node)
	per := max(cfg.Messages/conns, 1)
	run := uuid.NewString()[:8]
	id := func(i int) string { return fmt.Sprintf("d-%s-%d", run, i) }
	recipients := make([]string, per)
	for i := range recipients {
		recipients[i] = fmt.Sprintf("+49151%08d", i)
	}
	// Setup (untimed): register, hold, fill, connect. The hold keeps the dispatcher off the
	// queues until the clock starts.
	err = parallel(ctx, cfg.SetupWorkers, conns, func(ctx context.Context, i int) error {
		c := id(i)
		h := node.Handlers
		if _, err := h.RegisterConnection.Handle(op, commands.RegisterConnection{ConnectionID: c, Phone: fmt.Sprintf("+49152%08d", i)}); err != nil {
			return fmt.Errorf("register %s: %w", c, err)
		}
		if _, err := h.HoldQueue.Handle(op, commands.HoldQueue{ConnectionID: c, Note: "bench"}); err != nil {
			return fmt.Errorf("hold %s: %w", c, err)
		}
		if _, err := h.StartBroadcast.Handle(op, commands.StartBroadcast{ConnectionID: c, IdempotencyKey: "bench", Recipients: recipients, Text: "bench message"}); err != nil {
			return fmt.Errorf("fill %s: %w", c, err)
		}
		if err := node.Simulator.Connect(ctx, connection.Key(node.Tenant, c)); err != nil {
			return fmt.Errorf("connect %s: %w", c, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Wait until every link is active in the domain (the dispatcher records the connect).
	for i := range conns {
		for {
			var active bool
			if err := node.Repo.View(ctx, connection.Key(node.Tenant, id(i)), func(c *connection.Connection) error {
				active = c.LinkStatus() == connection.LinkStatusActive
				return nil
			}); err != nil {
				return err
			}
			if active {
				break
			}
			if err := sleep(ctx, 5*time.Millisecond); err != nil {
				return err
			}
		}
	}
	before, err := lastPosition(ctx, node.Events, eventstore.Start)
	if err != nil {
		return err
	}
	sentBefore := node.Dispatcher.Stats().Sent
	total := uint64(conns * per)
	stats, err := openStats(node)
	if err != nil {
		return err
	}
	if stats != nil {
		defer stats.Close()
	}
	pid := serverPID(ctx, env, stats)
	stopProfile, err := startWindowProfile(cfg.CPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile() // on the way out early; after the window's stop it does nothing
	meter := startCost(ctx, pid, stats)

	if watch != nil {
		if setupPeak, err = watch.endProfile(); err != nil {
			watch = nil
			return fmt.Errorf("heap profile: %w", err)
		}
		watch = watchRSSProfile(opened, cfg.HeapProfile+".window")
	}
	start := time.Now()
	err = parallel(ctx, cfg.SetupWorkers, conns, func(ctx context.Context, i int) error {
		_, err := node.Handlers.ResumeQueue.Handle(op, commands.ResumeQueue{ConnectionID: id(i), Note: "bench"})
		return err
	})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	for node.Dispatcher.Stats().Sent-sentBefore < total {
		select {
		case err := <-node.Errors():
			return fmt.Errorf("node stopped: %w", err)
		default:
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return fmt.Errorf("%d of %d sent: %w", node.Dispatcher.Stats().Sent-sentBefore, total, err)
		}
	}
	elapsed := time.Since(start)
	if err := stopProfile(); err != nil {
		return err
	}
	st := node.Dispatcher.Stats()
	if st.Failed+st.Unknown+st.Expired > 0 {
		return fmt.Errorf("dispatcher recorded %d failed, %d unknown, %d expired with a perfect transport", st.Failed, st.Unknown, st.Expired)
	}
	// Events appended while dispatching, per message (QueueResumed included: it is the
	// operator's, one per connection). The log shows an event once every older transaction has
	// ended (a read model's batch may still run): wait until it shows at least a QueueResumed
	// per connection and a MessageDispatched and a MessageSent per message.
	var events int
	for {
		if events, err = countAfter(ctx, node.Events, before); err != nil {
			return err
		}
		if events >= 2*int(total)+conns {
			break
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("%d events of at least %d shown: %w", events, 2*int(total)+conns, err)
		}
	}
	// The read models' share finishes after the window when they lag: wait for it, so the
	// baseline does not share the database with it.
	last, err := lastPosition(ctx, node.Events, before)
	if err != nil {
		return err
	}
	if err := node.Runner.WaitReached(ctx, projectionNames(node), last); err != nil {
		return fmt.Errorf("read models settling: %w", err)
	}
	settled := time.Since(start)
	if watch != nil {
		peak, err := watch.endProfile()
		watch = nil
		if err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		progress("setup: %s", setupPeak)
		progress("window (the clock started at %s, the read models settled %s after it): %s",
			start.Sub(opened).Round(100*time.Millisecond), settled.Round(100*time.Millisecond), peak)
		from := cfg.HeapProfile + ".window"
		if setupPeak.rss > peak.rss {
			from = cfg.HeapProfile + ".setup"
		}
		if err := copyFile(from, cfg.HeapProfile); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
	}
	perMsg := meter.stop(ctx, int(total))
	writers := effectiveWriters(conns)
	inserts := min(int(total), 8000)
	meter = startCost(ctx, pid, nil) // its transactions are not printed
	basePerS, err := insertBaseline(ctx, node, writers, inserts)
	if err != nil {
		return err
	}
	perInsert := meter.stop(ctx, inserts)
	rate := perSecond(int(total), elapsed)
	return emit(w, fmt.Sprintf("dispatch/%s/conns=%d", engine, conns),
		"msgs_per_s", rate, "msgs", total, "events_per_msg", float64(events)/float64(total), "writers", writers,
		"group_commit", engineGroupCommit(engine, cfg.GroupCommit), "settled_s", settled.Seconds(),
		"cpu_us_per_msg", perMsg.CPUus, "db_cpu_us_per_msg", perMsg.DBCPUus, "db_xacts_per_msg", perMsg.DBXacts,
		"cpu_us_per_insert", perInsert.CPUus, "db_cpu_us_per_insert", perInsert.DBCPUus,
		"baseline", "insert", "baseline_per_s", basePerS, "ratio", ratio(rate, basePerS))
}

// copyFile copies the file from to the file to.
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// The single-row INSERT baseline table: an event row (columns and unique keys of the event
// tables) in the portable subset of SQL the read models use.
const insertPlainTable = `CREATE TABLE bench_insert (
    stream      TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    recorded_us BIGINT NOT NULL,
    PRIMARY KEY (stream, revision)
)`

// insertBaseline times n single-row INSERT commits by writers concurrent writers (each to a
// stream of its own) in the node's database, through the node's own connection pool, and
// returns the rate.
func insertBaseline(ctx context.Context, node *server.Node, writers, n int) (float64, error) {
	db := node.DB
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS bench_insert`); err != nil {
		return 0, fmt.Errorf("bench: drop bench_insert: %w", err)
	}
	if _, err := db.ExecContext(ctx, insertPlainTable); err != nil {
		return 0, fmt.Errorf("bench: create bench_insert: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_insert`)
	wl := newWorkload()
	evs := wl.singles(Config{Writers: writers, SingleEvents: n})
	done, d, err := concurrently(ctx, writers, n, func(ctx context.Context, w, i int) error {
		e := evs[w][i]
		_, err := db.ExecContext(ctx, `INSERT INTO bench_insert (stream, revision, id, type, data, metadata, recorded_us) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			wl.stream("plain", w), i, e.ID.String(), e.Type, string(e.Data),
			`{"tenant_id":"tenant-bench","actor":"api-key:bench","correlation_id":"`+e.ID.String()+`"}`, time.Now().UnixMicro())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("bench: insert baseline: %w", err)
	}
	return perSecond(done, d), nil
}
