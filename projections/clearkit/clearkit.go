// Package clearkit drives connection aggregates straight through the event store, for tests,
// benchmarks and tools that need real histories without the command layer: Stream decides and
// appends like a command handler (load, decide, append at the expected revision, retry on a
// conflict), SeedPending queues many messages fast, and Completer is a ClearCompleter that
// records QueueCleared through the domain.
package clearkit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// maxAttempts bounds the retries of a decision that keeps meeting concurrent appends.
const maxAttempts = 20

// Stream is one connection aggregate kept up to date with its stream. It is safe for concurrent
// use (decisions are serialized).
type Stream struct {
	mu    sync.Mutex
	store eventstore.Store
	id    string
	c     *connection.Connection
}

// Load returns the aggregate of the connection with key connKey (connection.Key; unregistered
// if its stream is empty).
func Load(ctx context.Context, store eventstore.Store, connKey string) (*Stream, error) {
	s := &Stream{store: store, id: connKey, c: connection.New()}
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ID returns the connection's key.
func (s *Stream) ID() string { return s.id }

// State returns the aggregate as of the last decision or refresh. Do not mutate it.
func (s *Stream) State() *connection.Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// refresh applies the events appended after the state's version.
func (s *Stream) refresh(ctx context.Context) error {
	name := connection.StreamName(s.id)
	for {
		evs, err := s.store.ReadStream(ctx, name, eventstore.Forwards, uint64(s.c.Version()+1), 4096)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("clearkit: read %q: %w", name, err)
		}
		for _, e := range evs {
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				return fmt.Errorf("clearkit: %q revision %d: %w", name, e.Revision, err)
			}
			if err := s.c.Apply(ev); err != nil {
				return fmt.Errorf("clearkit: %q revision %d: %w", name, e.Revision, err)
			}
		}
		if len(evs) < 4096 {
			return nil
		}
	}
}

// Do decides on the current state and appends the events at the expected revision, retrying
// on a wrong expected revision. A decision with no events appends nothing and returns the zero
// AppendResult.
func (s *Stream) Do(ctx context.Context, actor string, decide func(c *connection.Connection) ([]connection.Event, error)) (eventstore.AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := connection.StreamName(s.id)
	for attempt := 0; ; attempt++ {
		evs, err := decide(s.c)
		if err != nil || len(evs) == 0 {
			return eventstore.AppendResult{}, err
		}
		tenant := s.c.TenantID()
		if reg, ok := evs[0].(connection.ConnectionRegistered); ok {
			tenant = reg.TenantID
		}
		data := make([]eventstore.EventData, len(evs))
		for i, ev := range evs {
			typ, body, err := connection.Encode(ev)
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			data[i] = eventstore.EventData{
				ID: connection.EventID(name, uint64(s.c.Version()+1+int64(i)), ev), Type: typ, Data: body,
				Metadata: eventstore.Metadata{TenantID: tenant, Actor: actor},
			}
		}
		expected := eventstore.NoStream
		if s.c.Version() >= 0 {
			expected = eventstore.Exact(uint64(s.c.Version()))
		}
		res, err := s.store.Append(ctx, name, expected, data...)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxAttempts {
			if err := s.refresh(ctx); err != nil {
				return eventstore.AppendResult{}, err
			}
			continue
		}
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("clearkit: append to %q: %w", name, err)
		}
		for _, ev := range evs {
			if err := s.c.Apply(ev); err != nil {
				return res, err
			}
		}
		return res, nil
	}
}

// Register registers connection connID of tenant with phone and returns its Stream.
func Register(ctx context.Context, store eventstore.Store, tenant, connID, phone string, now time.Time) (*Stream, error) {
	s, err := Load(ctx, store, connection.Key(tenant, connID))
	if err != nil {
		return nil, err
	}
	_, err = s.Do(ctx, "clearkit", func(c *connection.Connection) ([]connection.Event, error) {
		return c.Register(connection.RegisterConnection{ConnectionID: connID, TenantID: tenant, Phone: phone, Actor: "clearkit"}, now)
	})
	return s, err
}

// SeedPending queues n messages on s in broadcasts of up to connection.MaxRecipients recipients,
// each appended in one atomic batch through the domain, in the per-message form streams written
// before BroadcastQueued chunks hold (BroadcastStarted plus one MessageQueued per message, what
// connection.Expand makes of the chunks): the clear and catch-up figures measure a history of n
// message events, like a store's existing one. It returns the position of the last event
// appended.
func SeedPending(ctx context.Context, s *Stream, n int, now time.Time) (eventstore.Position, error) {
	var last eventstore.Position
	for done := 0; done < n; {
		size := min(n-done, connection.MaxRecipients)
		recipients := make([]string, size)
		for i := range recipients {
			recipients[i] = fmt.Sprintf("+49151%08d", i)
		}
		key := fmt.Sprintf("clearkit-seed-%d", s.State().LastSeq())
		cmd := connection.StartBroadcast{
			BroadcastID: connection.BroadcastIDFor(s.State().TenantID(), s.id, key),
			Recipients:  recipients, Text: "seeded message", Actor: "clearkit",
		}
		p, err := connection.PrepareBroadcast(cmd, s.State().Region())
		if err != nil {
			return last, fmt.Errorf("clearkit: seed: %w", err)
		}
		res, err := s.Do(ctx, "clearkit", func(c *connection.Connection) ([]connection.Event, error) {
			evs, err := c.StartPreparedBroadcast(p, now)
			if err != nil {
				return nil, err
			}
			out := make([]connection.Event, 0, 1+size)
			for _, e := range evs {
				out = append(out, connection.Expand(e)...)
			}
			return out, nil
		})
		if err != nil {
			return last, fmt.Errorf("clearkit: seed: %w", err)
		}
		last = res.Position
		done += size
	}
	return last, nil
}

// Completer is a projections.ClearCompleter that decides connection.CompleteClear on the
// aggregate and appends QueueCleared at the expected revision. It is idempotent: a clear that
// is no longer in progress (completed already) is a no-op. It caches aggregates, so repeated
// completions on a large stream only read the events appended since.
type Completer struct {
	Store eventstore.Store
	// Now is the clock of the completion time. Default time.Now.
	Now func() time.Time
	// Actor is recorded as QueueCleared.CompletedBy. Default "clearing-process".
	Actor string

	mu      sync.Mutex
	streams map[string]*Stream
	calls   int
}

var _ projections.ClearCompleter = (*Completer)(nil)

// Calls returns how many times CompleteClear was called.
func (c *Completer) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// CompleteClear implements projections.ClearCompleter.
func (c *Completer) CompleteClear(ctx context.Context, connID string, clearID uuid.UUID) error {
	c.mu.Lock()
	c.calls++
	if c.streams == nil {
		c.streams = map[string]*Stream{}
	}
	s := c.streams[connID]
	c.mu.Unlock()
	var err error
	if s == nil {
		if s, err = Load(ctx, c.Store, connID); err != nil {
			return err
		}
		c.mu.Lock()
		c.streams[connID] = s
		c.mu.Unlock()
	} else {
		s.mu.Lock()
		err = s.refresh(ctx)
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	now, actor := time.Now, c.Actor
	if c.Now != nil {
		now = c.Now
	}
	if actor == "" {
		actor = "clearing-process"
	}
	_, err = s.Do(ctx, actor, func(st *connection.Connection) ([]connection.Event, error) {
		evs, err := st.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: actor}, now())
		if errors.Is(err, connection.ErrNoClearInProgress) {
			return nil, nil // completed already: idempotent no-op
		}
		return evs, err
	})
	return err
}
