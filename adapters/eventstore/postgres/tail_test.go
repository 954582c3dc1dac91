package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
)

// TestTailReadsAreShared: subscriptions at the tail with different filters share one page
// read per commit, and each still gets exactly the events its own filter selects, in order.
// Before tail reads were shared, every subscription read every page itself (4 reads a round
// here), and every commit woke the store's subscriptions twice: directly, and again through
// the echo of its own NOTIFY.
func TestTailReadsAreShared(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, pgtest.URL(t), postgres.Options{IdlePoll: time.Hour})
	filters := []eventstore.Filter{
		{},
		{StreamPrefixes: []string{"a-"}},
		{EventTypes: []string{"Even"}},
		{StreamPrefixes: []string{"b-"}, EventTypes: []string{"Odd"}},
	}
	subs := make([]*collector, len(filters))
	for i, f := range filters {
		subs[i] = subscribe(t, st, f)
	}
	// Every subscription reads up to the first event and waits at the tail.
	if _, err := st.Append(ctx, "a-0", eventstore.Any, events(1, "Even")...); err != nil {
		t.Fatal(err)
	}
	for i, c := range subs {
		c.waitFor(t, want(filters[i], 1))
	}
	const rounds = 20
	started0, joined0 := st.TailReads()
	for r := 1; r <= rounds; r++ {
		typ := "Odd"
		if r%2 == 0 {
			typ = "Even"
		}
		stream := fmt.Sprintf("%c-%d", "ab"[r%3%2], r)
		if _, err := st.Append(ctx, stream, eventstore.Any, events(1, typ)...); err != nil {
			t.Fatal(err)
		}
		for i, c := range subs {
			c.waitFor(t, want(filters[i], r+1))
		}
	}
	all, err := st.ReadAll(ctx, eventstore.Start, 1000, eventstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range subs {
		var exp []uuid.UUID
		for _, e := range all {
			if filters[i].Match(e) {
				exp = append(exp, e.ID)
			}
		}
		var got []uuid.UUID
		for _, e := range c.snapshot() {
			got = append(got, e.ID)
			if e.Data == nil {
				t.Errorf("filter %d: event %s came without its data", i, e.ID)
			}
		}
		if !slices.Equal(got, exp) {
			t.Errorf("filter %+v delivered %v, want %v", filters[i], got, exp)
		}
	}
	started, joined := st.TailReads()
	started, joined = started-started0, joined-joined0
	t.Logf("%d rounds, %d subscriptions: %d tail reads, %d shared", rounds, len(subs), started, joined)
	// One read per commit serves all four; a subscription slow to come back to the tail may
	// still read alone once in a while, never every round.
	if started > rounds+rounds/2 {
		t.Errorf("%d tail reads for %d commits and %d subscriptions, want about one per commit", started, rounds, len(subs))
	}
	if joined < rounds*(len(subs)-1)/2 {
		t.Errorf("tail reads served another subscription %d times in %d rounds of %d subscriptions", joined, rounds, len(subs))
	}
}

// want is how many of the first n events of TestTailReadsAreShared f selects.
func want(f eventstore.Filter, n int) int {
	k := 0
	for r := range n {
		typ := "Odd"
		if r%2 == 0 {
			typ = "Even"
		}
		stream := fmt.Sprintf("%c-%d", "ab"[r%3%2], r)
		if f.Match(eventstore.RecordedEvent{Stream: stream, Type: typ}) {
			k++
		}
	}
	return k
}

// TestOtherStoresCommitsWake: a store ignores the echo of its own NOTIFY, not another store's
// (another process's): a subscription that never polls still sees the other store's appends.
func TestOtherStoresCommitsWake(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	reader := openStore(t, url, postgres.Options{IdlePoll: time.Hour})
	writer := openStore(t, url, postgres.Options{IdlePoll: time.Hour})
	tail := subscribe(t, reader, eventstore.Filter{})
	// The reader's own append brings its subscription to the tail (and its listener up).
	if _, err := reader.Append(ctx, "mine", eventstore.Any, events(1, "T")...); err != nil {
		t.Fatal(err)
	}
	tail.waitFor(t, 1)
	for i := range 5 {
		if _, err := writer.Append(ctx, fmt.Sprintf("theirs-%d", i), eventstore.Any, events(1, "T")...); err != nil {
			t.Fatal(err)
		}
		tail.waitFor(t, i+2)
	}
}
