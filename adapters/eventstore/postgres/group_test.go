package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
	url := pgtest.URL(t)
	st := openStore(t, url, postgres.Options{GroupCommitters: 1})
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
	held, blocked := blockCommitter(t, url, st, prefix+"blocker")

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
	checkLogOrder(t, st, prefix, 2*n-1+2)
}

// TestGroupCommitStartsAnotherGroupOnlyWhenManyWait: while a group runs (here stuck on a stream
// lock a held transaction keeps), appends to other streams wait for it, fewer than GroupMin of
// them; the GroupMin-th starts another group beside it (GroupCommitters allows two), which
// appends them all in one transaction while the first is still stuck.
func TestGroupCommitStartsAnotherGroupOnlyWhenManyWait(t *testing.T) {
	const groupMin = 4
	url := pgtest.URL(t)
	st := openStore(t, url, postgres.Options{GroupCommitters: 2, GroupMin: groupMin, GroupStall: -1})
	ctx := context.Background()
	prefix := storetest.TestID() + "groupmin-"
	held, blocked := blockCommitter(t, url, st, prefix+"blocker")
	defer func() { _ = held.Rollback(ctx) }()

	results := make([]eventstore.AppendResult, groupMin)
	errs := make([]error, groupMin)
	var wg sync.WaitGroup
	appendTo := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Append(ctx, fmt.Sprintf("%s%02d", prefix, i), eventstore.NoStream, events(1, "Waiting")...)
		}()
	}
	for i := range groupMin - 1 {
		appendTo(i)
	}
	// Each of them was queued with a group running and fewer than groupMin waiting: none started a
	// group (the old rule started one for the first, beside the stuck one).
	waitUntil(t, "the first appends queued behind the stuck group", func() bool { return st.QueuedAppends() == groupMin-1 })
	if n := st.GroupsRunning(); n != 1 {
		t.Fatalf("%d groups running with %d appends waiting, want 1", n, groupMin-1)
	}
	groupsBefore := st.GroupsCommitted()
	appendTo(groupMin - 1)
	wg.Wait() // while the first group is still stuck
	if got := st.GroupsCommitted() - groupsBefore; got != 1 {
		t.Fatalf("%d shared transactions committed, want 1", got)
	}
	for i := range groupMin {
		if errs[i] != nil || results[i].NextExpectedRevision != 0 || results[i].Position.Commit != results[0].Position.Commit {
			t.Fatalf("append %d: %+v, %v; want revision 0 in the others' transaction (%+v)", i, results[i], errs[i], results[0])
		}
	}
	releaseBlocked(t, held, blocked)
}

// TestGroupCommitStalledGroupGetsCompany: while a group is stuck on a stream lock (a held
// transaction keeps it, as a broadcast's large append would), a few appends to other streams
// (far fewer than GroupMin) do not wait for the lock: once the stuck group has taken nothing for
// GroupStall, another group starts beside it and commits them. Before GroupStall they waited
// until GroupMin of them queued: at low load, as long as the lock was held.
func TestGroupCommitStalledGroupGetsCompany(t *testing.T) {
	url := pgtest.URL(t)
	st := openStore(t, url, postgres.Options{GroupCommitters: 2, GroupMin: 64, GroupStall: 5 * time.Millisecond})
	ctx := context.Background()
	prefix := storetest.TestID() + "stall-"
	held, blocked := blockCommitter(t, url, st, prefix+"blocker")
	defer func() { _ = held.Rollback(ctx) }()

	const n = 3
	results := make([]eventstore.AppendResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Append(ctx, fmt.Sprintf("%s%02d", prefix, i), eventstore.NoStream, events(1, "Waiting")...)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitUntil(t, "the appends behind the stuck group committed while it is stuck", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	for i := range n {
		if errs[i] != nil || results[i].NextExpectedRevision != 0 {
			t.Fatalf("append %d: %+v, %v; want revision 0", i, results[i], errs[i])
		}
	}
	releaseBlocked(t, held, blocked)
	// The log's order holds across the groups: the held append's event, then the blocked one,
	// each stream's revisions in order.
	checkLogOrder(t, st, prefix, n+2)
}

// TestGroupCommitMixedOutcomes forces one group holding every outcome an append can have, and
// checks each append gets its own: success at an exact revision, with Any and on a new stream
// (NoStream), wrong expected revisions of each kind (exact, NoStream on an existing stream,
// StreamExists on a missing one), an idempotent retry of a stored event (Existing, with the
// original position), an id stored in another stream (a duplicate), the same fresh id given to
// two streams of the group (one stores it, the other is a duplicate), and an event without
// data. The successes share one transaction; nothing else is stored.
func TestGroupCommitMixedOutcomes(t *testing.T) {
	url := pgtest.URL(t)
	st := openStore(t, url, postgres.Options{GroupCommitters: 1})
	ctx := context.Background()
	prefix := storetest.TestID() + "mixed-"
	stream := func(i int) string { return fmt.Sprintf("%s%02d", prefix, i) }
	first := map[int]eventstore.AppendResult{}
	firstEv := map[int]eventstore.EventData{}
	for _, i := range []int{0, 1, 3, 5, 6} {
		evs := events(1, "First")
		res, err := st.Append(ctx, stream(i), eventstore.NoStream, evs...)
		if err != nil {
			t.Fatal(err)
		}
		first[i], firstEv[i] = res, evs[0]
	}
	shared := events(1, "Shared")[0]
	type appendCase struct {
		stream   int
		expected eventstore.ExpectedRevision
		event    eventstore.EventData
	}
	cases := []appendCase{
		{0, eventstore.Exact(0), events(1, "Grouped")[0]},
		{1, eventstore.Exact(3), events(1, "Grouped")[0]},
		{2, eventstore.NoStream, events(1, "Grouped")[0]},
		{3, eventstore.NoStream, events(1, "Grouped")[0]},
		{4, eventstore.StreamExists, events(1, "Grouped")[0]},
		{5, eventstore.Any, events(1, "Grouped")[0]},
		{6, eventstore.NoStream, firstEv[6]}, // a retry of the stored first append
		{7, eventstore.NoStream, eventstore.EventData{ID: firstEv[0].ID, Type: "Grouped"}},
		{8, eventstore.NoStream, shared},
		{9, eventstore.NoStream, shared},
		{10, eventstore.NoStream, eventstore.EventData{ID: events(1, "")[0].ID, Type: "NoData"}},
	}

	held, blocked := blockCommitter(t, url, st, prefix+"blocker")
	results := make([]eventstore.AppendResult, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Append(ctx, stream(c.stream), c.expected, c.event)
		}()
	}
	waitUntil(t, "every append queued behind the blocked one", func() bool { return st.QueuedAppends() == len(cases) })
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

	wrong := func(i int, actual int64) {
		t.Helper()
		var we *eventstore.WrongExpectedRevisionError
		if !errors.As(errs[i], &we) || we.Actual != actual || we.Stream != stream(cases[i].stream) {
			t.Errorf("append %d: %+v, %v; want a wrong expected revision of %s (actual %d)", i, results[i], errs[i], stream(cases[i].stream), actual)
		}
	}
	ok := func(i int, rev uint64) {
		t.Helper()
		if errs[i] != nil || results[i].NextExpectedRevision != rev || results[i].Existing {
			t.Errorf("append %d: %+v, %v; want revision %d", i, results[i], errs[i], rev)
		}
	}
	ok(0, 1)
	wrong(1, 0)
	ok(2, 0)
	wrong(3, 0)
	wrong(4, eventstore.NoRevision)
	ok(5, 1)
	if errs[6] != nil || !results[6].Existing || results[6].Position != first[6].Position || results[6].NextExpectedRevision != 0 {
		t.Errorf("retry of a stored append: %+v, %v; want Existing at %s", results[6], errs[6], first[6].Position)
	}
	if !errors.Is(errs[7], eventstore.ErrDuplicateEventID) {
		t.Errorf("an id stored in another stream: %+v, %v; want a duplicate", results[7], errs[7])
	}
	switch {
	case errs[8] == nil && errors.Is(errs[9], eventstore.ErrDuplicateEventID):
		ok(8, 0)
	case errs[9] == nil && errors.Is(errs[8], eventstore.ErrDuplicateEventID):
		ok(9, 0)
	default:
		t.Errorf("one id given to two streams: %+v, %v and %+v, %v; want one stored, one duplicate", results[8], errs[8], results[9], errs[9])
	}
	ok(10, 0)
	var commit uint64
	for i := range cases {
		if errs[i] != nil || results[i].Existing {
			continue
		}
		if commit == 0 {
			commit = results[i].Position.Commit
		}
		if results[i].Position.Commit != commit {
			t.Errorf("append %d committed in tx %d, others in %d: not one shared transaction", i, results[i].Position.Commit, commit)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The log holds exactly the firsts, the held and blocked events, and the successes, each at
	// the position its append was answered with.
	all, err := st.ReadAll(ctx, eventstore.Start, 0, eventstore.Filter{StreamPrefixes: []string{prefix}})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[eventstore.Position]eventstore.RecordedEvent{}
	for _, e := range all {
		stored[e.Position] = e
	}
	succeeded := 0
	for i, c := range cases {
		if errs[i] != nil || results[i].Existing {
			continue
		}
		succeeded++
		e, found := stored[results[i].Position]
		if !found || e.ID != c.event.ID || e.Stream != stream(c.stream) || e.Revision != results[i].NextExpectedRevision || string(e.Data) != string(c.event.Data) {
			t.Errorf("append %d answered %s; stored there: %+v (found %v)", i, results[i].Position, e, found)
		}
	}
	if want := len(first) + 2 + succeeded; len(all) != want {
		t.Fatalf("%d events of this test stored, want %d", len(all), want)
	}
}

// blockCommitter holds an append to stream open (held: one event, "Held") and starts another
// to it ("Blocked", its error sent on blocked when it returns), then waits until a committer
// of st runs that one, waiting for the stream's lock (waitBlocked): with one committer, the
// appends made until held ends queue behind it.
func blockCommitter(t *testing.T, url string, st *postgres.Store, stream string) (held *postgres.HeldAppend, blocked <-chan error) {
	t.Helper()
	held = hold(t, st, stream, eventstore.NoStream, events(1, "Held")...)
	done := make(chan error, 1)
	go func() {
		_, err := st.Append(context.Background(), stream, eventstore.Any, events(1, "Blocked")...)
		done <- err
	}()
	waitBlocked(t, url, st)
	return held, done
}

// releaseBlocked checks that the append blockCommitter blocked has not returned, commits the
// held transaction and waits for the blocked append, which must succeed.
func releaseBlocked(t *testing.T, held *postgres.HeldAppend, blocked <-chan error) {
	t.Helper()
	select {
	case err := <-blocked:
		t.Fatalf("the stuck append returned (%v) before its lock was released", err)
	default:
	}
	if err := held.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

// checkLogOrder reads the events of the streams named prefix… from the global log and fails t
// unless there are want of them, each after the one before and each stream's revisions in
// order from 0.
func checkLogOrder(t *testing.T, st *postgres.Store, prefix string, want int) {
	t.Helper()
	all, err := st.ReadAll(context.Background(), eventstore.Start, 0, eventstore.Filter{StreamPrefixes: []string{prefix}})
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
	if len(all) != want {
		t.Fatalf("%d events of this test stored, want %d", len(all), want)
	}
}

// waitBlocked waits until a committer of st runs the blocked append: it waits for its stream's
// lock in the database of url (an advisory lock not granted), nothing else is queued and one
// group runs. The store's counters alone are not enough: the group that ran the append before
// it may still count as running for a moment after its caller returned, and the blocked
// append's goroutine may not have queued yet.
func waitBlocked(t *testing.T, url string, st *postgres.Store) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitUntil(t, "a committer runs the blocked append, waiting for its lock", func() bool {
		var waiting int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting == 1 && st.QueuedAppends() == 0 && st.GroupsRunning() == 1
	})
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
