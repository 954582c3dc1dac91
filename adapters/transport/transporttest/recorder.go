package transporttest

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/internal/testwait"
)

// WaitLimit is how long Recorder waits for an expected event in real time before failing the test:
// testwait.Limit, a safety net for hangs (minutes), never a speed assertion.
var WaitLimit = testwait.Limit

// Recorder is a transport.Handler that keeps every event for tests.
type Recorder struct {
	mu      sync.Mutex
	events  []transport.Event
	changed chan struct{}
}

// NewRecorder returns an empty recorder; register it with tr.SetHandler(rec.Handle).
func NewRecorder() *Recorder { return &Recorder{changed: make(chan struct{})} }

// Handle records e.
func (r *Recorder) Handle(e transport.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Events returns a copy of the recorded events.
func (r *Recorder) Events() []transport.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]transport.Event(nil), r.events...)
}

// Wait waits until some recorded event with index >= from satisfies match and returns it with its
// index; it fails the test with the events seen after WaitLimit.
func (r *Recorder) Wait(t testing.TB, from int, what string, match func(transport.Event) bool) (transport.Event, int) {
	t.Helper()
	deadline := time.After(WaitLimit)
	for {
		r.mu.Lock()
		for i := from; i < len(r.events); i++ {
			if match(r.events[i]) {
				e := r.events[i]
				r.mu.Unlock()
				return e, i
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %s event after %s; got %s", what, WaitLimit, Describe(r.Events()))
			return nil, -1
		}
	}
}

// WaitType waits for an event of E's type for connID, from index from.
func WaitType[E transport.Event](t testing.TB, r *Recorder, from int, connID string) (E, int) {
	t.Helper()
	var zero E
	name := reflect.TypeOf(zero).Name()
	e, i := r.Wait(t, from, name+" for "+connID, func(e transport.Event) bool {
		_, ok := e.(E)
		return ok && e.Header().ConnectionID == connID
	})
	got, _ := e.(E)
	return got, i
}

// Describe prints events as "[Type conn, ...]" for failure messages.
func Describe(events []transport.Event) string {
	parts := make([]string, len(events))
	for i, e := range events {
		parts[i] = fmt.Sprintf("%T %+v", e, e)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
