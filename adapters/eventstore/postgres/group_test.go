package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/storetest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
)

// TestGroupCommitSharesOneTransaction forces a group: with one committer busy (its append waits
// for a stream lock a held transaction keeps), single appends to other streams queue up; when
// the lock is released they are appended in one shared transaction (one tx_id, one commit).
// The one at a wrong expected revision fails alone; the others succeed at their revisions, and
// the global order agrees with every stream's order.
func TestGroupCommitSharesOneTransaction(t *testing.T) {
	st := openStore(t, pgtest.URL(t), postgres.Options{GroupCommitters: 1})
	ctx := context.Background()
	prefix := storetest.TestID() + "group-"
	const n, conflict = 12, 5
	streams := make([]string, n)
	for i := range n {
		streams[i] = fmt.Sprintf("%s%02d", prefix, i)
		if _, err := st.Append(ctx, streams[i], eventstore.NoStream, events(1, "First")...); err != nil {
			t.Fatal(err)
		}
	}
	blocker := prefix + "blocker"
	held := hold(t, st, blocker, eventstore.NoStream, events(1, "Held")...)
	blocked := make(chan error, 1)
	go func() {
		_, err := st.Append(ctx, blocker, eventstore.Any, events(1, "Blocked")...)
		blocked <- err
	}()
	waitUntil(t, "the committer takes the blocked append", func() bool { return st.QueuedAppends() == 0 && st.GroupsRunning() == 1 })

	results := make([]eventstore.AppendResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		exp := eventstore.Exact(0)
		if i == conflict {
			exp = eventstore.Exact(3)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Append(ctx, streams[i], exp, events(1, "Grouped")...)
		}()
	}
	waitUntil(t, "every append queued behind the blocked one", func() bool { return st.QueuedAppends() == n })
	groupsBefore := st.GroupsCommitted()
	if err := held.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if got := st.GroupsCommitted() - groupsBefore; got != 1 {
		t.Fatalf("%d shared transactions committed, want 1", got)
	}
	var commit uint64
	for i := range n {
		if i == conflict {
			var we *eventstore.WrongExpectedRevisionError
			if !errors.As(errs[i], &we) || we.Actual != 0 {
				t.Fatalf("conflicting append: %v, want a wrong expected revision (actual 0)", errs[i])
			}
			continue
		}
		if errs[i] != nil || results[i].NextExpectedRevision != 1 {
			t.Fatalf("append to %s: %+v, %v; want revision 1", streams[i], results[i], errs[i])
		}
		if commit == 0 {
			commit = results[i].Position.Commit
		}
		if results[i].Position.Commit != commit {
			t.Fatalf("append to %s committed in tx %d, the others in %d: not one shared transaction", streams[i], results[i].Position.Commit, commit)
		}
	}
	all, err := st.ReadAll(ctx, eventstore.Start, 0, eventstore.Filter{StreamPrefixes: []string{prefix}})
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]uint64{}
	for i, e := range all {
		if i > 0 && !all[i-1].Position.Less(e.Position) || e.Revision != next[e.Stream] {
			t.Fatalf("global log out of order at %d: %+v", i, e)
		}
		next[e.Stream] = e.Revision + 1
	}
	if len(all) != 2*n-1+2 {
		t.Fatalf("%d events of this test stored, want %d", len(all), 2*n-1+2)
	}
}

// waitUntil waits for cond (a condition, not a duration: the overall limit is a safety net).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
