package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// testExpectedRevision checks every expected-revision variant against a missing stream and a
// stream at revision 2, including the values the typed error carries.
func (s *suite) testExpectedRevision(t *testing.T) {
	st, _ := s.newStore(t)
	id := TestID()
	cases := []struct {
		name     string
		existing int // events already in the stream
		exp      eventstore.ExpectedRevision
		ok       bool
	}{
		{"missing/any", 0, eventstore.Any, true},
		{"missing/no-stream", 0, eventstore.NoStream, true},
		{"missing/stream-exists", 0, eventstore.StreamExists, false},
		{"missing/exact-0", 0, eventstore.Exact(0), false},
		{"missing/exact-3", 0, eventstore.Exact(3), false},
		{"existing/any", 3, eventstore.Any, true},
		{"existing/no-stream", 3, eventstore.NoStream, false},
		{"existing/stream-exists", 3, eventstore.StreamExists, true},
		{"existing/exact-last", 3, eventstore.Exact(2), true},
		{"existing/exact-before", 3, eventstore.Exact(1), false},
		{"existing/exact-0", 3, eventstore.Exact(0), false},
		{"existing/exact-after", 3, eventstore.Exact(3), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream := id + tc.name
			before := newEvents(tc.existing, "Before")
			actual := eventstore.NoRevision
			if tc.existing > 0 {
				mustAppend(t, st, stream, eventstore.NoStream, before...)
				actual = int64(tc.existing - 1)
			}
			batch := newEvents(2, "Batch")
			res, err := st.Append(ctxT(t), stream, tc.exp, batch...)
			got := readStream(t, st, stream)
			if !tc.ok {
				wantWrongRevision(t, err, stream, tc.exp, actual)
				wantIDs(t, "stream after a rejected append", got, ids(before))
				return
			}
			if err != nil {
				t.Fatalf("Append(%q, %s) on a stream at %d: got error %v, want success", stream, tc.exp, actual, err)
			}
			checkRecorded(t, stream, 0, got, append(before, batch...))
			if want := uint64(actual + 2); res.NextExpectedRevision != want {
				t.Fatalf("AppendResult.NextExpectedRevision: got %d, want %d", res.NextExpectedRevision, want)
			}
			if last := got[len(got)-1].Position; res.Position != last {
				t.Fatalf("AppendResult.Position: got %s, want the last event's position %s", res.Position, last)
			}
		})
	}
}

// testExpectedRevisionAfterAppends follows a stream through several appends at Exact
// revisions, each one using the previous result's NextExpectedRevision.
func (s *suite) testExpectedRevisionAfterAppends(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "chain"
	var all []eventstore.EventData
	exp := eventstore.NoStream
	for i := 1; i <= 5; i++ {
		batch := newEvents(i, "Chain")
		res := mustAppend(t, st, stream, exp, batch...)
		all = append(all, batch...)
		if want := uint64(len(all) - 1); res.NextExpectedRevision != want {
			t.Fatalf("append %d: NextExpectedRevision: got %d, want %d", i, res.NextExpectedRevision, want)
		}
		// The previous expectation is now stale.
		_, err := st.Append(ctxT(t), stream, exp, newEvents(1, "Stale")...)
		wantWrongRevision(t, err, stream, exp, int64(len(all)-1))
		exp = eventstore.Exact(res.NextExpectedRevision)
	}
	checkRecorded(t, stream, 0, readStream(t, st, stream), all)
}

// testEmptyAppend checks that appending no events validates the expectation and writes
// nothing, not even the stream.
func (s *suite) testEmptyAppend(t *testing.T) {
	st, _ := s.newStore(t)
	id := TestID()
	missing := id + "missing"
	if _, err := st.Append(ctxT(t), missing, eventstore.NoStream); err != nil {
		t.Fatalf("empty Append(NoStream) on a missing stream: got error %v, want success", err)
	}
	if _, err := st.Append(ctxT(t), missing, eventstore.Any); err != nil {
		t.Fatalf("empty Append(Any) on a missing stream: got error %v, want success", err)
	}
	_, err := st.Append(ctxT(t), missing, eventstore.StreamExists)
	wantWrongRevision(t, err, missing, eventstore.StreamExists, eventstore.NoRevision)
	if _, err := st.ReadStream(ctxT(t), missing, eventstore.Forwards, 0, 0); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("ReadStream after empty appends: got error %v, want ErrStreamNotFound (an empty append must not create the stream)", err)
	}

	existing := id + "existing"
	mustAppend(t, st, existing, eventstore.NoStream, newEvents(2, "E")...)
	res, err := st.Append(ctxT(t), existing, eventstore.Exact(1))
	if err != nil {
		t.Fatalf("empty Append(Exact(1)) on a stream at 1: got error %v, want success", err)
	}
	if res.NextExpectedRevision != 1 || !res.Position.IsZero() {
		t.Fatalf("empty Append result: got {NextExpectedRevision %d, Position %s}, want {1, %s}", res.NextExpectedRevision, res.Position, eventstore.Start)
	}
	_, err = st.Append(ctxT(t), existing, eventstore.Exact(0))
	wantWrongRevision(t, err, existing, eventstore.Exact(0), 1)
	if n := len(readStream(t, st, existing)); n != 2 {
		t.Fatalf("stream after empty appends: got %d events, want 2", n)
	}
	if n := len(readOwn(t, st, id, 0)); n != 2 {
		t.Fatalf("global log after empty appends: got %d events of this test, want 2", n)
	}
}

// testConcurrentWritersOneWins races N writers at one expected revision: exactly one wins.
func (s *suite) testConcurrentWritersOneWins(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "race"
	first := newEvents(1, "First")
	mustAppend(t, st, stream, eventstore.NoStream, first...)
	s.race(t, st, stream, eventstore.Exact(0), 0, first)
}

// testConcurrentCreateOneWins races N writers creating one stream with NoStream.
func (s *suite) testConcurrentCreateOneWins(t *testing.T) {
	st, _ := s.newStore(t)
	s.race(t, st, TestID()+"create", eventstore.NoStream, eventstore.NoRevision, nil)
}

const writers = 16

func (s *suite) race(t *testing.T, st eventstore.Store, stream string, exp eventstore.ExpectedRevision, at int64, before []eventstore.EventData) {
	t.Helper()
	batches := make([][]eventstore.EventData, writers)
	errs := make([]error, writers)
	results := make([]eventstore.AppendResult, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		batches[i] = newEvents(3, fmt.Sprintf("Writer%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = st.Append(ctxT(t), stream, exp, batches[i]...)
		}()
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("%d concurrent appends at %s: writers %d and %d both succeeded, want exactly one", writers, exp, winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("%d concurrent appends at %s: none succeeded, want exactly one (first error: %v)", writers, exp, errs[0])
	}
	last := at + 3
	for i, err := range errs {
		if i != winner {
			wantWrongRevision(t, err, stream, exp, last)
		}
	}
	if results[winner].NextExpectedRevision != uint64(last) {
		t.Fatalf("winner's NextExpectedRevision: got %d, want %d", results[winner].NextExpectedRevision, last)
	}
	checkRecorded(t, stream, 0, readStream(t, st, stream), append(append([]eventstore.EventData(nil), before...), batches[winner]...))
}

// testIdempotentReappend re-appends the same batch at the same place under every expectation
// that allows it: success, the original result, nothing written twice.
func (s *suite) testIdempotentReappend(t *testing.T) {
	st, _ := s.newStore(t)
	id := TestID()
	cases := []struct {
		name   string
		prefix int
		exp    eventstore.ExpectedRevision
	}{
		{"no-stream", 0, eventstore.NoStream},
		{"any-new-stream", 0, eventstore.Any},
		{"exact", 2, eventstore.Exact(1)},
		{"any-existing", 2, eventstore.Any},
		{"stream-exists", 2, eventstore.StreamExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := id + tc.name + "-"
			stream := prefix + "s"
			before := newEvents(tc.prefix, "Before")
			if tc.prefix > 0 {
				mustAppend(t, st, stream, eventstore.NoStream, before...)
			}
			batch := newEvents(3, "Batch")
			first := mustAppend(t, st, stream, tc.exp, batch...)
			if first.Existing {
				t.Fatalf("first append at %s: Existing is set, want it only for a retry", tc.exp)
			}
			for attempt := range 2 {
				again, err := st.Append(ctxT(t), stream, tc.exp, batch...)
				if err != nil {
					t.Fatalf("re-append %d of the same batch at %s: got error %v, want idempotent success", attempt, tc.exp, err)
				}
				if again.Existing != s.opts.ReportsExisting {
					t.Fatalf("re-append %d at %s: Existing = %v, want %v", attempt, tc.exp, again.Existing, s.opts.ReportsExisting)
				}
				again.Existing = false
				if again != first {
					t.Fatalf("re-append %d at %s: got result %+v, want the original %+v", attempt, tc.exp, again, first)
				}
			}
			// Still idempotent after the stream moved on.
			mustAppend(t, st, stream, eventstore.Any, newEvents(1, "Later")...)
			again, err := st.Append(ctxT(t), stream, tc.exp, batch...)
			if err != nil {
				t.Fatalf("re-append at %s after a later append: got error %v, want idempotent success", tc.exp, err)
			}
			again.Existing = false
			if again != first {
				t.Fatalf("re-append at %s after a later append: got result %+v, want the original %+v", tc.exp, again, first)
			}
			got := readStream(t, st, stream)
			if len(got) != tc.prefix+4 {
				t.Fatalf("stream after re-appends: got %d events, want %d (nothing written twice)", len(got), tc.prefix+4)
			}
			checkRecorded(t, stream, 0, got[:tc.prefix+3], append(before, batch...))
			if n := len(readOwn(t, st, prefix, 0)); n != tc.prefix+4 {
				t.Fatalf("global log after re-appends: got %d events, want %d", n, tc.prefix+4)
			}
		})
	}
}

// testIdempotentReappendPrefix re-appends a leading part of a stored batch: every id is
// stored in order at the right place, so it is an idempotent success too.
func (s *suite) testIdempotentReappendPrefix(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "s"
	batch := newEvents(4, "Batch")
	mustAppend(t, st, stream, eventstore.NoStream, batch...)
	res, err := st.Append(ctxT(t), stream, eventstore.NoStream, batch[:2]...)
	if err != nil {
		t.Fatalf("re-append of the first 2 of 4 stored events: got error %v, want idempotent success", err)
	}
	got := readStream(t, st, stream)
	if res.NextExpectedRevision != 1 || res.Position != got[1].Position {
		t.Fatalf("re-append of a prefix: got result {%d, %s}, want {1, %s}", res.NextExpectedRevision, res.Position, got[1].Position)
	}
	wantIDs(t, "stream after a prefix re-append", got, ids(batch))
}

// testDuplicateEventID stores an id and then tries it at every other place.
func (s *suite) testDuplicateEventID(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	a, b := prefix+"a", prefix+"b"
	batch := newEvents(2, "A")
	mustAppend(t, st, a, eventstore.NoStream, batch...)
	mustAppend(t, st, a, eventstore.Exact(1), newEvents(1, "A2")...)
	want := readStream(t, st, a)

	// Another stream, alone and in the middle of a batch.
	_, err := st.Append(ctxT(t), b, eventstore.Any, batch[0])
	wantDuplicate(t, err, b, batch[0].ID)
	mixed := newEvents(3, "B")
	mixed[1] = batch[1]
	_, err = st.Append(ctxT(t), b, eventstore.NoStream, mixed...)
	wantDuplicate(t, err, b, batch[1].ID)
	if got := readStream(t, st, b); len(got) != 0 {
		t.Fatalf("stream %q after rejected appends: got %d events, want none", b, len(got))
	}

	// Same stream, another revision: the expectation is met but the id is stored at 0.
	_, err = st.Append(ctxT(t), a, eventstore.Exact(2), batch[0])
	wantDuplicate(t, err, a, batch[0].ID)
	// Same ids, wrong order.
	_, err = st.Append(ctxT(t), a, eventstore.Any, batch[1], batch[0])
	if !errors.Is(err, eventstore.ErrDuplicateEventID) {
		t.Fatalf("re-append of stored ids in another order: got error %v, want ErrDuplicateEventID", err)
	}
	// A stored id followed by a new one.
	_, err = st.Append(ctxT(t), a, eventstore.Any, append([]eventstore.EventData{batch[0], batch[1]}, newEvents(1, "New")...)...)
	if !errors.Is(err, eventstore.ErrDuplicateEventID) {
		t.Fatalf("re-append of a stored batch plus a new event: got error %v, want ErrDuplicateEventID", err)
	}
	// A new id after the stored batch, then the stored second id.
	_, err = st.Append(ctxT(t), a, eventstore.Exact(2), append(newEvents(1, "New"), batch[1])...)
	wantDuplicate(t, err, a, batch[1].ID)

	got := readStream(t, st, a)
	wantIDs(t, "stream after rejected duplicate appends", got, recIDs(want))

	// The whole stored batch at the end of its stream plus a new event: the batch is not
	// entirely stored, so it is no retry. The port leaves the error open between a duplicate
	// id and a wrong expected revision (EventStoreDB reports the latter); it must fail and
	// write nothing.
	c := prefix + "c"
	stored := newEvents(2, "C")
	mustAppend(t, st, c, eventstore.NoStream, stored...)
	_, err = st.Append(ctxT(t), c, eventstore.NoStream, append(append([]eventstore.EventData(nil), stored...), newEvents(1, "New")...)...)
	if !errors.Is(err, eventstore.ErrDuplicateEventID) && !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("re-append of a whole stream's events plus a new one: got error %v, want ErrDuplicateEventID or ErrWrongExpectedRevision", err)
	}
	wantIDs(t, "stream after a rejected extended re-append", readStream(t, st, c), ids(stored))

	if n := len(readOwn(t, st, prefix, 0)); n != 5 {
		t.Fatalf("global log after rejected duplicate appends: got %d events, want 5", n)
	}
}

// testFailedBatchLeavesNothing checks atomicity: a batch that fails leaves no event behind.
func (s *suite) testFailedBatchLeavesNothing(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	other := prefix + "other"
	stored := newEvents(1, "Stored")
	mustAppend(t, st, other, eventstore.NoStream, stored...)

	invalid := newEvents(5, "Batch")
	invalid[3].Data = json.RawMessage(`{not json`)
	dup := newEvents(5, "Batch")
	dup[4].ID = stored[0].ID

	cases := []struct {
		name  string
		exp   eventstore.ExpectedRevision
		batch []eventstore.EventData
		want  error
	}{
		{"wrong-revision", eventstore.Exact(7), newEvents(5, "Batch"), eventstore.ErrWrongExpectedRevision},
		{"duplicate-last", eventstore.Any, dup, eventstore.ErrDuplicateEventID},
		{"invalid-middle", eventstore.Any, invalid, eventstore.ErrInvalidEvent},
	}
	for _, tc := range cases {
		for _, existing := range []int{0, 2} {
			stream := fmt.Sprintf("%s%s-%d", prefix, tc.name, existing)
			before := newEvents(existing, "Before")
			if existing > 0 {
				mustAppend(t, st, stream, eventstore.NoStream, before...)
			}
			_, err := st.Append(ctxT(t), stream, tc.exp, tc.batch...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%s on a stream with %d events: got error %v, want %v", tc.name, existing, err, tc.want)
			}
			wantIDs(t, tc.name+": stream after a failed batch", readStream(t, st, stream), ids(before))
			// The stream still accepts the next revision.
			exp := eventstore.NoStream
			if existing > 0 {
				exp = eventstore.Exact(uint64(existing - 1))
			}
			mustAppend(t, st, stream, exp, newEvents(1, "After")...)
		}
	}
	// 1 stored + 3 cases × (0+1 and 2+1) events.
	if n := len(readOwn(t, st, prefix, 0)); n != 1+3*(1+3) {
		t.Fatalf("global log after failed batches: got %d events of this test, want %d", n, 1+3*(1+3))
	}
}

// testInvalidInput checks that malformed input is rejected with ErrInvalidEvent.
func (s *suite) testInvalidInput(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	one := func(mut func(*eventstore.EventData)) []eventstore.EventData {
		e := newEvents(2, "Valid")
		mut(&e[1])
		return e
	}
	dupInBatch := newEvents(2, "Valid")
	dupInBatch[1].ID = dupInBatch[0].ID
	cases := []struct {
		name   string
		stream string
		batch  []eventstore.EventData
	}{
		{"nil-id", prefix + "nil-id", one(func(e *eventstore.EventData) { e.ID = uuid.Nil })},
		{"empty-type", prefix + "empty-type", one(func(e *eventstore.EventData) { e.Type = "" })},
		{"bad-json", prefix + "bad-json", one(func(e *eventstore.EventData) { e.Data = json.RawMessage(`{"a":`) })},
		{"empty-stream", "", newEvents(1, "Valid")},
		{"id-twice-in-batch", prefix + "twice", dupInBatch},
	}
	for _, tc := range cases {
		for _, exp := range []eventstore.ExpectedRevision{eventstore.Any, eventstore.NoStream} {
			_, err := st.Append(ctxT(t), tc.stream, exp, tc.batch...)
			if !errors.Is(err, eventstore.ErrInvalidEvent) {
				t.Fatalf("%s: Append(%q, %s): got error %v, want ErrInvalidEvent", tc.name, tc.stream, exp, err)
			}
		}
	}
	if n := len(readOwn(t, st, prefix, 0)); n != 0 {
		t.Fatalf("global log after invalid appends: got %d events of this test, want none", n)
	}
}

// testRecordedFields checks that every field round-trips and that the recorded time is the
// injected clock's.
func (s *suite) testRecordedFields(t *testing.T) {
	st, clock := s.newStore(t)
	stream := TestID() + "fields"
	evs := newEvents(3, "Fields")
	evs[0].Metadata = eventstore.Metadata{TenantID: "t-ü", Actor: "user:42", CorrelationID: "c1", CausationID: "c0"}
	evs[1].Metadata = eventstore.Metadata{}
	evs[2].Data = json.RawMessage(`{"nested":{"list":[1,2.5,"x",null,true]},"text":"quote \" and ünïcode"}`)
	mustAppend(t, st, stream, eventstore.NoStream, evs...)
	got := readStream(t, st, stream)
	checkRecorded(t, stream, 0, got, evs)

	returned := clock.Returned()
	if len(returned) == 0 {
		t.Fatalf("the store never called the injected clock, want RecordedAt taken from it")
	}
	valid := make(map[int64]bool, len(returned))
	for _, r := range returned {
		valid[r.UnixNano()] = true
	}
	for _, e := range got {
		if !valid[e.RecordedAt.UnixNano()] {
			t.Fatalf("event %s: got RecordedAt %s, want one of the injected clock's times %v", e.ID, e.RecordedAt, returned)
		}
		if e.RecordedAt.Location() != time.UTC {
			t.Fatalf("event %s: got RecordedAt in %s, want UTC", e.ID, e.RecordedAt.Location())
		}
	}
}

// testConcurrentSinglesOneConflicts appends single events to many streams at once (the shape an
// adapter may group into one transaction): one at a wrong expected revision, one with an id
// stored in another stream, one an idempotent retry. Exactly those three get their own answer
// (wrong revision, duplicate, the original result); every other append succeeds, at its own
// revision, and the global log stays in order. Several rounds, so the appends meet in
// different groupings.
func (s *suite) testConcurrentSinglesOneConflicts(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID() + "singles-"
	const n = 24
	const wrong, dup, retry = 3, 11, 17
	streams := make([]string, n)
	firsts := make([]eventstore.EventData, n)
	for i := range n {
		streams[i] = fmt.Sprintf("%s%02d", prefix, i)
		firsts[i] = newEvents(1, "First")[0]
		mustAppend(t, st, streams[i], eventstore.NoStream, firsts[i])
	}
	for round := range 4 {
		evs := make([]eventstore.EventData, n)
		exps := make([]eventstore.ExpectedRevision, n)
		for i := range n {
			evs[i] = newEvents(1, fmt.Sprintf("Round%d", round))[0]
			exps[i] = eventstore.Exact(uint64(round))
		}
		exps[wrong] = eventstore.Exact(uint64(round) + 7)
		evs[dup].ID = firsts[0].ID // stored in stream 0
		evs[retry], exps[retry] = firsts[retry], eventstore.NoStream
		results := make([]eventstore.AppendResult, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = st.Append(ctxT(t), streams[i], exps[i], evs[i])
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			switch i {
			case wrong:
				wantWrongRevision(t, errs[i], streams[i], exps[i], int64(round))
			case dup:
				wantDuplicate(t, errs[i], streams[i], firsts[0].ID)
			case retry:
				if errs[i] != nil || results[i].NextExpectedRevision != 0 {
					t.Fatalf("round %d: idempotent retry of %q's first event: %+v, %v; want its original result", round, streams[i], results[i], errs[i])
				}
			default:
				if errs[i] != nil {
					t.Fatalf("round %d: append to %q at %s failed: %v (only streams %d, %d, %d may fail)", round, streams[i], exps[i], errs[i], wrong, dup, retry)
				}
				if results[i].NextExpectedRevision != uint64(round)+1 || results[i].Position.IsZero() {
					t.Fatalf("round %d: append to %q: %+v, want revision %d and a position", round, streams[i], results[i], round+1)
				}
			}
		}
		// The failed streams keep up: append to them what the others got this round.
		for _, i := range []int{wrong, dup, retry} {
			mustAppend(t, st, streams[i], eventstore.Exact(uint64(round)), newEvents(1, "Catch")[0])
		}
	}
	for i := range n {
		got := readStream(t, st, streams[i])
		if len(got) != 5 || got[0].ID != firsts[i].ID {
			t.Fatalf("stream %q holds %d events (first %s), want 5 starting with %s", streams[i], len(got), got[0].ID, firsts[i].ID)
		}
		checkGlobalOrder(t, streams[i], got)
	}
	checkGlobalOrder(t, "global log", readOwn(t, st, prefix, 0))
}
