package dispatcher_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// errStoreDown is what failingStore answers in place of the real store.
var errStoreDown = errors.New("failingstore: connection refused")

// failingStore is the real store with failures injected at the port: the next n appends holding
// an event of a given type fail. With written set, the events are appended first and the
// failure is reported after (the commit reached the database, the answer did not).
type failingStore struct {
	eventstore.Store
	mu      sync.Mutex
	failing map[string]int // event type → appends still to fail
	written bool
	failed  int
}

var _ eventstore.Store = (*failingStore)(nil)

func (s *failingStore) fail(typ string, n int, written bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing, s.written = map[string]int{typ: n}, written
}

func (s *failingStore) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *failingStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	s.mu.Lock()
	hit := false
	for _, e := range events {
		if s.failing[e.Type] > 0 {
			s.failing[e.Type]--
			s.failed++
			hit = true
			break
		}
	}
	written := s.written
	s.mu.Unlock()
	if !hit {
		return s.Store.Append(ctx, stream, expected, events...)
	}
	if written {
		if _, err := s.Store.Append(ctx, stream, expected, events...); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	return eventstore.AppendResult{}, errStoreDown
}

// startFailing starts a dispatcher whose repository appends through a failingStore.
func (h *harness) startFailing() (*running, *failingStore) {
	h.t.Helper()
	fs := &failingStore{Store: h.env.store}
	repo, err := commands.NewRepository(fs, commands.RepositoryOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return h.start(func(c *dispatcher.Config) { c.Repository = repo }), fs
}

// The store fails while a message's MessageSent is recorded: the outcome is recorded once the
// store takes it again (sent, not unknown), the message is handed over once, and the queue
// drains (the PostgreSQL outage of docs/reliability.md left it in flight for good).
func TestOutcomeRecordedAfterStoreFailure(t *testing.T) {
	h := newHarness(t, openSQLite)
	d, fs := h.startFailing()
	h.registerPaired("c1", d)
	fs.fail(connection.TypeMessageSent, 5, false)
	a := h.enqueueOne("c1", "a", 0)
	b := h.enqueueOne("c1", "bb", 0)
	h.eventually("both sent", func() bool { return count[connection.MessageSent](h.history("c1")) == 2 })
	h.idle(d, h.lastPosition("c1", connection.TypeMessageQueued))
	if n := fs.failures(); n != 5 {
		t.Errorf("%d appends failed, want 5", n)
	}
	hist := h.history("c1")
	if n := count[connection.MessageOutcomeUnknown](hist); n != 0 {
		t.Errorf("%d outcomes unknown, want 0 (the send is known to have succeeded)", n)
	}
	if h.sim.SendCount(a.MessageID) != 1 || h.sim.SendCount(b.MessageID) != 1 {
		t.Errorf("send counts %d, %d, want 1, 1", h.sim.SendCount(a.MessageID), h.sim.SendCount(b.MessageID))
	}
	h.checkInvariants("c1")
}

// The append of a MessageDispatched is written but reports a failure (the database went away
// before answering): the loop does not hand the message over (its dispatch is uncertain), runs
// the in-flight recovery again and records it unknown (cause store_error), then goes on.
func TestUncertainDispatchRecordedUnknown(t *testing.T) {
	h := newHarness(t, openSQLite)
	d, fs := h.startFailing()
	h.registerPaired("c1", d)
	fs.fail(connection.TypeMessageDispatched, 1, true)
	a := h.enqueueOne("c1", "a", 0)
	h.eventually("uncertain dispatch recorded unknown", func() bool {
		return count[connection.MessageOutcomeUnknown](h.history("c1")) == 1
	})
	b := h.enqueueOne("c1", "bb", 0)
	h.eventually("next sent", func() bool { return h.sim.SendCount(b.MessageID) == 1 })
	h.idle(d, h.lastPosition("c1", connection.TypeMessageQueued))
	var cause string
	for _, r := range h.history("c1") {
		if u, ok := r.Event.(connection.MessageOutcomeUnknown); ok && u.MessageID == a.MessageID {
			cause = u.Cause
		}
	}
	if cause != dispatcher.CauseStoreError {
		t.Errorf("uncertain dispatch outcome-unknown cause %q, want %q", cause, dispatcher.CauseStoreError)
	}
	if n := h.sim.SendCount(a.MessageID); n != 0 {
		t.Errorf("uncertainly dispatched message handed over %d times, want 0", n)
	}
	if n := fs.failures(); n != 1 {
		t.Errorf("%d appends failed, want 1", n)
	}
	if s := d.Stats(); s.Recovered != 1 || s.Sent != 1 {
		t.Errorf("stats %+v, want 1 recovered and 1 sent", s)
	}
	h.checkInvariants("c1")
}
