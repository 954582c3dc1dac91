package dispatcher_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/projtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const tenant = "tenant-1"

// key returns the tenant-scoped key of connection id of the test tenant: what the store, the
// dispatcher and the simulator know the connection by.
func key(id string) string { return connection.Key(tenant, id) }

var t0 = time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC)

// env is one engine's event store and read-model database.
type env struct {
	store eventstore.Store
	db    *projections.DB
	url   string // PostgreSQL only: the database's URL
}

func openSQLite(t *testing.T, clock eventstore.Clock) *env {
	t.Helper()
	e := projtest.SQLite(t, sqlite.Options{PollInterval: 50 * time.Millisecond, Clock: clock})
	return &env{store: e.Store, db: e.DB}
}

func openPostgres(t *testing.T, clock eventstore.Clock) *env {
	t.Helper()
	// Group commit on, as the server runs it: G1 and G5 are proven on the grouped append path.
	e := projtest.Postgres(t, postgres.Options{IdlePoll: 200 * time.Millisecond, Clock: clock, GroupCommitters: postgres.DefaultGroupCommitters})
	return &env{store: e.Store, db: e.DB, url: e.URL}
}

// harness is one "process": an event store, the real projections and clearing process, the
// simulator on a manual clock, the command handlers an operator uses, and dispatchers.
type harness struct {
	t      *testing.T
	env    *env
	clock  *transporttest.ManualClock
	sim    *simulator.Simulator
	repo   *commands.Repository
	queue  *projections.Queue
	status *projections.MessageStatus
	audit  *projections.Audit
	runner *projections.Runner

	register  *commands.RegisterConnectionHandler
	pair      *commands.PairingSucceededHandler
	enqueue   *commands.EnqueueMessageHandler
	broadcast *commands.StartBroadcastHandler
	clear     *commands.RequestClearHandler
	hold      *commands.HoldQueueHandler
	resume    *commands.ResumeQueueHandler
	complete  *commands.CompleteClearHandler
	policy    *commands.SetSendingPolicyHandler
}

type engine func(t *testing.T, clock eventstore.Clock) *env

func newHarness(t *testing.T, open engine) *harness {
	t.Helper()
	clock := transporttest.NewManualClock(t0)
	now := func() time.Time { return clock.Now().UTC() }
	e := open(t, now)
	h := &harness{t: t, env: e, clock: clock,
		sim:   simulator.New(simulator.Options{Seed: 7, Clock: clock, AssumePaired: true}),
		queue: projections.NewQueue(), status: projections.NewMessageStatus(), audit: projections.NewAudit()}
	t.Cleanup(h.sim.Close)
	var err error
	if h.repo, err = commands.NewRepository(e.store, commands.RepositoryOptions{}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	h.register, err = commands.NewRegisterConnectionHandler(h.repo, now)
	must(err)
	h.pair, err = commands.NewPairingSucceededHandler(h.repo, now)
	must(err)
	h.enqueue, err = commands.NewEnqueueMessageHandler(h.repo, now)
	must(err)
	h.broadcast, err = commands.NewStartBroadcastHandler(h.repo, now)
	must(err)
	h.clear, err = commands.NewRequestClearHandler(h.repo, now)
	must(err)
	h.hold, err = commands.NewHoldQueueHandler(h.repo, now)
	must(err)
	h.resume, err = commands.NewResumeQueueHandler(h.repo, now)
	must(err)
	h.complete, err = commands.NewCompleteClearHandler(h.repo, now)
	must(err)
	h.policy, err = commands.NewSetSendingPolicyHandler(h.repo, now)
	must(err)

	h.runner, err = projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store, BatchSize: 256,
		Projections: []projections.Projection{h.queue, h.status, h.audit, projections.NewCards(), projections.NewAnalytics()},
		Logger:      silentLogger()})
	must(err)
	proc, err := projections.NewClearProcess(projections.ClearProcessConfig{DB: e.db, Store: e.store, Queue: h.queue,
		Completer: completer{h}, RetryInterval: 100 * time.Millisecond, Logger: silentLogger()})
	must(err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = h.runner.Run(ctx); done <- struct{}{} }()
	go func() { _ = proc.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return h
}

// completer completes clears through the command handler, as the system.
type completer struct{ h *harness }

func (c completer) CompleteClear(ctx context.Context, connID string, clearID uuid.UUID) error {
	_, err := c.h.complete.Handle(commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant)),
		commands.CompleteClear{ConnectionID: connID, ClearID: clearID})
	return err
}

// silentLogger drops everything: the runner logs cancelled batches at shutdown.
func silentLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func (h *harness) op() context.Context {
	return commands.WithPrincipal(context.Background(), auth.Principal{TenantID: tenant, ID: "operator-1", Role: auth.RoleAdmin})
}

func (h *harness) config(mod func(*dispatcher.Config)) dispatcher.Config {
	cfg := dispatcher.Config{Store: h.env.store, Repository: h.repo,
		Messages: dispatcher.QueueMessages{DB: h.env.db, Queue: h.queue}, Transport: h.sim,
		Locator: dispatcher.StatusLocator{DB: h.env.db, Status: h.status},
		Clock:   h.clock, Pacing: dispatcher.Pacing{Unpaced: true}, Seed: 42, Registerer: prometheus.NewRegistry(),
		RetryBackoff: time.Second, MaxRetryBackoff: 4 * time.Second, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// running is a Dispatcher running in the background.
type running struct {
	*dispatcher.Dispatcher
	cancel context.CancelFunc
	done   chan error
}

func (h *harness) start(mod func(*dispatcher.Config)) *running {
	h.t.Helper()
	d, err := dispatcher.New(h.config(mod))
	if err != nil {
		h.t.Fatal(err)
	}
	h.repo.OnAppended(d.Appended) // as the server wires it: resumes wake the loop in process
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Dispatcher: d, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	h.t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// autoAdvance moves the manual clock by step every few real milliseconds until the test ends,
// for tests that do not look at times but must not hang on backoffs.
func (h *harness) autoAdvance(step time.Duration) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				h.clock.Advance(step)
			}
		}
	}()
	h.t.Cleanup(func() { close(stop); <-done })
}

// registerPaired registers connID and pairs it through the simulator (Paired → PairingSucceeded,
// recorded by a running dispatcher), waiting until the link is active.
func (h *harness) registerPaired(connID string, d *running) {
	h.t.Helper()
	h.registerOnly(connID)
	if err := h.sim.Connect(context.Background(), key(connID)); err != nil {
		h.t.Fatal(err)
	}
	h.eventually("link active", func() bool { return h.linkStatus(connID) == connection.LinkStatusActive })
}

func (h *harness) registerOnly(connID string) {
	h.t.Helper()
	if _, err := h.register.Handle(h.op(), commands.RegisterConnection{ConnectionID: connID, Phone: "+4915112345678"}); err != nil {
		h.t.Fatal(err)
	}
}

// setPolicy changes connID's sending policy as an operator and returns the position of the
// SendingPolicyChanged.
func (h *harness) setPolicy(connID string, pt connection.SendingPolicyPatch) eventstore.Position {
	h.t.Helper()
	res, err := h.policy.Handle(h.op(), commands.SetSendingPolicy{ConnectionID: connID, Patch: pt})
	if err != nil {
		h.t.Fatal(err)
	}
	return res.Position
}

// paced is the config of a dispatcher that applies the connections' sending policies.
func paced(c *dispatcher.Config) { c.Pacing = dispatcher.Pacing{} }

func ptr[T any](v T) *T { return &v }

func (h *harness) linkStatus(connID string) connection.LinkStatus {
	var ls connection.LinkStatus
	_ = h.repo.View(context.Background(), key(connID), func(c *connection.Connection) error { ls = c.LinkStatus(); return nil })
	return ls
}

func (h *harness) queueStatus(connID string) connection.QueueStatus {
	var qs connection.QueueStatus
	_ = h.repo.View(context.Background(), key(connID), func(c *connection.Connection) error { qs = c.QueueStatus(); return nil })
	return qs
}

func recipient(i int) string { return fmt.Sprintf("+49151%08d", 10_000+i) }

func (h *harness) enqueueOne(connID, key string, ttl time.Duration) commands.EnqueueResult {
	h.t.Helper()
	r, err := h.enqueue.Handle(h.op(), commands.EnqueueMessage{ConnectionID: connID, IdempotencyKey: key,
		Recipient: recipient(len(key)), Text: "hello " + key, TTL: ttl})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) startBroadcast(connID string, n int) commands.StartBroadcastResult {
	h.t.Helper()
	rs := make([]string, n)
	for i := range rs {
		rs[i] = recipient(i)
	}
	r, err := h.broadcast.Handle(h.op(), commands.StartBroadcast{ConnectionID: connID, IdempotencyKey: "bc-" + connID,
		Recipients: rs, Text: "offer"})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// history returns the connection's events in stream order.
func (h *harness) history(connID string) []invariants.Recorded {
	h.t.Helper()
	evs, err := h.env.store.ReadStream(context.Background(), connection.StreamName(key(connID)), eventstore.Forwards, 0, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]invariants.Recorded, 0, len(evs))
	for _, e := range evs {
		ev, err := connection.Decode(e.Type, e.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, invariants.Recorded{Revision: e.Revision, Event: ev})
	}
	return out
}

// sends returns the simulator's sends through connID, for the invariants checker.
func (h *harness) sends(connID string) []invariants.Send {
	var out []invariants.Send
	for i, s := range h.sim.Sends() {
		if s.ConnectionID == key(connID) {
			out = append(out, invariants.Send{MessageID: s.MessageID, Order: i, Fence: s.Fence})
		}
	}
	return out
}

// count returns how many events of type typ the history holds.
func count[T connection.Event](hist []invariants.Recorded) int {
	n := 0
	for _, r := range hist {
		if _, ok := r.Event.(T); ok {
			n++
		}
	}
	return n
}

// checkInvariants fails the test on any violated guarantee over the connection's history and
// the simulator's sends, and returns the report.
func (h *harness) checkInvariants(connID string) invariants.Report {
	h.t.Helper()
	rep := invariants.Check(h.history(connID), h.sends(connID))
	for _, v := range rep.Violations {
		h.t.Errorf("violation: %s", v)
	}
	return rep
}

// eventually polls cond until it holds; it fails the test after testwait.Limit (a safety net
// for hangs, never a speed assertion). The pause between polls grows to 50 ms so that an
// expensive cond (a whole history read) does not take the CPU from what it waits for.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	start := time.Now()
	pause := 2 * time.Millisecond
	for !cond() {
		if time.Since(start) > testwait.Limit {
			h.t.Fatalf("timed out waiting for: %s (after %s)", what, testwait.Limit)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// idle waits until d has seen pos and runs no loop.
func (h *harness) idle(d *running, pos eventstore.Position) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	if err := d.WaitIdle(ctx, pos); err != nil {
		h.t.Fatalf("dispatcher not idle: %v (active loops %d)", err, d.ActiveLoops())
	}
}

// lastPosition returns the global position of the connection's last event of one of types.
func (h *harness) lastPosition(connID string, types ...string) eventstore.Position {
	h.t.Helper()
	evs, err := h.env.store.ReadAll(context.Background(), eventstore.Start, 0,
		eventstore.Filter{StreamPrefixes: []string{connection.StreamName(key(connID))}, EventTypes: types})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(evs) == 0 {
		h.t.Fatalf("no %v event on %s", types, connID)
	}
	return evs[len(evs)-1].Position
}

// waitProjections waits until the named projections have applied pos.
func (h *harness) waitProjections(pos eventstore.Position, names ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	if err := h.runner.WaitFor(ctx, names, pos); err != nil {
		h.t.Fatalf("projections %v did not reach %s: %v; statuses %+v", names, pos, err, h.runner.Statuses())
	}
}
