package projections_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// failOnce applies every batch, then fails the first delivery of each batch anyway: the
// runner rolls the transaction back and the batch is delivered again.
type failOnce struct {
	projections.Projection
	mu       sync.Mutex
	seen     map[eventstore.Position]bool
	failures int
}

func (f *failOnce) Apply(ctx context.Context, tx *projections.Tx, evs []eventstore.RecordedEvent) error {
	if err := f.Projection.Apply(ctx, tx, evs); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last := evs[len(evs)-1].Position
	if !f.seen[last] {
		f.seen[last] = true
		f.failures++
		return errors.New("injected failure after a complete apply")
	}
	return nil
}

func TestRedeliveredBatchesApplyOnce(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		q, ps := allProjections()
		var wrapped []projections.Projection
		var flaky []*failOnce
		for _, p := range ps {
			f := &failOnce{Projection: p, seen: map[eventstore.Position]bool{}}
			wrapped = append(wrapped, f)
			flaky = append(flaky, f)
		}
		r := startRunnerLogged(t, e, silentLogger, wrapped...)
		_, stopProcess := startProcess(t, e, q, &clearkit.Completer{Store: e.store})
		buildScenario(t, e, &scenario{}, checkpoints{})
		r.waitFor(t, e, ps...)
		for _, f := range flaky {
			if f.failures == 0 {
				t.Fatalf("%s never saw a redelivery", f.Name())
			}
		}
		collectAll(t, e)
		redelivered := dump(t, e.db, readModelTables...)
		r.stop()
		stopProcess()

		// The same log applied once per batch must give the same rows.
		for _, p := range ps {
			if err := r.runner.Rebuild(ctx, p.Name()); err != nil {
				t.Fatal(err)
			}
		}
		q2, ps2 := allProjections()
		startProcess(t, e, q2, &clearkit.Completer{Store: e.store})
		r2 := startRunner(t, e, ps2...)
		r2.waitFor(t, e, ps2...)
		collectAll(t, e)
		if once := dump(t, e.db, readModelTables...); once != redelivered {
			t.Errorf("redelivered batches changed the read models:\nredelivered:\n%s\napplied once:\n%s", redelivered, once)
		}
		if n := countEvents(t, e, connection.StreamName(connection.Key(tenantA, connA)), connection.TypeQueueCleared); n != 2 {
			t.Errorf("QueueCleared events = %d, want 2", n)
		}
	})
}

// TestClearSurvivesCrash kills the projections in the middle of two clears: one whose
// completion was never recorded, one whose QueueCleared was appended but not yet projected.
// Each must end with exactly one QueueCleared.
func TestClearSurvivesCrash(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		streams := map[string]*clearkit.Stream{}
		clears := map[string]uuid.UUID{}
		for _, id := range []string{"conn-x", "conn-y"} {
			s, err := clearkit.Register(ctx, e.store, tenantA, id, "+491701234567", at(0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := clearkit.SeedPending(ctx, s, 40, at(1)); err != nil {
				t.Fatal(err)
			}
			streams[id] = s
		}
		q := projections.NewQueue()
		r := startRunner(t, e, q)
		for id, s := range streams {
			clears[id] = connection.ClearIDFor(tenantA, id, "crash")
			if _, err := s.Do(ctx, "alice", func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: clears[id], Reason: "r", Actor: "alice"}, at(2))
			}); err != nil {
				t.Fatal(err)
			}
		}
		r.waitFor(t, e, q)
		for id := range streams {
			if got, err := q.NextPending(ctx, e.db, connection.Key(tenantA, id), 0, 10); err != nil || len(got) != 0 {
				t.Fatalf("%s: pending after the clear request = %v (%v)", id, seqs(got), err)
			}
		}
		r.stop() // killed: neither clear is complete

		// conn-y: the completion was appended (twice: the second is a no-op), then the process died
		// before the queue projected it.
		first := &clearkit.Completer{Store: e.store}
		for range 2 {
			if err := first.CompleteClear(ctx, connection.Key(tenantA, "conn-y"), clears["conn-y"]); err != nil {
				t.Fatal(err)
			}
		}

		// Restart: projections and the process.
		q2 := projections.NewQueue()
		completer := &clearkit.Completer{Store: e.store}
		proc, _ := startProcess(t, e, q2, completer)
		r2 := startRunner(t, e, q2)
		waitUntil(t, "clears complete", func() (bool, error) {
			open, err := proc.OpenClears(ctx)
			return len(open) == 0, err
		})
		r2.waitFor(t, e, q2)
		for id := range streams {
			if n := countEvents(t, e, connection.StreamName(connection.Key(tenantA, id)), connection.TypeQueueCleared); n != 1 {
				t.Errorf("%s: QueueCleared events = %d, want 1", id, n)
			}
			sum, err := q2.Summary(ctx, e.db, tenantA, id)
			if err != nil || sum.Status != connection.QueueStatusOpen || sum.Pending != 0 {
				t.Errorf("%s: summary = %+v, %v", id, sum, err)
			}
		}
		if completer.Calls() != 1 {
			t.Errorf("completer called %d times after restart, want 1 (conn-x only)", completer.Calls())
		}
		// The purged rows go in the background, in chunks.
		cctx, stopCollector := context.WithCancel(ctx)
		collected := make(chan struct{})
		go func() {
			projections.RunCollector(cctx, e.db, silentLogger, 10*time.Millisecond, 7, q2)
			close(collected)
		}()
		waitUntil(t, "purged rows collected", func() (bool, error) {
			var n int
			err := e.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM queue_messages) + (SELECT COUNT(*) FROM queue_runs)`).Scan(&n)
			return n == 0, err
		})
		stopCollector()
		<-collected
	})
}

// TestAuditTamperDetected: tenantA's audit chain verifies (with another tenant's entries
// beside it), redacts a key's hash, and an altered entry breaks verification at that entry.
func TestAuditTamperDetected(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		auditHistory(t, e)
		audit := projections.NewAudit()
		r := startRunner(t, e, audit)
		r.waitFor(t, e, audit)
		v, err := audit.Verify(ctx, e.db, tenantA)
		if err != nil || !v.OK || v.Checked != 6 || v.Head == "" {
			t.Fatalf("verify before tampering = %+v, %v", v, err)
		}
		// A rights change on the tenant stream, audited with its key hash redacted.
		typ, body, err := auth.EncodeKeyEvent(auth.APIKeyCreated{KeyID: "key-1", TenantID: tenantA, Role: auth.RoleAdmin,
			Label: "ops", KeyHash: "secret-hash", CreatedBy: "root", CreatedAt: at(5)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Append(ctx, auth.TenantStream(tenantA), eventstore.Any,
			eventstore.EventData{ID: uuid.New(), Type: typ, Data: body}); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, e, audit)
		keys, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{EventType: auth.TypeAPIKeyCreated})
		if err != nil || len(keys.Entries) != 1 || keys.Entries[0].Actor != "root" || keys.Entries[0].Seq != 7 ||
			strings.Contains(string(keys.Entries[0].Details), "secret-hash") || !strings.Contains(string(keys.Entries[0].Details), "key-1") {
			t.Fatalf("key entries = %+v, %v", keys.Entries, err)
		}
		page, _ := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{Actor: "bob"})
		if len(page.Entries) != 2 || page.Entries[0].EventType != connection.TypeBanLifted || page.Entries[0].Reason != "appeal" {
			t.Errorf("entries by bob = %+v", page.Entries)
		}
		r.stop()

		var actor string
		if err := e.db.QueryRowContext(ctx, `SELECT actor FROM audit_entries WHERE tenant_id = $1 AND seq = 4`, tenantA).Scan(&actor); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(ctx, `UPDATE audit_entries SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 4`, tenantA); err != nil {
			t.Fatal(err)
		}
		v, err = audit.Verify(ctx, e.db, tenantA)
		if err != nil || v.OK || v.FirstBadSeq != 4 || !strings.Contains(v.Problem, "hash") {
			t.Errorf("verify after altering seq 4 = %+v, %v", v, err)
		}
		if _, err := e.db.ExecContext(ctx, `UPDATE audit_entries SET actor = $2 WHERE tenant_id = $1 AND seq = 4`, tenantA, actor); err != nil {
			t.Fatal(err)
		}
		if v, _ := audit.Verify(ctx, e.db, tenantA); !v.OK {
			t.Errorf("verify after restoring = %+v", v)
		}
		if _, err := e.db.ExecContext(ctx, `DELETE FROM audit_entries WHERE tenant_id = $1 AND seq = 2`, tenantA); err != nil {
			t.Fatal(err)
		}
		v, err = audit.Verify(ctx, e.db, tenantA)
		if err != nil || v.OK || v.FirstBadSeq != 3 {
			t.Errorf("verify after deleting seq 2 = %+v, %v", v, err)
		}
	})
}

// poisoned fails every batch containing the event poison while broken is set.
type poisoned struct {
	projections.Projection
	poison uuid.UUID
	broken atomic.Bool
}

func (p *poisoned) Apply(ctx context.Context, tx *projections.Tx, evs []eventstore.RecordedEvent) error {
	for _, e := range evs {
		if e.ID == p.poison && p.broken.Load() {
			return errors.New("poisoned event")
		}
	}
	return p.Projection.Apply(ctx, tx, evs)
}

func TestFailingProjectionIsIsolated(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "alice")
		cards := projections.NewCards()
		analytics := projections.NewAnalytics()
		pc := &poisoned{Projection: cards}
		pc.broken.Store(true)
		// The ban is the poison; it and the events after it stay out of the cards until fixed.
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "alice"}, at(1))
		})
		banRes := do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "whatsapp"}, at(2))
		})
		banEvents, err := e.store.ReadStream(ctx, connection.StreamName(connection.Key(tenantA, connA)), eventstore.Forwards, banRes.NextExpectedRevision-1, 1)
		if err != nil {
			t.Fatal(err)
		}
		pc.poison = banEvents[0].ID
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k", Recipient: "+4915100000001", Text: "x", Actor: "alice"}, at(3))
		})
		r := startRunnerLogged(t, e, silentLogger, pc, analytics)
		r.waitFor(t, e, analytics)
		waitUntil(t, "the failure to show", func() (bool, error) {
			for _, st := range r.runner.Statuses() {
				if st.Name == projections.CardsName && st.Failures > 0 && strings.Contains(st.LastError, "poisoned event") {
					return true, nil
				}
			}
			return false, nil
		})
		for _, st := range r.runner.Statuses() {
			if st.Name == projections.AnalyticsName && st.Failures != 0 {
				t.Errorf("analytics failing too: %+v", st)
			}
			if st.Name == projections.CardsName && !st.Checkpoint.Less(banEvents[0].Position) {
				t.Errorf("cards checkpoint %v passed the poisoned event at %v", st.Checkpoint, banEvents[0].Position)
			}
		}
		if days, err := analytics.Daily(ctx, e.db, tenantA, projections.AnalyticsQuery{}); err != nil || len(days) == 0 || days[0].Bans != 1 || days[0].Queued != 1 {
			t.Errorf("analytics while cards fail = %+v, %v", days, err)
		}
		if c, err := cards.Card(ctx, e.db, tenantA, connA); err == nil && c.LinkStatus == connection.LinkStatusBanned {
			t.Errorf("card shows the poisoned ban: %+v", c)
		}

		pc.broken.Store(false) // the fix
		r.waitFor(t, e, cards)
		c, err := cards.Card(ctx, e.db, tenantA, connA)
		if err != nil || c.LinkStatus != connection.LinkStatusBanned || c.Pending != 1 || c.QueueStatus != connection.QueueStatusHeld {
			t.Errorf("card after the fix = %+v, %v", c, err)
		}
		for _, st := range r.runner.Statuses() {
			if st.Failures != 0 || st.LastError != "" {
				t.Errorf("status after the fix = %+v", st)
			}
		}
	})
}
