package dispatcher_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// waitDeadline waits until a timer due at at is armed on the manual clock (and, with gone set,
// none due at gone is left): the loop is waiting for exactly that time.
func (h *harness) waitDeadline(at time.Time, gone ...time.Time) {
	h.t.Helper()
	h.eventually("a timer due at "+at.String(), func() bool {
		ds := h.clock.Deadlines()
		if !slices.ContainsFunc(ds, at.Equal) {
			return false
		}
		for _, g := range gone {
			if slices.ContainsFunc(ds, g.Equal) {
				return false
			}
		}
		return true
	})
}

// A changed sending policy applies at once to the running loop, without a restart: a shorter
// interval replaces a pacing wait in progress, a raised cap frees a capped queue before
// midnight; quiet hours in the connection's time zone hold messages back (they wait, they do
// not fail) until their local end. Deterministic: the manual clock only moves when told.
func TestSendingPolicyChangeAppliesAtOnce(t *testing.T) {
	h := newHarness(t, openSQLite)
	d := h.start(paced)
	h.registerPaired("c1", d)
	zero := time.Duration(0)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(time.Hour), Jitter: &zero})
	sent := func() int { return len(h.sends("c1")) }

	h.enqueueOne("c1", "a", 0)
	h.eventually("a sent", func() bool { return sent() == 1 })
	start := h.clock.Now() // the clock stands still: a's hand-over time
	h.enqueueOne("c1", "bb", 0)
	h.waitDeadline(start.Add(time.Hour))

	// Interval: the hour's wait in progress gives way to two seconds.
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(2 * time.Second)})
	h.waitDeadline(start.Add(2*time.Second), start.Add(time.Hour))
	h.clock.Advance(2 * time.Second)
	h.eventually("bb sent after the new interval", func() bool { return sent() == 2 })

	// Daily cap: two sent today, cap 2: the third waits for the next UTC day...
	h.setPolicy("c1", connection.SendingPolicyPatch{DailyCap: ptr(2)})
	h.enqueueOne("c1", "ccc", 0)
	midnight := time.Date(2030, 5, 7, 0, 0, 0, 0, time.UTC)
	h.waitDeadline(midnight)
	h.eventually("loop exited at the cap", func() bool { return d.ActiveLoops() == 0 })
	if n := sent(); n != 2 {
		t.Fatalf("sent %d with cap 2", n)
	}
	// ...until the cap is raised: it goes after the interval since bb, long before midnight.
	h.setPolicy("c1", connection.SendingPolicyPatch{DailyCap: ptr(3)})
	h.waitDeadline(start.Add(4 * time.Second))
	h.clock.Advance(2 * time.Second)
	h.eventually("ccc sent after the cap was raised", func() bool { return sent() == 3 })

	// Quiet hours, judged in the connection's zone: 09:00 UTC is 11:00 in Berlin (summer time).
	h.setPolicy("c1", connection.SendingPolicyPatch{DailyCap: ptr(10), TimeZone: ptr("Europe/Berlin"),
		QuietHours: &connection.QuietHours{Start: 11 * 60, End: 13 * 60}})
	m := h.enqueueOne("c1", "dddd", 0)
	quietEnd := time.Date(2030, 5, 6, 11, 0, 0, 0, time.UTC) // 13:00 in Berlin
	h.waitDeadline(quietEnd)
	h.eventually("loop exited for the quiet hours", func() bool { return d.ActiveLoops() == 0 })
	if n := sent(); n != 3 {
		t.Fatalf("sent %d during quiet hours", n)
	}
	for _, r := range h.history("c1") {
		if me, ok := connection.MessageEventOf(r.Event); ok && me.MessageID == m.MessageID && r.Event.EventType() != connection.TypeMessageQueued {
			t.Fatalf("during quiet hours the message got %s; it must wait", r.Event.EventType())
		}
	}
	h.clock.Advance(quietEnd.Sub(h.clock.Now()))
	h.eventually("dddd sent when the quiet hours ended", func() bool { return sent() == 4 })
	if at := h.sim.Sends()[3].At; at.Before(quietEnd) {
		t.Fatalf("sent at %s, before the quiet hours ended at %s", at, quietEnd)
	}
	h.checkInvariants("c1")
}

// The pacing interval and the daily cap hold across a restart (they come from the stream, not
// from the memory of the process that dispatched), and the cap's day is the connection's local
// day: in Tokyo the day turns at 15:00 UTC.
func TestPacingAndLocalDayCapHoldAcrossRestart(t *testing.T) {
	h := newHarness(t, openSQLite)
	d1 := h.start(paced)
	h.registerPaired("c1", d1)
	zero := time.Duration(0)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(time.Hour), Jitter: &zero, DailyCap: ptr(3), TimeZone: ptr("Asia/Tokyo")})
	sent := func() int { return len(h.sends("c1")) }
	h.enqueueOne("c1", "a", 0)
	h.enqueueOne("c1", "bb", 0)
	h.eventually("a sent", func() bool { return sent() == 1 })
	h.waitDeadline(t0.Add(time.Hour))
	h.clock.Advance(time.Hour)
	h.eventually("bb recorded sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 2 })
	d1.stop() // its loop waits out the interval after bb: stopped mid-wait

	// A new process: the next hand-over is an hour after bb's, not at once.
	d2 := h.start(paced)
	h.enqueueOne("c1", "ccc", 0)
	h.waitDeadline(t0.Add(2 * time.Hour))
	if n := sent(); n != 2 {
		t.Fatalf("the restarted dispatcher sent %d before the interval passed", n)
	}
	h.clock.Advance(time.Hour)
	h.eventually("ccc recorded sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 3 })

	// The cap (3) is reached: dddd waits for midnight in Tokyo, not in UTC.
	d2.stop()
	d3 := h.start(paced)
	h.enqueueOne("c1", "dddd", 0)
	tokyoMidnight := time.Date(2030, 5, 6, 15, 0, 0, 0, time.UTC)
	h.waitDeadline(tokyoMidnight)
	h.eventually("loop exited at the cap", func() bool { return d3.ActiveLoops() == 0 })
	if n := sent(); n != 3 {
		t.Fatalf("sent %d today across restarts, want the cap 3", n)
	}
	h.clock.Advance(tokyoMidnight.Sub(h.clock.Now()))
	h.eventually("dddd sent on the next Tokyo day", func() bool { return sent() == 4 })
	h.checkInvariants("c1")
}

// countingStore counts the reads of one stream through it.
type countingStore struct {
	eventstore.Store
	stream string
	reads  atomic.Int64
}

func (s *countingStore) ReadStream(ctx context.Context, stream string, dir eventstore.Direction, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if stream == s.stream {
		s.reads.Add(1)
	}
	return s.Store.ReadStream(ctx, stream, dir, from, limit)
}

// TestPacedTurnsDoNotReadTheStream: a paced loop keeps the connection's sending policy between
// turns (until the event log shows it changed), so a dispatch costs no read of the stream:
// before, every turn read the policy from the aggregate, catching the repository's cache up
// with a stream read — one database transaction of the ~6 per message at 10,000 sending
// connections (bench scale). A change is still seen (TestSendingPolicyChangeAppliesAtOnce).
func TestPacedTurnsDoNotReadTheStream(t *testing.T) {
	h := newHarness(t, openSQLite)
	cs := &countingStore{Store: h.env.store, stream: connection.StreamName(key("c1"))}
	repo, err := commands.NewRepository(cs, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := h.start(func(c *dispatcher.Config) { paced(c); c.Repository = repo })
	h.registerPaired("c1", d)
	zero := time.Duration(0)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(time.Second), Jitter: &zero})
	const n = 12
	h.startBroadcast("c1", n)
	sent := func() int { return len(h.sends("c1")) }
	h.eventually("first sent", func() bool { return sent() >= 1 })
	before := cs.reads.Load()
	for sent() < n {
		if !h.clock.WaitForTimers(1, testwait.Limit) {
			t.Fatalf("no timer pending with %d of %d sent", sent(), n)
		}
		h.clock.Advance(time.Second)
		at := sent()
		h.eventually("the next send or a timer", func() bool { return sent() > at || h.clock.Pending() > 0 })
	}
	if reads := cs.reads.Load() - before; reads > 2 {
		t.Errorf("%d reads of the stream for %d paced dispatches, want at most 2 (none per turn)", reads, n-1)
	}
	h.checkInvariants("c1")
}

// TestPacingCountsFromTheDispatch: the interval runs from a message's dispatch, not from the end
// of its send: with sends acknowledged 2 s after the hand-over and a 3 s interval, the next
// message is handed over 3 s after the previous one, not 5 s. Before, the loop counted from the
// acknowledgement (and from the dispatch only after a restart), so every send's duration and its
// outcome's append were added to the interval: 0.85 of the paced rate at 10,000 sending
// connections (bench scale).
func TestPacingCountsFromTheDispatch(t *testing.T) {
	h := newHarness(t, openSQLite)
	h.sim.SetScript(key("c1"), simulator.Script{Latency: 2 * time.Second})
	d := h.start(paced)
	h.registerPaired("c1", d)
	zero := time.Duration(0)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(3 * time.Second), Jitter: &zero})
	h.startBroadcast("c1", 3)
	sent := func() int { return len(h.sends("c1")) }
	h.eventually("first handed over", func() bool { return sent() == 1 })
	first := h.sim.Sends()[0].At
	// The acknowledgement after 2 s, then the next hand-over 1 s later.
	h.waitDeadline(first.Add(2 * time.Second))
	h.clock.Advance(2 * time.Second)
	h.waitDeadline(first.Add(3 * time.Second))
	h.clock.Advance(time.Second)
	h.eventually("second handed over", func() bool { return sent() == 2 })
	var second time.Time
	for _, s := range h.sim.Sends() {
		if s.ConnectionID == key("c1") && s.At.After(first) {
			second = s.At
			break
		}
	}
	if got := second.Sub(first); got != 3*time.Second {
		t.Fatalf("second hand-over %s after the first, want 3s (the interval from the dispatch)", got)
	}
}

// seqReads counts, per seq, the reads of the QueuedMessages port it wraps; onRead, if set,
// runs at each read (before it is answered).
type seqReads struct {
	commands.QueuedMessages
	mu     sync.Mutex
	reads  map[uint64]int
	onRead func(seq uint64)
}

func (s *seqReads) QueuedMessage(ctx context.Context, connKey string, seq uint64) (commands.QueuedMessage, error) {
	s.mu.Lock()
	s.reads[seq]++
	s.mu.Unlock()
	if s.onRead != nil {
		s.onRead(seq)
	}
	return s.QueuedMessages.QueuedMessage(ctx, connKey, seq)
}

func (s *seqReads) of(seq uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[seq]
}

// A paced loop reads the next message before it waits for its interval, so that nothing but
// the dispatch's append lies between its wake-up and the recorded dispatch (at 10,000 paced
// loops that read, queued on the database, lengthened every interval: issue 15.5's paced
// rate), and the wait ends when the interval does however long that read took. Here the read
// of the third message takes 1 s of the clock (the second's wait may be cut short by the
// policy change's poke): the third dispatch is still recorded exactly 3 s after the second
// (Stats.PacingDelay 0), with no read after the wake-up.
func TestPacedLoopReadsTheHeadBeforeItWaits(t *testing.T) {
	h := newHarness(t, openSQLite)
	port := &seqReads{reads: map[uint64]int{}, onRead: func(seq uint64) {
		if seq == 3 {
			h.clock.Advance(time.Second) // a slow read
		}
	}}
	d := h.start(func(c *dispatcher.Config) {
		paced(c)
		port.QueuedMessages = c.Messages
		c.Messages = port
	})
	h.registerPaired("c1", d)
	zero := time.Duration(0)
	h.setPolicy("c1", connection.SendingPolicyPatch{MinInterval: ptr(3 * time.Second), Jitter: &zero})
	h.startBroadcast("c1", 3)
	sent := func() int { return len(h.sends("c1")) }
	for i := 1; i <= 2; i++ {
		if i > 1 {
			prev := h.sim.Sends()[i-2].At
			h.eventually("the next message read before the wait", func() bool { return port.of(uint64(i)) == 1 })
			h.waitDeadline(prev.Add(3 * time.Second))
			h.clock.Advance(prev.Add(3 * time.Second).Sub(h.clock.Now()))
		}
		h.eventually("handed over", func() bool { return sent() == i })
	}
	second := h.sim.Sends()[1].At
	h.eventually("the third message read before the wait", func() bool { return port.of(3) == 1 })
	h.waitDeadline(second.Add(3 * time.Second))
	h.clock.Advance(second.Add(3 * time.Second).Sub(h.clock.Now()))
	h.eventually("third handed over", func() bool { return sent() == 3 })
	for seq := uint64(2); seq <= 3; seq++ {
		if n := port.of(seq); n != 1 {
			t.Fatalf("seq %d read %d times, want once (ahead, before the wait)", seq, n)
		}
	}
	if got := h.sim.Sends()[2].At.Sub(second); got != 3*time.Second {
		t.Fatalf("third hand-over %s after the second, want 3s", got)
	}
	st := d.Stats()
	if st.PacedDispatches != 2 || st.PacingDelay != 0 {
		t.Fatalf("paced dispatches %d, delay %s; want 2 recorded when the interval allowed them (0)", st.PacedDispatches, st.PacingDelay)
	}
}
