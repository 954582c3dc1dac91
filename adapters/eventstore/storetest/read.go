package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// testReadStream reads a 10-event stream forwards and backwards from several revisions with
// and without limits.
func (s *suite) testReadStream(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "read"
	evs := newEvents(10, "Read")
	mustAppend(t, st, stream, eventstore.NoStream, evs[:4]...)
	mustAppend(t, st, stream, eventstore.Exact(3), evs[4:]...)
	rev := func(revs ...int) []eventstore.EventData {
		out := make([]eventstore.EventData, len(revs))
		for i, r := range revs {
			out[i] = evs[r]
		}
		return out
	}
	span := func(from, to int) []eventstore.EventData { // inclusive, either direction
		var out []eventstore.EventData
		if from <= to {
			for r := from; r <= to; r++ {
				out = append(out, evs[r])
			}
		} else {
			for r := from; r >= to; r-- {
				out = append(out, evs[r])
			}
		}
		return out
	}
	cases := []struct {
		name  string
		dir   eventstore.Direction
		from  uint64
		limit int
		want  []eventstore.EventData
	}{
		{"forwards-all", eventstore.Forwards, 0, 0, span(0, 9)},
		{"forwards-negative-limit", eventstore.Forwards, 0, -1, span(0, 9)},
		{"forwards-from-3", eventstore.Forwards, 3, 0, span(3, 9)},
		{"forwards-from-3-limit-4", eventstore.Forwards, 3, 4, span(3, 6)},
		{"forwards-limit-beyond", eventstore.Forwards, 8, 100, span(8, 9)},
		{"forwards-from-last", eventstore.Forwards, 9, 0, rev(9)},
		{"forwards-past-end", eventstore.Forwards, 10, 0, nil},
		{"forwards-from-end", eventstore.Forwards, eventstore.End, 0, nil},
		{"backwards-from-end", eventstore.Backwards, eventstore.End, 0, span(9, 0)},
		{"backwards-from-end-limit-3", eventstore.Backwards, eventstore.End, 3, span(9, 7)},
		{"backwards-from-5", eventstore.Backwards, 5, 0, span(5, 0)},
		{"backwards-from-5-limit-2", eventstore.Backwards, 5, 2, span(5, 4)},
		{"backwards-from-0", eventstore.Backwards, 0, 0, rev(0)},
		{"backwards-past-end", eventstore.Backwards, 42, 2, span(9, 8)},
	}
	for _, tc := range cases {
		got, err := st.ReadStream(ctxT(t), stream, tc.dir, tc.from, tc.limit)
		if err != nil {
			t.Fatalf("%s: ReadStream(dir %d, from %d, limit %d): got error %v, want success", tc.name, tc.dir, tc.from, tc.limit, err)
		}
		wantIDs(t, fmt.Sprintf("%s: ReadStream(dir %d, from %d, limit %d)", tc.name, tc.dir, tc.from, tc.limit), got, ids(tc.want))
		for i := 1; i < len(got); i++ {
			prev, cur := got[i-1], got[i]
			if tc.dir == eventstore.Forwards && !(prev.Revision+1 == cur.Revision && prev.Position.Less(cur.Position)) ||
				tc.dir == eventstore.Backwards && !(cur.Revision+1 == prev.Revision && cur.Position.Less(prev.Position)) {
				t.Fatalf("%s: events %d and %d: got revisions %d, %d at positions %s, %s, want consecutive revisions in the read's direction with matching position order",
					tc.name, i-1, i, prev.Revision, cur.Revision, prev.Position, cur.Position)
			}
		}
	}
}

// testReadStreamNotFound reads a stream that was never written.
func (s *suite) testReadStreamNotFound(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "missing"
	// A sibling stream with a longer name must not make the missing one appear.
	mustAppend(t, st, stream+"-sibling", eventstore.NoStream, newEvents(1, "Sibling")...)
	for _, dir := range []eventstore.Direction{eventstore.Forwards, eventstore.Backwards} {
		for _, from := range []uint64{0, eventstore.End} {
			evs, err := st.ReadStream(ctxT(t), stream, dir, from, 0)
			if !errors.Is(err, eventstore.ErrStreamNotFound) {
				t.Fatalf("ReadStream(missing %q, dir %d, from %d): got %d events, error %v, want ErrStreamNotFound", stream, dir, from, len(evs), err)
			}
		}
	}
}

func (s *suite) volume() int {
	if s.opts.Short {
		return 10_000
	}
	return 100_000
}

// testVolumeOneStream writes volume() events to one stream in batches and reads them back in
// order, whole and in pages.
func (s *suite) testVolumeOneStream(t *testing.T) {
	st, _ := s.newStore(t)
	stream := TestID() + "big"
	n := s.volume()
	const batch = 1000
	var all []eventstore.EventData
	exp := eventstore.NoStream
	for len(all) < n {
		evs := newEvents(batch, "Big")
		res := mustAppend(t, st, stream, exp, evs...)
		all = append(all, evs...)
		exp = eventstore.Exact(res.NextExpectedRevision)
	}
	want := ids(all)

	got := readStream(t, st, stream)
	wantIDs(t, "whole stream", got, want)
	for i, e := range got {
		if e.Revision != uint64(i) {
			t.Fatalf("event %d: got revision %d, want %d", i, e.Revision, i)
		}
		if i > 0 && !got[i-1].Position.Less(e.Position) {
			t.Fatalf("event %d: got position %s after %s, want a greater position", i, e.Position, got[i-1].Position)
		}
	}

	// Forwards in pages.
	var paged []eventstore.RecordedEvent
	for from := uint64(0); ; {
		page, err := st.ReadStream(ctxT(t), stream, eventstore.Forwards, from, 4096)
		if err != nil {
			t.Fatalf("ReadStream(from %d, limit 4096): got error %v, want success", from, err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		from = page[len(page)-1].Revision + 1
	}
	wantIDs(t, "stream read forwards in pages of 4096", paged, want)

	// Backwards in pages.
	var back []eventstore.RecordedEvent
	for from := eventstore.End; ; {
		page, err := st.ReadStream(ctxT(t), stream, eventstore.Backwards, from, 4096)
		if err != nil {
			t.Fatalf("ReadStream(backwards from %d, limit 4096): got error %v, want success", from, err)
		}
		back = append(back, page...)
		if len(page) < 4096 || page[len(page)-1].Revision == 0 {
			break
		}
		from = page[len(page)-1].Revision - 1
	}
	reversed := make([]eventstore.RecordedEvent, len(back))
	for i, e := range back {
		reversed[len(back)-1-i] = e
	}
	wantIDs(t, "stream read backwards in pages of 4096, reversed", reversed, want)
}

// testVolumeManyStreams writes volume() events across volume()/100 streams from 4 concurrent
// writers and reads them back in order from the global log and from every stream.
func (s *suite) testVolumeManyStreams(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	n := s.volume()
	const perStream, rounds, workers = 100, 2, 4
	streams := n / perStream
	name := func(i int) string { return fmt.Sprintf("%ss%04d", prefix, i) }
	written := make([][]eventstore.EventData, streams)

	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < streams; i += workers {
					evs := newEvents(perStream/rounds, "Many")
					exp := eventstore.NoStream
					if round > 0 {
						exp = eventstore.Exact(uint64(round*perStream/rounds - 1))
					}
					if _, err := st.Append(ctxT(t), name(i), exp, evs...); err != nil {
						errs <- fmt.Errorf("append round %d to %s at %s: %w", round, name(i), exp, err)
						return
					}
					written[i] = append(written[i], evs...)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%v, want success", err)
		}
	}

	all := readOwn(t, st, prefix, 1000)
	if len(all) != n {
		t.Fatalf("global log of %d streams: got %d events, want %d", streams, len(all), n)
	}
	checkGlobalOrder(t, "global log of many streams", all)
	byStream := map[string][]eventstore.RecordedEvent{}
	for _, e := range all {
		byStream[e.Stream] = append(byStream[e.Stream], e)
	}
	for i := range streams {
		wantIDs(t, "global log events of "+name(i), byStream[name(i)], ids(written[i]))
		if i%10 != 0 {
			continue // ReadStream on every tenth stream is enough; the global log checked all
		}
		got := readStream(t, st, name(i))
		wantIDs(t, "ReadStream "+name(i), got, ids(written[i]))
		for j, e := range got {
			if e.Position != byStream[name(i)][j].Position {
				t.Fatalf("%s revision %d: ReadStream position %s, ReadAll position %s, want equal", name(i), j, e.Position, byStream[name(i)][j].Position)
			}
		}
	}
}

// EventByID is the optional capability of adapters that index event ids (sqlite, postgres):
// the event stored under id, in whichever stream, and false if there is none. Command handlers
// use it to find the event that accepted an idempotency key.
type EventByID interface {
	ReadEventByID(ctx context.Context, id uuid.UUID) (eventstore.RecordedEvent, bool, error)
}

// testReadEventByID checks EventByID, for adapters that have it: each stored event is found,
// as ReadStream returns it; an unknown id is not found.
func (s *suite) testReadEventByID(t *testing.T) {
	st, _ := s.newStore(t)
	byID, ok := st.(EventByID)
	if !ok {
		t.Skip("the adapter has no ReadEventByID")
	}
	stream := TestID() + "s"
	mustAppend(t, st, stream, eventstore.NoStream, newEvents(3, "ByID")...)
	mustAppend(t, st, TestID()+"other", eventstore.NoStream, newEvents(2, "Other")...)
	for _, want := range readStream(t, st, stream) {
		got, found, err := byID.ReadEventByID(ctxT(t), want.ID)
		if err != nil || !found {
			t.Fatalf("ReadEventByID(%s) = found %v, %v; want the event at revision %d", want.ID, found, err, want.Revision)
		}
		if got.Stream != want.Stream || got.Revision != want.Revision || got.Type != want.Type || got.Position != want.Position ||
			!got.RecordedAt.Equal(want.RecordedAt) || got.Metadata != want.Metadata || !jsonEqual(got.Data, want.Data) {
			t.Fatalf("ReadEventByID(%s) = %+v, want %+v", want.ID, got, want)
		}
	}
	if _, found, err := byID.ReadEventByID(ctxT(t), uuid.New()); err != nil || found {
		t.Fatalf("ReadEventByID of an unknown id = found %v, %v; want not found", found, err)
	}
}
