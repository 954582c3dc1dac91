package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/eventstore/storetest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/internal/testwait"
)

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatalf("sqlitedb.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConformance runs the port's suite with every test's store on one shared database file,
// as the embedded mode shares one file between all its parts.
//
// Under the race detector the volume tests use the short volumes (10k events): the race build
// instruments SQLite itself (modernc's C translated to Go, with checkptr), which makes the
// 100k-event runs take minutes without checking any more concurrency. Run the full volumes
// with `go test ./adapters/eventstore/sqlite/` (no -race, no -short).
func TestConformance(t *testing.T) {
	db := openDB(t)
	short := testing.Short() || raceEnabled
	if short && !testing.Short() {
		t.Log("race detector on: volume tests use 10k events; run without -race for 100k")
	}
	storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
		s, err := sqlite.New(t.Context(), db, sqlite.Options{Clock: clock})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, storetest.Options{Short: short, ReportsExisting: true})
}

// TestCrossProcessWakeUp: a subscriber on one Store sees events appended through another Store
// on the same file (as another process would) through the fallback poll.
func TestCrossProcessWakeUp(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	reader, err := sqlite.New(ctx, db, sqlite.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	writer, err := sqlite.New(ctx, db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	got := make(chan eventstore.RecordedEvent, 1)
	subCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- reader.Subscribe(subCtx, eventstore.Start, eventstore.Filter{}, func(e eventstore.RecordedEvent) error {
			got <- e
			return nil
		})
	}()
	ev := eventstore.EventData{ID: uuid.New(), Type: "Other", Data: []byte(`{}`)}
	if _, err := writer.Append(ctx, "other-process", eventstore.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.ID != ev.ID {
			t.Fatalf("subscriber: got event %s, want %s", e.ID, ev.ID)
		}
	case <-time.After(testwait.Limit):
		t.Fatalf("subscriber on another Store: got no event within 30s, want the appended one")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe after cancel: got %v, want context.Canceled", err)
	}
}

// TestClose: after Close every call fails with ErrClosed and running subscriptions end.
func TestClose(t *testing.T) {
	ctx := t.Context()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "close.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(ctx, eventstore.Start, eventstore.Filter{}, func(eventstore.RecordedEvent) error { return nil })
	}()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Fatalf("Subscribe after Close: got %v, want ErrClosed", err)
		}
	case <-time.After(testwait.Limit):
		t.Fatalf("Subscribe did not return within 30s of Close")
	}
	_, err = s.Append(ctx, "s", eventstore.Any, eventstore.EventData{ID: uuid.New(), Type: "T"})
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(ctx, eventstore.Start, 0, eventstore.Filter{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadAll after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.ReadStream(ctx, "s", eventstore.Forwards, 0, 0); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadStream after Close: got %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: got %v, want nil", err)
	}
}

// TestDurableAcrossReopen: appended events survive closing and reopening the file, and the
// migration is not applied twice.
func TestDurableAcrossReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "reopen.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev := eventstore.EventData{ID: uuid.New(), Type: "Kept", Data: []byte(`{"a":1}`)}
	res, err := s.Append(ctx, "kept", eventstore.NoStream, ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	evs, err := s.ReadStream(ctx, "kept", eventstore.Forwards, 0, 0)
	if err != nil || len(evs) != 1 || evs[0].ID != ev.ID || evs[0].Position != res.Position {
		t.Fatalf("after reopen: got %d events, %v, want the event %s at %s", len(evs), err, ev.ID, res.Position)
	}
	// The next append continues the positions.
	res2, err := s.Append(ctx, "kept", eventstore.Exact(0), eventstore.EventData{ID: uuid.New(), Type: "Kept"})
	if err != nil || !res.Position.Less(res2.Position) {
		t.Fatalf("append after reopen: got %+v, %v, want a position after %s", res2, err, res.Position)
	}
}

// TestSparseFilterScansForward: a subscription whose filter matches rarely still sees a
// matching event that follows far more unmatched events than one scan window holds.
func TestSparseFilterScansForward(t *testing.T) {
	ctx := t.Context()
	opts := sqlite.Options{PageSize: 100}
	sqlite.SetScanWindow(&opts, 500)
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "sparse.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const noise = 3_000 // six scan windows
	batch := make([]eventstore.EventData, 100)
	for i := 0; i < noise/len(batch); i++ {
		for j := range batch {
			batch[j] = eventstore.EventData{ID: uuid.New(), Type: "Noise"}
		}
		if _, err := s.Append(ctx, "noise", eventstore.Any, batch...); err != nil {
			t.Fatal(err)
		}
	}
	rare := eventstore.EventData{ID: uuid.New(), Type: "Rare"}
	if _, err := s.Append(ctx, "rare", eventstore.NoStream, rare); err != nil {
		t.Fatal(err)
	}
	subCtx, cancel := context.WithTimeout(ctx, testwait.Limit)
	defer cancel()
	var got []eventstore.RecordedEvent
	stop := errors.New("stop")
	err = s.Subscribe(subCtx, eventstore.Start, eventstore.Filter{EventTypes: []string{"Rare"}}, func(e eventstore.RecordedEvent) error {
		got = append(got, e)
		return stop
	})
	if !errors.Is(err, stop) || len(got) != 1 || got[0].ID != rare.ID {
		t.Fatalf("sparse subscription: got %d events, error %v, want the one Rare event %s and the handler's error", len(got), err, rare.ID)
	}
}

// TestTwoHandlesRace races appends at one expected revision through two database handles on
// one file, standing in for two processes: they share no mutex, only SQLite's write lock.
// Exactly one wins; the others see the winner's revision, and none fails with SQLITE_BUSY.
func TestTwoHandlesRace(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "two.db")
	var stores []*sqlite.Store
	for range 2 {
		s, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	if _, err := stores[0].Append(ctx, "race", eventstore.NoStream, eventstore.EventData{ID: uuid.New(), Type: "First"}); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			evs := []eventstore.EventData{{ID: uuid.New(), Type: "W"}, {ID: uuid.New(), Type: "W"}}
			_, errs[i] = stores[i%2].Append(ctx, "race", eventstore.Exact(0), evs...)
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		var we *eventstore.WrongExpectedRevisionError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &we) && we.Actual == 2:
		default:
			t.Fatalf("writer %d: got error %v (busy: %v), want success or a wrong expected revision at 2", i, err, sqlitedb.IsBusy(err))
		}
	}
	if wins != 1 {
		t.Fatalf("writers through two handles: got %d winners, want exactly 1", wins)
	}
	evs, err := stores[1].ReadStream(ctx, "race", eventstore.Forwards, 0, 0)
	if err != nil || len(evs) != 3 {
		t.Fatalf("stream after the race: got %d events, %v, want 3", len(evs), err)
	}
}
