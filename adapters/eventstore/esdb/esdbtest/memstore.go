package esdbtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// NewMemoryStore returns a small in-memory eventstore.Store, the default backing of the
// server. Give the same store to several servers in turn to simulate a node restart that
// keeps its data. It stamps events with clock (nil means time.Now).
func NewMemoryStore(clock eventstore.Clock) eventstore.Store {
	if clock == nil {
		clock = time.Now
	}
	return newMemStore(clock)
}

// memStore is a small in-memory eventstore.Store used as the default backing of the test server.
// It serializes appends under one mutex, so Position order is commit order. Positions are
// {Commit: n, Prepare: n} for the n-th event (1-based).
type memStore struct {
	clock eventstore.Clock

	mu      sync.Mutex
	closed  bool
	log     []eventstore.RecordedEvent
	streams map[string][]int // stream -> indexes into log
	byID    map[uuid.UUID]int
	notify  chan struct{} // closed and replaced on every commit
}

var _ eventstore.Store = (*memStore)(nil)

func newMemStore(clock eventstore.Clock) *memStore {
	return &memStore{
		clock:   clock,
		streams: make(map[string][]int),
		byID:    make(map[uuid.UUID]int),
		notify:  make(chan struct{}),
	}
}

func (m *memStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if err := eventstore.Validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	idx := m.streams[stream]
	actual := int64(len(idx)) - 1

	// Idempotent retry: the whole batch is already stored, in order, at consecutive revisions
	// of this stream that the expected revision is compatible with.
	if len(events) > 0 {
		if first, ok := m.byID[events[0].ID]; ok && m.log[first].Stream == stream {
			rev := m.log[first].Revision
			same := rev+uint64(len(events)) <= uint64(len(idx))
			for i := 0; same && i < len(events); i++ {
				same = m.log[idx[rev+uint64(i)]].ID == events[i].ID
			}
			before := int64(rev) - 1
			if same && expected.Check(before) || same && expected.IsAny() {
				last := m.log[idx[rev+uint64(len(events))-1]]
				return eventstore.AppendResult{NextExpectedRevision: last.Revision, Position: last.Position}, nil
			}
		}
	}
	if !expected.Check(actual) {
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}
	for _, e := range events {
		if _, dup := m.byID[e.ID]; dup {
			return eventstore.AppendResult{}, &eventstore.DuplicateEventError{ID: e.ID, Stream: stream}
		}
	}
	if len(events) == 0 {
		next := uint64(0)
		if actual >= 0 {
			next = uint64(actual)
		}
		return eventstore.AppendResult{NextExpectedRevision: next}, nil
	}
	now := m.clock().UTC()
	var res eventstore.AppendResult
	for _, e := range events {
		n := uint64(len(m.log)) + 1
		rec := eventstore.RecordedEvent{
			ID:         e.ID,
			Stream:     stream,
			Revision:   uint64(len(m.streams[stream])),
			Position:   eventstore.Position{Commit: n, Prepare: n},
			Type:       e.Type,
			Data:       append([]byte(nil), e.Data...),
			Metadata:   e.Metadata,
			RecordedAt: now,
		}
		m.byID[e.ID] = len(m.log)
		m.streams[stream] = append(m.streams[stream], len(m.log))
		m.log = append(m.log, rec)
		res = eventstore.AppendResult{NextExpectedRevision: rec.Revision, Position: rec.Position}
	}
	close(m.notify)
	m.notify = make(chan struct{})
	return res, nil
}

func (m *memStore) ReadStream(ctx context.Context, stream string, dir eventstore.Direction, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, eventstore.ErrClosed
	}
	idx := m.streams[stream]
	if len(idx) == 0 {
		return nil, fmt.Errorf("esdbtest: read %q: %w", stream, eventstore.ErrStreamNotFound)
	}
	var out []eventstore.RecordedEvent
	if dir == eventstore.Forwards {
		for r := from; r < uint64(len(idx)) && (limit <= 0 || len(out) < limit); r++ {
			out = append(out, m.log[idx[r]])
		}
		return out, nil
	}
	start := int64(len(idx)) - 1
	if from < uint64(len(idx)) {
		start = int64(from)
	}
	for r := start; r >= 0 && (limit <= 0 || len(out) < limit); r-- {
		out = append(out, m.log[idx[r]])
	}
	return out, nil
}

func (m *memStore) ReadAll(ctx context.Context, after eventstore.Position, limit int, filter eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	out, _, err := m.readAll(ctx, after, limit, filter)
	return out, err
}

// readAll also returns the channel that is closed on the next commit after the read.
func (m *memStore) readAll(ctx context.Context, after eventstore.Position, limit int, filter eventstore.Filter) ([]eventstore.RecordedEvent, <-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, eventstore.ErrClosed
	}
	// Commit == index+1, so the first candidate is at index after.Commit (Prepare == Commit).
	start := after.Commit
	if after.Prepare < after.Commit {
		start = after.Commit - 1
	}
	var out []eventstore.RecordedEvent
	for i := start; i < uint64(len(m.log)) && (limit <= 0 || len(out) < limit); i++ {
		if e := m.log[i]; after.Less(e.Position) && filter.Match(e) {
			out = append(out, e)
		}
	}
	return out, m.notify, nil
}

func (m *memStore) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	for {
		evs, wake, err := m.readAll(ctx, after, 1000, filter)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := handle(e); err != nil {
				return fmt.Errorf("esdbtest: subscribe: handle %s: %w", e.Position, err)
			}
			after = e.Position
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

func (m *memStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
