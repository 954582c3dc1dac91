package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/storetest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openStore opens a migrated store on a fresh database. Options may tune it.
func openStore(t *testing.T, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	st, err := postgres.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestConformance runs the port's conformance suite; all its tests share one database.
func TestConformance(t *testing.T) {
	url := pgtest.URL(t)
	storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
		return openStore(t, url, postgres.Options{Clock: clock})
	}, storetest.Options{Short: testing.Short(), ReportsExisting: true})
}

// TestConformanceSmallPages runs the suite with tiny pages and COPY for every batch of 2 or
// more, so that paging and the COPY path are exercised by every test.
func TestConformanceSmallPages(t *testing.T) {
	if testing.Short() {
		t.Skip("covered by TestConformance in -short mode")
	}
	url := pgtest.URL(t)
	storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
		return openStore(t, url, postgres.Options{Clock: clock, CopyThreshold: 2, PageSize: 100})
	}, storetest.Options{Short: true, ReportsExisting: true})
}

func events(n int, typ string) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = eventstore.EventData{ID: uuid.New(), Type: typ, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	return evs
}

// hold runs an append up to its commit; the transaction is rolled back when the test ends
// unless the test committed it (a failing test must not leave the pool waiting for it).
func hold(t *testing.T, st *postgres.Store, stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) *postgres.HeldAppend {
	t.Helper()
	h, err := st.AppendHeld(context.Background(), stream, exp, evs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Rollback(context.Background()) })
	return h
}

// collector records what a subscription delivers.
type collector struct {
	mu  sync.Mutex
	got []eventstore.RecordedEvent
	ch  chan struct{}
}

func (c *collector) handle(e eventstore.RecordedEvent) error {
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []eventstore.RecordedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]eventstore.RecordedEvent(nil), c.got...)
}

func (c *collector) waitFor(t *testing.T, n int) []eventstore.RecordedEvent {
	t.Helper()
	deadline := time.After(testwait.Limit)
	for {
		if got := c.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("subscription delivered %d events within %s, want %d", len(c.snapshot()), testwait.Limit, n)
		}
	}
}

func subscribe(t *testing.T, st eventstore.Store, f eventstore.Filter) *collector {
	t.Helper()
	c := &collector{ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Subscribe(ctx, eventstore.Start, f, c.handle) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Subscribe returned %v after cancel, want context.Canceled", err)
		}
	})
	return c
}

// TestOutOfOrderCommit is the trap of a sequence-numbered log: transaction A inserts first
// (lower seq) but commits after transaction B. A subscriber must not deliver B before A's fate
// is known, and then must deliver both, in the order ReadAll reports, skipping neither — also
// a subscriber whose filter matches only B (its cursor must not jump past A's events either).
func TestOutOfOrderCommit(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, pgtest.URL(t), postgres.Options{PendingPoll: time.Millisecond, ReadWait: 100 * time.Millisecond})
	all := subscribe(t, st, eventstore.Filter{})
	onlyB := subscribe(t, st, eventstore.Filter{StreamPrefixes: []string{"b-"}})
	onlyA := subscribe(t, st, eventstore.Filter{StreamPrefixes: []string{"a-"}})

	evA, evB := events(2, "A"), events(3, "B")
	heldA := hold(t, st, "a-1", eventstore.NoStream, evA...)
	heldB := hold(t, st, "b-1", eventstore.NoStream, evB...)
	if !heldA.Result.Position.Less(heldB.Result.Position) {
		t.Fatalf("A began first: want A's position %s < B's %s", heldA.Result.Position, heldB.Result.Position)
	}
	if err := heldB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// B is committed and readable by stream, but held back from the global log while A is open.
	if got, err := st.ReadStream(ctx, "b-1", eventstore.Forwards, 0, 0); err != nil || len(got) != 3 {
		t.Fatalf("ReadStream(b-1) after B committed: got %d events, %v; want 3", len(got), err)
	}
	if got, err := st.ReadAll(ctx, eventstore.Start, 0, eventstore.Filter{}); err != nil || len(got) != 0 {
		t.Fatalf("ReadAll while A is open: got %d events, %v; want none", len(got), err)
	}
	// Give the subscribers time to (wrongly) deliver B; they poll every few ms meanwhile.
	time.Sleep(300 * time.Millisecond)
	if n := len(all.snapshot()); n != 0 {
		t.Fatalf("subscriber delivered %d events while the older transaction A was open, want 0", n)
	}
	if n := len(onlyB.snapshot()); n != 0 {
		t.Fatalf("filtered subscriber delivered %d events of B while A was open, want 0", n)
	}
	if err := heldA.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	got := all.waitFor(t, 5)
	readAll, err := st.ReadAll(ctx, eventstore.Start, 0, eventstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]eventstore.EventData(nil), evA...), evB...)
	if len(readAll) != len(want) {
		t.Fatalf("ReadAll after both commits: got %d events, want %d", len(readAll), len(want))
	}
	for i := range want {
		if readAll[i].ID != want[i].ID || got[i].ID != want[i].ID || got[i].Position != readAll[i].Position {
			t.Fatalf("event %d: subscriber got %s at %s, ReadAll %s at %s; want %s (A's events, then B's)",
				i, got[i].ID, got[i].Position, readAll[i].ID, readAll[i].Position, want[i].ID)
		}
	}
	if b := onlyB.waitFor(t, 3); b[0].ID != evB[0].ID || b[2].ID != evB[2].ID {
		t.Fatalf("filtered subscriber got %v, want B's events", b)
	}
	if a := onlyA.waitFor(t, 2); a[0].ID != evA[0].ID || a[1].ID != evA[1].ID {
		t.Fatalf("A-filtered subscriber got %v, want A's events", a)
	}
	// Nothing more arrives (no duplicates).
	time.Sleep(50 * time.Millisecond)
	if n := len(all.snapshot()); n != 5 {
		t.Fatalf("subscriber delivered %d events in total, want 5", n)
	}
}

// TestRolledBackTransactionReleasesLaterCommits checks that events committed behind an
// open transaction that then rolls back are delivered, and the rolled-back ones never are.
func TestRolledBackTransactionReleasesLaterCommits(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, pgtest.URL(t), postgres.Options{})
	all := subscribe(t, st, eventstore.Filter{})
	heldA := hold(t, st, "a", eventstore.NoStream, events(2, "A")...)
	evB := events(1, "B")
	if _, err := st.Append(ctx, "b", eventstore.NoStream, evB...); err != nil {
		t.Fatal(err)
	}
	if err := heldA.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	got := all.waitFor(t, 1)
	if got[0].ID != evB[0].ID {
		t.Fatalf("delivered %s, want B's event %s", got[0].ID, evB[0].ID)
	}
	if _, err := st.ReadStream(ctx, "a", eventstore.Forwards, 0, 0); err == nil {
		t.Fatal("stream a exists after its only append rolled back")
	}
	// A's stream is free again at NoStream.
	if _, err := st.Append(ctx, "a", eventstore.NoStream, events(1, "A")...); err != nil {
		t.Fatalf("append to a after rollback: %v", err)
	}
	if got := all.waitFor(t, 2); len(got) != 2 || got[1].Stream != "a" {
		t.Fatalf("delivered %v, want B's event then a's new one", got)
	}
}

// TestSameStreamWritersOrdered checks that a second writer of a stream waits for the first
// (the advisory lock), so that revision order and global order agree.
func TestSameStreamWritersOrdered(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, pgtest.URL(t), postgres.Options{})
	held := hold(t, st, "s", eventstore.NoStream, events(1, "First")...)
	second := make(chan error, 1)
	var res eventstore.AppendResult
	go func() {
		var err error
		res, err = st.Append(ctx, "s", eventstore.Any, events(1, "Second")...)
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("second writer finished (%v) while the first held the stream", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := held.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if res.NextExpectedRevision != 1 || !held.Result.Position.Less(res.Position) {
		t.Fatalf("second append: got revision %d at %s, want revision 1 after %s", res.NextExpectedRevision, res.Position, held.Result.Position)
	}
}

// TestMigrateTwice checks that migrations are versioned: a second run is a no-op.
func TestMigrateTwice(t *testing.T) {
	st := openStore(t, pgtest.URL(t), postgres.Options{})
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	var version int64
	if err := st.Pool().QueryRow(context.Background(),
		"SELECT max(version_id) FROM "+postgres.MigrationsTable).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 1 {
		t.Fatalf("migration version = %d, want >= 1", version)
	}
}

// TestConformanceGroupCommit runs the whole suite with group commit on: every single-event
// append goes through the shared-transaction path (alone or grouped with concurrent ones).
func TestConformanceGroupCommit(t *testing.T) {
	url := pgtest.URL(t)
	storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
		return openStore(t, url, postgres.Options{Clock: clock, GroupCommitters: 4})
	}, storetest.Options{Short: testing.Short(), ReportsExisting: true})
}

// TestPageReadsIgnoreStaleStatistics checks that a subscription page is read by an index scan
// of the global order even when the table's statistics say it is empty (as right after a large
// append, before autovacuum has analysed it): planned from those estimates, PostgreSQL read
// every event past the cursor into a bitmap and sorted them, for every page, so catching up on
// N events cost O(N²) (issue 12's catch-up profile).
func TestPageReadsIgnoreStaleStatistics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := openStore(t, pgtest.URL(t), postgres.Options{})
	for _, q := range []string{`ALTER TABLE waqueue_events SET (autovacuum_enabled = false)`, `ANALYZE waqueue_events`} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Append(ctx, "s-1", eventstore.NoStream, events(30_000, "T")...); err != nil {
		t.Fatal(err)
	}
	for _, f := range []eventstore.Filter{{}, {StreamPrefixes: []string{"s-"}, EventTypes: []string{"T"}}} {
		plan, err := st.ExplainPage(ctx, eventstore.Start, f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(plan, "Index Scan using waqueue_events_pkey") && !strings.Contains(plan, "Index Only Scan") {
			t.Errorf("filter %+v: no index scan of the global order:\n%s", f, plan)
		}
		for _, bad := range []string{"Sort", "Bitmap", "Seq Scan"} {
			if strings.Contains(plan, bad) {
				t.Errorf("filter %+v: the plan has a %s:\n%s", f, bad, plan)
			}
		}
	}
}
