package dispatcher

import (
	"context"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// pacing is the sending policy a loop applies at one turn.
type pacing struct {
	// unpaced: the server-wide override (Config.Pacing.Unpaced); the rest is unset.
	unpaced bool
	policy  connection.SendingPolicy
	loc     *time.Location
}

// policy returns the pacing connection connID's loop applies now: none under the server-wide
// override Config.Pacing.Unpaced (which wins over every connection's policy), else the
// connection's recorded sending policy (connection.Connection.SendingPolicy: the defaults until
// a SendingPolicyChanged). It is the one place the loop reads the policy. The policy read from
// the aggregate (the store, catching up the repository's cache) is kept in st until the event
// log shows a SendingPolicyChanged of the connection (policyChanged, which also interrupts a
// pacing wait) or the lease changes hands, so a change applies, on whichever node holds the
// lease and without a restart, once the dispatcher's subscription has seen it — and a turn
// costs no read of the stream (at 10,000 sending connections that read was one of the ~6
// database transactions per message).
func (d *Dispatcher) policy(ctx context.Context, connID string, st *connState) (pacing, error) {
	if d.cfg.Pacing.Unpaced {
		return pacing{unpaced: true}, nil
	}
	d.mu.Lock()
	cached, gen := st.policy, st.policyGen
	d.mu.Unlock()
	if cached != nil {
		return pacing{policy: *cached, loc: d.location(connID, cached.TimeZone)}, nil
	}
	var p connection.SendingPolicy
	err := d.cfg.Repository.View(ctx, connID, func(c *connection.Connection) error {
		if !c.Registered() {
			return &commands.NotFoundError{ConnectionID: connID}
		}
		p = c.SendingPolicy()
		return nil
	})
	if err != nil {
		return pacing{}, err
	}
	d.mu.Lock()
	if st.policyGen == gen { // no change seen while reading: the read is current enough to keep
		st.policy = &p
	}
	d.mu.Unlock()
	return pacing{policy: p, loc: d.location(connID, p.TimeZone)}, nil
}

// forgetPolicyLocked drops st's cached sending policy: the next turn reads it from the aggregate.
// Callers hold d.mu.
func (st *connState) forgetPolicyLocked() {
	st.policy = nil
	st.policyGen++
}

// location loads the IANA zone tz once per process. A zone that does not load here (the
// command checked that it loads where it was recorded; the binary embeds the zone database)
// falls back to UTC with a warning rather than stopping the connection.
func (d *Dispatcher) location(connID, tz string) *time.Location {
	d.mu.Lock()
	loc, ok := d.zones[tz]
	d.mu.Unlock()
	if ok {
		return loc
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		d.log.Warn("sending policy time zone does not load; using UTC", "connection", connID, "time_zone", tz, "err", err)
		loc = time.UTC
	}
	d.mu.Lock()
	d.zones[tz] = loc
	d.mu.Unlock()
	return loc
}

// nextAt is the earliest time the next message may be handed over under p: the last hand-over
// plus the minimum interval plus the jitter drawn after it (the drawn fraction of p's jitter, so
// that a change of either applies at once, also to a wait in progress).
func (st *connState) nextAt(p pacing) time.Time {
	if p.unpaced || st.lastAt.IsZero() {
		return time.Time{}
	}
	return st.lastAt.Add(p.policy.MinInterval + time.Duration(st.jitterU*float64(p.policy.Jitter)))
}

// paced applies the policy before a dispatch, in this order: quiet hours, daily cap, pacing
// interval. It reports ok when a message may be handed over now. Otherwise the loop either
// exits (again=false) leaving a timer that wakes it at the end of the quiet hours or at the
// next local midnight (daily cap), or waits out the pacing interval on the clock and takes
// another turn (again=true; a policy change interrupts the wait). A quiet or capped
// connection's messages wait in the queue; nothing fails.
func (d *Dispatcher) paced(ctx context.Context, connID string, st *connState, p pacing) (ok, again bool, err error) {
	if p.unpaced {
		return true, false, nil
	}
	now := d.cfg.Clock.Now()
	if !st.paceLoaded {
		// The daily count and the last hand-over hold across processes and lease moves: both
		// come from the connection's stream (the last dispatch may be another node's).
		day, _ := connection.Day(now, p.loc)
		n, last, err := d.countDispatched(ctx, connID, day)
		if err != nil {
			return false, false, err
		}
		st.day, st.dayCount, st.paceLoaded = day, n, true
		if last.After(st.lastAt) {
			st.lastAt, st.jitterU = last, 0
		}
	}
	if until, quiet := p.policy.QuietUntil(now, p.loc); quiet {
		d.sleepUntil(connID, st, now, until, "quiet hours; messages wait")
		return false, false, nil
	}
	day, next := connection.Day(now, p.loc)
	if !day.Equal(st.day) {
		// A new day, or another time zone: count the day's dispatches from the stream.
		n, _, err := d.countDispatched(ctx, connID, day)
		if err != nil {
			return false, false, err
		}
		st.day, st.dayCount = day, n
	}
	if st.dayCount >= p.policy.DailyCap {
		d.sleepUntil(connID, st, now, next, "daily cap reached; messages wait for the next local day")
		return false, false, nil
	}
	if at := st.nextAt(p); at.After(now) {
		d.prefetchHead(ctx, connID, st)
		// The wait ends when the interval does, however long the read took.
		if !d.waitPace(ctx, st, max(at.Sub(d.cfg.Clock.Now()), 0)) {
			return false, false, nil
		}
		return false, true, nil // the hour, the policy or the lease may have changed meanwhile
	}
	return true, false, nil
}

// sleepUntil leaves a timer that wakes the connection's loop at at (a timer, no goroutine), once:
// a timer already set for that time is kept, one for another time replaced.
func (d *Dispatcher) sleepUntil(connID string, st *connState, now, at time.Time, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.wakeTimer != nil && st.wakeAt.Equal(at) {
		return
	}
	if st.wakeTimer != nil {
		st.wakeTimer.Stop()
	}
	d.log.Info("pausing the connection: "+why, "connection", connID, "until", at, "resume_in", at.Sub(now))
	var t transport.Timer
	t = d.cfg.Clock.AfterFunc(at.Sub(now), func() {
		d.mu.Lock()
		if st.wakeTimer == t {
			st.wakeTimer = nil
		}
		d.mu.Unlock()
		d.Wake(connID)
	})
	st.wakeTimer, st.wakeAt = t, at
}

// waitPace waits dur on the injected clock, or until the connection's policy changed (poke);
// false when ctx ended first.
func (d *Dispatcher) waitPace(ctx context.Context, st *connState, dur time.Duration) bool {
	ch := make(chan struct{})
	t := d.cfg.Clock.AfterFunc(dur, func() { close(ch) })
	select {
	case <-ch:
		return true
	case <-st.run.poke:
		t.Stop()
		return ctx.Err() == nil
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

// policyChanged interrupts a pacing wait of connID's loop, so that a new policy applies at once
// (the SendingPolicyChanged also wakes a loop that is not running: see WakeEventTypes).
func (d *Dispatcher) policyChanged(connID string) {
	d.mu.Lock()
	st := d.stateLocked(connID)
	st.forgetPolicyLocked()
	run := st.run
	d.mu.Unlock()
	if run == nil {
		return // no loop waits
	}
	select {
	case run.poke <- struct{}{}:
	default:
	}
}

// paceAfter records a hand-over at at for the pacing: the next one waits the interval plus a
// freshly drawn jitter fraction after it.
func (d *Dispatcher) paceAfter(st *connState, at time.Time) {
	if d.cfg.Pacing.Unpaced {
		return
	}
	d.mu.Lock()
	u := d.rng.Float64()
	d.mu.Unlock()
	st.lastAt, st.jitterU = at, u
}

// prefetchHead reads, before a pacing wait, the message expected at the head once the wait is
// over (the one after the last dispatched: a broadcast's messages follow each other), so that
// the dispatch after the wake-up need not read it (DispatchNext.Head): at 10,000 paced loops
// on two busy cores that read, queued on the connection pool, lengthened every interval. A
// failure or a miss costs nothing: DispatchNext reads the head it finds.
func (d *Dispatcher) prefetchHead(ctx context.Context, connID string, st *connState) {
	run := st.run
	if st.lastSeq == 0 || run.head.Seq == st.lastSeq+1 {
		return
	}
	d.mu.Lock()
	tenant := st.tenant
	d.mu.Unlock()
	if tenant == "" {
		return
	}
	// Through the loop's window: one read for windowSize paced messages.
	m, err := windowed{inner: d.cfg.Messages}.QueuedMessage(withWindow(ctx, &run.window), connection.Key(tenant, connID), st.lastSeq+1)
	if err != nil || m.Seq != st.lastSeq+1 {
		return
	}
	run.head = m
}
