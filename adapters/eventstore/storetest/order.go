package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// testGlobalOrderConcurrent runs concurrent writers while a subscriber and a tailing ReadAll
// reader follow the log. Both must see exactly the order a final ReadAll gives; positions must
// strictly increase, agree with every stream's revision order, and each writer's appends (one
// after another returned) must land at increasing positions.
func (s *suite) testGlobalOrderConcurrent(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	const nWriters, appendsPerWriter, nStreams = 8, 30, 5

	sub := newCollector()
	subscription := s.subscribe(t, st, eventstore.Start, filter, sub.handle)

	type appended struct {
		res eventstore.AppendResult
		ids []uuid.UUID
	}
	results := make([][]appended, nWriters)
	var wg sync.WaitGroup
	errs := make(chan error, nWriters)
	for w := range nWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appendsPerWriter {
				evs := newEvents(1+(w+i)%3, fmt.Sprintf("W%d", w))
				stream := fmt.Sprintf("%ss%d", prefix, (w*7+i)%nStreams)
				res, err := st.Append(ctxT(t), stream, eventstore.Any, evs...)
				if err != nil {
					errs <- fmt.Errorf("writer %d append %d to %s: %w", w, i, stream, err)
					return
				}
				results[w] = append(results[w], appended{res, ids(evs)})
			}
		}()
	}

	// A reader tailing the log with ReadAll while the writers run.
	stop := make(chan struct{})
	tailDone := make(chan error, 1)
	var tail []eventstore.RecordedEvent
	go func() {
		after := eventstore.Start
		for {
			evs, err := st.ReadAll(ctxT(t), after, 7, filter)
			if err != nil {
				tailDone <- err
				return
			}
			for _, e := range evs {
				if !after.Less(e.Position) {
					tailDone <- fmt.Errorf("ReadAll returned event %s at %s, want a position after %s", e.ID, e.Position, after)
					return
				}
				after = e.Position
			}
			tail = append(tail, evs...)
			if len(evs) > 0 {
				continue
			}
			select {
			case <-stop:
				// One last read after the writers are done.
				evs, err := st.ReadAll(ctxT(t), after, 0, filter)
				tail = append(tail, evs...)
				tailDone <- err
				return
			case <-time.After(time.Millisecond): // do not spin while the writers work
			}
		}
	}()

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v, want success", err)
	}
	close(stop)
	if err := <-tailDone; err != nil {
		t.Fatalf("tailing ReadAll: got error %v, want success", err)
	}

	final := readOwn(t, st, prefix, 0)
	total := 0
	for _, rs := range results {
		for _, r := range rs {
			total += len(r.ids)
		}
	}
	if len(final) != total {
		t.Fatalf("global log after concurrent appends: got %d events, want %d", len(final), total)
	}
	checkGlobalOrder(t, "final ReadAll", final)
	want := recIDs(final)
	wantIDs(t, "tailing ReadAll vs final ReadAll", tail, want)
	wantIDs(t, "subscriber vs final ReadAll", sub.waitFor(t, total, s.opts.Timeout, subscription)[:total], want)
	if extra := sub.snapshot(); len(extra) != total {
		t.Fatalf("subscriber: got %d events, want %d", len(extra), total)
	}

	byID := make(map[uuid.UUID]eventstore.RecordedEvent, len(final))
	for _, e := range final {
		byID[e.ID] = e
	}
	for w, rs := range results {
		for i, r := range rs {
			last := byID[r.ids[len(r.ids)-1]]
			if r.res.Position != last.Position || r.res.NextExpectedRevision != last.Revision {
				t.Fatalf("writer %d append %d: got result {NextExpectedRevision %d, Position %s}, want the batch's last event {%d, %s}",
					w, i, r.res.NextExpectedRevision, r.res.Position, last.Revision, last.Position)
			}
			if i > 0 {
				prev := byID[rs[i-1].ids[len(rs[i-1].ids)-1]]
				if first := byID[r.ids[0]]; !prev.Position.Less(first.Position) {
					t.Fatalf("writer %d: append %d began after append %d returned, but its first position %s is not after %s",
						w, i, i-1, first.Position, prev.Position)
				}
			}
		}
	}
}

// testHappensBefore appends one after another through two store instances (which the factory
// may back with one database): each append lands after the previous one.
func (s *suite) testHappensBefore(t *testing.T) {
	st1, _ := s.newStore(t)
	st2, _ := s.newStore(t)
	prefix := TestID()
	stores := []eventstore.Store{st1, st2}
	var prev eventstore.Position
	for i := range 40 {
		res := mustAppend(t, stores[i%2], fmt.Sprintf("%ss%d", prefix, i%3), eventstore.Any, newEvents(1+i%2, "HB")...)
		if !prev.Less(res.Position) {
			t.Fatalf("append %d returned position %s, want after the previous append's %s", i, res.Position, prev)
		}
		prev = res.Position
	}
	for i, st := range stores {
		evs := readOwn(t, st, prefix, 0)
		if len(evs) != 60 {
			t.Fatalf("store %d: global log: got %d events, want 60", i, len(evs))
		}
		checkGlobalOrder(t, fmt.Sprintf("store %d global log", i), evs)
	}
}

// testReadAllFilters checks stream-prefix and event-type filters, alone and combined.
func (s *suite) testReadAllFilters(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	order1, order2, invoice := prefix+"order-1", prefix+"order-2", prefix+"invoice-1"
	mk := func(types ...string) []eventstore.EventData {
		var out []eventstore.EventData
		for _, typ := range types {
			out = append(out, newEvents(1, typ)...)
		}
		return out
	}
	o1 := mk("Placed", "Paid")
	o2 := mk("Placed")
	in := mk("Issued", "Paid")
	mustAppend(t, st, order1, eventstore.NoStream, o1[0])
	mustAppend(t, st, invoice, eventstore.NoStream, in[0])
	mustAppend(t, st, order2, eventstore.NoStream, o2...)
	mustAppend(t, st, order1, eventstore.Exact(0), o1[1])
	mustAppend(t, st, invoice, eventstore.Exact(0), in[1])
	// Global order of this test: o1[0] in[0] o2[0] o1[1] in[1].

	cases := []struct {
		name   string
		filter eventstore.Filter
		want   []eventstore.EventData
	}{
		{"own-prefix", eventstore.Filter{StreamPrefixes: []string{prefix}}, []eventstore.EventData{o1[0], in[0], o2[0], o1[1], in[1]}},
		{"order-prefix", eventstore.Filter{StreamPrefixes: []string{prefix + "order-"}}, []eventstore.EventData{o1[0], o2[0], o1[1]}},
		{"exact-stream-name", eventstore.Filter{StreamPrefixes: []string{order1}}, []eventstore.EventData{o1[0], o1[1]}},
		{"two-prefixes", eventstore.Filter{StreamPrefixes: []string{prefix + "invoice-", prefix + "order-2"}}, []eventstore.EventData{in[0], o2[0], in[1]}},
		{"no-match", eventstore.Filter{StreamPrefixes: []string{prefix + "nothing"}}, nil},
		{"type-and-prefix", eventstore.Filter{StreamPrefixes: []string{prefix}, EventTypes: []string{"Paid"}}, []eventstore.EventData{o1[1], in[1]}},
		{"two-types", eventstore.Filter{StreamPrefixes: []string{prefix}, EventTypes: []string{"Issued", "Placed"}}, []eventstore.EventData{o1[0], in[0], o2[0]}},
		{"type-and-narrow-prefix", eventstore.Filter{StreamPrefixes: []string{prefix + "order-"}, EventTypes: []string{"Paid"}}, []eventstore.EventData{o1[1]}},
	}
	for _, tc := range cases {
		got := readAll(t, st, eventstore.Start, 0, tc.filter)
		wantIDs(t, fmt.Sprintf("%s: ReadAll(%+v)", tc.name, tc.filter), got, ids(tc.want))
	}

	// Type filter without a prefix: page through the whole log and keep this test's events.
	var typed []eventstore.RecordedEvent
	after := eventstore.Start
	for {
		page := readAll(t, st, after, 1000, eventstore.Filter{EventTypes: []string{"Issued"}})
		for _, e := range page {
			if e.Stream == invoice {
				typed = append(typed, e)
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Position
	}
	wantIDs(t, "ReadAll(type Issued) events of this test", typed, ids(in[:1]))
}

// testReadAllAfterAndLimit checks that after is exclusive and limit bounds the result.
func (s *suite) testReadAllAfterAndLimit(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	evs := newEvents(10, "Paged")
	for i, e := range evs {
		mustAppend(t, st, fmt.Sprintf("%ss%d", prefix, i%2), eventstore.Any, e)
	}
	all := readOwn(t, st, prefix, 0)
	wantIDs(t, "all events", all, ids(evs))

	cases := []struct {
		name     string
		after    eventstore.Position
		limit    int
		from, to int // expected slice of evs
	}{
		{"start-limit-3", eventstore.Start, 3, 0, 3},
		{"after-3rd", all[2].Position, 0, 3, 10},
		{"after-3rd-limit-2", all[2].Position, 2, 3, 5},
		{"after-last", all[9].Position, 0, 10, 10},
		{"after-9th-limit-5", all[8].Position, 5, 9, 10},
	}
	for _, tc := range cases {
		got := readAll(t, st, tc.after, tc.limit, filter)
		wantIDs(t, fmt.Sprintf("%s: ReadAll(after %s, limit %d)", tc.name, tc.after, tc.limit), got, ids(evs[tc.from:tc.to]))
	}

	// Paging with limit 1 from every position visits every event once.
	wantIDs(t, "ReadAll paged by 1", readOwn(t, st, prefix, 1), ids(evs))
}
