package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// ScaleConfig configures the one-node scale benchmark.
type ScaleConfig struct {
	// Conns is how many connections are registered (and paired). Zero means 100,000.
	Conns int
	// Active is how many of them send, each a broadcast long enough to last the whole run.
	// Zero means 10,000.
	Active int
	// Window is how long the paced dispatch rate is measured, once every active connection
	// has dispatched (or StartupLimit passed). Zero means 60s.
	Window time.Duration
	// StartupLimit bounds the wait for every active connection's first hand-over; the window
	// starts then whatever the count. Zero means 1 minute.
	StartupLimit time.Duration
	// Policy is the sending policy every connection is registered with; the zero patch keeps
	// connection.DefaultSendingPolicy (3 s plus up to 2 s of jitter, 1,000 a day). Tests
	// shorten it.
	Policy connection.SendingPolicyPatch
	// SetupWorkers is how many goroutines seed the connections (untimed). Zero means 32.
	SetupWorkers int
	// LazySessions measures the node with server.Options.LazySessions (idle connections get
	// neither lease nor session until they have work).
	LazySessions bool
	// BothSessions measures two restarts on the same seed: without LazySessions, then with it.
	BothSessions bool
	// Messages is the length of each active connection's broadcast. Zero means enough for the
	// start-up limit and the window at the fastest pace ((StartupLimit+Window)/MinInterval + 2).
	Messages int
	// HeapProfile, when set, names the file that receives a heap profile of the measured node
	// at the end of the window (go tool pprof; one per measured variant, suffixed by it), and
	// HeapProfile+".startup" one as of the last GC at the end of the start-up (the peak RSS
	// can come there).
	HeapProfile string
}

// QuickScale is the size of --quick: 2,000 connections, 200 sending, a 20 s window.
var QuickScale = ScaleConfig{Conns: 2000, Active: 200, Window: 20 * time.Second}

func (c *ScaleConfig) setDefaults() {
	if c.Conns <= 0 {
		c.Conns = 100_000
	}
	if c.Active <= 0 {
		c.Active = min(10_000, c.Conns)
	}
	if c.Window <= 0 {
		c.Window = 60 * time.Second
	}
	if c.StartupLimit <= 0 {
		c.StartupLimit = time.Minute
	}
	if c.SetupWorkers <= 0 {
		c.SetupWorkers = 32
	}
}

// Scale measures one node with many registered connections, few of them sending, on the
// simulator transport (nothing reaches WhatsApp; sends are acknowledged at once, no
// receipts). Per engine it prints
//
//	BENCH scale/<engine>/conns=<n>/active=<m>/sessions=all|lazy transport=simulator msgs_per_s=… startup_s=… first_send_s=… dispatching=…
//	      rss_now_mib=… goroutines=… cpu_per_1k_active=… db_cpu_per_1k_active=… events_per_s=…
//	      db_commits_per_s=… db_rows_per_s=… pace_delay_ms=… drained=… leases_held=… seed_s=… baseline=paced baseline_per_s=… ratio=… rss_mib=…
//
// Seeding (untimed, reported as seed_s): a node without dispatcher registers and pairs each
// connection in one append through the Repository (the domain's Register and Pair decisions,
// ConnectionRegistered and SessionPaired; SetupWorkers goroutines), starts one broadcast on
// each active connection through the StartBroadcast handler, then starts its projections,
// lets them catch up (batches of 4,096 events) and closes. Then the measured node opens the same database with the
// dispatcher on, the given pacing and the server's default projection batch, as a restart would. startup_s runs from opening the
// node to the first hand-over of the last active connection (first_send_s: of the first); it is
// -1 when not every active connection dispatched within StartupLimit, and dispatching says how
// many did.
// For Window after that, msgs_per_s counts MessageSent; the baseline is the sum of the
// allowed paced rates, Active / (MinInterval + Jitter/2). rss_mib is the peak RSS since the
// measured node opened (the peak is reset after seeding), rss_now_mib the RSS at the end (stderr
// says when the highest RSS sampled came and what the Go runtime held then: heap objects, heap
// freed but not yet returned, stacks);
// goroutines the most seen; cpu_per_1k_active the process's CPU (cores) per 1,000 active
// connections over the window, db_cpu_per_1k_active the same for the throwaway PostgreSQL's
// processes (0 on SQLite or with --db); events_per_s the events the dispatcher appended
// (dispatched, sent, failed, unknown, expired, retried); db_commits_per_s
// and db_rows_per_s PostgreSQL's committed transactions and written rows (pg_stat_database;
// 0 on SQLite); pace_delay_ms the mean time a paced dispatch was recorded after its interval
// allowed it (what each interval gets longer by: the turn's own cost); drained the active
// connections whose broadcast ran out (the rate then understates); leases_held the leases the node trusts at the end of the window (with sessions
// for all, every registered connection's; with lazy sessions, those with work).
func Scale(ctx context.Context, env *Env, cfg ScaleConfig, w io.Writer) error {
	cfg.setDefaults()
	if cfg.Active > cfg.Conns {
		return fmt.Errorf("bench: scale active %d > conns %d", cfg.Active, cfg.Conns)
	}
	for _, engine := range env.Adapters {
		if err := scaleOnce(ctx, env, engine, cfg, w); err != nil {
			return fmt.Errorf("bench: scale/%s: %w", engine, err)
		}
	}
	return nil
}

// policy returns the sending policy the connections are registered with.
func (c ScaleConfig) policy() (connection.SendingPolicy, error) {
	return c.Policy.Apply(connection.DefaultSendingPolicy())
}

// perMessageInterval is the mean pause between two messages of a connection under p.
func perMessageInterval(p connection.SendingPolicy) time.Duration {
	return p.MinInterval + max(p.Jitter, 0)/2
}

func scaleOnce(ctx context.Context, env *Env, engine string, cfg ScaleConfig, w io.Writer) error {
	run := uuid.NewString()[:8]
	id := func(i int) string { return fmt.Sprintf("s-%s-%d", run, i) }
	variants := []bool{cfg.LazySessions}
	if cfg.BothSessions {
		variants = []bool{false, true}
	}
	// Enough messages per active connection for the start-up and the window at the fastest pace,
	// for every variant measured.
	pol, err := cfg.policy()
	if err != nil {
		return err
	}
	per := cfg.Messages
	if per <= 0 {
		per = len(variants)*int((cfg.Window+cfg.StartupLimit)/pol.MinInterval) + 2
	}
	seedStart := time.Now()
	opts, seedLast, err := scaleSeed(ctx, env, engine, cfg, id, per)
	if err != nil {
		return err
	}
	m := scaleRun{cfg: cfg, env: env, engine: engine, opts: opts, id: id, per: per, last: seedLast,
		seed: time.Since(seedStart), sent: map[string]int{}}
	for _, lazy := range variants {
		if err := m.measure(ctx, lazy, w); err != nil {
			return err
		}
	}
	return nil
}

// scaleRun is one seeded database measured by restarts.
type scaleRun struct {
	cfg    ScaleConfig
	env    *Env
	engine string
	opts   server.Options
	id     func(int) string
	per    int
	last   eventstore.Position // the last event seen so far (a lower bound of the log's end)
	seed   time.Duration
	sent   map[string]int // hand-overs per connection, over every measured node
}

// measure opens a node on the seeded database, as a restart would, and measures it.
func (m *scaleRun) measure(ctx context.Context, lazy bool, w io.Writer) (err error) {
	cfg := m.cfg
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	opts := m.opts
	opts.NoDispatcher, opts.GroupCommit, opts.Pacing, opts.NoPacing = false, 0, dispatcher.Pacing{}, false
	// The server's default projection batch, as `waqueue serve` runs: the seed's larger one
	// (its catch-up, untimed) bounds the projections' read-ahead at 8× it (32,768 events per
	// group), which the measured node's RSS then counted (benchmarks-history.md, 2026-12-02).
	opts.ProjectionBatch = 0
	// The seeded connections are paired: their sessions log in as stored ones do at a restart
	// (Connected), not as new pairings (Paired, then Connected), which the dispatcher would
	// record (refused: already paired), loading 100,000 aggregates on the transport's event
	// goroutine during the start-up.
	opts.Simulator.StoredSessions = true
	opts.LazySessions = lazy
	opts.BootstrapOut = io.Discard
	start := time.Now()
	watch := watchRSS(start)
	defer func() {
		if w := watch; w != nil {
			w.end()
		}
	}()
	node, err := server.New(ctx, opts)
	if err != nil {
		return fmt.Errorf("measured node: %w", err)
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
	active := make(map[string]bool, cfg.Active)
	for i := range cfg.Active {
		active[connection.Key(node.Tenant, m.id(i))] = true
	}
	goroutines := runtime.NumGoroutine()
	started := map[string]bool{}
	var firstSend time.Duration
	// The simulator's records are read as they come (each once, not copied whole at every poll),
	// counting the hand-overs per connection for drained.
	seen := 0
	newSends := func() []simulator.SendRecord {
		r := node.Simulator.SendsFrom(seen)
		seen += len(r)
		for _, s := range r {
			m.sent[s.ConnectionID]++
		}
		return r
	}
	limit := time.Now().Add(cfg.StartupLimit)
	for len(started) < cfg.Active && time.Now().Before(limit) {
		select {
		case err := <-node.Errors():
			return fmt.Errorf("node stopped: %w", err)
		default:
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
		goroutines = max(goroutines, runtime.NumGoroutine())
		for _, s := range newSends() {
			if active[s.ConnectionID] && !started[s.ConnectionID] {
				if len(started) == 0 {
					firstSend = time.Since(start)
				}
				started[s.ConnectionID] = true
			}
		}
	}
	startup := time.Since(start)
	startupEnd := startup
	progress("%d of %d active connections dispatching %s after the start (first after %s; load %s)", len(started), cfg.Active,
		startup.Round(time.Millisecond), firstSend.Round(time.Millisecond), loadAvg())
	if cfg.HeapProfile != "" {
		// As of the last GC (none forced: that would lower the peak measured).
		if err := writeHeapProfileAs(cfg.HeapProfile+".startup", lazy, false); err != nil {
			return err
		}
	}

	// The window.
	pid := postmasterPID(m.env)
	cpu0, db0 := processCPU(), postgresCPU(pid)
	// The bench's own reads go through a connection of their own: the node's pool is busy with
	// the loops (a read through it queued behind 10,000 of them).
	stats, err := openStats(node)
	if err != nil {
		return err
	}
	if stats != nil {
		defer stats.Close()
	}
	commits0, rows0 := pgStats(ctx, stats)
	st0 := node.Dispatcher.Stats()
	sent0 := st0.Sent
	newSends() // the window's sends are those after this
	w0 := time.Now()
	for time.Since(w0) < cfg.Window {
		select {
		case err := <-node.Errors():
			return fmt.Errorf("node stopped: %w", err)
		default:
		}
		if err := sleep(ctx, min(time.Second, cfg.Window)); err != nil {
			return err
		}
		goroutines = max(goroutines, runtime.NumGoroutine())
	}
	// The window's figures first; what the bench reads after (leases, profile) is not in them.
	st1 := node.Dispatcher.Stats()
	window := time.Since(w0)
	cpu, dbCPU := processCPU()-cpu0, postgresCPU(pid)-db0
	commits1, rows1 := pgStats(ctx, stats)
	sent := st1.Sent - sent0
	held := len(node.Dispatcher.Held())
	inWindow := map[string]bool{}
	for _, s := range newSends() {
		inWindow[s.ConnectionID] = true
	}
	silent := 0
	for k := range active {
		if !inWindow[k] {
			silent++
		}
	}
	progress("window %s: %d dispatched (%d of them paced in a running loop), %d sent, %d loops started, %d retries, %d unknown; %d of %d active connections sent nothing",
		window.Round(time.Millisecond), st1.Dispatched-st0.Dispatched, st1.PacedDispatches-st0.PacedDispatches, sent,
		st1.Loops-st0.Loops, st1.Retries-st0.Retries, st1.Unknown-st0.Unknown, silent, len(active))
	if cfg.HeapProfile != "" {
		if err := writeHeapProfile(cfg.HeapProfile, lazy); err != nil {
			return err
		}
	}
	rssNow := currentRSSMiB()
	progress("%s; the start-up ended at %s", watch.end(), startupEnd.Round(100*time.Millisecond))
	watch = nil
	events := int(appended(st1) - appended(st0))
	// Active connections whose broadcast ran out before the end (the rate then understates).
	drained := 0
	for k := range active {
		if m.sent[k] >= m.per {
			drained++
		}
	}
	rate := perSecond(int(sent), window)
	pol, err := cfg.policy()
	if err != nil {
		return err
	}
	base := float64(cfg.Active) / perMessageInterval(pol).Seconds()
	k := float64(cfg.Active) / 1000
	sessions := "all"
	if lazy {
		sessions = "lazy"
	}
	return emit(w, fmt.Sprintf("scale/%s/conns=%d/active=%d/sessions=%s", m.engine, cfg.Conns, cfg.Active, sessions),
		"transport", "simulator", "msgs_per_s", rate, "startup_s", startupSeconds(startup, len(started), cfg.Active), "first_send_s", firstSend.Seconds(),
		"dispatching", len(started),
		"rss_now_mib", rssNow, "goroutines", goroutines,
		"cpu_per_1k_active", cpu.Seconds()/window.Seconds()/k, "db_cpu_per_1k_active", dbCPU.Seconds()/window.Seconds()/k,
		"events_per_s", perSecond(events, window),
		"db_commits_per_s", perSecond(int(commits1-commits0), window), "db_rows_per_s", perSecond(int(rows1-rows0), window),
		"pace_delay_ms", paceDelayMS(st0, st1), "drained", drained, "leases_held", held, "seed_s", m.seed.Seconds(),
		"baseline", "paced", "baseline_per_s", base, "ratio", ratio(rate, base))
}

// scaleSeed registers and pairs cfg.Conns connections and starts a broadcast of per messages
// on the first cfg.Active, on a node without dispatcher, waits for every projection and closes
// the node. It returns the node's options, to open the same database again.
func scaleSeed(ctx context.Context, env *Env, engine string, cfg ScaleConfig, id func(int) string, per int) (opts server.Options, last eventstore.Position, err error) {
	node, err := env.node(ctx, engine, func(o *server.Options) {
		o.NoDispatcher = true
		o.ProjectionBatch = 4096
	})
	if err != nil {
		return opts, last, err
	}
	defer func() {
		if cerr := node.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	t0 := time.Now()
	op := operator(ctx, node)
	h := node.Handlers
	// Register and pair each connection in one append (the domain's Register and Pair
	// decisions, applied in turn), before the projections run: they then catch up in batches.
	now := node.Options.Now
	err = parallel(ctx, cfg.SetupWorkers, cfg.Conns, func(ctx context.Context, i int) error {
		c := id(i)
		_, err := node.Repo.Update(op, connection.Key(node.Tenant, c), "bench", func(cur *connection.Connection) ([]connection.Event, error) {
			var policy *connection.SendingPolicyPatch
			if !cfg.Policy.IsZero() {
				policy = &cfg.Policy
			}
			reg, err := cur.Register(connection.RegisterConnection{ConnectionID: c, TenantID: node.Tenant,
				Phone: fmt.Sprintf("+49152%08d", i), Actor: "bench", SendingPolicy: policy}, now())
			if err != nil {
				return nil, err
			}
			next := connection.New()
			for _, e := range reg {
				if err := next.Apply(e); err != nil {
					return nil, err
				}
			}
			pair, err := next.Pair(connection.PairSession{JID: fmt.Sprintf("49152%08d:1@s.whatsapp.net", i), Actor: connection.SystemActor}, now())
			return append(reg, pair...), err
		})
		if err != nil {
			return fmt.Errorf("register and pair %s: %w", c, err)
		}
		return nil
	})
	if err != nil {
		return opts, last, err
	}
	progress("registered and paired %d connections in %s", cfg.Conns, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	recipients := make([]string, per)
	for i := range recipients {
		recipients[i] = fmt.Sprintf("+49151%08d", i)
	}
	err = parallel(ctx, cfg.SetupWorkers, cfg.Active, func(ctx context.Context, i int) error {
		if _, err := h.StartBroadcast.Handle(op, commands.StartBroadcast{ConnectionID: id(i), IdempotencyKey: "scale",
			Recipients: recipients, Text: "scale message"}); err != nil {
			return fmt.Errorf("broadcast %s: %w", id(i), err)
		}
		return nil
	})
	if err != nil {
		return opts, last, err
	}
	last, err = lastPosition(ctx, node.Events, eventstore.Start)
	if err != nil {
		return opts, last, err
	}
	progress("started %d broadcasts of %d messages in %s", cfg.Active, per, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := node.Start(runCtx); err != nil {
		return opts, last, err
	}
	var names []string
	for _, s := range node.Runner.Statuses() {
		names = append(names, s.Name)
	}
	if err := node.Runner.WaitReached(ctx, names, last); err != nil {
		return opts, last, fmt.Errorf("projections catching up with the seed: %w", err)
	}
	progress("projections caught up in %s", time.Since(t0).Round(time.Millisecond))
	opts = node.Options
	opts.Logger = slog.New(slog.DiscardHandler)
	return opts, last, nil
}

// progress reports a step of a long benchmark on stderr (BENCH lines go to stdout).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// resetPeakRSS resets the process's peak RSS (VmHWM), so that rss_mib measures what came
// after (Linux; ignored elsewhere).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// currentRSSMiB returns the process's resident set size now (VmRSS) in MiB; 0 if unknown.
func currentRSSMiB() float64 { return procStatusMiB("VmRSS:") }

// processCPU returns the CPU time (user and system) the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postmasterPID returns the pid of the throwaway cluster's server, or 0 (no cluster: --db or
// SQLite only).
func postmasterPID(env *Env) int {
	if env.cluster == nil {
		return 0
	}
	b, err := os.ReadFile(env.cluster.Dir() + "/data/postmaster.pid")
	if err != nil {
		// The data directory's name is the cluster's business: look for it.
		entries, _ := os.ReadDir(env.cluster.Dir())
		for _, e := range entries {
			if b, err = os.ReadFile(env.cluster.Dir() + "/" + e.Name() + "/postmaster.pid"); err == nil {
				break
			}
		}
		if err != nil {
			return 0
		}
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	return pid
}

// postgresCPU returns the CPU time used so far by the server pid and its live children (the
// backends, which the pool keeps open; a backend that exited takes its time with it). 0 for pid 0.
func postgresCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	total := procCPU(pid)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStatFields(p); len(f) > 12 && f[1] == strconv.Itoa(pid) {
			total += procCPU(p)
		}
	}
	return total
}

// procStatFields returns the fields of /proc/<pid>/stat after the command name (state first).
func procStatFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// procCPU returns utime+stime of pid (clock ticks of 1/100 s, the Linux USER_HZ).
func procCPU(pid int) time.Duration {
	f := procStatFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// appended counts the events the dispatcher appended (dispatched, expired, sent, failed,
// unknown, retried).
// paceDelayMS is the mean pacing delay of the dispatches between two Stats, in milliseconds:
// how long after its interval allowed it a paced dispatch was recorded.
func paceDelayMS(a, b dispatcher.Stats) float64 {
	n := b.PacedDispatches - a.PacedDispatches
	if n == 0 {
		return 0
	}
	return float64(b.PacingDelay-a.PacingDelay) / float64(n) / float64(time.Millisecond)
}

func appended(s dispatcher.Stats) uint64 {
	return s.Dispatched + s.Expired + s.Sent + s.Failed + s.Unknown + s.Retries
}

// openStats opens a connection of its own to the node's PostgreSQL database (nil on SQLite).
func openStats(node *server.Node) (*sql.DB, error) {
	if !node.Options.IsPostgres() {
		return nil, nil
	}
	db, err := sql.Open("pgx", node.Options.DB)
	if err != nil {
		return nil, fmt.Errorf("bench: stats connection: %w", err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// pgStats returns the committed transactions and written rows (inserted, updated, deleted) of
// the PostgreSQL database db so far; zeros for nil (SQLite).
func pgStats(ctx context.Context, db *sql.DB) (commits, rows int64) {
	if db == nil {
		return 0, 0
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, 0
	}
	defer conn.Close()
	_, _ = conn.ExecContext(ctx, `SELECT pg_stat_clear_snapshot()`)
	var c, r sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT xact_commit, tup_inserted + tup_updated + tup_deleted
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&c, &r); err != nil {
		return 0, 0
	}
	return c.Int64, r.Int64
}

// writeHeapProfile writes the heap profile of the process to path (lazy sessions: path.lazy).
func writeHeapProfile(path string, lazy bool) error { return writeHeapProfileAs(path, lazy, true) }

// writeHeapProfileAs is writeHeapProfile, with a GC first when gc is set.
func writeHeapProfileAs(path string, lazy, gc bool) error {
	if lazy {
		path += ".lazy"
	}
	return writeHeapProfileFile(path, gc)
}

// writeHeapProfileFile writes the heap profile of the process to path (through a temporary
// file renamed over it: a profile written again replaces the last whole), with a GC first when
// gc is set.
func writeHeapProfileFile(path string, gc bool) error {
	if gc {
		runtime.GC() // the profile's in-use figures as of the last GC
	}
	return writeProfileFile("heap", path)
}

// writeProfileFile writes the named runtime/pprof profile to path (through a temporary file
// renamed over it).
func writeProfileFile(name, path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// rssWatch samples the process's RSS every 250 ms and keeps the Go runtime's memory classes at
// the highest sample: where the peak (rss_mib) comes from, and when.
type rssWatch struct {
	start time.Time
	stop  chan struct{}
	done  chan struct{}
	peak  rssSample
	// profile, when set, is the file that receives a heap profile (as of the last GC, none
	// forced) at every new highest sample at least profileStep above the last one written.
	profile string
	// profiled is the RSS (MiB) of the last profile written; profileErr the first write's error.
	profiled   float64
	profileErr error
}

// profileStep is how far (MiB) a new highest sample must exceed the last one profiled for
// watchRSSProfile to write the profile again (a rising RSS is not profiled every 250 ms).
const profileStep = 4

// rssSample is one sample: the RSS (MiB), when (since the node opened) and the runtime's view.
type rssSample struct {
	rss                             float64
	at                              time.Duration
	heapObjects, heapFree, heapLive float64 // MiB: in heap objects (live or not yet swept), free but held, live at the last GC
	stacks, other                   float64 // MiB: goroutine stacks; everything else the runtime maps
	goroutines                      int
}

var rssMetrics = []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/free:bytes",
	"/gc/heap/live:bytes", "/memory/classes/heap/stacks:bytes", "/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes"}

// watchRSS starts sampling from start on; stop ends it and returns the peak.
func watchRSS(start time.Time) *rssWatch { return watchRSSProfile(start, "") }

// watchRSSProfile is watchRSS that also writes a heap profile to profile (when not empty) at
// the highest sample (the profile's in-use figures are as of the last GC before it), and a
// goroutine profile to profile+".goroutine".
func watchRSSProfile(start time.Time, profile string) *rssWatch {
	w := &rssWatch{start: start, stop: make(chan struct{}), done: make(chan struct{}), profile: profile}
	samples := make([]metrics.Sample, len(rssMetrics))
	for i, n := range rssMetrics {
		samples[i].Name = n
	}
	mib := func(i int) float64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return float64(samples[i].Value.Uint64()) / (1 << 20)
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := currentRSSMiB(); rss > w.peak.rss {
				metrics.Read(samples)
				w.peak = rssSample{rss: rss, at: time.Since(start), heapObjects: mib(0), heapFree: mib(1), heapLive: mib(2),
					stacks: mib(3), other: mib(4) - mib(0) - mib(1) - mib(3) - mib(5), goroutines: runtime.NumGoroutine()}
				if w.profile != "" && rss >= w.profiled+profileStep {
					if err := writeHeapProfileFile(w.profile, false); err != nil && w.profileErr == nil {
						w.profileErr = err
					}
					if err := writeProfileFile("goroutine", w.profile+".goroutine"); err != nil && w.profileErr == nil {
						w.profileErr = err
					}
					w.profiled = rss
				}
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// end stops the sampling and returns the highest sample.
func (w *rssWatch) end() rssSample {
	close(w.stop)
	<-w.done
	return w.peak
}

// endProfile stops the sampling and returns the highest sample, and the error of writing its
// profile; when none was written (no sample), it writes one now, after a GC.
func (w *rssWatch) endProfile() (rssSample, error) {
	s := w.end()
	if w.profile != "" && w.profileErr == nil && w.profiled == 0 {
		w.profileErr = writeHeapProfileFile(w.profile, true)
	}
	return s, w.profileErr
}

func (s rssSample) String() string {
	return fmt.Sprintf("highest RSS sampled %.0f MiB at %s after the start: heap objects %.0f MiB (live at the last GC %.0f), heap free and held %.0f, stacks %.0f, other runtime %.0f; %d goroutines",
		s.rss, s.at.Round(100*time.Millisecond), s.heapObjects, s.heapLive, s.heapFree, s.stacks, s.other, s.goroutines)
}

// startupSeconds is the start-up figure: the seconds until the last of active connections
// first dispatched, or -1 when only started of them did within the limit.
func startupSeconds(d time.Duration, started, active int) float64 {
	if started < active {
		return -1
	}
	return d.Seconds()
}
