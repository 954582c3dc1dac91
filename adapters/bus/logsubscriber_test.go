package bus_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/bus"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/internal/testwait"
)

// openStore opens an SQLite event store of pageSize events a page (0: the store's default)
// that closes when t ends.
func openStore(t *testing.T, pageSize int) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), sqlite.Options{PollInterval: 20 * time.Millisecond, PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func appendN(t *testing.T, st eventstore.Store, stream string, n int) {
	t.Helper()
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = eventstore.EventData{ID: uuid.New(), Type: "Tested", Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}
	}
	if _, err := st.Append(context.Background(), stream, eventstore.Any, evs...); err != nil {
		t.Fatal(err)
	}
}

// subscription is a LogSubscriber's subscription from the start of the log, for at most two
// minutes (a safety net).
type subscription struct {
	t    *testing.T
	ctx  context.Context
	msgs <-chan *message.Message
	max  int // the most events a message may hold
}

// subscribe starts a LogSubscriber with cfg, reading from the start of the log, and
// subscribes to it; both end when t ends.
func subscribe(t *testing.T, cfg bus.LogSubscriberConfig) *subscription {
	t.Helper()
	cfg.Checkpoint = func(context.Context, string) (eventstore.Position, error) { return eventstore.Start, nil }
	sub, err := bus.NewLogSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	msgs, err := sub.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	return &subscription{t: t, ctx: ctx, msgs: msgs, max: max(cfg.BatchSize, cfg.MaxBatchSize)}
}

// next returns the next message and its batch, having had got events so far. It fails the
// test when no message comes, when a message carries no batch, or an empty batch, or more
// events than the subscriber's MaxBatchSize (BatchSize when that is larger).
func (s *subscription) next(got int) (*message.Message, []eventstore.RecordedEvent) {
	s.t.Helper()
	var m *message.Message
	select {
	case m = <-s.msgs:
	case <-s.ctx.Done():
		s.t.Fatalf("got %d events, then no message: %v", got, s.ctx.Err())
	}
	batch, err := bus.DecodeBatch(m)
	if err != nil {
		s.t.Fatal(err)
	}
	if len(batch) == 0 || len(batch) > s.max {
		s.t.Fatalf("batch of %d events, at most %d", len(batch), s.max)
	}
	return m, batch
}

// checkAllInOrder checks that got holds the total events appendN appended, each once and in
// order.
func checkAllInOrder(t *testing.T, got []eventstore.RecordedEvent, total int) {
	t.Helper()
	if len(got) != total {
		t.Fatalf("%d events delivered, want %d", len(got), total)
	}
	for i, e := range got {
		if string(e.Data) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("event %d: %s", i, e.Data)
		}
	}
}

// TestBatchesInProcess checks that the subscriber hands every event over exactly once and in
// order, in process (no payload), that a nacked batch comes back unchanged, and that
// DecodeBatch refuses a message carrying no batch instead of answering an empty one.
func TestBatchesInProcess(t *testing.T) {
	const total = 50
	st := openStore(t, 0)
	appendN(t, st, "s-1", total)
	sub := subscribe(t, bus.LogSubscriberConfig{Store: st, BatchSize: 7, RedeliveryDelay: time.Millisecond})
	var got []eventstore.RecordedEvent
	nacked := false
	for len(got) < total {
		m, batch := sub.next(len(got))
		if len(m.Payload) != 0 {
			t.Fatalf("payload of %d bytes: batches should travel in process", len(m.Payload))
		}
		if !nacked && len(got) > 0 {
			nacked = true
			m.Nack()
			again, b2 := sub.next(len(got))
			if len(b2) != len(batch) || b2[0].ID != batch[0].ID {
				t.Fatalf("redelivered batch differs: %d events from %s, was %d from %s", len(b2), b2[0].ID, len(batch), batch[0].ID)
			}
			m = again
		}
		got = append(got, batch...)
		m.Ack()
	}
	checkAllInOrder(t, got, total)
	if _, err := bus.DecodeBatch(message.NewMessage("x", nil)); err == nil {
		t.Fatal("DecodeBatch of an empty message: no error")
	}
	// EncodeBatch's JSON payload still decodes.
	m, err := bus.EncodeBatch(got[:3])
	if err != nil {
		t.Fatal(err)
	}
	back, err := bus.DecodeBatch(m)
	if err != nil || len(back) != 3 || back[2].ID != got[2].ID {
		t.Fatalf("EncodeBatch round trip: %d events, %v", len(back), err)
	}
}

// countingStore counts the events its subscriptions have handed over (each handle call that
// returned), so a test can wait until the subscriber has read a given number.
type countingStore struct {
	eventstore.Store
	handled chan struct{}
}

func (s countingStore) Subscribe(ctx context.Context, after eventstore.Position, f eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	return s.Store.Subscribe(ctx, after, f, func(e eventstore.RecordedEvent) error {
		err := handle(e)
		if err == nil {
			s.handled <- struct{}{}
		}
		return err
	})
}

// TestBatchGrowsWhileHandled checks that the events read while a message waits for its ack are
// delivered in the next message, up to MaxBatchSize (beyond BatchSize), that no message holds
// more, and that every event still comes exactly once and in order.
func TestBatchGrowsWhileHandled(t *testing.T) {
	const total, batchSize, maxBatch = 70, 7, 20
	st := countingStore{Store: openStore(t, 0), handled: make(chan struct{}, total)}
	appendN(t, st, "s-1", total)
	sub := subscribe(t, bus.LogSubscriberConfig{Store: st, BatchSize: batchSize, MaxBatchSize: maxBatch})
	first, batch := sub.next(0)
	got := batch
	// While the first is held, the subscriber reads maxBatch events ahead: wait until the store
	// has handed all those over.
	for range len(batch) + maxBatch {
		select {
		case <-st.handled:
		case <-sub.ctx.Done():
			t.Fatal("the subscriber stopped reading while a message was held")
		}
	}
	first.Ack()
	m, batch := sub.next(len(got))
	if len(batch) != maxBatch {
		t.Fatalf("batch after a held one: %d events, want MaxBatchSize %d", len(batch), maxBatch)
	}
	got = append(got, batch...)
	m.Ack()
	for len(got) < total {
		m, batch := sub.next(len(got))
		got = append(got, batch...)
		m.Ack()
	}
	checkAllInOrder(t, got, total)
}

// pagesStore is the SQLite store (an eventstore.PageSubscriber) counting the events its page
// subscriptions have handed over, and checking at every page that the subscriber holds no more
// than bound events it has not had acked.
type pagesStore struct {
	*sqlite.Store
	t             *testing.T
	bound         int64
	handed, acked atomic.Int64
	pages         atomic.Int64
}

func (s *pagesStore) SubscribePages(ctx context.Context, after eventstore.Position, f eventstore.Filter, handle func([]eventstore.RecordedEvent) error) error {
	return s.Store.SubscribePages(ctx, after, f, func(page []eventstore.RecordedEvent) error {
		if err := handle(page); err != nil {
			return err
		}
		s.pages.Add(1)
		if held := s.handed.Add(int64(len(page))) - s.acked.Load(); held > s.bound {
			s.t.Errorf("the subscriber holds %d events not acked, want at most %d", held, s.bound)
		}
		return nil
	})
}

// TestPagesSplitAndReadAheadBounded reads a log in store pages larger than MaxBatchSize: every
// message holds at most MaxBatchSize events, every event comes exactly once and in order, and
// the subscriber never holds more events than one message and its read-ahead (MaxBatchSize, or
// one page when a page is larger) while messages are held unacked.
func TestPagesSplitAndReadAheadBounded(t *testing.T) {
	const total, pageSize, maxBatch = 95, 10, 7
	ps := &pagesStore{Store: openStore(t, pageSize), t: t, bound: maxBatch + max(maxBatch, pageSize)}
	appendN(t, ps, "s-1", total)
	sub := subscribe(t, bus.LogSubscriberConfig{Store: ps, BatchSize: maxBatch, MaxBatchSize: maxBatch})
	var got []eventstore.RecordedEvent
	for len(got) < total {
		m, batch := sub.next(len(got))
		got = append(got, batch...)
		ps.acked.Add(int64(len(batch))) // before the ack: the store may read on at once
		m.Ack()
	}
	checkAllInOrder(t, got, total)
	if n := ps.pages.Load(); n < total/pageSize {
		t.Fatalf("%d pages handed over: the subscriber did not read through SubscribePages", n)
	}
}
