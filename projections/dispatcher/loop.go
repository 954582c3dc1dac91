package dispatcher

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// loop works one connection's queue until nothing is dispatchable and no wake arrived.
func (d *Dispatcher) loop(ctx context.Context, connID string, st *connState) {
	defer d.wg.Done()
	for {
		more := ctx.Err() == nil && d.turn(ctx, connID, st)
		if more {
			continue
		}
		d.mu.Lock()
		if st.dirty && ctx.Err() == nil {
			st.dirty = false
			d.mu.Unlock()
			continue
		}
		st.running = false
		st.run = nil // only connections being worked hold messages read ahead
		d.loops--
		d.m.activeLoops.Dec()
		d.notifyLocked()
		d.mu.Unlock()
		return
	}
}

// turn does one step and reports whether the loop should go on at once.
func (d *Dispatcher) turn(ctx context.Context, connID string, st *connState) bool {
	if d.isRetired(st) {
		return false
	}
	// The loop runs only while this node holds the connection's lease; a lease gained with a
	// new epoch means another owner dispatched meanwhile: recover its messages in flight.
	epoch, takeover, err := d.lease(ctx, connID, st)
	switch {
	case errors.Is(err, errLeaseHeldElsewhere), errors.Is(err, commands.ErrNotFound):
		return false
	case err != nil && ctx.Err() != nil: // stopping while it waited for a renewal
		return false
	case err != nil:
		return d.lag(ctx, connID, st, "lease", err)
	}
	if takeover {
		st.recovered, st.startedUp = false, false
		d.mu.Lock()
		st.forgetPolicyLocked() // read it afresh under the new lease
		d.mu.Unlock()
	}
	if !st.recovered {
		err := d.recover(ctx, connID, st)
		switch {
		case errors.Is(err, commands.ErrNotFound):
			return false
		case err != nil:
			return d.lag(ctx, connID, st, "recover", err)
		}
	}
	// The sending policy, read at every turn (see policy): pacing, quiet hours, daily cap.
	pol, err := d.policy(ctx, connID, st)
	switch {
	case errors.Is(err, commands.ErrNotFound):
		return false
	case err != nil:
		return d.lag(ctx, connID, st, "policy", err)
	}
	if ok, again, err := d.paced(ctx, connID, st, pol); err != nil {
		return d.lag(ctx, connID, st, "pacing", err)
	} else if !ok {
		return again
	}
	// When the pacing interval allowed this dispatch, if the loop has been working a backlog
	// since its last one (zero otherwise: unpaced, or the loop found its queue empty meanwhile).
	var allowed time.Time
	if st.run.inRun {
		allowed = st.nextAt(pol)
	}
	pctx, err := d.asSystem(ctx, connID)
	if err != nil {
		return !errors.Is(err, commands.ErrNotFound) && d.lag(ctx, connID, st, "load", err)
	}
	d.mu.Lock()
	st.dirty = false // a wake from here on is seen by the next turn
	d.mu.Unlock()
	run := st.run
	res, err := d.dispatch.Handle(withWindow(pctx, &run.window), commands.DispatchNext{ConnectionID: connID, Epoch: epoch, Head: run.head})
	run.head = commands.QueuedMessage{}
	var nd *commands.NotDispatchableError
	switch {
	case errors.Is(err, connection.ErrStaleEpoch):
		// Another node took the lease over and dispatched: this one lost it unseen.
		d.dropLease(connID, st)
		return false
	case errors.As(err, &nd) && nd.Code == connection.CodeConnectionRetired:
		d.releaseRetired(ctx, connID, st)
		return false
	case errors.As(err, &nd):
		if nd.Code == connection.CodeInFlightLimit {
			d.log.Warn("dispatch refused: too many messages in flight", "connection", connID)
		}
		return false
	case err != nil:
		if !errors.Is(err, ErrNotProjected) {
			// The MessageDispatched may be written even though the append failed: recover the
			// messages in flight (none is being sent here) before the next dispatch.
			st.recovered = false
		}
		return d.lag(ctx, connID, st, "dispatch", err)
	}
	st.lagBackoff = 0
	st.lastSeq, run.inRun = res.Message.Seq, true
	if res.Outcome == commands.DispatchExpired {
		d.stats.expired.Add(1)
		d.m.sends.WithLabelValues(OutcomeExpired).Inc()
		return true
	}
	d.stats.dispatched.Add(1)
	st.dayCount++
	// The next dispatch waits the interval from this one's recorded time (as after a restart,
	// when the last MessageDispatched is read from the stream), not from the end of the send
	// and of its outcome's append: at 10,000 sending connections those took ~0.7 s each, and
	// the paced rate fell to 0.85 of the allowed one.
	at := res.DispatchedAt
	if at.IsZero() { // not recorded by this call (a replay): count from now
		at = d.cfg.Clock.Now()
	}
	if !allowed.IsZero() && !res.DispatchedAt.IsZero() {
		late := max(res.DispatchedAt.Sub(allowed), 0)
		d.stats.paced.Add(1)
		d.stats.paceDelayNS.Add(uint64(late))
		d.m.paceDelay.Observe(late.Seconds())
	}
	d.paceAfter(st, at)
	d.send(ctx, pctx, connID, st, res.Message, res.Version)
	return true
}

// lag logs a transient failure (projection lag, store error) and waits a growing real-time
// pause before the next turn.
func (d *Dispatcher) lag(ctx context.Context, connID string, st *connState, op string, err error) bool {
	st.lagBackoff = min(max(2*st.lagBackoff, lagBackoffMin), lagBackoffMax)
	if errors.Is(err, ErrNotProjected) {
		d.log.Debug("waiting for the pending-queue projection", "connection", connID, "err", err)
	} else {
		d.log.Warn("dispatch step failed; retrying", "op", op, "connection", connID, "backoff", st.lagBackoff, "err", err)
	}
	return sleepReal(ctx, st.lagBackoff)
}

// recover records every message in flight unknown and has the daily count and the last
// hand-over read again from the stream (see paced). It runs before
// the first dispatch of a connection in this process (the messages in flight were dispatched by
// a process that died: cause CauseRestart), and again after a dispatch step failed on a store
// error (a MessageDispatched or MessageSendRetried written though its append reported a
// failure: CauseStoreError). A message in flight whose last hand-over the transport refused
// (MessageSendDeferred, no retry since) was provably never handed over: it is recorded failed
// not_sent instead.
// It runs on the connection's loop, which sends synchronously, so no message in flight has an
// outstanding send in this process: none is resent, none has an outcome still to be recorded.
func (d *Dispatcher) recover(ctx context.Context, connID string, st *connState) error {
	cause := CauseRestart
	if st.startedUp {
		cause = CauseStoreError
	}
	var inFlight []connection.InFlightMessage
	deferred := map[uuid.UUID]bool{}
	err := d.cfg.Repository.View(ctx, connID, func(c *connection.Connection) error {
		if !c.Registered() {
			return &commands.NotFoundError{ConnectionID: connID}
		}
		inFlight = c.InFlight()
		for _, m := range c.SendDeferred() {
			deferred[m.MessageID] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	pctx, err := d.asSystem(ctx, connID)
	if err != nil {
		return err
	}
	for _, m := range inFlight {
		ref := commands.MessageRef{ConnectionID: connID, MessageID: m.MessageID, Seq: m.Seq}
		if deferred[m.MessageID] {
			_, err := d.failed.Handle(pctx, commands.RecordFailed{MessageRef: ref, Code: CodeNotSent,
				Detail: "the transport refused the last hand-over; found deferred (" + cause + ")"})
			if err != nil && !errors.Is(err, connection.ErrNotInFlight) {
				return err
			}
			if err == nil {
				d.stats.failed.Add(1)
				d.m.sends.WithLabelValues(OutcomeNotSent).Inc()
				d.log.Info("message found deferred recorded failed not_sent", "cause", cause, "connection", connID, "message", m.MessageID, "seq", m.Seq)
			}
			continue
		}
		_, err := d.unknown.Handle(pctx, commands.RecordOutcomeUnknown{MessageRef: ref, Cause: cause})
		if err != nil && !errors.Is(err, connection.ErrNotInFlight) {
			return err
		}
		if err == nil {
			d.stats.recovered.Add(1)
			d.stats.unknown.Add(1)
			d.m.sends.WithLabelValues(OutcomeRecovered).Inc()
			d.log.Info("message found in flight recorded unknown", "cause", cause, "connection", connID, "message", m.MessageID, "seq", m.Seq)
		}
	}
	st.paceLoaded = false // the day's count and the last hand-over are read again from the stream
	st.recovered, st.startedUp = true, true
	return nil
}

// countDispatched counts the connection's MessageDispatched events of the local day starting
// at day, reading its stream backwards until a dispatch before the day (or an event recorded more
// than a day before it, which tolerates skew between the store's clock and ours). last is the
// DispatchedAt of the latest dispatch read (zero for none).
func (d *Dispatcher) countDispatched(ctx context.Context, connID string, day time.Time) (n int, last time.Time, err error) {
	stream := connection.StreamName(connID)
	from := eventstore.End
	floor := day.Add(-24 * time.Hour)
	for {
		evs, err := d.cfg.Store.ReadStream(ctx, stream, eventstore.Backwards, from, 4096)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return 0, time.Time{}, nil
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		for _, e := range evs {
			if e.RecordedAt.Before(floor) {
				return n, last, nil
			}
			if e.Type != connection.TypeMessageDispatched {
				continue
			}
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				return 0, time.Time{}, err
			}
			at := ev.(connection.MessageDispatched).DispatchedAt
			if last.IsZero() {
				last = at
			}
			if at.Before(day) {
				return n, last, nil
			}
			n++
		}
		if len(evs) == 0 || evs[len(evs)-1].Revision == 0 {
			return n, last, nil
		}
		from = evs[len(evs)-1].Revision - 1
	}
}

// send hands a dispatched message to the transport and records its outcome. fence is the stream
// revision of its MessageDispatched. Every hand-over is fenced by its own record (G1): when the
// transport refuses one (transport.Retryable: provably nothing was sent), MessageSendDeferred
// closes it, and a retry is handed over only after RetrySend appended MessageSendRetried at the
// expected revision; the domain refuses that when a clear, hold, ban or session loss was
// recorded since the dispatch, and the message is then recorded failed not_sent (or was failed
// not_sent by the clear already).
func (d *Dispatcher) send(ctx, pctx context.Context, connID string, st *connState, msg commands.QueuedMessage, fence int64) {
	ref := commands.MessageRef{ConnectionID: connID, MessageID: msg.MessageID, Seq: msg.Seq}
	d.remember(connID, msg.MessageID, msg.Seq)
	// Outcomes are recorded even when ctx ends (a shutdown mid-send): what happened is known.
	wctx := context.WithoutCancel(pctx)
	req := transport.SendRequest{ConnectionID: connID, MessageID: msg.MessageID, To: msg.Recipient, Text: msg.Text, Fence: uint64(fence)}
	backoff := d.cfg.RetryBackoff
	sends := d.sendContext(ctx) // outlives ctx while a graceful stop drains
	for attempt := 1; ; attempt++ {
		sctx, scancel := context.WithTimeout(sends, d.cfg.SendTimeout)
		start := time.Now()
		handedAt := d.cfg.Clock.Now()
		// The pacing counts from the hand-over: the first from its MessageDispatched (set by
		// the turn), a retried one from its own hand-over here.
		retried := attempt > 1
		res, err := d.cfg.Transport.Send(sctx, req)
		timedOut := errors.Is(sctx.Err(), context.DeadlineExceeded)
		scancel()
		switch {
		case err == nil:
			d.m.latency.Observe(time.Since(start).Seconds())
			if retried {
				d.paceAfter(st, handedAt)
			}
			d.record(ctx, wctx, OutcomeSent, ref, func(rctx context.Context) error {
				_, err := d.sent.Handle(rctx, commands.RecordSent{MessageRef: ref, ServerID: res.WAMessageID})
				return err
			})
			return
		case transport.Retryable(err):
			label := OutcomeRateLimited
			if errors.Is(err, transport.ErrNotConnected) {
				label = OutcomeNotConnected
			}
			d.m.sends.WithLabelValues(label).Inc()
			// The hand-over this fence allowed did not happen: say so before anything else, so a
			// clear from here on fails the message not_sent instead of counting it in flight.
			if !d.persist(ctx, wctx, "defer send", ref, func(rctx context.Context) error {
				_, err := d.deferSend.Handle(rctx, commands.DeferSend{MessageRef: ref, Reason: label})
				return err
			}) {
				return
			}
			wait := backoff
			var se *transport.SendError
			if errors.As(err, &se) && se.RetryAfter > wait {
				wait = se.RetryAfter
			}
			backoff = min(2*backoff, d.cfg.MaxRetryBackoff)
			// Rate-limit refusals are bounded by MaxSendAttempts. Not-connected refusals are not:
			// a network outage must not drain the queue into failures; the message waits for the
			// connection until the domain refuses the retry (a ban, session loss, hold or clear
			// recorded since the dispatch: an operator can always end the wait by holding the queue).
			exhausted := label == OutcomeRateLimited && attempt >= d.cfg.MaxSendAttempts
			if exhausted || !d.waitClock(ctx, wait) {
				d.recordFailed(ctx, wctx, ref, CodeNotSent, err.Error())
				return
			}
			// The retry is a hand-over: only under a valid lease, with its epoch. Without one the
			// message stays deferred; the next owner's recovery records it failed not_sent.
			epoch, takeover, lerr := d.lease(ctx, connID, st)
			if lerr != nil || takeover {
				d.log.Info("lease not held at a retry; leaving the deferred message to the next owner", "connection", connID,
					"message", ref.MessageID, "seq", ref.Seq, "err", lerr)
				st.recovered = false
				if takeover {
					st.startedUp = false
				}
				return
			}
			rctx, cancel := context.WithTimeout(wctx, recordTimeout)
			rr, rerr := d.retrySend.Handle(rctx, commands.RetrySend{MessageRef: ref, Epoch: epoch})
			cancel()
			switch {
			case errors.Is(rerr, connection.ErrStaleEpoch):
				d.dropLease(connID, st)
				return
			case rerr == nil:
				req.Fence = uint64(rr.Version)
				d.stats.retries.Add(1)
			case errors.Is(rerr, connection.ErrNotInFlight):
				// A clear failed it not_sent meanwhile: nothing was handed over, nothing to record.
				d.m.sends.WithLabelValues(OutcomeNotSent).Inc()
				d.log.Info("deferred message ended by a clear before its retry", "connection", connID, "message", ref.MessageID, "seq", ref.Seq)
				return
			case commands.IsRefusal(rerr):
				d.log.Info("retry refused by the domain; recording not_sent", "connection", connID, "message", ref.MessageID, "seq", ref.Seq, "err", rerr)
				d.recordFailed(ctx, wctx, ref, CodeNotSent, rerr.Error())
				return
			default:
				// The MessageSendRetried may be written though the append reported a failure: the
				// recovery decides from the stream (retried: unknown, never resent; still
				// deferred: failed not_sent).
				d.log.Warn("fencing a retry failed; recovering the connection's messages in flight", "connection", connID,
					"message", ref.MessageID, "seq", ref.Seq, "err", rerr)
				st.recovered = false
				return
			}
		case errors.Is(err, transport.ErrRejected):
			if retried {
				d.paceAfter(st, handedAt)
			}
			d.recordFailed(ctx, wctx, ref, CodeRejected, err.Error())
			return
		default: // ErrOutcomeUnknown, or an adapter error outside the contract: never resend.
			d.m.latency.Observe(time.Since(start).Seconds())
			if retried {
				d.paceAfter(st, handedAt)
			}
			cause := CauseUnknown
			switch {
			case sends.Err() != nil:
				cause = CauseShutdown
			case timedOut:
				cause = CauseTimeout
			}
			d.record(ctx, wctx, OutcomeUnknown, ref, func(rctx context.Context) error {
				_, err := d.unknown.Handle(rctx, commands.RecordOutcomeUnknown{MessageRef: ref, Cause: cause})
				return err
			})
			return
		}
	}
}

// recordFailed records a MessageFailed through record.
func (d *Dispatcher) recordFailed(ctx, wctx context.Context, ref commands.MessageRef, code, detail string) {
	if len(detail) > connection.MaxNoteLen {
		detail = detail[:connection.MaxNoteLen]
	}
	label := OutcomeFailed
	if code == CodeNotSent {
		label = OutcomeNotSent
	}
	d.record(ctx, wctx, label, ref, func(rctx context.Context) error {
		_, err := d.failed.Handle(rctx, commands.RecordFailed{MessageRef: ref, Code: code, Detail: detail})
		return err
	})
}

// record runs an outcome command through persist, counting it.
func (d *Dispatcher) record(ctx, wctx context.Context, label string, ref commands.MessageRef, do func(context.Context) error) {
	d.m.sends.WithLabelValues(label).Inc()
	switch label {
	case OutcomeSent:
		d.stats.sent.Add(1)
	case OutcomeUnknown:
		d.stats.unknown.Add(1)
	default:
		d.stats.failed.Add(1)
	}
	d.persist(ctx, wctx, label, ref, do)
}

// persist runs a command about a dispatched message and reports whether it was recorded. Each
// attempt gets a context derived from wctx (which must not be cancelled: what happened is known
// and is recorded even at shutdown) with recordTimeout. A refusal because the message is no
// longer in flight (a receipt acknowledged it first, a clear failed it not_sent, or an earlier
// attempt was written though it reported a failure) is not an error; another refusal by the
// domain is logged and not retried. Any other failure (the store is unreachable) is retried with
// a growing real-time pause for as long as ctx, Run's context, lasts: what is known now is still
// true once the store is back. If ctx ends first, the message stays in flight and the next
// process's start records it unknown (or failed not_sent if it was deferred).
func (d *Dispatcher) persist(ctx, wctx context.Context, label string, ref commands.MessageRef, do func(context.Context) error) bool {
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(wctx, recordTimeout)
		err := do(rctx)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				d.log.Info("send outcome recorded after store failures", "outcome", label, "connection", ref.ConnectionID,
					"message", ref.MessageID, "attempts", attempt)
			}
			return true
		case errors.Is(err, connection.ErrNotInFlight) || errors.Is(err, eventstore.ErrDuplicateEventID):
			// Acknowledged already: a receipt, a clear that failed it not_sent (whose MessageFailed
			// has the same event id), or an earlier attempt written though it reported a failure.
			d.log.Debug("message no longer in flight", "outcome", label, "connection", ref.ConnectionID, "message", ref.MessageID)
			return false
		case commands.IsRefusal(err):
			d.log.Error("recording a send outcome refused by the domain", "outcome", label, "connection", ref.ConnectionID,
				"message", ref.MessageID, "seq", ref.Seq, "err", err)
			return false
		}
		backoff = min(max(2*backoff, lagBackoffMin), lagBackoffMax)
		if ctx.Err() != nil || !sleepReal(ctx, backoff) {
			d.log.Error("recording a send outcome failed at shutdown; the message stays in flight until the next start recovers it",
				"outcome", label, "connection", ref.ConnectionID, "message", ref.MessageID, "seq", ref.Seq, "attempts", attempt, "err", err)
			return false
		}
		if attempt == 1 || attempt%20 == 0 {
			d.log.Warn("recording a send outcome failed; retrying", "outcome", label, "connection", ref.ConnectionID,
				"message", ref.MessageID, "seq", ref.Seq, "attempts", attempt, "backoff", backoff, "err", err)
		}
	}
}
