package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// counter returns the value of counter name{label=value} gathered from reg (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A retried send escapes no clear, hold or ban (issue 10.1, G1). The transport refuses the first
// hand-over (not connected); during the dispatcher's backoff something is recorded and over
// again before the retry: a clear requested and completed, a hold and a resume, a ban and its
// lift with a resume. The connection is back when the backoff ends. The message must not be
// handed over: it ends failed not_sent, and a clear's report lists it not sent, not in flight.
func TestRetryAfterDisruptionDuringBackoffNotHandedOver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disrupt func(h *harness) // records the disruption and its end
		clear   bool
	}{
		{name: "clear requested and completed", clear: true, disrupt: func(h *harness) {
			if _, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "during-backoff", Reason: "test"}); err != nil {
				h.t.Fatal(err)
			}
			h.eventually("QueueCleared", func() bool { return count[connection.QueueCleared](h.history("c1")) == 1 })
		}},
		{name: "hold that came and went", disrupt: func(h *harness) {
			if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "pause"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "go on"}); err != nil {
				h.t.Fatal(err)
			}
		}},
		{name: "ban that came and went", disrupt: func(h *harness) {
			sys := commands.WithPrincipal(context.Background(), commands.SystemPrincipal(tenant))
			now := func() time.Time { return h.clock.Now() }
			ban, _ := commands.NewReportBanHandler(h.repo, now)
			lift, _ := commands.NewLiftBanHandler(h.repo, now)
			if _, err := ban.Handle(sys, commands.ReportBan{ConnectionID: "c1", Kind: connection.BanTemporary, ExpiresAt: h.clock.Now().Add(time.Hour), ReasonCode: "101"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := lift.Handle(sys, commands.LiftBan{ConnectionID: "c1", Reason: "expired"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "go on"}); err != nil {
				h.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, openSQLite)
			reg := prometheus.NewRegistry()
			d := h.start(func(c *dispatcher.Config) { c.Registerer = reg })
			h.registerPaired("c1", d)
			if err := h.sim.Disconnect(context.Background(), key("c1")); err != nil {
				t.Fatal(err)
			}
			m := h.enqueueOne("c1", "a", 0)
			// The first hand-over is refused; the dispatcher waits its backoff on the manual clock.
			h.eventually("first hand-over refused", func() bool {
				return counter(t, reg, "waqueue_dispatcher_sends_total", "outcome", dispatcher.OutcomeNotConnected) >= 1
			})
			if !h.clock.WaitForTimers(1, testwait.Limit) {
				t.Fatal("the dispatcher does not wait for its backoff")
			}
			tc.disrupt(h)
			if err := h.sim.Connect(context.Background(), key("c1")); err != nil {
				t.Fatal(err)
			}
			h.eventually("link active", func() bool { return h.linkStatus("c1") == connection.LinkStatusActive })
			h.clock.Advance(time.Hour) // the backoff ends: the dispatcher retries or gives up
			h.eventually("message failed not_sent", func() bool {
				for _, r := range h.history("c1") {
					if f, ok := r.Event.(connection.MessageFailed); ok && f.MessageID == m.MessageID {
						return true
					}
				}
				return count[connection.MessageSent](h.history("c1")) > 0
			})
			h.idle(d, h.lastPosition("c1", dispatcher.WakeEventTypes...))
			if n := h.sim.SendCount(m.MessageID); n != 0 {
				t.Fatalf("message handed over %d times after the %s during its backoff", n, tc.name)
			}
			hist := h.history("c1")
			for _, r := range hist {
				switch e := r.Event.(type) {
				case connection.MessageFailed:
					if e.MessageID != m.MessageID || e.Code != connection.FailureNotSent {
						t.Errorf("failed %s with %q, want %s with %q", e.MessageID, e.Code, m.MessageID, connection.FailureNotSent)
					}
				case connection.QueueCleared:
					if e.InFlightCount != 0 || e.NotSentCount != 1 || e.NotSent[0].MessageID != m.MessageID {
						t.Errorf("report: in flight %d %v, not sent %d %v; want 0 in flight, %s not sent",
							e.InFlightCount, e.InFlight, e.NotSentCount, e.NotSent, m.MessageID)
					}
				}
			}
			if tc.clear && count[connection.QueueCleared](hist) != 1 {
				t.Error("no QueueCleared")
			}
			if count[connection.MessageFailed](hist) != 1 {
				t.Errorf("%d MessageFailed, want 1", count[connection.MessageFailed](hist))
			}
			h.checkInvariants("c1")
		})
	}
}

// attemptRecorder is the simulator with a record of every hand-over attempt: the fence the
// dispatcher gave, the stream's last revision read just before the simulator decides, and
// whether the simulator refused it (nothing handed over).
type attemptRecorder struct {
	*simulator.Simulator
	store eventstore.Store

	mu       sync.Mutex
	n        int
	attempts map[string][]invariants.Send
}

func (r *attemptRecorder) Send(ctx context.Context, req transport.SendRequest) (transport.SendResult, error) {
	var observed uint64
	evs, err := r.store.ReadStream(context.WithoutCancel(ctx), connection.StreamName(req.ConnectionID), eventstore.Backwards, eventstore.End, 1)
	if err == nil && len(evs) == 1 {
		observed = evs[0].Revision
	}
	res, serr := r.Simulator.Send(ctx, req)
	refused := serr != nil && !errors.Is(serr, transport.ErrOutcomeUnknown)
	r.mu.Lock()
	r.attempts[req.ConnectionID] = append(r.attempts[req.ConnectionID], invariants.Send{MessageID: req.MessageID, Order: r.n,
		Fence: req.Fence, Observed: observed, Refused: refused})
	r.n++
	r.mu.Unlock()
	return res, serr
}

func (r *attemptRecorder) sends(connID string) []invariants.Send {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.attempts[key(connID)])
}

// The real dispatcher against the simulator, with the network going down and up at random while
// messages are queued and operators clear, hold, resume and the number gets banned and lifted
// (issue 10.1). Every hand-over attempt is recorded with its fence and the stream revision seen
// at it; the invariants checker orders them against each connection's history. With the
// dispatcher's retry from before hand-overs were fenced it reports hand_over_fence_reused (and,
// when a clear, hold or ban lands in a backoff, handed_over_after_disruption).
func TestRandomizedDisconnectsRealDispatcher(t *testing.T) {
	target := 300 // messages dispatched
	if testing.Short() {
		target = 40
	}
	for name, open := range map[string]engine{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			randomizedDisconnects(t, open, target)
		})
	}
}

func randomizedDisconnects(t *testing.T, open engine, target int) {
	h := newHarness(t, open)
	h.autoAdvance(50 * time.Millisecond)
	rec := &attemptRecorder{Simulator: h.sim, store: h.env.store, attempts: map[string][]invariants.Send{}}
	d := h.start(func(c *dispatcher.Config) {
		c.Transport = rec
		c.RetryBackoff = 200 * time.Millisecond
		c.MaxRetryBackoff = time.Second
	})
	conns := []string{"c1", "c2"}
	for _, id := range conns {
		h.registerPaired(id, d)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(20261201, 7))
	var (
		mu       sync.Mutex // guards rng and counts
		counts   = map[string]int{}
		done     atomic.Bool
		enqueued atomic.Int64
		wg       sync.WaitGroup
	)
	note := func(what string) { mu.Lock(); counts[what]++; mu.Unlock() }
	intn := func(n int) int { mu.Lock(); defer mu.Unlock(); return rng.IntN(n) }
	// exercised says whether the run has seen both a hand-over the transport refused and a
	// fenced retry: the chaos is random, so the run goes on (counted in dispatches, never in
	// time) until it has, up to 20 times the target.
	exercised := func() bool {
		if d.Stats().Retries == 0 {
			return false
		}
		for _, id := range conns {
			for _, s := range rec.sends(id) {
				if s.Refused {
					return true
				}
			}
		}
		return false
	}
	more := func() bool {
		n := d.Stats().Dispatched
		return n < uint64(target) || (n < uint64(20*target) && !exercised())
	}
	// A safety net against a hang, never a speed requirement.
	deadline := time.Now().Add(10 * time.Minute)
	for _, id := range conns {
		wg.Go(func() {
			for i := 0; more() && time.Now().Before(deadline); i++ {
				time.Sleep(time.Duration(500+intn(1500)) * time.Microsecond)
				var pending uint64
				_ = h.repo.View(ctx, id, func(c *connection.Connection) error { pending = c.Pending(); return nil })
				if pending > 40 {
					continue
				}
				if intn(6) == 0 {
					rs := make([]string, 20+intn(60))
					for j := range rs {
						rs[j] = recipient(j)
					}
					r, err := h.broadcast.Handle(h.op(), commands.StartBroadcast{ConnectionID: id, IdempotencyKey: fmt.Sprintf("b-%s-%d", id, i), Recipients: rs, Text: "offer"})
					if err == nil {
						enqueued.Add(int64(r.Count))
					} else if !errors.Is(err, connection.ErrQueueClearing) {
						t.Errorf("broadcast: %v", err)
					}
				} else {
					_, err := h.enqueue.Handle(h.op(), commands.EnqueueMessage{ConnectionID: id, IdempotencyKey: fmt.Sprintf("m-%s-%d", id, i), Recipient: recipient(i), Text: "hi"})
					if err == nil {
						enqueued.Add(1)
					} else if !errors.Is(err, connection.ErrQueueClearing) {
						t.Errorf("enqueue: %v", err)
					}
				}
			}
		})
	}
	var chaos sync.WaitGroup
	chaos.Go(func() {
		for i := 0; !done.Load(); i++ {
			time.Sleep(time.Duration(2000+intn(6000)) * time.Microsecond)
			id := conns[intn(len(conns))]
			var err error
			what := ""
			// Recover an impaired connection most of the time, so messages flow between the
			// disruptions; otherwise disrupt at random (refusals are expected).
			link, qs := h.linkStatus(id), h.queueStatus(id)
			n := intn(100)
			switch {
			case n < 60 && link == connection.LinkStatusBanned:
				what, err = "lift", h.sim.LiftBan(key(id))
			case n < 60 && qs == connection.QueueStatusHeld:
				what = "resume"
				_, err = h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: id})
			case n < 35:
				what, err = "disconnect", h.sim.Disconnect(ctx, key(id))
			case n < 75:
				what, err = "connect", h.sim.Connect(ctx, key(id))
			case n < 85:
				what = "clear"
				_, err = h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: id, IdempotencyKey: fmt.Sprint("clear-", i), Reason: "chaos"})
			case n < 92:
				what = "hold"
				_, err = h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: id})
			case n < 96:
				what, err = "ban", h.sim.Ban(key(id), simulator.Ban{Expire: time.Minute})
			default:
				continue
			}
			if err == nil {
				note(what)
			} else if !commands.IsRefusal(err) && !errors.Is(err, simulator.ErrNotBanned) && !errors.Is(err, simulator.ErrNotLoggedIn) {
				t.Errorf("%s %s: %v", what, id, err)
			}
		}
	})
	wg.Wait()
	done.Store(true)
	chaos.Wait()
	if s := d.Stats(); s.Dispatched < uint64(target) {
		t.Fatalf("dispatched %d of %d before the safety limit: %+v; chaos %v", s.Dispatched, target, s, counts)
	}

	// End: the network is back, and a clear of each queue (retried while another clear runs)
	// ends whatever is left.
	for _, id := range conns {
		_ = h.sim.LiftBan(key(id))
		_ = h.sim.Connect(ctx, key(id))
		h.eventually("clear accepted on "+id, func() bool {
			_, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: id, IdempotencyKey: "final", Reason: "end of run"})
			return err == nil
		})
	}
	for _, id := range conns {
		h.eventually("final clear completed on "+id, func() bool { return h.queueStatus(id) != connection.QueueStatusClearing })
		h.eventually("nothing in flight on "+id, func() bool { return len(invariants.Check(h.history(id), nil).InFlight) == 0 })
	}
	sends, refused := 0, 0
	for _, id := range conns {
		hist := h.history(id)
		rep := invariants.Check(hist, rec.sends(id))
		byKind := map[invariants.Kind]int{}
		for _, v := range rep.Violations {
			byKind[v.Kind]++
		}
		for i, v := range rep.Violations {
			if i == 20 {
				break
			}
			t.Errorf("%s: violation: %s", id, v)
		}
		if len(byKind) > 0 {
			t.Errorf("%s: violations by kind %v", id, byKind)
		}
		sends += rep.Sends
		for _, s := range rec.sends(id) {
			if s.Refused {
				refused++
			}
		}
		t.Logf("%s: %d events, queued %d, purged %d, acknowledged %d, deferred %d, retried %d, not_sent by clears %d",
			id, len(hist), rep.Queued, rep.Purged, rep.Acknowledged, count[connection.MessageSendDeferred](hist),
			count[connection.MessageSendRetried](hist), notSentByClears(hist))
	}
	t.Logf("%d attempts recorded, %d refused; dispatcher %+v; chaos %v", sends, refused, d.Stats(), counts)
	if refused == 0 || d.Stats().Retries == 0 {
		t.Errorf("the run exercised no refused hand-over or retry (refused %d, stats %+v)", refused, d.Stats())
	}
}

func notSentByClears(hist []invariants.Recorded) int {
	n := 0
	for _, r := range hist {
		if c, ok := r.Event.(connection.QueueCleared); ok {
			n += c.NotSentCount
		}
	}
	return n
}
