package projections_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// secondDB opens another, empty read-model database of e's engine.
func secondDB(t *testing.T, e *env) *projections.DB {
	t.Helper()
	ctx := context.Background()
	var db *projections.DB
	if e.db.Dialect == projections.Postgres {
		sdb, err := sql.Open("pgx", pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sdb.Close() })
		db = &projections.DB{SQL: sdb, Dialect: projections.Postgres}
	} else {
		sdb, err := sqlitedb.Open(filepath.Join(t.TempDir(), "rows.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sdb.Close() })
		db = &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	}
	if err := projections.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

// queueMsg is what the history generator remembers of a queued message.
type queueMsg struct {
	id  uuid.UUID
	exp time.Time
}

// runsHistory drives random histories through the domain and applies them to two read models:
// the Queue holding runs (e.db) and the per-message-row Queue of before issue 12 (rows), each in
// batches cut at random places.
type runsHistory struct {
	t       *testing.T
	e       *env
	rng     *rand.Rand
	rows    *projections.DB
	runs    *projections.Queue
	perRow  *projections.Queue
	streams []*clearkit.Stream
	ids     []string
	msgs    []map[uint64]queueMsg
	pos     eventstore.Position
	minute  int
	keys    int
	// most runs and gone markers seen at a compare: the history must exercise both.
	maxRuns, maxGone int
	draining         bool
	// status, when set, also applies the message-status projection with runs (statusRuns, to
	// e.db) and with rows only (statusRows, to rows), and compare checks their answers.
	status                 bool
	statusRuns, statusRows *projections.MessageStatus
	statusPos              eventstore.Position
	broadcasts             []uuid.UUID
	// handed holds per stream messages acknowledged sent, unknown or delivered (receipts may
	// follow, late and in any order).
	handed    [][]connection.InFlightMessage
	receipted map[uuid.UUID]map[connection.MessageStatus]bool
}

func (h *runsHistory) now() time.Time { h.minute++; return at(h.minute) }

// do decides and appends on connection i; a refusal by the domain is not an error (the step is
// skipped), a failed append is.
func (h *runsHistory) do(i int, decide func(c *connection.Connection) ([]connection.Event, error)) bool {
	h.t.Helper()
	var refused bool
	_, err := h.streams[i].Do(context.Background(), "alice", func(c *connection.Connection) ([]connection.Event, error) {
		evs, err := decide(c)
		if err != nil {
			refused = true
			return nil, nil
		}
		return evs, nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return !refused
}

func (h *runsHistory) step() {
	i := h.rng.IntN(len(h.streams))
	c := h.streams[i].State()
	msgs := h.msgs[i]
	var ttl time.Duration
	if h.rng.IntN(4) == 0 {
		ttl = time.Duration(1+h.rng.IntN(5)) * time.Minute
	}
	switch op := h.rng.IntN(100); {
	case op < 18: // a 1:1 message
		h.keys++
		key := fmt.Sprintf("k%d", h.keys)
		now := h.now()
		if h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: key, Recipient: fmt.Sprintf("+49151%08d", h.keys),
				Text: "hello " + key, TTL: ttl, Actor: "alice"}, now)
		}) {
			msgs[c.LastSeq()] = queueMsg{connection.MessageIDFor(tenantA, h.ids[i], key), expiry(now, ttl)}
		}
	case op < 32: // a broadcast, as chunks or (as old streams hold it) one MessageQueued per message
		h.keys++
		n := 1 + h.rng.IntN(25)
		if h.rng.IntN(40) == 0 && !testing.Short() { // more than one chunk
			n = connection.BroadcastChunk + 1 + h.rng.IntN(200)
		}
		recipients := make([]string, n)
		for j := range recipients {
			recipients[j] = fmt.Sprintf("+4917%09d", h.rng.IntN(1_000_000_000))
		}
		recipients = dedupe(recipients)
		bid := connection.BroadcastIDFor(tenantA, h.ids[i], fmt.Sprintf("b%d", h.keys))
		expand := h.rng.IntN(2) == 0
		now := h.now()
		first := c.LastSeq() + 1
		if h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			evs, err := c.StartBroadcast(connection.StartBroadcast{BroadcastID: bid, Recipients: recipients, Text: "news",
				TTL: ttl, Actor: "alice"}, now)
			if err != nil || !expand {
				return evs, err
			}
			var out []connection.Event
			for _, e := range evs {
				out = append(out, connection.Expand(e)...)
			}
			return out, nil
		}) {
			for j := range recipients {
				msgs[first+uint64(j)] = queueMsg{connection.BroadcastMessageID(bid, j), expiry(now, ttl)}
			}
			h.broadcasts = append(h.broadcasts, bid)
		}
	case op < 55: // dispatch the head (several in a row)
		burst := 3 // filling phases leave runs with gone markers behind; draining ones empty them
		if h.draining {
			burst = 20
		}
		for range 1 + h.rng.IntN(burst) {
			head, ok := h.streams[i].State().Head()
			if !ok {
				break
			}
			m := msgs[head]
			dispatched := h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
				return c.Dispatch(connection.DispatchMessage{MessageID: m.id, Seq: head, ExpiresAt: m.exp}, at(h.minute))
			})
			if dispatched && h.rng.IntN(2) == 0 {
				// Sent at once, as the dispatcher records it: the dispatch and its outcome often
				// share a projection batch (the Queue then never writes the row in flight).
				h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
					return c.RecordOutcome(connection.Outcome{MessageID: m.id, Seq: head, Kind: connection.MessageStatusSent}, h.now())
				})
			}
		}
	case op < 65: // an outcome for a message in flight, or a late receipt (in any order, refused or not)
		fl := c.InFlight()
		if h.status && len(h.handed[i]) > 0 && (len(fl) == 0 || h.rng.IntN(3) == 0) {
			f := h.handed[i][h.rng.IntN(len(h.handed[i]))]
			kinds := []connection.MessageStatus{connection.MessageStatusDelivered, connection.MessageStatusRead}
			if h.rng.IntN(2) == 0 {
				kinds[0], kinds[1] = kinds[1], kinds[0] // read first, then a late delivered
			}
			for _, kind := range kinds[:1+h.rng.IntN(2)] {
				if h.receipted[f.MessageID] == nil {
					h.receipted[f.MessageID] = map[connection.MessageStatus]bool{}
				}
				if h.receipted[f.MessageID][kind] {
					continue // a receipt is recorded once (its event id is the message's and the kind's)
				}
				if h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
					return c.RecordOutcome(connection.Outcome{MessageID: f.MessageID, Seq: f.Seq, Kind: kind}, h.now())
				}) {
					h.receipted[f.MessageID][kind] = true
				}
			}
			break
		}
		if len(fl) == 0 {
			break
		}
		f := fl[h.rng.IntN(len(fl))]
		kind := connection.MessageStatusSent
		switch h.rng.IntN(8) {
		case 0, 1:
			kind = connection.MessageStatusFailed
		case 2:
			kind = connection.MessageStatusUnknown
		case 3:
			kind = connection.MessageStatusDelivered // a receipt acknowledges it
		}
		if h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			return c.RecordOutcome(connection.Outcome{MessageID: f.MessageID, Seq: f.Seq, Kind: kind, Code: "131026",
				Detail: fmt.Sprintf("d%d", h.minute), ServerID: fmt.Sprintf("wa-%d", h.minute)}, h.now())
		}) && h.status && kind != connection.MessageStatusFailed {
			h.handed[i] = append(h.handed[i], f)
			if kind == connection.MessageStatusDelivered {
				h.receipted[f.MessageID] = map[connection.MessageStatus]bool{kind: true}
			}
		}
	case op < 77: // cancel a message anywhere in the queue
		head, ok := c.Head()
		if !ok {
			break
		}
		seq := head + uint64(h.rng.IntN(int(c.LastSeq()-head+1))) // mostly still queued
		if h.rng.IntN(5) == 0 {
			seq = 1 + uint64(h.rng.IntN(int(c.LastSeq()))) // anywhere: often refused
		}
		m := msgs[seq]
		h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			return c.Cancel(connection.CancelMessage{MessageID: m.id, Seq: seq, Reason: "typo", Actor: "bob"}, h.now())
		})
	case op < 83: // expire the head, if it has a TTL
		head, ok := c.Head()
		if !ok || msgs[head].exp.IsZero() {
			break
		}
		m := msgs[head]
		h.minute += 10
		h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			return c.Expire(connection.ExpireMessage{MessageID: m.id, Seq: head, ExpiresAt: m.exp}, h.now())
		})
	case op < 89: // clear the whole queue or one broadcast (often in the middle of a broadcast's dispatch)
		h.keys++
		scope := connection.WholeQueue
		if bs := c.PendingBroadcasts(); len(bs) > 0 && h.rng.IntN(2) == 0 {
			scope = connection.BroadcastScope(bs[h.rng.IntN(len(bs))].BroadcastID)
		}
		id := connection.ClearIDFor(tenantA, h.ids[i], fmt.Sprintf("c%d", h.keys))
		h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: id, Scope: scope, Reason: "r", Actor: "bob"}, h.now())
		})
	case op < 95: // complete the clear in progress
		if cl, ok := c.CurrentClear(); ok {
			h.do(i, func(c *connection.Connection) ([]connection.Event, error) {
				return c.CompleteClear(connection.CompleteClear{ClearID: cl.ClearID, Actor: "clearing-process"}, h.now())
			})
		}
	default: // the collector, on both read models
		chunk := 1 + h.rng.IntN(40)
		for _, x := range []struct {
			q  *projections.Queue
			db *projections.DB
		}{{h.runs, h.e.db}, {h.perRow, h.rows}} {
			if _, err := x.q.Collect(context.Background(), x.db, chunk); err != nil {
				h.t.Fatal(err)
			}
		}
		if h.status {
			h.sync() // the status collector works on what its projection has applied
			for _, x := range []struct {
				s  *projections.MessageStatus
				db *projections.DB
			}{{h.statusRuns, h.e.db}, {h.statusRows, h.rows}} {
				if _, err := x.s.Collect(context.Background(), x.db, chunk); err != nil {
					h.t.Fatal(err)
				}
			}
		}
	}
}

func expiry(now time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return now.Add(ttl)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// sync applies the events appended since the last sync to both read models, each in batches
// cut at random places (so a broadcast's MessageQueued events are split across batches).
func (h *runsHistory) sync() {
	h.t.Helper()
	h.applyNew(&h.pos, applyTo{h.runs, h.e.db}, applyTo{h.perRow, h.rows})
	if h.status {
		h.syncStatus()
	}
}

// syncStatus applies the events appended since its last call to both message-status
// projections, in batches cut at random places.
func (h *runsHistory) syncStatus() {
	h.t.Helper()
	h.applyNew(&h.statusPos, applyTo{h.statusRuns, h.e.db}, applyTo{h.statusRows, h.rows})
}

// applyTo is a projection and the read-model database it writes to.
type applyTo struct {
	p  projections.Projection
	db *projections.DB
}

// applyNew applies the events of to's filter (to[0]'s: they share it) appended after *pos to
// each of to, in batches cut at random places, and moves *pos on to the last of them.
func (h *runsHistory) applyNew(pos *eventstore.Position, to ...applyTo) {
	h.t.Helper()
	ctx := context.Background()
	evs, err := h.e.store.ReadAll(ctx, *pos, 0, to[0].p.Filter())
	if err != nil {
		h.t.Fatal(err)
	}
	if len(evs) == 0 {
		return
	}
	*pos = evs[len(evs)-1].Position
	for _, x := range to {
		for rest := evs; len(rest) > 0; {
			n := min(len(rest), 1+h.rng.IntN(30))
			if h.rng.IntN(3) == 0 {
				n = len(rest)
			}
			tx, err := x.db.Begin(ctx)
			if err != nil {
				h.t.Fatal(err)
			}
			if err := x.p.Apply(ctx, tx, rest[:n]); err != nil {
				_ = tx.Rollback()
				h.t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				h.t.Fatal(err)
			}
			rest = rest[n:]
		}
	}
}

// collectAll runs collect on db, in chunks of random size, until it collects nothing more.
func (h *runsHistory) collectAll(collect func(context.Context, *projections.DB, int) (int, error), db *projections.DB) {
	h.t.Helper()
	for {
		n, err := collect(context.Background(), db, 1+h.rng.IntN(50))
		if err != nil {
			h.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// start skips the events earlier histories on the same store appended (their read models
// applied them already), then registers and pairs two connections named prefix-0 and
// prefix-1 for this history.
func (h *runsHistory) start(prefix string) {
	h.t.Helper()
	ctx := context.Background()
	skip := []applyTo{{h.runs, h.e.db}}
	positions := []*eventstore.Position{&h.pos}
	if h.status {
		skip, positions = append(skip, applyTo{h.statusRuns, h.e.db}), append(positions, &h.statusPos)
	}
	for i, x := range skip {
		evs, err := h.e.store.ReadAll(ctx, eventstore.Start, 0, x.p.Filter())
		if err != nil {
			h.t.Fatal(err)
		}
		if len(evs) > 0 {
			*positions[i] = evs[len(evs)-1].Position
		}
	}
	for j := range 2 {
		id := fmt.Sprintf("%s-%d", prefix, j)
		s, err := clearkit.Register(ctx, h.e.store, tenantA, id, "+491701234567", at(0))
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := s.Do(ctx, "alice", func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "alice"}, at(0))
		}); err != nil {
			h.t.Fatal(err)
		}
		h.streams, h.ids, h.msgs = append(h.streams, s), append(h.ids, id), append(h.msgs, map[uint64]queueMsg{})
		h.handed = append(h.handed, nil)
		if h.receipted == nil {
			h.receipted = map[uuid.UUID]map[connection.MessageStatus]bool{}
		}
	}
}

// compareStatus checks that the message-status reads (every message ever queued, every
// broadcast, and an id never queued) answer alike with runs and with rows.
func (h *runsHistory) compareStatus(when string) {
	h.t.Helper()
	ctx := context.Background()
	var ids []uuid.UUID
	for _, m := range h.msgs {
		for _, q := range m {
			ids = append(ids, q.id)
		}
	}
	ids = append(ids, uuid.New())
	for _, id := range ids {
		for _, tenant := range []string{tenantA, tenantB} {
			v1, err1 := h.statusRuns.Message(ctx, h.e.db, tenant, id)
			v2, err2 := h.statusRows.Message(ctx, h.rows, tenant, id)
			if errors.Is(err1, projections.ErrNotFound) != errors.Is(err2, projections.ErrNotFound) ||
				(err1 == nil) != (err2 == nil) || !reflect.DeepEqual(v1, v2) {
				h.t.Fatalf("%s: Message(%s, %s)\nruns: %+v %v\nrows: %+v %v", when, tenant, id, v1, err1, v2, err2)
			}
		}
	}
	for _, bid := range h.broadcasts {
		p1, err1 := h.statusRuns.Broadcast(ctx, h.e.db, tenantA, bid)
		p2, err2 := h.statusRows.Broadcast(ctx, h.rows, tenantA, bid)
		if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(p1, p2) {
			h.t.Fatalf("%s: Broadcast(%s)\nruns: %+v %v\nrows: %+v %v", when, bid, p1, err1, p2, err2)
		}
	}
}

// compare checks that every read of the Queue answers alike on both read models.
func (h *runsHistory) compare(when string) {
	h.t.Helper()
	ctx := context.Background()
	var nRuns, nGone int
	if err := h.e.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM queue_runs), (SELECT COUNT(*) FROM queue_run_gone)`).Scan(&nRuns, &nGone); err != nil {
		h.t.Fatal(err)
	}
	h.maxRuns, h.maxGone = max(h.maxRuns, nRuns), max(h.maxGone, nGone)
	if h.status {
		h.compareStatus(when)
		return
	}
	// The runs' invariants: every gone marker lies above its run's live_from, inside the run,
	// and gone_count counts them.
	var stray, miscounted int
	if err := h.e.db.QueryRowContext(ctx, `SELECT
(SELECT COUNT(*) FROM queue_run_gone g WHERE NOT EXISTS (SELECT 1 FROM queue_runs r
  WHERE r.conn_id = g.conn_id AND g.seq > r.live_from AND g.seq <= r.last_seq)),
(SELECT COUNT(*) FROM queue_runs r WHERE r.gone_count <> (SELECT COUNT(*) FROM queue_run_gone g
  WHERE g.conn_id = r.conn_id AND g.seq >= r.first_seq AND g.seq <= r.last_seq) OR r.live_from > r.last_seq)`).Scan(&stray, &miscounted); err != nil {
		h.t.Fatal(err)
	}
	if stray != 0 || miscounted != 0 {
		h.t.Fatalf("%s: %d gone markers outside a run's live part, %d runs miscounted or dead", when, stray, miscounted)
	}
	for i, id := range h.ids {
		key := connection.Key(tenantA, id)
		s1, err1 := h.runs.Summary(ctx, h.e.db, tenantA, id)
		s2, err2 := h.perRow.Summary(ctx, h.rows, tenantA, id)
		if err1 != nil || err2 != nil {
			h.t.Fatalf("%s: summary: %v, %v", when, err1, err2)
		}
		if !reflect.DeepEqual(s1, s2) {
			h.t.Fatalf("%s: summary of %s\nruns: %+v\nrows: %+v", when, id, s1, s2)
		}
		last := h.streams[i].State().LastSeq()
		afters := []uint64{0, last, uint64(h.rng.IntN(int(last) + 1)), uint64(h.rng.IntN(int(last) + 1))}
		for _, after := range afters {
			for _, limit := range []int{1, 1 + h.rng.IntN(7), 600} {
				n1, err1 := h.runs.NextPending(ctx, h.e.db, key, after, limit)
				n2, err2 := h.perRow.NextPending(ctx, h.rows, key, after, limit)
				if err1 != nil || err2 != nil {
					h.t.Fatalf("%s: next pending: %v, %v", when, err1, err2)
				}
				if !reflect.DeepEqual(n1, n2) {
					h.t.Fatalf("%s: NextPending(%s, %d, %d)\nruns: %v\nrows: %v", when, id, after, limit, seqs(n1), seqs(n2))
				}
			}
		}
		// Every position from just below the head on (sampled in a long queue), and a few below.
		probe := []uint64{1, last, last + 1}
		head, _ := h.streams[i].State().Head()
		for seq := max(head, 4) - 3; seq <= last+1; seq++ {
			if last-head < 400 || h.rng.IntN(int(last-head)/400+1) == 0 {
				probe = append(probe, seq)
			}
		}
		for range 12 {
			probe = append(probe, uint64(h.rng.IntN(int(last)+2)))
		}
		for _, seq := range probe {
			p1, err1 := h.runs.Pending(ctx, h.e.db, key, seq)
			p2, err2 := h.perRow.Pending(ctx, h.rows, key, seq)
			if errors.Is(err1, projections.ErrNotFound) != errors.Is(err2, projections.ErrNotFound) || !reflect.DeepEqual(p1, p2) {
				h.t.Fatalf("%s: Pending(%s, %d)\nruns: %+v %v\nrows: %+v %v", when, id, seq, p1, err1, p2, err2)
			}
			// PendingWindow (the dispatcher's read ahead) answers, for every position of its
			// range up to the last it returns, what Pending answers: no message missing, none
			// extra, none different; and it returns the one at seq whenever Pending does.
			if h.rng.IntN(4) != 0 {
				continue // sampled: each check reads every position of the window
			}
			n := 1 + h.rng.IntN(20)
			for _, db := range []struct {
				q  *projections.Queue
				db *projections.DB
			}{{h.runs, h.e.db}, {h.perRow, h.rows}} {
				win, err := db.q.PendingWindow(ctx, db.db, key, seq, n)
				if err != nil {
					h.t.Fatalf("%s: PendingWindow(%s, %d, %d): %v", when, id, seq, n, err)
				}
				if (err2 == nil) != (len(win) > 0 && win[0].Seq == seq) {
					h.t.Fatalf("%s: PendingWindow(%s, %d, %d) = %v; Pending found it: %v", when, id, seq, n, seqs(win), err2 == nil)
				}
				next := 0
				for s := seq; len(win) > 0 && s <= win[len(win)-1].Seq; s++ {
					want, err := h.perRow.Pending(ctx, h.rows, key, s)
					if errors.Is(err, projections.ErrNotFound) {
						if next < len(win) && win[next].Seq == s {
							h.t.Fatalf("%s: PendingWindow(%s, %d, %d) holds %d, not pending", when, id, seq, n, s)
						}
						continue
					}
					if err != nil {
						h.t.Fatal(err)
					}
					if next >= len(win) || !reflect.DeepEqual(win[next], want) {
						h.t.Fatalf("%s: PendingWindow(%s, %d, %d) at %d: %v, want %+v", when, id, seq, n, s, seqs(win), want)
					}
					next++
				}
				if len(win) > 0 && win[len(win)-1].Seq >= seq+uint64(n) {
					h.t.Fatalf("%s: PendingWindow(%s, %d, %d) = %v past its range", when, id, seq, n, seqs(win))
				}
			}
		}
		f1, err1 := h.runs.InFlight(ctx, h.e.db, key)
		f2, err2 := h.perRow.InFlight(ctx, h.rows, key)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(f1, f2) {
			h.t.Fatalf("%s: in flight of %s\nruns: %+v %v\nrows: %+v %v", when, id, f1, err1, f2, err2)
		}
	}
}

// TestQueueRunsAnswerAsRows drives random histories (1:1 messages, broadcasts as chunks and as
// per-message events, dispatches, outcomes, cancels, expiries, clears of the whole queue and of
// one broadcast, completions, the collector) and checks after every few steps that the Queue
// holding broadcasts as runs answers every read (Summary, NextPending, Pending, InFlight) exactly
// as the per-message-row Queue of before does. At the end both are collected: no run is left of
// a purged stretch.
func TestQueueRunsAnswerAsRows(t *testing.T) {
	seeds, steps := 3, 100
	if testing.Short() {
		seeds, steps = 2, 60
	}
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		rows := secondDB(t, e)
		var maxRuns, maxGone int
		defer func() {
			if !t.Failed() && (maxRuns == 0 || maxGone == 0) {
				t.Errorf("the histories held at most %d runs and %d gone markers: they test nothing of runs", maxRuns, maxGone)
			}
		}()
		for seed := range seeds {
			h := &runsHistory{t: t, e: e, rng: rand.New(rand.NewPCG(uint64(seed), 12)), rows: rows,
				runs: projections.NewQueue(), perRow: projections.NewRowQueue(), pos: eventstore.Start}
			h.start(fmt.Sprintf("runs-%d", seed)) // this seed's connections; earlier seeds' events are applied already
			for n := range steps {
				if n%20 == 0 {
					h.draining = h.rng.IntN(2) == 0
				}
				h.step()
				if h.rng.IntN(3) == 0 || n == steps-1 {
					h.sync()
					h.compare(fmt.Sprintf("seed %d step %d", seed, n))
				}
			}
			// Everything purged is collected from both; a run wholly purged is gone.
			h.collectAll(h.runs.Collect, e.db)
			h.collectAll(h.perRow.Collect, rows)
			h.compare(fmt.Sprintf("seed %d collected", seed))
			maxRuns, maxGone = max(maxRuns, h.maxRuns), max(maxGone, h.maxGone)
			var purged int
			if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue_runs r JOIN queue_conns c ON c.conn_id = r.conn_id
WHERE r.last_seq <= c.purged_upto`).Scan(&purged); err != nil || purged != 0 {
				t.Errorf("seed %d: %d runs below the purge watermark after collection (%v)", seed, purged, err)
			}
		}
	})
}

// TestStatusRunsAnswerAsRows drives the random histories of TestQueueRunsAnswerAsRows through
// the message-status projection holding broadcast chunks as runs and through the one writing
// a row per queued message (before issue 12), and checks after every few steps and after the
// collector that every message's status, history, clear and broadcast progress read alike —
// messages of runs still queued, changed (their rows materialized from the run), purged by a
// clear before and after collection — and that an id nobody queued and another tenant's
// reads are not found in both.
func TestStatusRunsAnswerAsRows(t *testing.T) {
	seeds, steps := 2, 100
	if testing.Short() {
		seeds, steps = 1, 60
	}
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		rows := secondDB(t, e)
		var sawRuns, sawMaterialized, sawKept int
		covered := func() bool { return sawRuns > 0 && sawMaterialized > 0 && sawKept > 0 }
		// At least seeds histories, more (up to 8) until they have covered every kind of state:
		// a change to the history generator must not leave the check below testing too little.
		for seed := 0; seed < seeds || (seed < 8 && !covered()); seed++ {
			h := &runsHistory{t: t, e: e, rng: rand.New(rand.NewPCG(uint64(seed), 14)), rows: rows,
				runs: projections.NewQueue(), perRow: projections.NewRowQueue(), pos: eventstore.Start,
				status: true, statusRuns: projections.NewMessageStatus(), statusRows: projections.NewRowMessageStatus(), statusPos: eventstore.Start}
			h.start(fmt.Sprintf("status-%d", seed))
			for n := range steps {
				if n%20 == 0 {
					h.draining = h.rng.IntN(2) == 0
				}
				h.step()
				if h.rng.IntN(3) == 0 || n == steps-1 {
					h.sync()
					h.compare(fmt.Sprintf("seed %d step %d", seed, n))
					var nRuns, nMat, nKept int
					if err := e.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM status_runs),
(SELECT COUNT(*) FROM status_messages m JOIN status_run_ids i ON i.message_id = m.message_id),
(SELECT COUNT(*) FROM status_purges WHERE gc_next > to_seq)`).Scan(&nRuns, &nMat, &nKept); err != nil {
						t.Fatal(err)
					}
					sawRuns, sawMaterialized, sawKept = max(sawRuns, nRuns), max(sawMaterialized, nMat), max(sawKept, nKept)
				}
			}
			h.collectAll(h.statusRuns.Collect, e.db)
			h.collectAll(h.statusRows.Collect, rows)
			h.compare(fmt.Sprintf("seed %d collected", seed))
		}
		if !covered() {
			t.Errorf("the histories held at most %d runs, %d rows materialized from runs, %d purge ranges kept for runs: they test too little",
				sawRuns, sawMaterialized, sawKept)
		}
	})
}
