package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// TestID returns a fresh identifier for one test, used as the prefix of every stream the test
// writes. Ids have a fixed length and end in "-", so no test's prefix is a prefix of another's.
func TestID() string {
	return "st" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16] + "-"
}

// Clock is a deterministic, concurrency-safe clock for tests: every call returns a time one
// millisecond later than the previous call, starting at a fixed UTC instant. Times are whole
// microseconds so that every adapter round-trips them exactly.
type Clock struct {
	mu   sync.Mutex
	next time.Time
	seen []time.Time
}

// NewClock returns a Clock starting at start (converted to UTC and truncated to microseconds).
func NewClock(start time.Time) *Clock {
	return &Clock{next: start.UTC().Truncate(time.Microsecond)}
}

// Now returns the next time. It is an eventstore.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.next
	c.next = c.next.Add(time.Millisecond)
	c.seen = append(c.seen, t)
	return t
}

// Returned reports every time Now has returned so far.
func (c *Clock) Returned() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.seen...)
}

var clockStart = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)

// newStore builds a store through the factory with a fresh Clock.
func (s *suite) newStore(t *testing.T) (eventstore.Store, *Clock) {
	t.Helper()
	c := NewClock(clockStart)
	st := s.factory(t, c.Now)
	if st == nil {
		t.Fatal("storetest: factory returned a nil store")
	}
	return st, c
}

// newEvents makes n events of type typ with fresh ids and a body naming their index.
func newEvents(n int, typ string) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = eventstore.EventData{
			ID:   uuid.New(),
			Type: typ,
			Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			Metadata: eventstore.Metadata{
				TenantID:      "tenant-1",
				Actor:         "storetest",
				CorrelationID: "corr-" + typ,
			},
		}
	}
	return evs
}

func ids(evs []eventstore.EventData) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func recIDs(evs []eventstore.RecordedEvent) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	return t.Context()
}

// mustAppend appends and fails the test on error.
func mustAppend(t *testing.T, st eventstore.Store, stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := st.Append(ctxT(t), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%q, %s, %d events): got error %v, want success", stream, exp, len(evs), err)
	}
	return res
}

// readStream reads a whole stream forwards; a missing stream yields nil.
func readStream(t *testing.T, st eventstore.Store, stream string) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := st.ReadStream(ctxT(t), stream, eventstore.Forwards, 0, 0)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("ReadStream(%q): got error %v, want success", stream, err)
	}
	return evs
}

// readAll calls ReadAll and checks what every ReadAll result must satisfy: at most limit
// events, positions strictly after `after` and strictly increasing, every event matching f.
func readAll(t *testing.T, st eventstore.Store, after eventstore.Position, limit int, f eventstore.Filter) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := st.ReadAll(ctxT(t), after, limit, f)
	if err != nil {
		t.Fatalf("ReadAll(after %s, limit %d, %+v): got error %v, want success", after, limit, f, err)
	}
	if limit > 0 && len(evs) > limit {
		t.Fatalf("ReadAll(after %s, limit %d): got %d events, want at most %d", after, limit, len(evs), limit)
	}
	prev := after
	for i, e := range evs {
		if !prev.Less(e.Position) {
			t.Fatalf("ReadAll(after %s, limit %d): event %d (%s) at position %s, want a position after %s", after, limit, i, e.ID, e.Position, prev)
		}
		if !f.Match(e) {
			t.Fatalf("ReadAll(%+v): event %s (stream %q, type %q) does not match the filter", f, e.ID, e.Stream, e.Type)
		}
		prev = e.Position
	}
	return evs
}

// readOwn reads every event of the global log whose stream starts with prefix, paging by
// page events (0 = one unlimited read).
func readOwn(t *testing.T, st eventstore.Store, prefix string, page int) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	after := eventstore.Start
	f := eventstore.Filter{StreamPrefixes: []string{prefix}}
	for {
		evs := readAll(t, st, after, page, f)
		out = append(out, evs...)
		if page <= 0 || len(evs) < page {
			return out
		}
		after = evs[len(evs)-1].Position
	}
}

// wantIDs fails unless got holds exactly the ids of want, in order.
func wantIDs(t *testing.T, what string, got []eventstore.RecordedEvent, want []uuid.UUID) {
	t.Helper()
	g := recIDs(got)
	if len(g) != len(want) {
		t.Fatalf("%s: got %d events %v, want %d events %v", what, len(g), short(g), len(want), short(want))
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("%s: event %d: got id %s, want %s (got %v, want %v)", what, i, g[i], want[i], short(g), short(want))
		}
	}
}

func short(u []uuid.UUID) string {
	const max = 8
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range u {
		if i == max {
			fmt.Fprintf(&b, " …+%d", len(u)-max)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(id.String()[:8])
	}
	b.WriteByte(']')
	return b.String()
}

// wantWrongRevision fails unless err is a *WrongExpectedRevisionError with the given values.
func wantWrongRevision(t *testing.T, err error, stream string, exp eventstore.ExpectedRevision, actual int64) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("Append(%q, %s): got error %v, want errors.Is ErrWrongExpectedRevision", stream, exp, err)
	}
	var we *eventstore.WrongExpectedRevisionError
	if !errors.As(err, &we) {
		t.Fatalf("Append(%q, %s): got error %v (%T), want errors.As *WrongExpectedRevisionError", stream, exp, err, err)
	}
	if we.Stream != stream || we.Expected != exp || we.Actual != actual {
		t.Fatalf("Append(%q, %s): got error values {Stream %q, Expected %s, Actual %d}, want {Stream %q, Expected %s, Actual %d}",
			stream, exp, we.Stream, we.Expected, we.Actual, stream, exp, actual)
	}
}

// wantDuplicate fails unless err is a *DuplicateEventError for id on stream.
func wantDuplicate(t *testing.T, err error, stream string, id uuid.UUID) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrDuplicateEventID) {
		t.Fatalf("Append(%q) with id %s stored elsewhere: got error %v, want errors.Is ErrDuplicateEventID", stream, id, err)
	}
	var de *eventstore.DuplicateEventError
	if !errors.As(err, &de) {
		t.Fatalf("Append(%q): got error %v (%T), want errors.As *DuplicateEventError", stream, err, err)
	}
	if de.ID != id || de.Stream != stream {
		t.Fatalf("Append(%q): got DuplicateEventError{ID %s, Stream %q}, want {ID %s, Stream %q}", stream, de.ID, de.Stream, id, stream)
	}
}

// checkRecorded checks the fields of events read back from stream against what was appended
// at revisions first, first+1, ...
func checkRecorded(t *testing.T, stream string, first uint64, got []eventstore.RecordedEvent, want []eventstore.EventData) {
	t.Helper()
	wantIDs(t, "events of "+stream, got, ids(want))
	for i, g := range got {
		w := want[i]
		if g.Stream != stream {
			t.Fatalf("event %s: got stream %q, want %q", g.ID, g.Stream, stream)
		}
		if g.Revision != first+uint64(i) {
			t.Fatalf("event %s: got revision %d, want %d", g.ID, g.Revision, first+uint64(i))
		}
		if g.Type != w.Type {
			t.Fatalf("event %s: got type %q, want %q", g.ID, g.Type, w.Type)
		}
		if !jsonEqual(g.Data, w.Data) {
			t.Fatalf("event %s: got data %s, want %s", g.ID, g.Data, w.Data)
		}
		if g.Metadata != w.Metadata {
			t.Fatalf("event %s: got metadata %+v, want %+v", g.ID, g.Metadata, w.Metadata)
		}
		if g.Position.IsZero() {
			t.Fatalf("event %s: got zero position, want a position after Start", g.ID)
		}
		if i > 0 && !got[i-1].Position.Less(g.Position) {
			t.Fatalf("event %s: position %s is not after the previous revision's position %s", g.ID, g.Position, got[i-1].Position)
		}
	}
}

// jsonEqual compares two JSON documents by value (adapters may reformat stored JSON).
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// checkGlobalOrder fails unless positions strictly increase and, per stream, revisions are
// gapless and increasing in the order given.
func checkGlobalOrder(t *testing.T, what string, evs []eventstore.RecordedEvent) {
	t.Helper()
	next := map[string]uint64{}
	for i, e := range evs {
		if i > 0 && !evs[i-1].Position.Less(e.Position) {
			t.Fatalf("%s: event %d (%s) position %s is not after the previous event's position %s", what, i, e.ID, e.Position, evs[i-1].Position)
		}
		if e.Revision != next[e.Stream] {
			t.Fatalf("%s: event %d (%s) of stream %q: got revision %d, want %d (revision order disagrees with global order)", what, i, e.ID, e.Stream, e.Revision, next[e.Stream])
		}
		next[e.Stream] = e.Revision + 1
	}
}

// collector gathers the events a Subscribe call hands over.
type collector struct {
	mu     sync.Mutex
	events []eventstore.RecordedEvent
	signal chan struct{}
}

func newCollector() *collector { return &collector{signal: make(chan struct{}, 1)} }

func (c *collector) handle(e eventstore.RecordedEvent) error {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []eventstore.RecordedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]eventstore.RecordedEvent(nil), c.events...)
}

// waitFor waits until the collector holds at least n events, failing after timeout or when
// sub ends first.
func (c *collector) waitFor(t *testing.T, n int, timeout time.Duration, sub *subscription) []eventstore.RecordedEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got := c.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-c.signal:
		case <-sub.done:
			if got := c.snapshot(); len(got) >= n {
				return got
			}
			t.Fatalf("Subscribe returned %v before delivering %d events (got %d)", sub.err, n, len(c.snapshot()))
		case <-deadline.C:
			t.Fatalf("Subscribe: got %d events within %s, want %d", len(c.snapshot()), timeout, n)
		}
	}
}

// subscription is a Subscribe call running in its own goroutine.
type subscription struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Subscribe returned
	err    error         // Subscribe's result, set before done is closed
}

// subscribeFunc returns st.Subscribe, or for the suite's page variants (Options-independent:
// every store runs them) eventstore.SubscribePages with each page handed to handle one event at
// a time (an empty page is an error).
func (s *suite) subscribeFunc(st eventstore.Store) func(ctx context.Context, after eventstore.Position, f eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	if !s.pages {
		return st.Subscribe
	}
	return func(ctx context.Context, after eventstore.Position, f eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
		return eventstore.SubscribePages(ctx, st, after, f, func(page []eventstore.RecordedEvent) error {
			if len(page) == 0 {
				return errors.New("storetest: SubscribePages handed over an empty page")
			}
			for _, e := range page {
				if err := handle(e); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// subscribe runs Subscribe (subscribeFunc) in a goroutine; it is cancelled and awaited when
// the test ends.
func (s *suite) subscribe(t *testing.T, st eventstore.Store, after eventstore.Position, f eventstore.Filter, handle func(eventstore.RecordedEvent) error) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub := &subscription{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sub.done)
		sub.err = s.subscribeFunc(st)(ctx, after, f, handle)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sub.done:
		case <-time.After(30 * time.Second):
			t.Errorf("Subscribe did not return within 30s of its context being cancelled")
		}
	})
	return sub
}

// wait waits for Subscribe to return and yields its result, failing after timeout.
func (s *subscription) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(timeout):
		t.Fatalf("Subscribe did not return within %s", timeout)
		return nil
	}
}
