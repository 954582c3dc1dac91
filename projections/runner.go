// Package projections keeps waqueue's read models and process managers from the event log.
//
// The projections of a Runner are fed by the event store's global log through watermill (a
// bus.LogSubscriber, handled by a watermill Router): as a group, one read of the log and one
// read-model transaction per batch for all of them, which also stores every projection's
// checkpoint, so a crash between rows and checkpoints is impossible: a redelivered batch is
// recognised by the checkpoints and the events already applied are skipped. A projection
// behind the group (rebuilt, or failing) runs alone, on a topic of its own, until it reaches
// the group (Runner.Run). Projections are therefore idempotent, and rebuildable from zero by
// deleting their rows and checkpoint (Runner.Rebuild).
//
// Read models key a connection's rows by its tenant-scoped key (connection.Key, as
// connection.IDFromStream returns it) in their conn_id columns, beside tenant_id; the audit
// trail and the clear reports keep the bare id (their rows are keyed by tenant_id and conn_id).
// Queries the API calls take the tenant and the bare id and answer with bare ids; those the
// node's own processes call (NextPending, InFlight, the clearing process) take keys.
package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/bus"
	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Projection is a read model or process manager kept from the global log.
type Projection interface {
	// Name is the projection's stable name; it keys its checkpoint.
	Name() string
	// Filter selects the events the projection needs.
	Filter() eventstore.Filter
	// Apply applies events, in global order, inside tx. Events at or before the checkpoint are
	// never passed. tx may be shared with the runner's other projections: Apply touches only
	// its own rows, and keeps nothing in memory that assumes the commit (the transaction may be
	// rolled back after Apply returned, when another projection fails). events is read-only
	// (it may be shared with the group's other projections). An error rolls the batch back; it
	// is delivered again later (to this projection alone).
	Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error
	// Reset deletes every row the projection owns, inside tx (used by rebuild).
	Reset(ctx context.Context, tx *Tx) error
}

// AfterCommitter is an optional interface of a Projection. The runner calls AfterCommit after
// a batch's transaction has committed, with the events it applied, from the handler goroutine
// that applied them (the group's, or the projection's own while it runs alone); it must return
// quickly (wake a worker, do not do I/O). Process managers use it to act on what is now
// durably in the read model, outside the transaction: an action inside
// Apply would hold the read model's write lock while it runs, which on the embedded SQLite
// database (one file for events and read models) blocks the event store append the action
// makes.
type AfterCommitter interface {
	AfterCommit(events []eventstore.RecordedEvent)
}

// Status is a projection's health as seen by the runner.
type Status struct {
	Name       string
	Checkpoint eventstore.Position
	// Applied counts events applied since start.
	Applied uint64
	// Failures counts consecutive failed batches; zero when healthy.
	Failures  int
	LastError string
	// FailingSince is when the current run of failures began (zero when healthy).
	FailingSince time.Time
	// Alone is set while the projection runs alone, behind the runner's group (rebuilt,
	// started behind, or failing), until it reaches the group (Runner.Run).
	Alone bool
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// DB holds the read models and checkpoints. Required.
	DB *DB
	// Store is the event store. Required.
	Store eventstore.Store
	// Projections to run. Required, names unique.
	Projections []Projection
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// BatchSize sets the default of MaxBatchSize (8 × BatchSize). Default 512.
	BatchSize int
	// MaxBatchSize is the most events applied in one transaction: a batch is every event read
	// from the log and not yet applied, up to this many, and the log is read while a batch is
	// applied (bus.LogSubscriberConfig.MaxBatchSize). Live, batches are as small as what
	// arrives; catching up, a few large transactions commit instead of one per page read.
	MaxBatchSize int
	// Middleware is added to the watermill router (for example metrics). Optional.
	Middleware []message.HandlerMiddleware
	// RouterPlugin hooks (for example watermill's Prometheus metrics builder). Optional.
	ConfigureRouter func(*message.Router)
	// Now is the clock for status times and lag. Default time.Now.
	Now func() time.Time
	// Registerer, if set, receives the per-projection metrics (waqueue_projection_*: events
	// applied, failures, redeliveries, lag in events and seconds). Optional.
	Registerer prometheus.Registerer
	// LagScanLimit is the most events the lag gauge counts past a checkpoint per scrape.
	// Default DefaultLagScanLimit.
	LagScanLimit int
	// Groups are sets of projection names that each form a group of their own: a group reads
	// the log once and applies each batch in one transaction (see Run); groups run
	// concurrently. The projections named in no set form the default group. Optional: by
	// default all projections are one group. Keep a projection whose read model must be
	// current soonest (the pending queue) or whose Apply is slow (a publisher) apart, at the
	// cost of one more log read and transaction per batch.
	Groups [][]string
}

// Runner runs projections on a watermill router fed by the event log.
type Runner struct {
	cfg           RunnerConfig
	mu            sync.Mutex
	stat          map[string]*Status
	cond          *sync.Cond
	metrics       *runnerMetrics
	lastDelivered map[string]eventstore.Position // end of the last batch delivered, per projection
	lanes         map[string]*lane               // under mu
	groups        []*groupState                  // the default group first
	groupOf       map[string]*groupState         // by projection name
	groupByTopic  map[string]*groupState
	matchers      map[string]matcher
}

// NewRunner validates cfg and returns a runner. Call Migrate before Run.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("projections: RunnerConfig.DB is nil"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("projections: RunnerConfig.Store is nil"))
	}
	if len(cfg.Projections) == 0 {
		errs = append(errs, errors.New("projections: RunnerConfig.Projections is empty"))
	}
	seen := map[string]bool{}
	for _, p := range cfg.Projections {
		if seen[p.Name()] {
			errs = append(errs, fmt.Errorf("projections: duplicate projection name %q", p.Name()))
		}
		if strings.HasPrefix(p.Name(), GroupHandler) {
			errs = append(errs, fmt.Errorf("projections: projection name %q: %s… names the runner's group handlers", p.Name(), GroupHandler))
		}
		seen[p.Name()] = true
	}
	grouped := map[string]bool{}
	for _, g := range cfg.Groups {
		for _, n := range g {
			if !seen[n] || grouped[n] {
				errs = append(errs, fmt.Errorf("projections: RunnerConfig.Groups: %q is not a projection or is in two groups", n))
			}
			grouped[n] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.MaxBatchSize <= 0 {
		cfg.MaxBatchSize = 8 * cfg.BatchSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LagScanLimit <= 0 {
		cfg.LagScanLimit = DefaultLagScanLimit
	}
	r := &Runner{cfg: cfg, stat: map[string]*Status{}, metrics: newRunnerMetrics(), lastDelivered: map[string]eventstore.Position{}}
	r.cond = sync.NewCond(&r.mu)
	r.lanes, r.matchers = map[string]*lane{}, map[string]matcher{}
	r.groupOf, r.groupByTopic = map[string]*groupState{}, map[string]*groupState{}
	byName := map[string]Projection{}
	for _, p := range cfg.Projections {
		r.stat[p.Name()] = &Status{Name: p.Name()}
		r.lanes[p.Name()] = &lane{opened: make(chan struct{})}
		r.matchers[p.Name()] = newMatcher(p.Filter())
		byName[p.Name()] = p
	}
	def := &groupState{topic: GroupHandler}
	for _, p := range cfg.Projections {
		if !grouped[p.Name()] {
			def.ps = append(def.ps, p)
		}
	}
	if len(def.ps) > 0 {
		r.groups = append(r.groups, def)
	}
	for i, names := range cfg.Groups {
		g := &groupState{topic: fmt.Sprintf("%s_%d", GroupHandler, i+1)}
		for _, n := range names {
			g.ps = append(g.ps, byName[n])
		}
		if len(g.ps) > 0 {
			r.groups = append(r.groups, g)
		}
	}
	for _, g := range r.groups {
		var filters []eventstore.Filter
		for _, p := range g.ps {
			filters = append(filters, p.Filter())
			r.groupOf[p.Name()] = g
		}
		g.union = unionFilter(filters)
		r.groupByTopic[g.topic] = g
	}
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// GroupHandler is the name of the runner's handler (and log topic) that applies each batch to
// every projection of the default group; the other groups' are GroupHandler_1, _2, … in the
// order of RunnerConfig.Groups. No projection's name may begin with it.
const GroupHandler = "projections_group"

// lane is where one projection is applied: in the group's transactions (solo false) or, while
// it is behind the group (rebuilt, failing, or started behind), in transactions of its own on
// its own subscription (solo true) until it reaches the group. Guarded by Runner.mu.
type lane struct {
	solo bool
	// opened is closed when the lane turns solo (its subscription's gate opens); a new one is
	// made when it joins the group.
	opened chan struct{}
	// stop ends the solo subscription (set by the gate while solo).
	stop context.CancelFunc
}

// groupState is a group of projections and its progress (pos, inflight, inflightEnd: guarded
// by Runner.mu).
type groupState struct {
	topic string // its handler's name and log topic
	ps    []Projection
	union eventstore.Filter // selects every event one of ps selects

	pos eventstore.Position // end of the last batch the group handled
	// inflight is set while the group handles a batch ending at inflightEnd, whose members
	// were fixed when it began.
	inflight    bool
	inflightEnd eventstore.Position
}

// matcher is a projection's Filter, prepared for matching events in memory.
type matcher struct {
	prefixes []string
	types    map[string]bool
}

func newMatcher(f eventstore.Filter) matcher {
	m := matcher{prefixes: f.StreamPrefixes}
	if len(f.EventTypes) > 0 {
		m.types = make(map[string]bool, len(f.EventTypes))
		for _, t := range f.EventTypes {
			m.types[t] = true
		}
	}
	return m
}

func (m matcher) match(e eventstore.RecordedEvent) bool {
	if len(m.prefixes) > 0 {
		ok := false
		for _, p := range m.prefixes {
			if strings.HasPrefix(e.Stream, p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return m.types == nil || m.types[e.Type]
}

// unionFilter returns a filter selecting at least every event one of fs selects.
func unionFilter(fs []eventstore.Filter) eventstore.Filter {
	var u eventstore.Filter
	prefixes, types := map[string]bool{}, map[string]bool{}
	allPrefixed, allTyped := true, true
	for _, f := range fs {
		allPrefixed = allPrefixed && len(f.StreamPrefixes) > 0
		allTyped = allTyped && len(f.EventTypes) > 0
		for _, p := range f.StreamPrefixes {
			if !prefixes[p] {
				prefixes[p] = true
				u.StreamPrefixes = append(u.StreamPrefixes, p)
			}
		}
		for _, t := range f.EventTypes {
			if !types[t] {
				types[t] = true
				u.EventTypes = append(u.EventTypes, t)
			}
		}
	}
	if !allPrefixed {
		u.StreamPrefixes = nil
	}
	if !allTyped {
		u.EventTypes = nil
	}
	return u
}

// Run runs every projection until ctx is done. It returns nil after a clean stop.
//
// The projections form a group (or several, RunnerConfig.Groups, run concurrently) that reads
// the log once and applies each batch in one read-model transaction: every projection's Apply with the events it selects, then every
// projection's checkpoint, written together in one statement, at the batch's end. A projection
// behind the group — rebuilt, started behind, or whose Apply failed (the group's transaction
// is rolled back and applied again without it) — runs alone, on a subscription and in
// transactions of its own from its checkpoint, until it has reached the group's position, and
// then joins it again: the others neither wait for it nor re-read what it needs.
func (r *Runner) Run(ctx context.Context) error {
	wlog := watermill.NewSlogLogger(r.cfg.Logger)
	cps := map[string]eventstore.Position{}
	for _, p := range r.cfg.Projections {
		cp, err := r.Checkpoint(ctx, p.Name())
		if err != nil {
			return err
		}
		cps[p.Name()] = cp
	}
	r.mu.Lock()
	for _, g := range r.groups {
		var top eventstore.Position
		for _, p := range g.ps {
			if top.Less(cps[p.Name()]) {
				top = cps[p.Name()]
			}
		}
		g.pos, g.inflight = top, false
		for _, p := range g.ps {
			r.stat[p.Name()].Checkpoint = cps[p.Name()]
			l := &lane{opened: make(chan struct{})}
			if cps[p.Name()].Less(top) {
				l.solo = true
				close(l.opened)
			}
			r.lanes[p.Name()] = l
		}
	}
	r.mu.Unlock()
	sub, err := bus.NewLogSubscriber(bus.LogSubscriberConfig{
		Store: r.cfg.Store,
		Checkpoint: func(ctx context.Context, topic string) (eventstore.Position, error) {
			if g := r.groupByTopic[topic]; g != nil {
				r.mu.Lock()
				defer r.mu.Unlock()
				return g.pos, nil
			}
			return r.Checkpoint(ctx, topic)
		},
		Filter: func(topic string) eventstore.Filter {
			if g := r.groupByTopic[topic]; g != nil {
				return g.union
			}
			return r.groupOf[topic].union
		},
		Gate:         r.gate,
		BatchSize:    r.cfg.BatchSize,
		MaxBatchSize: r.cfg.MaxBatchSize,
		Logger:       wlog,
	})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return fmt.Errorf("projections: router: %w", err)
	}
	router.AddMiddleware(middleware.Recoverer)
	router.AddMiddleware(r.cfg.Middleware...)
	if r.cfg.ConfigureRouter != nil {
		r.cfg.ConfigureRouter(router)
	}
	for _, g := range r.groups {
		g := g
		router.AddConsumerHandler(g.topic, g.topic, sub, func(m *message.Message) error {
			return r.handleGroup(m.Context(), g, m)
		})
	}
	for _, p := range r.cfg.Projections {
		p := p
		router.AddConsumerHandler(p.Name(), p.Name(), sub, func(m *message.Message) error {
			return r.handleSolo(m.Context(), p, m)
		})
	}
	err = router.Run(ctx)
	_ = sub.Close()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// gate implements bus.LogSubscriberConfig.Gate: the group's subscription is always open, a
// projection's own only while it runs alone.
func (r *Runner) gate(ctx context.Context, topic string) (context.Context, error) {
	if r.groupByTopic[topic] != nil {
		return ctx, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lanes[topic]
	for !l.solo {
		opened := l.opened
		r.mu.Unlock()
		select {
		case <-opened:
		case <-ctx.Done():
		}
		r.mu.Lock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	open, stop := context.WithCancel(ctx)
	l.stop = stop
	return open, nil
}

// eject makes name run alone from its checkpoint (its lane's gate opens).
func (r *Runner) eject(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.lanes[name]; !l.solo {
		l.solo = true
		close(l.opened)
	}
}

// tryJoin moves name, which runs alone and has applied everything up to cp, into the group when
// cp is at or after every event the group handled or is handling: from the group's next batch
// on it has everything it is not handed. It reports whether it joined.
func (r *Runner) tryJoin(name string, cp eventstore.Position) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tryJoinLocked(name, cp)
}

// tryJoinLocked is tryJoin with r.mu held.
func (r *Runner) tryJoinLocked(name string, cp eventstore.Position) bool {
	g := r.groupOf[name]
	horizon := g.pos
	if g.inflight {
		horizon = g.inflightEnd
	}
	l := r.lanes[name]
	if !l.solo || cp.Less(horizon) {
		return false
	}
	l.solo = false
	l.opened = make(chan struct{})
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
	return true
}

// member is one projection's share of a group batch.
type member struct {
	p     Projection
	fresh []eventstore.RecordedEvent
	cp    eventstore.Position // before the batch, as the read model holds it
}

// handleGroup applies one batch to every projection of the group in one transaction. A
// projection whose Apply fails is taken out of the group (it runs alone from its checkpoint,
// retried there) and the transaction is applied again without it; any other failure fails the
// batch, delivered again.
func (r *Runner) handleGroup(ctx context.Context, g *groupState, m *message.Message) error {
	events, err := bus.DecodeBatch(m)
	if err != nil {
		return err
	}
	last := events[len(events)-1].Position
	r.mu.Lock()
	var ps []Projection
	for _, p := range g.ps {
		if !r.lanes[p.Name()].solo {
			ps = append(ps, p)
		}
	}
	start := g.pos
	g.inflight, g.inflightEnd = true, last
	r.mu.Unlock()
	handled := false
	defer func() {
		r.mu.Lock()
		g.inflight = false
		if handled && g.pos.Less(last) {
			g.pos = last
		}
		r.mu.Unlock()
	}()
	for _, p := range ps {
		r.observeBatch(p.Name(), events)
	}
	for {
		r.mu.Lock()
		ps = slices.DeleteFunc(ps, func(p Projection) bool { return r.lanes[p.Name()].solo })
		r.mu.Unlock()
		if len(ps) == 0 {
			break
		}
		failed, err := r.applyGroup(ctx, g, ps, start, events)
		if failed == nil && err != nil {
			for _, p := range ps {
				r.record(p.Name(), err)
			}
			return err
		}
		if failed == nil {
			break
		}
		r.record(failed.Name(), err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.eject(failed.Name())
	}
	handled = true
	return nil
}

// applyGroup applies events to ps in one transaction. It returns the projection whose Apply
// failed, if one did, and the error.
func (r *Runner) applyGroup(ctx context.Context, g *groupState, ps []Projection, start eventstore.Position, events []eventstore.RecordedEvent) (failed Projection, err error) {
	last := events[len(events)-1].Position
	tx, err := r.cfg.DB.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name()
	}
	cps, err := readCheckpoints(ctx, tx, names, r.cfg.DB.Dialect == Postgres)
	if err != nil {
		return nil, err
	}
	ms := make([]member, 0, len(ps))
	var moved []string
	for _, p := range ps {
		cp := cps[p.Name()]
		if cp.Less(start) {
			// Its checkpoint went back (rebuilt by another node): it catches up alone.
			r.eject(p.Name())
			continue
		}
		var fresh []eventstore.RecordedEvent
		if fresh, err = r.applyFresh(ctx, p, tx, cp, events); err != nil {
			return p, err
		}
		if cp.Less(last) {
			moved = append(moved, p.Name())
		}
		ms = append(ms, member{p: p, fresh: fresh, cp: cp})
	}
	if len(moved) == 0 {
		// Another runner on the same read-model database (another node) applied these
		// already: this node's view of the checkpoints follows, or its reads asking for a
		// position (WaitReached) would wait for a batch it never applies.
		_ = tx.Rollback()
		for _, m := range ms {
			r.advance(m.p.Name(), m.cp)
			r.record(m.p.Name(), nil)
		}
		return nil, nil
	}
	if err = writeCheckpoints(ctx, tx, moved, last, r.cfg.Now()); err != nil {
		return nil, err
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("projections: %s: commit: %w", g.topic, err)
	}
	r.mu.Lock()
	for _, m := range ms {
		st := r.stat[m.p.Name()]
		if st.Checkpoint.Less(last) {
			st.Checkpoint = last
		}
		if st.Checkpoint.Less(m.cp) {
			st.Checkpoint = m.cp
		}
		st.Applied += uint64(len(m.fresh))
		r.metrics.applied.WithLabelValues(m.p.Name()).Add(float64(len(m.fresh))) // before WaitFor wakes
		st.Failures, st.LastError, st.FailingSince = 0, "", time.Time{}
	}
	r.cond.Broadcast() // a waiter woken sees the whole status of the batch
	r.mu.Unlock()
	for _, m := range ms {
		if ac, ok := m.p.(AfterCommitter); ok && len(m.fresh) > 0 {
			ac.AfterCommit(m.fresh)
		}
	}
	return nil, nil
}

// applyFresh applies to p, inside tx, the events of the batch that lie past its checkpoint cp
// and that it subscribes to, and returns them (none applied: nil, and no call to Apply).
func (r *Runner) applyFresh(ctx context.Context, p Projection, tx *Tx, cp eventstore.Position, events []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, error) {
	mt := r.matchers[p.Name()]
	// The events are in log order: those past cp are a suffix. When the projection selects
	// all of it (the usual live batch), Apply gets that suffix itself, not a copy: copying
	// each batch once per projection was 5 % of the bytes bench api allocated.
	i, _ := slices.BinarySearchFunc(events, cp, func(e eventstore.RecordedEvent, cp eventstore.Position) int {
		if cp.Less(e.Position) {
			return 1
		}
		return -1
	})
	fresh := events[i:]
	for k, e := range fresh {
		if !mt.match(e) {
			fresh = fresh[:k:k] // appending copies: the batch itself is never written
			for _, e := range events[i+k+1:] {
				if mt.match(e) {
					fresh = append(fresh, e)
				}
			}
			break
		}
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if err := safeApply(ctx, p, tx, fresh); err != nil {
		return nil, fmt.Errorf("projections: %s: apply batch ending at %s: %w", p.Name(), fresh[len(fresh)-1].Position, err)
	}
	return fresh, nil
}

// safeApply is p.Apply with a panic turned into an error: a projection that panics is taken
// out of the group like one that fails, instead of failing the others' batch forever.
func safeApply(ctx context.Context, p Projection, tx *Tx, events []eventstore.RecordedEvent) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return p.Apply(ctx, tx, events)
}

// handleSolo applies one batch to p alone, in one transaction with its checkpoint, while p is
// behind the group; once p has reached the group it joins it. A batch delivered after p joined
// is acked and left to the group.
func (r *Runner) handleSolo(ctx context.Context, p Projection, m *message.Message) (err error) {
	events, err := bus.DecodeBatch(m)
	if err != nil {
		return err
	}
	r.mu.Lock()
	solo := r.lanes[p.Name()].solo
	r.mu.Unlock()
	if !solo {
		return nil
	}
	r.observeBatch(p.Name(), events)
	defer func() { r.record(p.Name(), err) }()
	tx, err := r.cfg.DB.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	cp, err := readCheckpoint(ctx, tx, p.Name(), r.cfg.DB.Dialect == Postgres)
	if err != nil {
		return err
	}
	last := events[len(events)-1].Position
	if !cp.Less(last) {
		// Another runner on the same read-model database applied these already.
		_ = tx.Rollback()
		r.advance(p.Name(), cp)
		r.tryJoin(p.Name(), cp)
		return nil
	}
	fresh, err := r.applyFresh(ctx, p, tx, cp, events)
	if err != nil {
		return err
	}
	if err = writeCheckpoints(ctx, tx, []string{p.Name()}, last, r.cfg.Now()); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("projections: %s: commit: %w", p.Name(), err)
	}
	r.mu.Lock()
	st := r.stat[p.Name()]
	if st.Checkpoint.Less(last) {
		st.Checkpoint = last
	}
	st.Applied += uint64(len(fresh))
	r.metrics.applied.WithLabelValues(p.Name()).Add(float64(len(fresh))) // before WaitFor wakes
	st.Failures, st.LastError, st.FailingSince = 0, "", time.Time{}
	r.tryJoinLocked(p.Name(), last)
	r.cond.Broadcast() // a waiter woken sees the whole status of the batch
	r.mu.Unlock()
	if ac, ok := p.(AfterCommitter); ok && len(fresh) > 0 {
		ac.AfterCommit(fresh)
	}
	return nil
}

// advance moves projection name's known checkpoint forward to cp (never back) and wakes the
// waiters: the read model holds every event up to cp, whichever runner applied them.
func (r *Runner) advance(name string, cp eventstore.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stat[name]; st != nil && st.Checkpoint.Less(cp) {
		st.Checkpoint = cp
		r.cond.Broadcast()
	}
}

func (r *Runner) record(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stat[name]
	if err == nil {
		st.Failures, st.LastError, st.FailingSince = 0, "", time.Time{}
		return
	}
	r.metrics.failures.WithLabelValues(name).Inc()
	if st.Failures == 0 {
		st.FailingSince = r.cfg.Now()
	}
	st.Failures++
	st.LastError = err.Error()
	r.cfg.Logger.Error("projection batch failed; it will be delivered again", "projection", name, "failures", st.Failures, "err", err)
}

// Statuses returns a snapshot of every projection's status.
func (r *Runner) Statuses() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.cfg.Projections))
	for _, p := range r.cfg.Projections {
		st := *r.stat[p.Name()]
		st.Alone = r.lanes[p.Name()].solo
		out = append(out, st)
	}
	return out
}

// WaitFor blocks until each named projection's checkpoint is at or after pos, or ctx is done.
// pos must be the position of an event every named projection's filter selects (a projection's
// checkpoint only moves on events it receives). Used for read-your-writes in tests and tools.
func (r *Runner) WaitFor(ctx context.Context, names []string, pos eventstore.Position) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		done := true
		for _, n := range names {
			st, ok := r.stat[n]
			if !ok {
				return fmt.Errorf("projections: unknown projection %q", n)
			}
			if st.Checkpoint.Less(pos) {
				done = false
			}
		}
		if done {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.cond.Wait()
	}
}

// Checkpoint returns the position after which the projection resumes.
func (r *Runner) Checkpoint(ctx context.Context, name string) (eventstore.Position, error) {
	var c, p int64
	err := r.cfg.DB.QueryRowContext(ctx, `SELECT commit_pos, prepare_pos FROM projection_checkpoints WHERE name = $1`, name).Scan(&c, &p)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Start, nil
	}
	if err != nil {
		return eventstore.Start, fmt.Errorf("projections: read checkpoint of %q: %w", name, err)
	}
	return eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}, nil
}

// Rebuild deletes a projection's rows and checkpoint in one transaction, so that the next Run
// rebuilds it from the start of the log. Run it while the runner is stopped.
func (r *Runner) Rebuild(ctx context.Context, name string) error {
	for _, p := range r.cfg.Projections {
		if p.Name() != name {
			continue
		}
		tx, err := r.cfg.DB.Begin(ctx)
		if err != nil {
			return err
		}
		if err := p.Reset(ctx, tx); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("projections: reset %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM projection_checkpoints WHERE name = $1`, name); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("projections: reset checkpoint of %s: %w", name, err)
		}
		return tx.Commit()
	}
	return fmt.Errorf("projections: unknown projection %q", name)
}

// readCheckpoint reads name's checkpoint inside tx. With lock (PostgreSQL, where several
// nodes may run the same projection on one read-model database) it creates the row if it is
// missing and locks it until tx ends, in one upsert: SELECT … FOR UPDATE of a row that does not
// exist yet would lock nothing, and two nodes starting on an empty read model would both apply
// the first batch. The upsert of a missing row waits for a concurrent transaction inserting
// the same name, so the second node then reads the first node's committed checkpoint. SQLite needs no
// lock: its transactions begin IMMEDIATE (adapters/sqlitedb), one writer at a time.
func readCheckpoint(ctx context.Context, tx *Tx, name string, lock bool) (eventstore.Position, error) {
	q := `SELECT commit_pos, prepare_pos FROM projection_checkpoints WHERE name = $1`
	if lock {
		// One statement creates the row if missing and locks it either way, returning the
		// committed checkpoint: an upsert that conflicts waits for a concurrent inserter, then
		// locks its row (one round trip per batch instead of an INSERT and a SELECT … FOR UPDATE).
		q = `INSERT INTO projection_checkpoints (name, commit_pos, prepare_pos, updated_at_us)
VALUES ($1, 0, 0, 0) ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING commit_pos, prepare_pos`
	}
	var c, p int64
	err := tx.QueryRowContext(ctx, q, name).Scan(&c, &p)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Start, nil
	}
	if err != nil {
		return eventstore.Start, fmt.Errorf("projections: read checkpoint of %q: %w", name, err)
	}
	return eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}, nil
}

// readCheckpoints reads the checkpoints of names inside tx, in one statement; a missing one is
// Start. With lock (PostgreSQL) it creates the missing rows and locks them all until tx ends,
// like readCheckpoint, in name order (two runners locking overlapping sets never deadlock).
func readCheckpoints(ctx context.Context, tx *Tx, names []string, lock bool) (map[string]eventstore.Position, error) {
	sorted := slices.Sorted(slices.Values(names))
	args := make([]any, len(sorted))
	var b strings.Builder
	if lock {
		b.WriteString(`INSERT INTO projection_checkpoints (name, commit_pos, prepare_pos, updated_at_us) VALUES `)
		for i, n := range sorted {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "($%d, 0, 0, 0)", i+1)
			args[i] = n
		}
		b.WriteString(` ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING name, commit_pos, prepare_pos`)
	} else {
		b.WriteString(`SELECT name, commit_pos, prepare_pos FROM projection_checkpoints WHERE name IN (`)
		for i, n := range sorted {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d", i+1)
			args[i] = n
		}
		b.WriteString(`)`)
	}
	rows, err := tx.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("projections: read checkpoints: %w", err)
	}
	defer rows.Close()
	out := make(map[string]eventstore.Position, len(names))
	for rows.Next() {
		var n string
		var c, p int64
		if err := rows.Scan(&n, &c, &p); err != nil {
			return nil, fmt.Errorf("projections: read checkpoints: %w", err)
		}
		out[n] = eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projections: read checkpoints: %w", err)
	}
	return out, nil
}

// writeCheckpoints sets the checkpoints of names to pos inside tx, in one statement.
func writeCheckpoints(ctx context.Context, tx *Tx, names []string, pos eventstore.Position, now time.Time) error {
	var b strings.Builder
	b.WriteString(`INSERT INTO projection_checkpoints (name, commit_pos, prepare_pos, updated_at_us) VALUES `)
	args := []any{int64(pos.Commit), int64(pos.Prepare), now.UnixMicro()}
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $1, $2, $3)", i+4)
		args = append(args, n)
	}
	b.WriteString(`
ON CONFLICT (name) DO UPDATE SET commit_pos = excluded.commit_pos, prepare_pos = excluded.prepare_pos, updated_at_us = excluded.updated_at_us`)
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		return fmt.Errorf("projections: write checkpoints of %v: %w", names, err)
	}
	return nil
}

// pollReached bounds how long WaitReached sleeps when the store cannot yet say whether the
// events up to the position are all visible (an older transaction is still committing).
const pollReached = 10 * time.Millisecond

// WaitReached blocks until each named projection reflects every event at or before pos that its
// filter selects, or ctx is done (returning ctx.Err()). Unlike WaitFor, pos may be the position of
// any event, selected by the projection or not: it is what the API's read-your-writes asks for
// (a client's Waqueue-Min-Position, the position its own write was answered with).
//
// A projection whose checkpoint is before pos has reached it when the store shows every event up
// to pos and the first event after the checkpoint that the projection selects lies after pos (or
// there is none). The store shows every event up to pos once a ReadAll returns an event at or
// after pos (no later read can return one before it); WaitReached reads for it from the greatest
// checkpoint of the runner's projections below pos — a real position, as the Position contract
// wants, and usually close — at most visibleScan events. Checkpoint moves wake the wait; while
// the store cannot yet show pos it polls every few milliseconds. A position no event of the store
// has had is never reached: the caller bounds the wait with ctx.
func (r *Runner) WaitReached(ctx context.Context, names []string, pos eventstore.Position) error {
	byName := make(map[string]Projection, len(r.cfg.Projections))
	for _, p := range r.cfg.Projections {
		byName[p.Name()] = p
	}
	for _, n := range names {
		if byName[n] == nil {
			return fmt.Errorf("projections: unknown projection %q", n)
		}
	}
	visible := false // the store shows every event at or before pos
	for {
		r.mu.Lock()
		type lagging struct {
			p  Projection
			cp eventstore.Position
		}
		var behind []lagging
		for _, n := range names {
			if cp := r.stat[n].Checkpoint; cp.Less(pos) {
				behind = append(behind, lagging{byName[n], cp})
			}
		}
		r.mu.Unlock()
		if len(behind) == 0 {
			return nil
		}
		// The read-model database is the truth: with several nodes on it, another node's
		// runner may have applied what this one has not seen yet.
		refreshed := behind[:0]
		for _, b := range behind {
			cp, err := r.Checkpoint(ctx, b.p.Name())
			if err != nil {
				return err
			}
			r.advance(b.p.Name(), cp)
			if b.cp.Less(cp) {
				b.cp = cp
			}
			if b.cp.Less(pos) {
				refreshed = append(refreshed, b)
			}
		}
		behind = refreshed
		if len(behind) == 0 {
			return nil
		}
		if !visible {
			from, passed := r.greatestCheckpointBefore(pos)
			visible = passed
			if !visible {
				evs, err := r.cfg.Store.ReadAll(ctx, from, visibleScan, eventstore.Filter{})
				if err != nil {
					return err
				}
				visible = len(evs) > 0 && !evs[len(evs)-1].Position.Less(pos)
			}
		}
		reached := visible
		for i := 0; reached && i < len(behind); i++ {
			evs, err := r.cfg.Store.ReadAll(ctx, behind[i].cp, 1, behind[i].p.Filter())
			if err != nil {
				return err
			}
			reached = len(evs) == 0 || pos.Less(evs[0].Position)
		}
		if reached {
			return nil
		}
		if err := r.waitChange(ctx, !visible); err != nil {
			return err
		}
	}
}

// visibleScan bounds the events WaitReached reads to see whether the store shows a position.
const visibleScan = 256

// greatestCheckpointBefore returns the greatest checkpoint of the runner's projections that is
// before pos (Start when none is), and whether some checkpoint is at or after pos (then the
// store shows every event up to pos: a projection was handed one at or after it).
func (r *Runner) greatestCheckpointBefore(pos eventstore.Position) (eventstore.Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, passed := eventstore.Start, false
	for _, st := range r.stat {
		switch {
		case !st.Checkpoint.Less(pos):
			passed = true
		case best.Less(st.Checkpoint):
			best = st.Checkpoint
		}
	}
	return best, passed
}

// waitChange waits for the next checkpoint move, at most pollReached when poll is set and
// 5×pollReached otherwise (a move between the caller's look and this wait is not lost for
// longer), or for ctx to be done.
func (r *Runner) waitChange(ctx context.Context, poll bool) error {
	d := 5 * pollReached
	if poll {
		d = pollReached
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	r.mu.Lock()
	stop := context.AfterFunc(wctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	if wctx.Err() == nil {
		r.cond.Wait()
	}
	r.mu.Unlock()
	stop()
	return ctx.Err()
}
