package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// testSubscribeCatchUpThenLive subscribes after some events exist, then appends more: the
// subscriber gets the history, then the new events, in order.
func (s *suite) testSubscribeCatchUpThenLive(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	history := newEvents(3, "History")
	mustAppend(t, st, prefix+"a", eventstore.NoStream, history...)

	c := newCollector()
	sub := s.subscribe(t, st, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix}}, c.handle)
	wantIDs(t, "catch-up", c.waitFor(t, 3, s.opts.Timeout, sub), ids(history))

	live := newEvents(2, "Live")
	mustAppend(t, st, prefix+"b", eventstore.NoStream, live[0])
	wantIDs(t, "first live event", c.waitFor(t, 4, s.opts.Timeout, sub), ids(append(history, live[0])))
	mustAppend(t, st, prefix+"a", eventstore.Exact(2), live[1])
	got := c.waitFor(t, 5, s.opts.Timeout, sub)
	wantIDs(t, "catch-up then live", got, ids(append(history, live...)))
	checkGlobalOrder(t, "subscriber", got)
	wantIDs(t, "subscriber vs ReadAll", got, recIDs(readOwn(t, st, prefix, 0)))
}

// testSubscribeFromPosition checks that the start position is exclusive.
func (s *suite) testSubscribeFromPosition(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	evs := newEvents(5, "Pos")
	mustAppend(t, st, prefix+"a", eventstore.NoStream, evs[:2]...)
	mid := mustAppend(t, st, prefix+"a", eventstore.Exact(1), evs[2:4]...)
	c := newCollector()
	sub := s.subscribe(t, st, mid.Position, eventstore.Filter{StreamPrefixes: []string{prefix}}, c.handle)
	mustAppend(t, st, prefix+"a", eventstore.Exact(3), evs[4])
	wantIDs(t, "subscribe after the 4th event's position", c.waitFor(t, 1, s.opts.Timeout, sub), ids(evs[4:]))

	c2 := newCollector()
	all := readOwn(t, st, prefix, 0)
	sub2 := s.subscribe(t, st, all[1].Position, eventstore.Filter{StreamPrefixes: []string{prefix}}, c2.handle)
	wantIDs(t, "subscribe after the 2nd event's position", c2.waitFor(t, 3, s.opts.Timeout, sub2), ids(evs[2:]))
}

// testSubscribeFilter checks that a subscription with stream and type filters delivers only
// matching events, in catch-up and live.
func (s *suite) testSubscribeFilter(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	keep := func(e eventstore.EventData) eventstore.EventData { e.Type = "Keep"; return e }
	a := newEvents(4, "Drop")
	a[1], a[3] = keep(a[1]), keep(a[3])
	b := newEvents(2, "Keep")
	mustAppend(t, st, prefix+"a", eventstore.NoStream, a[:2]...)
	mustAppend(t, st, prefix+"b", eventstore.NoStream, b[0])

	f := eventstore.Filter{StreamPrefixes: []string{prefix + "a"}, EventTypes: []string{"Keep"}}
	c := newCollector()
	sub := s.subscribe(t, st, eventstore.Start, f, c.handle)
	wantIDs(t, "filtered catch-up", c.waitFor(t, 1, s.opts.Timeout, sub), ids(a[1:2]))
	mustAppend(t, st, prefix+"b", eventstore.Exact(0), b[1])
	mustAppend(t, st, prefix+"a", eventstore.Exact(1), a[2:]...)
	got := c.waitFor(t, 2, s.opts.Timeout, sub)
	wantIDs(t, "filtered live", got, []uuid.UUID{a[1].ID, a[3].ID})
}

var errStopHere = errors.New("storetest: stop here")

// testSubscribeResumeExactlyOnce stops and resumes a subscriber from its checkpoint many
// times while writers keep appending: it sees every event exactly once, in global order.
func (s *suite) testSubscribeResumeExactlyOnce(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	filter := eventstore.Filter{StreamPrefixes: []string{prefix}}
	const nWriters, appendsPerWriter = 4, 40

	total := 0 // fixed in advance so that no session waits for events that never come
	for i := range appendsPerWriter {
		total += nWriters * (1 + i%2)
	}
	var wg sync.WaitGroup
	errs := make(chan error, nWriters)
	for w := range nWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appendsPerWriter {
				evs := newEvents(1+i%2, "Resume")
				if _, err := st.Append(ctxT(t), fmt.Sprintf("%sw%d", prefix, w%3), eventstore.Any, evs...); err != nil {
					errs <- fmt.Errorf("writer %d append %d: %w", w, i, err)
					return
				}
			}
		}()
	}

	var seen []eventstore.RecordedEvent
	checkpoint := eventstore.Start
	for session := 0; len(seen) < total; session++ {
		stopAfter := min(1+session*7%23, total-len(seen))
		ctx, cancel := context.WithCancel(ctxT(t))
		handled := 0
		byCancel := session%2 == 1
		err := s.subscribeFunc(st)(ctx, checkpoint, filter, func(e eventstore.RecordedEvent) error {
			seen = append(seen, e)
			checkpoint = e.Position
			handled++
			if handled == stopAfter {
				if byCancel {
					cancel()
					return nil
				}
				return errStopHere
			}
			return nil
		})
		cancel()
		if byCancel {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("session %d: Subscribe after ctx cancel: got error %v, want context.Canceled", session, err)
			}
		} else if !errors.Is(err, errStopHere) {
			t.Fatalf("session %d: Subscribe after handle failed: got error %v, want it to wrap the handler's error", session, err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v, want success", err)
	}
	final := readOwn(t, st, prefix, 0)
	if len(final) != total {
		t.Fatalf("global log: got %d events, want %d", len(final), total)
	}
	wantIDs(t, "events seen across resumed subscriptions vs ReadAll", seen, recIDs(final))
	checkGlobalOrder(t, "resumed subscriptions", seen)
}

// testSubscribeHandleError checks that an error from handle stops Subscribe with that error
// and that handle is not called again.
func (s *suite) testSubscribeHandleError(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	evs := newEvents(4, "Err")
	mustAppend(t, st, prefix+"a", eventstore.NoStream, evs...)
	boom := errors.New("storetest: handler failed")
	var calls []uuid.UUID
	err := s.subscribeFunc(st)(ctxT(t), eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix}}, func(e eventstore.RecordedEvent) error {
		calls = append(calls, e.ID)
		if len(calls) == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Subscribe with a failing handler: got error %v, want it to wrap %v", err, boom)
	}
	if len(calls) != 2 || calls[0] != evs[0].ID || calls[1] != evs[1].ID {
		t.Fatalf("handler calls: got %v, want %v (none after the failure)", short(calls), short(ids(evs[:2])))
	}

	// A handler failing on a live event stops the subscription too.
	c := newCollector()
	sub := s.subscribe(t, st, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix + "live"}}, func(e eventstore.RecordedEvent) error {
		_ = c.handle(e)
		return boom
	})
	mustAppend(t, st, prefix+"live", eventstore.NoStream, newEvents(2, "Live")...)
	if err := sub.wait(t, s.opts.Timeout); !errors.Is(err, boom) {
		t.Fatalf("Subscribe with a handler failing live: got error %v, want it to wrap %v", err, boom)
	}
	if n := len(c.snapshot()); n != 1 {
		t.Fatalf("live handler calls: got %d, want 1 (none after the failure)", n)
	}
}

// testSubscribeCancel checks that cancelling the context stops Subscribe with ctx.Err(), both
// while it waits for new events and when the context is already done.
func (s *suite) testSubscribeCancel(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	mustAppend(t, st, prefix+"a", eventstore.NoStream, newEvents(1, "C")...)
	c := newCollector()
	sub := s.subscribe(t, st, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix}}, c.handle)
	c.waitFor(t, 1, s.opts.Timeout, sub) // caught up, now live
	sub.cancel()
	if err := sub.wait(t, s.opts.Timeout); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe after cancel while live: got error %v, want context.Canceled", err)
	}

	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	calls := 0
	err := s.subscribeFunc(st)(ctx, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix}}, func(eventstore.RecordedEvent) error {
		calls++
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with a cancelled context: got error %v (after %d handler calls), want context.Canceled", err, calls)
	}

	ctx, cancel = context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	err = s.subscribeFunc(st)(ctx, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix + "none"}}, func(eventstore.RecordedEvent) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe whose context times out: got error %v, want context.DeadlineExceeded", err)
	}
}

// testSubscribePagesAreTheHandlers reads a log of several pages through
// eventstore.SubscribePages, keeping every page handed over: none is empty, and once all are in,
// they still hold what ReadAll returns (a store that reused or changed a page after its handler
// returned would show here).
func (s *suite) testSubscribePagesAreTheHandlers(t *testing.T) {
	st, _ := s.newStore(t)
	prefix := TestID()
	const n = 250
	for i := 0; i < n; i += 50 {
		mustAppend(t, st, prefix+"a", eventstore.Any, newEvents(50, "Page")...)
	}
	var mu sync.Mutex
	var pages [][]eventstore.RecordedEvent
	total := 0
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	err := eventstore.SubscribePages(ctx, st, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{prefix}}, func(page []eventstore.RecordedEvent) error {
		if len(page) == 0 {
			return errors.New("storetest: an empty page")
		}
		mu.Lock()
		defer mu.Unlock()
		pages = append(pages, page)
		if total += len(page); total >= n {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SubscribePages: got error %v after %d events, want context.Canceled once all %d were handed over", err, total, n)
	}
	var got []eventstore.RecordedEvent
	for _, p := range pages {
		got = append(got, p...)
	}
	want := readOwn(t, st, prefix, 0)
	wantIDs(t, "pages kept vs ReadAll", got, recIDs(want))
	for i := range got {
		if !jsonEqual(got[i].Data, want[i].Data) || got[i].Position != want[i].Position {
			t.Fatalf("event %d of the pages kept: %s at %s, ReadAll: %s at %s", i, got[i].Data, got[i].Position, want[i].Data, want[i].Position)
		}
	}
	checkGlobalOrder(t, "pages", got)
}
