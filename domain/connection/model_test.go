package connection_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// modelMsg is what a per-message projection knows about one message.
type modelMsg struct {
	id        uuid.UUID
	broadcast uuid.UUID
	expires   time.Time
	status    connection.MessageStatus
}

// model is an independent, naive per-message model of the queue (what the projections keep).
// The simulation checks the small aggregate against it after every event.
type model struct {
	msgs     map[uint64]*modelMsg
	last     uint64
	clearing bool
	fence    map[uuid.UUID]bool // messages covered by a clear request: must never be dispatched after it
}

func (m *model) apply(t *testing.T, e connection.Event) {
	t.Helper()
	switch e := e.(type) {
	case connection.MessageQueued:
		if e.Seq != m.last+1 {
			t.Fatalf("MessageQueued seq %d after %d", e.Seq, m.last)
		}
		m.last = e.Seq
		m.msgs[e.Seq] = &modelMsg{id: e.MessageID, broadcast: e.BroadcastID, expires: e.ExpiresAt, status: connection.MessageStatusQueued}
	case connection.MessageDispatched:
		msg := m.msgs[e.Seq]
		if msg == nil || msg.status != connection.MessageStatusQueued || msg.id != e.MessageID {
			t.Fatalf("dispatched seq %d that is not queued: %+v", e.Seq, msg)
		}
		if m.fence[e.MessageID] {
			t.Fatalf("G1 violated: seq %d dispatched after a clear covering it", e.Seq)
		}
		msg.status = connection.MessageStatusDispatched
	case connection.MessageExpired:
		msg := m.msgs[e.Seq]
		if msg == nil || msg.status != connection.MessageStatusQueued {
			t.Fatalf("expired seq %d that is not queued: %+v", e.Seq, msg)
		}
		msg.status = connection.MessageStatusExpired
	case connection.MessageSent, connection.MessageFailed, connection.MessageOutcomeUnknown:
	case connection.ClearQueueRequested:
		m.clearing = true
		// The purged set must be exactly the pending messages of the scope.
		var want []uint64
		for seq := uint64(1); seq <= m.last; seq++ {
			msg := m.msgs[seq]
			if msg.status == connection.MessageStatusQueued && (e.Scope.IsWholeQueue() || msg.broadcast == e.Scope.BroadcastID) {
				want = append(want, seq)
			}
		}
		var got []uint64
		for _, r := range e.Purge {
			for seq := r.From; seq <= r.To; seq++ {
				got = append(got, seq)
			}
		}
		if !slices.Equal(got, want) || e.PurgeCount != uint64(len(want)) {
			t.Fatalf("clear %s purges %v (count %d), pending in scope %v", e.Scope, got, e.PurgeCount, want)
		}
		for _, seq := range got {
			m.msgs[seq].status = connection.MessageStatusPurged
			m.fence[m.msgs[seq].id] = true
		}
	case connection.QueueCleared:
		m.clearing = false
	}
}

func (m *model) head() (uint64, bool) {
	for seq := uint64(1); seq <= m.last; seq++ {
		if m.msgs[seq].status == connection.MessageStatusQueued {
			return seq, true
		}
	}
	return 0, false
}

func (m *model) count(s connection.MessageStatus) (n uint64) {
	for _, msg := range m.msgs {
		if msg.status == s {
			n++
		}
	}
	return n
}

// TestSimulation drives the aggregate with random commands and checks it against the naive
// model after every event: the head, the pending count, the purged sets, G1, G5, the
// counters' reconciliation (G3) and snapshot equivalence.
func TestSimulation(t *testing.T) {
	seeds, steps := 30, 400
	if testing.Short() {
		seeds = 5
	}
	var total connection.Counters
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			cnt := simulate(t, uint64(seed), steps)
			total.Dispatched += cnt.Dispatched
			total.Expired += cnt.Expired
			total.Purged += cnt.Purged
			total.Clears += cnt.Clears
			total.Failed += cnt.Failed
			total.Unknown += cnt.Unknown
		})
	}
	// The simulation must have exercised every path it checks.
	if total.Dispatched == 0 || total.Expired == 0 || total.Purged == 0 || total.Clears == 0 || total.Failed == 0 || total.Unknown == 0 {
		t.Fatalf("simulation did not exercise every path: %+v", total)
	}
}

func simulate(t *testing.T, seed uint64, steps int) connection.Counters {
	rng := rand.New(rand.NewPCG(seed, 42))
	c := connection.New()
	m := &model{msgs: map[uint64]*modelMsg{}, fence: map[uuid.UUID]bool{}}
	now := t0
	var history []connection.Event
	apply := func(events []connection.Event) {
		for _, e := range events {
			if err := c.Apply(e); err != nil {
				t.Fatal(err)
			}
			for _, one := range connection.Expand(e) {
				m.apply(t, one)
			}
			history = append(history, e)
		}
	}
	decide := func(events []connection.Event, err error) error {
		if err == nil {
			apply(events)
		}
		return err
	}
	must := func(events []connection.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		apply(events)
	}
	must(c.Register(connection.RegisterConnection{ConnectionID: connID, TenantID: tenant, Phone: ownNum,
		OnBan: []connection.OnBanPolicy{connection.OnBanHold, connection.OnBanResume}[rng.IntN(2)], Actor: "op"}, now))
	must(c.Pair(connection.PairSession{Actor: "op"}, now))
	key, clears := 0, 0
	for step := range steps {
		now = now.Add(time.Duration(rng.IntN(90)) * time.Second)
		switch op := rng.IntN(100); {
		case op < 25:
			key++
			var ttl time.Duration
			if rng.IntN(3) == 0 {
				ttl = time.Duration(1+rng.IntN(10)) * time.Minute
			}
			err := decide(c.Enqueue(connection.EnqueueMessage{IdempotencyKey: fmt.Sprint(key), Recipient: alice, Text: "x", TTL: ttl, Actor: "svc"}, now))
			if (err != nil) != m.clearing {
				t.Fatalf("step %d: enqueue err %v while clearing=%v", step, err, m.clearing)
			}
		case op < 32:
			key++
			rcpts := []string{alice, bob, carol}[:1+rng.IntN(3)]
			err := decide(c.StartBroadcast(connection.StartBroadcast{BroadcastID: connection.BroadcastIDFor(tenant, connID, fmt.Sprint(key)),
				Recipients: rcpts, Text: "x", Actor: "svc"}, now))
			if (err != nil) != m.clearing {
				t.Fatalf("step %d: broadcast err %v while clearing=%v", step, err, m.clearing)
			}
		case op < 62:
			// The dispatcher: take the projection's head; sometimes try another message.
			seq, ok := m.head()
			if rng.IntN(5) == 0 && m.last > 0 {
				seq, ok = 1+rng.Uint64N(m.last), true
			}
			if !ok {
				continue
			}
			msg := m.msgs[seq]
			head, _ := m.head()
			expired := !msg.expires.IsZero() && !now.Before(msg.expires)
			_, held := c.CurrentHold()
			allowed := !m.clearing && !held && c.LinkStatus() == connection.LinkStatusActive &&
				seq == head && msg.status == connection.MessageStatusQueued && !expired
			err := decide(c.Dispatch(connection.DispatchMessage{MessageID: msg.id, Seq: seq, ExpiresAt: msg.expires}, now))
			if (err == nil) != allowed {
				t.Fatalf("step %d: dispatch seq %d (head %d, status %v, clearing %v, held %v, link %v, expired %v): err %v",
					step, seq, head, msg.status, m.clearing, held, c.LinkStatus(), expired, err)
			}
			if err != nil && seq == head && expired && !m.clearing && !held && c.LinkStatus() == connection.LinkStatusActive {
				must(c.Expire(connection.ExpireMessage{MessageID: msg.id, Seq: seq, ExpiresAt: msg.expires}, now))
			}
		case op < 72:
			if fl := c.InFlight(); len(fl) > 0 {
				f := fl[rng.IntN(len(fl))]
				kind := []connection.MessageStatus{connection.MessageStatusSent, connection.MessageStatusDelivered,
					connection.MessageStatusFailed, connection.MessageStatusUnknown}[rng.IntN(4)]
				must(c.RecordOutcome(connection.Outcome{MessageID: f.MessageID, Seq: f.Seq, Kind: kind, Code: "c"}, now))
			}
		case op < 78:
			if _, held := c.CurrentHold(); held {
				if l := c.LinkStatus(); l == connection.LinkStatusBanned || l == connection.LinkStatusSessionInvalid {
					if _, err := c.Resume(connection.ResumeQueue{Actor: "op"}, now); !errors.Is(err, connection.ErrLinkStatus) {
						t.Fatalf("resume while %v: err = %v, want ErrLinkStatus (G7)", l, err)
					}
					break
				}
				must(c.Resume(connection.ResumeQueue{Actor: "op"}, now))
			} else {
				must(c.Hold(connection.HoldQueue{Actor: "op"}, now))
			}
		case op < 84:
			switch c.LinkStatus() {
			case connection.LinkStatusActive:
				if rng.IntN(2) == 0 {
					must(c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "system"}, now))
				} else {
					must(c.InvalidateSession(connection.InvalidateSession{Actor: "system"}, now))
				}
				if _, held := c.CurrentHold(); !held {
					t.Fatalf("step %d: link lost but queue not held (G7)", step)
				}
			case connection.LinkStatusBanned:
				must(c.LiftBan(connection.LiftBan{Actor: "system"}, now))
			default:
				must(c.Pair(connection.PairSession{Actor: "op"}, now))
			}
		case op < 92:
			clears++
			scope := connection.WholeQueue
			if b := c.PendingBroadcasts(); len(b) > 0 && rng.IntN(2) == 0 {
				scope = connection.BroadcastScope(b[rng.IntN(len(b))].BroadcastID)
			}
			wasClearing := m.clearing
			err := decide(c.RequestClear(connection.RequestClear{ClearID: connection.ClearIDFor(tenant, connID, fmt.Sprint(clears)),
				Scope: scope, Reason: "r", Actor: "op"}, now))
			if (err != nil) != wasClearing {
				t.Fatalf("step %d: clear err %v while clearing=%v", step, err, wasClearing)
			}
		default:
			if cur, ok := c.CurrentClear(); ok {
				must(c.CompleteClear(connection.CompleteClear{ClearID: cur.ClearID, Actor: "process"}, now))
			}
		}
		checkAgainstModel(t, step, c, m)
		if step%50 == 0 {
			checkSnapshot(t, c, history)
		}
	}
	checkSnapshot(t, c, history)
	return c.Counters()
}

func checkAgainstModel(t *testing.T, step int, c *connection.Connection, m *model) {
	t.Helper()
	mh, mok := m.head()
	if h, ok := c.Head(); h != mh || ok != mok {
		t.Fatalf("step %d: head %d,%v, model head %d,%v", step, h, ok, mh, mok)
	}
	cnt := c.Counters()
	pending := m.count(connection.MessageStatusQueued)
	if c.Pending() != pending {
		t.Fatalf("step %d: pending %d, model %d", step, c.Pending(), pending)
	}
	if cnt.Expired != m.count(connection.MessageStatusExpired) || cnt.Purged != m.count(connection.MessageStatusPurged) ||
		cnt.Dispatched != m.count(connection.MessageStatusDispatched) {
		t.Fatalf("step %d: counters %+v disagree with the model", step, cnt)
	}
	if cnt.Queued != c.Pending()+cnt.Dispatched+cnt.Expired+cnt.Purged {
		t.Fatalf("step %d: queued %d != pending %d + dispatched %d + expired %d + purged %d", step, cnt.Queued, c.Pending(),
			cnt.Dispatched, cnt.Expired, cnt.Purged)
	}
	if cnt.Dispatched != uint64(len(c.InFlight()))+cnt.Acknowledged {
		t.Fatalf("step %d: dispatched %d != in flight %d + acknowledged %d", step, cnt.Dispatched, len(c.InFlight()), cnt.Acknowledged)
	}
	if (c.QueueStatus() == connection.QueueStatusClearing) != m.clearing {
		t.Fatalf("step %d: queue %v, model clearing %v", step, c.QueueStatus(), m.clearing)
	}
}

// checkSnapshot checks that a snapshot restores the same state, and that restoring a snapshot
// taken halfway and applying the rest equals loading everything.
func checkSnapshot(t *testing.T, c *connection.Connection, history []connection.Event) {
	t.Helper()
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := connection.Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := r.Snapshot()
	if string(again) != string(snap) {
		t.Fatalf("restore changed the state:\n%s\n%s", snap, again)
	}
	half := len(history) / 2
	mid := load(t, history[:half])
	midSnap, _ := mid.Snapshot()
	resumed, err := connection.Restore(midSnap)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range history[half:] {
		if err := resumed.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := resumed.Snapshot()
	if string(got) != string(snap) {
		t.Fatalf("snapshot at %d + rest != full load:\n got %s\nwant %s", half, got, snap)
	}
}
