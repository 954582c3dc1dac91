package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestPreparedStatementsBounded: appends and subscriptions reuse prepared statements (the
// cache does not grow with the events), and subscriptions with more distinct filters than the
// cache holds still get exactly their events — the ones past the bound run unprepared — also
// after Close released the statements while they ran.
func TestPreparedStatementsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
	defer cancel()
	st, err := sqlite.New(ctx, openDB(t), sqlite.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(typ string) eventstore.EventData {
		return eventstore.EventData{ID: uuid.New(), Type: typ, Data: json.RawMessage(`{}`)}
	}
	for i := range 20 {
		if _, err := st.Append(ctx, "warm", eventstore.Any, ev(fmt.Sprintf("W%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	warm := sqlite.PreparedStatements(st)
	for i := range 50 {
		if _, err := st.Append(ctx, "warm", eventstore.Any, ev(fmt.Sprintf("W%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := sqlite.PreparedStatements(st); got != warm || got == 0 {
		t.Fatalf("%d prepared statements after 50 more appends, %d before: want the same, not zero", got, warm)
	}

	// One subscription per event type, each filtering on its own type: more filters than the
	// cache holds. Each must get exactly the events of its type.
	n := sqlite.MaxPreparedStatements + 10
	type sub struct {
		mu  sync.Mutex
		got []string
	}
	subs := make([]*sub, n)
	var wg sync.WaitGroup
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range subs {
		subs[i] = &sub{}
		typ := fmt.Sprintf("T%03d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = st.Subscribe(subCtx, eventstore.Start, eventstore.Filter{EventTypes: []string{typ}}, func(e eventstore.RecordedEvent) error {
				subs[i].mu.Lock()
				subs[i].got = append(subs[i].got, e.Type+"/"+e.Stream)
				subs[i].mu.Unlock()
				return nil
			})
		}()
	}
	const rounds = 3
	for r := range rounds {
		for i := range n {
			if _, err := st.Append(ctx, fmt.Sprintf("s%d", r), eventstore.Any, ev(fmt.Sprintf("T%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(testwait.AtLeast(2 * time.Minute))
	for i, s := range subs {
		for {
			s.mu.Lock()
			k := len(s.got)
			s.mu.Unlock()
			if k >= rounds {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("subscription %d got %d events, want %d", i, k, rounds)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got := sqlite.PreparedStatements(st); got > sqlite.MaxPreparedStatements {
		t.Fatalf("%d prepared statements, want at most %d", got, sqlite.MaxPreparedStatements)
	}
	// Close releases the statements under the running subscriptions; they end with ErrClosed.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, s := range subs {
		want := []string{}
		for r := range rounds {
			want = append(want, fmt.Sprintf("T%03d/s%d", i, r))
		}
		if fmt.Sprint(s.got) != fmt.Sprint(want) {
			t.Fatalf("subscription %d got %v, want %v", i, s.got, want)
		}
	}
	if got := sqlite.PreparedStatements(st); got != 0 {
		t.Fatalf("%d prepared statements after Close", got)
	}
}
