package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// WakeEventTypes are the connection events that can make a queue dispatchable; the Dispatcher
// subscribes to them. SendingPolicyChanged is among them (a raised cap or moved quiet hours can
// free a waiting queue), and also interrupts a pacing wait in progress.
var WakeEventTypes = []string{
	connection.TypeConnectionRegistered,
	connection.TypeMessageQueued,
	connection.TypeBroadcastStarted,
	connection.TypeQueueResumed,
	connection.TypeBanLifted,
	connection.TypeSessionPaired,
	connection.TypeQueueCleared,
	connection.TypeSendingPolicyChanged,
	connection.TypeConnectionRetired,
}

// ErrAlreadyRunning: Run was called on a Dispatcher that runs or ran already.
var ErrAlreadyRunning = errors.New("dispatcher: already running")

// Failure codes the Dispatcher records with MessageFailed.
const (
	// CodeRejected: the transport refused the message for good (ErrRejected).
	CodeRejected = "rejected"
	// CodeNotSent (connection.FailureNotSent): the transport refused every attempt before
	// sending (rate limited, not connected), or the domain refused the retry (a clear, hold, ban
	// or session loss recorded since the dispatch).
	CodeNotSent = connection.FailureNotSent
)

// Causes the Dispatcher records with MessageOutcomeUnknown.
const (
	CauseTimeout  = "timeout"  // SendTimeout passed while waiting for the acknowledgement
	CauseUnknown  = "unknown"  // the transport answered ErrOutcomeUnknown
	CauseShutdown = "shutdown" // the Dispatcher stopped while the send was in progress
	CauseRestart  = "restart"  // found in flight when a loop first started in this process
	// CauseStoreError: found in flight when the loop ran the recovery again after a store
	// failure of a dispatch step (the MessageDispatched was written though the append failed).
	CauseStoreError = "store_error"
)

// Internal timings of projection-lag and store-failure retries (real time: they wait for I/O).
const (
	lagBackoffMin = 5 * time.Millisecond
	lagBackoffMax = time.Second
	recordTimeout = 10 * time.Second
	recentSize    = 1 << 16
)

// Stats counts what a Dispatcher did since it was made.
type Stats struct {
	// Dispatched counts MessageDispatched recorded; Expired MessageExpired recorded.
	Dispatched, Expired uint64
	// Sent, Failed and Unknown count the outcomes recorded (Unknown includes Recovered).
	Sent, Failed, Unknown uint64
	// Recovered counts messages found in flight at start and recorded unknown.
	Recovered uint64
	// Retries counts Sends repeated after a retryable refusal.
	Retries uint64
	// Loops counts the connection loops started (a goroutine each, for as long as the
	// connection has work).
	Loops uint64
	// PacedDispatches counts the paced dispatches of a loop working a backlog (each due when
	// the pacing interval after the one before ends); PacingDelay is the sum of how long after
	// that they were recorded (the turn's own cost, the last message's send and outcome when
	// they outlast the interval, the wake-up's scheduling: every bit of it lengthens that
	// interval).
	PacedDispatches uint64
	PacingDelay     time.Duration
}

// Dispatcher sends queued messages and records the transport's events; see the package doc.
// Make one with New and run it with Run. Its methods are safe for concurrent use.
type Dispatcher struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	dispatch *commands.DispatchNextHandler
	sent     *commands.RecordSentHandler
	failed   *commands.RecordFailedHandler
	unknown  *commands.RecordOutcomeUnknownHandler
	deliv    *commands.RecordDeliveredHandler
	read     *commands.RecordReadHandler
	pair     *commands.PairingSucceededHandler
	invalid  *commands.SessionInvalidatedHandler
	ban      *commands.ReportBanHandler
	lift     *commands.LiftBanHandler
	problem  *commands.RecordTransportProblemHandler
	// deferSend and retrySend fence the retries of a hand-over the transport refused.
	deferSend *commands.DeferSendHandler
	retrySend *commands.RetrySendHandler

	started atomic.Bool

	mu      sync.Mutex
	ctx     context.Context // Run's context; nil before Run
	conns   map[string]*connState
	loops   int
	seen    eventstore.Position
	changed chan struct{} // closed and replaced when loops or seen change
	rng     *rand.Rand
	zones   map[string]*time.Location // loaded time zones of sending policies
	live    []string                  // live nodes (Membership), refreshed by the renewals
	// renewals counts the lease renewals that returned leases (see leaseState.renewal).
	renewals uint64
	// renewing: the renewals run (exclusive leases, during Run). renewStarts and renewEnds count
	// the renewals started and ended, successful or not; a loop whose held lease is past its
	// local expiry waits for one started after it looked (see lease) and asks for it early
	// through renewNow.
	renewing               bool
	renewStarts, renewEnds uint64
	renewNow               chan struct{}
	// claimQueue holds the loops\' lease claims waiting for their Claim call (see claimShared);
	// claimRunning: the goroutine making the calls runs.
	claimQueue   []*claimBatch
	claimRunning bool
	recent       map[uuid.UUID]recentRef // messages dispatched here, for their receipts
	ring         []uuid.UUID
	ringAt       int
	wg           sync.WaitGroup
	// sends is the context of the transport sends: it outlives Run's context by at most
	// Config.DrainTimeout, so a graceful stop lets the sends in progress finish.
	sends context.Context

	stats struct {
		dispatched, expired, sent, failed, unknown, recovered, retries, loops atomic.Uint64
		paced, paceDelayNS                                                    atomic.Uint64
	}
}

// connState is what the Dispatcher keeps per connection seen. Guarded by Dispatcher.mu except
// the fields only its single loop touches (marked).
//
// Memory: one node keeps a connState for every connection it knows (100,000 registered in
// bench scale), most of them idle. What only a working connection needs lives behind two
// pointers: *paceState from the connection's first loop on (the pacing memory: it outlives
// the loop), *runState only while a loop runs (the messages read ahead). An idle connection
// that never worked here holds neither (bench scale, 2026-12-02: 512 bytes per connection
// before, 160 after).
type connState struct {
	running, dirty bool
	// takeover: the renewals claimed the lease with a new epoch; the loop recovers first.
	takeover bool
	// retired: the connection was retired; its loop ends at once (see releaseRetired).
	retired bool
	// idle: the Backlog found no work for the connection at start and no wake came since: no
	// loop runs; with exclusive leases the renewals claim its lease without waking it.
	idle bool
	// Touched only by the connection's loop:
	recovered bool // the in-flight recovery ran since the start or the last store failure
	startedUp bool // the first recovery in this process ran (later ones are after store failures)
	tenant    string
	// policy is the sending policy last read from the aggregate, nil until read or after the
	// log showed it changed; policyGen counts those changes (guarded by mu; see policy).
	policy    *connection.SendingPolicy
	policyGen uint64
	lease     leaseState
	// *paceState is set (under mu) before the connection's first loop starts and kept: its
	// fields are promoted, and only the loop (or a timer it set) touches them.
	*paceState
	// run is the running loop's state: set (under mu) when a loop starts, nil when it ends.
	run *runState
}

// paceState is a connection's pacing memory: set up when its first loop starts and kept, since
// the next loop's pacing interval counts from the last hand-over of this one.
type paceState struct {
	// wakeTimer wakes the loop at wakeAt, the end of quiet hours or the next local day of a
	// capped connection (guarded by mu).
	wakeTimer transport.Timer
	wakeAt    time.Time
	// paceLoaded: day, dayCount and lastAt were read from the stream since the start, the last
	// recovery or lease takeover (loop only, as the rest).
	paceLoaded bool
	lastAt     time.Time // the last hand-over (from the stream, then this loop's)
	jitterU    float64   // the jitter fraction drawn after it, in [0, 1)
	day        time.Time // the local day counted (start instant)
	dayCount   int       // dispatches of that day
	lagBackoff time.Duration
	// lastSeq is the seq of the last dispatch (see prefetchHead).
	lastSeq uint64
}

// runState is what a running loop holds (loop only, except poke); dropped when the loop ends, so
// only connections being worked hold messages read ahead.
type runState struct {
	// inRun: the loop dispatched since it started. Its next dispatch is then due when the
	// pacing interval ends, and any time after that is pacing delay (Stats.PacingDelay).
	inRun bool
	// head is the message read ahead for the seq after lastSeq before the loop waits for its
	// pacing interval (see prefetchHead: read before the wait).
	head commands.QueuedMessage
	// poke interrupts a pacing wait when the connection's sending policy changed (policyChanged
	// sends to it after reading run under mu).
	poke chan struct{}
	// window: the next messages of the queue, read ahead (see window).
	window window
}

// New validates cfg, applies its defaults and returns a Dispatcher (not yet running).
func New(cfg Config) (*Dispatcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger.With("component", "dispatcher"), m: m,
		conns: map[string]*connState{}, changed: make(chan struct{}), zones: map[string]*time.Location{},
		rng: newRand(seed), renewNow: make(chan struct{}, 1),
		recent: make(map[uuid.UUID]recentRef), ring: make([]uuid.UUID, recentSize)}
	now := func() time.Time { return cfg.Clock.Now().UTC() }
	repo := cfg.Repository
	var errs []error
	must := func(err error) { errs = append(errs, err) }
	d.dispatch, err = commands.NewDispatchNextHandler(repo, windowed{inner: cfg.Messages}, now)
	must(err)
	d.sent, err = commands.NewRecordSentHandler(repo, now)
	must(err)
	d.failed, err = commands.NewRecordFailedHandler(repo, now)
	must(err)
	d.unknown, err = commands.NewRecordOutcomeUnknownHandler(repo, now)
	must(err)
	d.deliv, err = commands.NewRecordDeliveredHandler(repo, now)
	must(err)
	d.read, err = commands.NewRecordReadHandler(repo, now)
	must(err)
	d.pair, err = commands.NewPairingSucceededHandler(repo, now)
	must(err)
	d.invalid, err = commands.NewSessionInvalidatedHandler(repo, now)
	must(err)
	d.ban, err = commands.NewReportBanHandler(repo, now)
	must(err)
	d.lift, err = commands.NewLiftBanHandler(repo, now)
	must(err)
	d.problem, err = commands.NewRecordTransportProblemHandler(repo, now)
	must(err)
	d.deferSend, err = commands.NewDeferSendHandler(repo, now)
	must(err)
	d.retrySend, err = commands.NewRetrySendHandler(repo, now)
	must(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	return d, nil
}

// Run registers the Dispatcher as the transport's event handler, subscribes to the event log
// from its start (so connections with work left by a previous process are found and their
// in-flight messages recovered) and runs loops until ctx is done. It then dispatches nothing
// more and drains: the sends in progress get up to Config.DrainTimeout to finish and have their
// outcomes recorded (the leases renewed meanwhile); a send still in progress then is cancelled
// and recorded unknown (cause "shutdown"). It waits for the loops to stop, unregisters the handler
// (events arriving later are kept by the transport for the next handler) and returns nil.
// Store subscription failures are logged and the subscription is resumed. Run may be called
// once.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	// A graceful stop drains: the loops stop dispatching when ctx ends, the sends in progress
	// get up to DrainTimeout to finish (their outcomes recorded), and the leases stay renewed
	// until then, so no other node takes a connection over while its send is in progress.
	sends, endSends := context.WithCancel(context.WithoutCancel(ctx))
	renewals, endRenewals := context.WithCancel(context.WithoutCancel(ctx))
	d.mu.Lock()
	d.ctx = ctx
	d.sends = sends
	d.mu.Unlock()
	d.cfg.Transport.SetHandler(d.handleEvent)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.renew(renewals)
	}()
	defer func() {
		d.drain(endSends)
		endRenewals()
		d.cfg.Transport.SetHandler(nil)
		d.wg.Wait()
	}()

	filter := eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix}, EventTypes: followedEventTypes()}
	after := d.backlog(ctx)
	backoff := lagBackoffMin
	for {
		err := d.cfg.Store.Subscribe(ctx, after, filter, func(e eventstore.RecordedEvent) error {
			if id, ok := connection.IDFromStream(e.Stream); ok {
				switch e.Type {
				case connection.TypeSendingPolicyChanged:
					d.policyChanged(id)
				case connection.TypeSessionPaired, connection.TypeSessionInvalidated:
					d.sessionEvent(ctx, e.Type, id)
				}
				if e.Type != connection.TypeSessionInvalidated {
					d.Wake(id)
				}
			}
			after = e.Position
			d.mu.Lock()
			d.seen = e.Position
			d.notifyLocked()
			d.mu.Unlock()
			backoff = lagBackoffMin
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		d.log.Error("event log subscription failed; resuming", "after", after.String(), "err", err)
		if !sleepReal(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, lagBackoffMax)
	}
}

// drain waits until no loop runs, at most Config.DrainTimeout after Run's context ended, then
// calls endSends (cancelling the sends still in progress) and waits for the loops to stop.
func (d *Dispatcher) drain(endSends context.CancelFunc) {
	defer endSends()
	deadline := time.NewTimer(max(d.cfg.DrainTimeout, 0))
	defer deadline.Stop()
	for {
		d.mu.Lock()
		idle := d.loops == 0
		ch := d.changed
		d.mu.Unlock()
		if idle {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			endSends()
			d.log.Warn("drain timeout: cancelling the sends still in progress (recorded unknown)", "timeout", d.cfg.DrainTimeout)
			deadline.Reset(time.Hour) // only the loops' exit is awaited now
		}
	}
}

// sendContext returns the context a transport send derives from: Run's sends context, which
// outlives ctx by at most Config.DrainTimeout (ctx itself before Run).
func (d *Dispatcher) sendContext(ctx context.Context) context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sends == nil {
		return ctx
	}
	return d.sends
}

// Wake makes the connection's loop run (starting it if none runs). The event log wakes loops
// by itself; Wake is for callers that know of work earlier. Before Run, or after its context
// ended, Wake does nothing.
func (d *Dispatcher) Wake(connID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx := d.ctx
	if ctx == nil || ctx.Err() != nil {
		return
	}
	st := d.stateLocked(connID)
	st.idle = false
	if st.running {
		st.dirty = true
		return
	}
	st.running = true
	if st.paceState == nil {
		st.paceState = &paceState{}
	}
	st.run = &runState{poke: make(chan struct{}, 1)}
	d.stats.loops.Add(1)
	d.loops++
	d.m.activeLoops.Inc()
	d.notifyLocked()
	d.wg.Add(1)
	go d.loop(ctx, connID, st)
}

// Appended is a commands.Repository.OnAppended callback: it wakes the connection's loop at once
// (Wake) when events appended through this process's Repository free a queue without adding
// messages to it or changing what the loop keeps (QueueResumed, BanLifted, QueueCleared),
// instead of when the event log shows them. The log
// shows an event only once every transaction older than its append has ended, the read
// models' batch transactions included: under load that took 0.3–1.5 s after a resume (issue 12,
// bench dispatch). The other wake events still wake through the log: those that add messages
// (the pending-queue projection, which the loop reads them from, follows the same log), and
// those the subscription also acts on (a sending policy, a session). A wake is only a hint: the
// loop decides from the aggregate at the expected revision.
func (d *Dispatcher) Appended(connID string, events []connection.Event) {
	for _, e := range events {
		switch e.(type) {
		case connection.QueueResumed, connection.BanLifted, connection.QueueCleared:
			d.Wake(connID)
			return
		}
	}
}

// backlog asks Config.Backlog which connections exist and which have work as of its position:
// it records the idle ones, claims the busy ones' leases in batches (exclusive leases) and wakes
// them, and returns the position to replay the event log from. Without a Backlog, or when it
// fails, it returns Start: the replay then meets every connection.
func (d *Dispatcher) backlog(ctx context.Context) eventstore.Position {
	if d.cfg.Backlog == nil {
		return eventstore.Start
	}
	pos, conns, err := d.cfg.Backlog.Connections(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reading the connections with work failed; replaying the event log from its start", "err", err)
		}
		return eventstore.Start
	}
	var busy []string
	for _, c := range conns {
		if c.Busy {
			busy = append(busy, c.ID)
		} else {
			d.idle(c.ID)
		}
	}
	d.log.Info("start-up: connections known", "connections", len(conns), "busy", len(busy), "as_of", pos.String())
	d.claimBusy(ctx, busy)
	for _, id := range busy {
		d.Wake(id)
	}
	d.mu.Lock()
	d.seen = pos
	d.notifyLocked()
	d.mu.Unlock()
	return pos
}

// idle records a connection the Backlog found without work: no loop starts. With exclusive
// leases (and without LazySessions) it is marked for the renewals, which claim the leases of all
// such connections in one call and connect their sessions without starting loops; a later wake
// (its queue gets work) starts its loop as usual.
func (d *Dispatcher) idle(connID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx := d.ctx
	if ctx == nil || ctx.Err() != nil {
		return
	}
	st := d.stateLocked(connID)
	if st.running || st.lease.held {
		return
	}
	st.idle = true
	if d.sessions() && !d.cfg.LazySessions {
		st.lease.foreign = true
	}
}

// ActiveLoops returns the number of connections whose loop is running now.
func (d *Dispatcher) ActiveLoops() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.loops
}

// Stats returns the counts so far.
func (d *Dispatcher) Stats() Stats {
	return Stats{
		Dispatched: d.stats.dispatched.Load(), Expired: d.stats.expired.Load(),
		Sent: d.stats.sent.Load(), Failed: d.stats.failed.Load(), Unknown: d.stats.unknown.Load(),
		Recovered: d.stats.recovered.Load(), Retries: d.stats.retries.Load(), Loops: d.stats.loops.Load(),
		PacedDispatches: d.stats.paced.Load(), PacingDelay: time.Duration(d.stats.paceDelayNS.Load()),
	}
}

// WaitIdle blocks until the Dispatcher's subscription has handled the event at pos and no loop
// runs, or ctx is done. pos must be the position of a connection event of one of the
// WakeEventTypes (for example the Result.Position of EnqueueMessage or StartBroadcast). Idle
// means every connection's queue is empty or not dispatchable (held, clearing, link not
// active, daily cap reached): a benchmark that waits for all its messages to be sent
// waits for the position of its last enqueue and then checks Stats or the history.
func (d *Dispatcher) WaitIdle(ctx context.Context, pos eventstore.Position) error {
	for {
		d.mu.Lock()
		done := !d.seen.Less(pos) && d.loops == 0
		ch := d.changed
		d.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *Dispatcher) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Dispatcher) stateLocked(connID string) *connState {
	st := d.conns[connID]
	if st == nil {
		st = &connState{}
		d.conns[connID] = st
	}
	return st
}

// remember indexes a dispatched message for its receipts, evicting the oldest beyond recentSize.
func (d *Dispatcher) remember(connID string, id uuid.UUID, seq uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.ring[d.ringAt]; old != uuid.Nil {
		delete(d.recent, old)
	}
	d.ring[d.ringAt] = id
	d.ringAt = (d.ringAt + 1) % len(d.ring)
	d.recent[id] = recentRef{connID: connID, seq: seq}
}

// recentRef places a message dispatched here.
type recentRef struct {
	connID string
	seq    uint64
}

func (d *Dispatcher) recentSeq(connID string, id uuid.UUID) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.recent[id]
	return r.seq, ok && r.connID == connID
}

// tenant returns the connection's tenant, loading it once; ErrNotFound-matching error for a
// connection this store does not know.
func (d *Dispatcher) tenant(ctx context.Context, connID string) (string, error) {
	d.mu.Lock()
	st := d.stateLocked(connID)
	t := st.tenant
	d.mu.Unlock()
	if t != "" {
		return t, nil
	}
	err := d.cfg.Repository.View(ctx, connID, func(c *connection.Connection) error {
		if !c.Registered() {
			return &commands.NotFoundError{ConnectionID: connID}
		}
		t = c.TenantID()
		return nil
	})
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	st.tenant = t
	d.mu.Unlock()
	return t, nil
}

// asSystem returns ctx acting as the system principal of the connection's tenant.
func (d *Dispatcher) asSystem(ctx context.Context, connID string) (context.Context, error) {
	t, err := d.tenant(ctx, connID)
	if err != nil {
		return nil, err
	}
	return commands.WithPrincipal(ctx, commands.SystemPrincipal(t)), nil
}

// waitClock waits d on the injected clock; false when ctx ended first.
func (d *Dispatcher) waitClock(ctx context.Context, dur time.Duration) bool {
	if dur <= 0 {
		return ctx.Err() == nil
	}
	ch := make(chan struct{})
	t := d.cfg.Clock.AfterFunc(dur, func() { close(ch) })
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

// sleepReal waits d of real time; false when ctx ended first.
func sleepReal(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
