package dispatcher_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

func TestConfigValidate(t *testing.T) {
	if err := (dispatcher.Config{}).Validate(); err == nil {
		t.Fatal("empty config validated")
	}
	_, err := dispatcher.New(dispatcher.Config{SendTimeout: -time.Second})
	for _, want := range []string{"Store", "Repository", "Messages", "Transport", "SendTimeout"} {
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("New error %v does not name %s", err, want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A message goes queued → dispatched → sent → delivered → read, receipts coming from the
// simulator after delays on the manual clock.
func TestMessageLifecycle(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.sim.SetScript(key("c1"), simulator.Script{Receipts: simulator.Receipts{Delivered: true, DeliveredAfter: time.Second, Read: true, ReadAfter: 2 * time.Second}})
	d := h.start(nil)
	h.registerPaired("c1", d)
	var ids []uuid.UUID
	for _, k := range []string{"a", "bb", "ccc"} {
		ids = append(ids, h.enqueueOne("c1", k, 0).MessageID)
	}
	h.eventually("3 sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 3 })
	// Delivered receipts first, then the read ones: one Advance past both lets their timers fire
	// together, and a read handled before its delivered receipt (as WhatsApp may also send them)
	// leaves no "delivered" step in the history (seen once in a full run).
	h.clock.Advance(1500 * time.Millisecond)
	h.eventually("3 delivered", func() bool { return count[connection.MessageDelivered](h.history("c1")) == 3 })
	h.clock.Advance(1500 * time.Millisecond)
	h.eventually("3 read", func() bool { return count[connection.MessageRead](h.history("c1")) == 3 })
	pos := h.lastPosition("c1", connection.TypeMessageRead)
	h.waitProjections(pos, projections.MessageStatusName)
	want := []connection.MessageStatus{connection.MessageStatusQueued, connection.MessageStatusDispatched,
		connection.MessageStatusSent, connection.MessageStatusDelivered, connection.MessageStatusRead}
	for _, id := range ids {
		v, err := h.status.Message(context.Background(), h.env.db, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		var got []connection.MessageStatus
		for _, c := range v.History {
			got = append(got, c.Status)
		}
		if len(got) != len(want) {
			t.Fatalf("message %s history %v, want %v", id, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("message %s history %v, want %v", id, got, want)
			}
		}
		if n := h.sim.SendCount(id); n != 1 {
			t.Errorf("message %s handed over %d times, want 1", id, n)
		}
	}
	if s := d.Stats(); s.Sent != 3 || s.Dispatched != 3 {
		t.Errorf("stats %+v, want 3 dispatched and sent", s)
	}
	h.checkInvariants("c1")
}

// Pacing: consecutive sends are at least MinInterval and at most MinInterval+Jitter apart on the
// manual clock, and the daily cap stops the loop until the next UTC midnight.
func TestPacingAndDailyCap(t *testing.T) {
	h := newHarness(t, openSQLite)
	// Start just before midnight so the cap's wake-up is near.
	h.clock.Advance(14*time.Hour + 59*time.Minute) // 23:59 UTC
	const minIv, jitter, step = 3 * time.Second, time.Second, 100 * time.Millisecond
	d := h.start(paced)
	h.registerPaired("c1", d)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(minIv), Jitter: ptr(jitter), DailyCap: ptr(4)})
	for _, k := range []string{"a", "bb", "ccc", "dddd", "eeeee", "ffffff"} {
		h.enqueueOne("c1", k, 0)
	}
	sent := func() int { return len(h.sends("c1")) }
	drive := func(until int) {
		for sent() < until {
			if !h.clock.WaitForTimers(1, testwait.Limit) {
				t.Fatalf("no timer pending with %d of %d sent", sent(), until)
			}
			h.clock.Advance(step)
		}
	}
	drive(4)
	// The fifth waits for the cap: the loop exits (no goroutine) leaving a timer at midnight.
	if !h.clock.WaitForTimers(1, testwait.Limit) {
		t.Fatal("no timer after the fourth send")
	}
	h.clock.Advance(minIv + jitter)
	h.eventually("cap timer armed", func() bool { return h.clock.Pending() == 1 && d.ActiveLoops() == 0 })
	if n := sent(); n != 4 {
		t.Fatalf("sent %d before the cap, want 4", n)
	}
	drive(6)
	recs := h.sim.Sends()
	midnight := time.Date(2030, 5, 7, 0, 0, 0, 0, time.UTC)
	var gaps []time.Duration
	for i := 1; i < len(recs); i++ {
		gap := recs[i].At.Sub(recs[i-1].At)
		if i == 4 {
			if recs[i].At.Before(midnight) {
				t.Errorf("fifth send at %s, before the next UTC day", recs[i].At)
			}
			continue
		}
		gaps = append(gaps, gap)
		if gap < minIv || gap > minIv+jitter+step {
			t.Errorf("gap %d = %s, want within [%s, %s]", i, gap, minIv, minIv+jitter+step)
		}
	}
	distinct := map[time.Duration]bool{}
	for _, g := range gaps {
		distinct[g] = true
	}
	if len(distinct) < 2 {
		t.Errorf("gaps %v show no jitter", gaps)
	}
	h.checkInvariants("c1")
}

// A clear racing the dispatcher: nothing the clear covers is dispatched after the request, and
// the sums reconcile.
func TestClearRacingDispatcher(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(nil)
	h.registerPaired("c1", d)
	const n = 300
	h.startBroadcast("c1", n)
	h.eventually("some sent", func() bool { return len(h.sends("c1")) >= 20 })
	res, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "clr", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually("clear completed", func() bool { return count[connection.QueueCleared](h.history("c1")) == 1 })
	h.idle(d, h.lastPosition("c1", connection.TypeQueueCleared))
	rep := h.checkInvariants("c1")
	hist := h.history("c1")
	dispatched := count[connection.MessageDispatched](hist)
	if got := uint64(dispatched) + res.Requested.PurgeCount; got != n {
		t.Errorf("dispatched %d + purged %d = %d, want %d", dispatched, res.Requested.PurgeCount, got, n)
	}
	if res.Requested.PurgeCount == 0 {
		t.Error("the clear purged nothing: the race was not exercised")
	}
	if rep.Sends != len(h.sends("c1")) || len(h.sends("c1")) > dispatched {
		t.Errorf("sends %d, dispatched %d", len(h.sends("c1")), dispatched)
	}
	if len(rep.Pending) != 0 {
		t.Errorf("pending after clear: %v", rep.Pending)
	}
}

// A ban in the middle of a broadcast holds the queue; nothing is sent while banned; the lift
// does not resume; an operator's resume continues.
func TestBanHoldsLiftDoesNotResume(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.autoAdvance(100 * time.Millisecond)
	h.sim.SetScript(key("c1"), simulator.Script{BanAfter: 10, Ban: simulator.Ban{Code: 104, Expire: 10_000 * time.Hour}})
	d := h.start(nil)
	h.registerPaired("c1", d)
	const n = 40
	h.startBroadcast("c1", n)
	h.eventually("held on ban", func() bool {
		return h.linkStatus("c1") == connection.LinkStatusBanned && h.queueStatus("c1") == connection.QueueStatusHeld
	})
	h.eventually("no message in flight", func() bool { return len(invariants.Check(h.history("c1"), nil).InFlight) == 0 })
	if got := len(h.sends("c1")); got != 10 {
		t.Fatalf("sent %d, want exactly the 10 before the ban", got)
	}
	if err := h.sim.LiftBan(key("c1")); err != nil {
		t.Fatal(err)
	}
	h.eventually("lift recorded", func() bool { return h.linkStatus("c1") == connection.LinkStatusActive })
	h.idle(d, h.lastPosition("c1", connection.TypeBanLifted))
	if got := len(h.sends("c1")); got != 10 {
		t.Fatalf("sent %d after the lift, want still 10", got)
	}
	if h.queueStatus("c1") != connection.QueueStatusHeld {
		t.Fatalf("queue %v after the lift, want held", h.queueStatus("c1"))
	}
	h.checkInvariants("c1") // G7: nothing dispatched after the lift without a resume
	if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "ok"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("all disposed", func() bool {
		r := invariants.Check(h.history("c1"), nil)
		return len(r.Pending) == 0 && len(r.InFlight) == 0
	})
	hist := h.history("c1")
	sentN, failedN := count[connection.MessageSent](hist), count[connection.MessageFailed](hist)
	if sentN+failedN != n || sentN != len(h.sends("c1")) || failedN > 1 {
		t.Errorf("sent %d + failed %d (sends %d), want %d with at most one dispatched across the ban", sentN, failedN, len(h.sends("c1")), n)
	}
	h.checkInvariants("c1")
}

// Transport events become domain events: a logout invalidates the session and holds the queue;
// a permanent ban is recorded; a receipt for a message that is not ours is ignored.
func TestTransportEvents(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(nil)
	h.registerPaired("c1", d)
	h.registerPaired("c2", d)
	if err := h.sim.Logout(key("c1"), 401); err != nil {
		t.Fatal(err)
	}
	h.eventually("session invalid", func() bool {
		return h.linkStatus("c1") == connection.LinkStatusSessionInvalid && h.queueStatus("c1") == connection.QueueStatusHeld
	})
	if err := h.sim.Ban(key("c2"), simulator.Ban{Permanent: true}); err != nil {
		t.Fatal(err)
	}
	h.eventually("banned", func() bool { return h.linkStatus("c2") == connection.LinkStatusBanned })
	var ban connection.BanInfo
	_ = h.repo.View(context.Background(), key("c2"), func(c *connection.Connection) error { ban, _ = c.CurrentBan(); return nil })
	if ban.Kind != connection.BanPermanent {
		t.Errorf("ban %+v, want permanent", ban)
	}
	// Pairing again through the simulator records SessionPaired (the queue stays held: policy hold).
	if _, err := h.sim.PairQR(context.Background(), key("c1")); err != nil {
		t.Fatal(err)
	}
	h.eventually("paired again", func() bool { return h.linkStatus("c1") == connection.LinkStatusActive })
	if h.queueStatus("c1") != connection.QueueStatusHeld {
		t.Errorf("queue %v after pairing, want held", h.queueStatus("c1"))
	}
}

// Crash recovery: a message dispatched by a process that died (handed over or not) is recorded
// unknown by the next process and never handed over again; the rest of the queue proceeds.
func TestCrashRecoveryNeverResends(t *testing.T) {
	for _, handedOver := range []bool{true, false} {
		t.Run(map[bool]string{true: "handed-over", false: "not-handed-over"}[handedOver], func(t *testing.T) {
			h := newHarness(t, openSQLite)
			h.registerOnly("c1")
			if err := h.sim.Connect(context.Background(), key("c1")); err != nil { // pairs (AssumePaired); no handler yet
				t.Fatal(err)
			}
			if _, err := h.pair.Handle(commands.WithPrincipal(context.Background(), commands.SystemPrincipal(tenant)),
				commands.PairingSucceeded{ConnectionID: "c1"}); err != nil {
				t.Fatal(err)
			}
			first := h.enqueueOne("c1", "a", 0)
			second := h.enqueueOne("c1", "bb", 0)
			// The "previous process": dispatch the head, maybe hand it over, then die.
			dn, err := commands.NewDispatchNextHandler(h.repo, dispatcher.QueueMessages{DB: h.env.db, Queue: h.queue},
				func() time.Time { return h.clock.Now() })
			if err != nil {
				t.Fatal(err)
			}
			var res commands.DispatchNextResult
			h.eventually("dispatched by the dead process", func() bool {
				res, err = dn.Handle(commands.WithPrincipal(context.Background(), commands.SystemPrincipal(tenant)),
					commands.DispatchNext{ConnectionID: "c1"})
				return err == nil
			})
			if res.Message.MessageID != first.MessageID {
				t.Fatalf("dispatched %s, want the head %s", res.Message.MessageID, first.MessageID)
			}
			if handedOver {
				if _, err := h.sim.Send(context.Background(), transport.SendRequest{ConnectionID: key("c1"),
					MessageID: res.Message.MessageID, To: res.Message.Recipient, Text: res.Message.Text, Fence: uint64(res.Version)}); err != nil {
					t.Fatal(err)
				}
			}
			d := h.start(nil)
			h.eventually("second sent", func() bool { return h.sim.SendCount(second.MessageID) == 1 })
			h.idle(d, h.lastPosition("c1", connection.TypeMessageQueued))
			want := map[bool]int{true: 1, false: 0}[handedOver]
			if n := h.sim.SendCount(first.MessageID); n != want {
				t.Errorf("first message handed over %d times, want %d", n, want)
			}
			var cause string
			for _, r := range h.history("c1") {
				if u, ok := r.Event.(connection.MessageOutcomeUnknown); ok && u.MessageID == first.MessageID {
					cause = u.Cause
				}
			}
			if cause != dispatcher.CauseRestart {
				t.Errorf("first message outcome-unknown cause %q, want %q", cause, dispatcher.CauseRestart)
			}
			if s := d.Stats(); s.Recovered != 1 {
				t.Errorf("recovered %d, want 1", s.Recovered)
			}
			h.checkInvariants("c1")
		})
	}
}

// Shutdown in the middle of a send whose acknowledgement does not come within the drain
// timeout: the message is recorded unknown (cause shutdown) and a restarted dispatcher does not
// send it again.
func TestShutdownMidSendEndsUnknown(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.sim.SetScript(key("c1"), simulator.Script{Latency: time.Hour}) // the manual clock never gets there
	d := h.start(func(c *dispatcher.Config) { c.DrainTimeout = 20 * time.Millisecond })
	h.registerPaired("c1", d)
	m := h.enqueueOne("c1", "a", 0)
	h.eventually("handed over", func() bool { return h.sim.SendCount(m.MessageID) == 1 })
	d.stop()
	var cause string
	for _, r := range h.history("c1") {
		if u, ok := r.Event.(connection.MessageOutcomeUnknown); ok {
			cause = u.Cause
		}
	}
	if cause != dispatcher.CauseShutdown {
		t.Fatalf("outcome-unknown cause %q, want %q", cause, dispatcher.CauseShutdown)
	}
	h.sim.SetScript(key("c1"), simulator.Script{})
	d2 := h.start(nil)
	m2 := h.enqueueOne("c1", "bb", 0)
	h.eventually("next sent", func() bool { return h.sim.SendCount(m2.MessageID) == 1 })
	h.idle(d2, h.lastPosition("c1", connection.TypeMessageQueued))
	if n := h.sim.SendCount(m.MessageID); n != 1 {
		t.Errorf("message handed over %d times, want 1", n)
	}
	h.checkInvariants("c1")
}

// A graceful stop drains (issue 15.2): the sends in progress when Run's context ends finish and
// are recorded sent — not unknown, as they were before the drain (a rolling restart of one node
// of three left ~47 outcomes unknown in TestMultiNodeTakeover) — and nothing more is dispatched.
func TestGracefulStopDrainsSendsInProgress(t *testing.T) {
	h := newHarness(t, openSQLite)
	conns := []string{"c1", "c2", "c3"}
	for _, c := range conns {
		h.sim.SetScript(key(c), simulator.Script{Latency: time.Minute}) // acknowledged when the test advances the clock
	}
	// The drain may take as long as a busy machine needs: the clock, not real time, ends the sends.
	d := h.start(func(c *dispatcher.Config) { c.DrainTimeout = testwait.Limit })
	first := map[string]commands.EnqueueResult{}
	for _, c := range conns {
		h.registerPaired(c, d)
		first[c] = h.enqueueOne(c, "a-"+c, 0)
		h.enqueueOne(c, "bb-"+c, 0)
	}
	for _, c := range conns {
		m := first[c]
		h.eventually("handed over", func() bool { return h.sim.SendCount(m.MessageID) == 1 })
	}
	// The simulator records a send before it arms its acknowledgement: wait for the three
	// timers, or the advance below could come first and leave a send unanswered.
	acks := map[int64]int{} // by deadline, in Unix nanoseconds
	for _, s := range h.sim.Sends() {
		acks[s.At.Add(time.Minute).UnixNano()]++
	}
	h.eventually("three acknowledgements armed", func() bool {
		armed := map[int64]int{}
		for _, at := range h.clock.Deadlines() {
			armed[at.UnixNano()]++
		}
		for at, n := range acks {
			if armed[at] < n {
				return false
			}
		}
		return true
	})
	d.cancel() // the graceful stop starts; the three sends are waiting for their acknowledgements
	h.clock.Advance(time.Minute)
	if err := <-d.done; err != nil {
		t.Fatal(err)
	}
	d.cancel = nil
	for _, c := range conns {
		hist := h.history(c)
		if n := count[connection.MessageOutcomeUnknown](hist); n != 0 {
			t.Errorf("%s: %d outcomes unknown after a graceful stop, want 0", c, n)
		}
		if n := count[connection.MessageSent](hist); n != 1 {
			t.Errorf("%s: %d messages recorded sent, want 1 (the one in progress)", c, n)
		}
		if n := count[connection.MessageDispatched](hist); n != 1 {
			t.Errorf("%s: %d messages dispatched, want 1 (nothing after the stop began)", c, n)
		}
		h.checkInvariants(c)
	}
}

// A send that times out is recorded unknown (cause timeout), never resent.
func TestSendTimeoutEndsUnknown(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.sim.SetScript(key("c1"), simulator.Script{Latency: time.Hour})
	d := h.start(func(c *dispatcher.Config) { c.SendTimeout = 50 * time.Millisecond })
	h.registerPaired("c1", d)
	a := h.enqueueOne("c1", "a", 0)
	b := h.enqueueOne("c1", "bb", 0)
	h.eventually("both unknown", func() bool { return count[connection.MessageOutcomeUnknown](h.history("c1")) == 2 })
	for _, r := range h.history("c1") {
		if u, ok := r.Event.(connection.MessageOutcomeUnknown); ok && u.Cause != dispatcher.CauseTimeout {
			t.Errorf("cause %q, want %q", u.Cause, dispatcher.CauseTimeout)
		}
	}
	if h.sim.SendCount(a.MessageID) != 1 || h.sim.SendCount(b.MessageID) != 1 {
		t.Errorf("send counts %d, %d, want 1, 1", h.sim.SendCount(a.MessageID), h.sim.SendCount(b.MessageID))
	}
	h.checkInvariants("c1")
}

// Rate-limited answers (nothing sent) are retried with backoff until the message goes out once.
func TestRateLimitRetried(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.autoAdvance(time.Second)
	h.sim.SetScript(key("c1"), simulator.Script{RateLimitRate: 0.5, RateLimitRetryAfter: 2 * time.Second})
	d := h.start(func(c *dispatcher.Config) { c.MaxSendAttempts = 100 })
	h.registerPaired("c1", d)
	const n = 12
	h.startBroadcast("c1", n)
	h.eventually("all sent", func() bool { return count[connection.MessageSent](h.history("c1")) == n })
	if s := d.Stats(); s.Retries == 0 {
		t.Errorf("no retries with a 50%% rate limit: %+v", s)
	}
	for _, s := range h.sends("c1") {
		if c := h.sim.SendCount(s.MessageID); c != 1 {
			t.Errorf("message %s handed over %d times", s.MessageID, c)
		}
	}
	if got := len(h.sends("c1")); got != n {
		t.Errorf("handed over %d, want %d", got, n)
	}
	h.checkInvariants("c1")
}

// An expired head is recorded expired instead of being sent; the next message goes out.
func TestTTLExpiry(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(nil)
	h.registerPaired("c1", d)
	if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "wait"}); err != nil {
		t.Fatal(err)
	}
	short := h.enqueueOne("c1", "a", time.Minute)
	long := h.enqueueOne("c1", "bb", time.Hour)
	h.clock.Advance(2 * time.Minute)
	if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("second sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 1 })
	h.eventually("first expired", func() bool { return count[connection.MessageExpired](h.history("c1")) == 1 })
	if h.sim.SendCount(short.MessageID) != 0 || h.sim.SendCount(long.MessageID) != 1 {
		t.Errorf("send counts %d, %d, want 0, 1", h.sim.SendCount(short.MessageID), h.sim.SendCount(long.MessageID))
	}
	if s := d.Stats(); s.Expired != 1 {
		t.Errorf("expired %d, want 1", s.Expired)
	}
	h.checkInvariants("c1")
}

// Idle connections cost no loop: after start-up every loop has exited, and work on one
// connection runs one loop.
func TestIdleConnectionsRunNoLoops(t *testing.T) {
	h := newHarness(t, openSQLite)
	const n = 100
	for i := range n {
		id := "idle-" + itoa(i)
		h.registerOnly(id)
		if err := h.sim.Connect(context.Background(), key(id)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	before := runtime.NumGoroutine()
	d := h.start(func(c *dispatcher.Config) { c.Registerer = reg })
	h.eventually("all paired", func() bool { return h.linkStatus("idle-"+itoa(n-1)) == connection.LinkStatusActive })
	h.idle(d, h.lastPosition("idle-"+itoa(n-1), connection.TypeSessionPaired))
	if got := d.ActiveLoops(); got != 0 {
		t.Fatalf("%d loops with no work, want 0", got)
	}
	if got := gaugeValue(t, reg, "waqueue_dispatcher_active_loops"); got != 0 {
		t.Fatalf("active_loops gauge %v, want 0", got)
	}
	// The dispatcher's own goroutines (Run, the subscription) stay a small constant, far below
	// one per connection.
	h.eventually("goroutines settle", func() bool { return runtime.NumGoroutine()-before < n/4 })
	m := h.enqueueOne("idle-7", "a", 0)
	h.eventually("sent", func() bool { return h.sim.SendCount(m.MessageID) == 1 })
	h.idle(d, h.lastPosition("idle-7", connection.TypeMessageQueued))
	if got := d.ActiveLoops(); got != 0 {
		t.Fatalf("%d loops after the work was done, want 0", got)
	}
	if got := len(h.sim.Sends()); got != 1 {
		t.Errorf("sends %d, want 1", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The daily cap counts the day's dispatches of an earlier process from the history: a restarted
// dispatcher does not start the day's count again from zero. The clock moves only while the
// dispatcher waits on it (its pacing interval), in steps, as in TestPacingAndDailyCap: it moved
// 500 ms every 2 ms of real time, so a run longer than 216 s (a loaded machine, the race
// detector) passed midnight and the cap began a new day.
func TestDailyCapSurvivesRestart(t *testing.T) {
	h := newHarness(t, openSQLite)
	pacing := paced
	const step = 100 * time.Millisecond
	// drive advances the clock by step whenever a timer is pending, until cond holds (a loop
	// may finish without one: cond is polled, not waited for behind a timer). Reaching the next
	// day would take hours of this at 100 ms of the clock per poll.
	drive := func(what string, cond func() bool) {
		t.Helper()
		h.eventually(what, func() bool {
			if cond() {
				return true
			}
			if h.clock.Pending() > 0 {
				h.clock.Advance(step)
			}
			return false
		})
	}
	d1 := h.start(pacing)
	h.registerPaired("c1", d1)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(time.Second), Jitter: ptr(time.Duration(0)), DailyCap: ptr(3)})
	h.enqueueOne("c1", "a", 0)
	h.enqueueOne("c1", "bb", 0)
	drive("two sent, the loop gone", func() bool { return len(h.sends("c1")) == 2 && d1.ActiveLoops() == 0 })
	h.idle(d1, h.lastPosition("c1", connection.TypeMessageQueued))
	d1.stop()

	d2 := h.start(pacing)
	for _, k := range []string{"ccc", "dddd", "eeeee"} {
		h.enqueueOne("c1", k, 0)
	}
	drive("cap reached", func() bool { return len(h.sends("c1")) == 3 })
	// The fourth waits out the pacing interval, then for the cap: the loop exits, leaving a timer
	// at midnight.
	drive("the loop gone after the cap", func() bool { return d2.ActiveLoops() == 0 })
	h.idle(d2, h.lastPosition("c1", connection.TypeMessageQueued))
	if got := len(h.sends("c1")); got != 3 {
		t.Fatalf("sent %d today across the restart, want the cap 3", got)
	}
	if day := startOfDayUTC(h.clock.Now()); !day.Equal(startOfDayUTC(t0)) {
		t.Fatalf("the test clock ran into the next day (%s): the cap was not exercised", h.clock.Now())
	}
}

func startOfDayUTC(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Not connected (nothing sent): the dispatched message waits for the connection and goes out
// once when it is back; an operator's hold ends such a wait with the message failed "not_sent",
// never handed over.
func TestNotConnectedWaitsForConnection(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.autoAdvance(time.Second)
	d := h.start(func(c *dispatcher.Config) { c.MaxSendAttempts = 1 }) // not-connected is not bounded by it
	h.registerPaired("c1", d)
	if err := h.sim.Disconnect(context.Background(), key("c1")); err != nil {
		t.Fatal(err)
	}
	m := h.enqueueOne("c1", "a", 0)
	h.eventually("retrying", func() bool { return d.Stats().Retries >= 3 })
	if n := h.sim.SendCount(m.MessageID); n != 0 {
		t.Fatalf("handed over %d times while disconnected", n)
	}
	if err := h.sim.Connect(context.Background(), key("c1")); err != nil {
		t.Fatal(err)
	}
	h.eventually("sent after reconnect", func() bool { return count[connection.MessageSent](h.history("c1")) == 1 })

	if err := h.sim.Disconnect(context.Background(), key("c1")); err != nil {
		t.Fatal(err)
	}
	before := d.Stats().Retries
	m2 := h.enqueueOne("c1", "bb", 0)
	h.eventually("retrying again", func() bool { return d.Stats().Retries >= before+2 })
	if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "stop it"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("failed not_sent", func() bool { return count[connection.MessageFailed](h.history("c1")) == 1 })
	for _, r := range h.history("c1") {
		if f, ok := r.Event.(connection.MessageFailed); ok && (f.MessageID != m2.MessageID || f.Code != dispatcher.CodeNotSent) {
			t.Errorf("failed %s with %q, want %s with %q", f.MessageID, f.Code, m2.MessageID, dispatcher.CodeNotSent)
		}
	}
	if h.sim.SendCount(m.MessageID) != 1 || h.sim.SendCount(m2.MessageID) != 0 {
		t.Errorf("send counts %d, %d; want 1, 0", h.sim.SendCount(m.MessageID), h.sim.SendCount(m2.MessageID))
	}
	h.checkInvariants("c1")
}

// gaugeValue returns the value of the unlabelled gauge name gathered from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("gauge %s not registered", name)
	return 0
}

// The same connection id in two tenants is two connections (G9): the dispatcher runs a loop for
// each, the transport knows them apart, and holding one never stops the other.
func TestSameIDInTwoTenants(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(nil)
	h.registerPaired("c1", d)
	other := commands.WithPrincipal(context.Background(), auth.Principal{TenantID: "tenant-2", ID: "op-2", Role: auth.RoleAdmin})
	if _, err := h.register.Handle(other, commands.RegisterConnection{ConnectionID: "c1", Phone: "+4915112345679"}); err != nil {
		t.Fatalf("tenant-2 registering c1: %v", err)
	}
	key2 := connection.Key("tenant-2", "c1")
	if err := h.sim.Connect(context.Background(), key2); err != nil {
		t.Fatal(err)
	}
	h.eventually("tenant-2's link active", func() bool {
		var ls connection.LinkStatus
		_ = h.repo.View(context.Background(), key2, func(c *connection.Connection) error { ls = c.LinkStatus(); return nil })
		return ls == connection.LinkStatusActive
	})
	if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "only tenant-1"}); err != nil {
		t.Fatal(err)
	}
	held := h.enqueueOne("c1", "k", 0)
	sent, err := h.enqueue.Handle(other, commands.EnqueueMessage{ConnectionID: "c1", IdempotencyKey: "k", Recipient: recipient(1), Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if sent.MessageID == held.MessageID {
		t.Fatal("one idempotency key gave both tenants the same message id")
	}
	h.eventually("tenant-2's message sent", func() bool { return h.sim.SendCount(sent.MessageID) == 1 })
	for _, s := range h.sim.Sends() {
		if s.MessageID == sent.MessageID && s.ConnectionID != key2 {
			t.Errorf("tenant-2's message went through %q", s.ConnectionID)
		}
	}
	h.idle(d, h.lastPosition("c1", connection.TypeMessageQueued))
	if n := h.sim.SendCount(held.MessageID); n != 0 {
		t.Fatalf("tenant-1's held message handed over %d times", n)
	}
	if qs := h.queueStatus("c1"); qs != connection.QueueStatusHeld {
		t.Fatalf("tenant-1's queue is %s", qs)
	}
	h.checkInvariants("c1")
}
