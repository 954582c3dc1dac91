package postgres

import (
	"context"
	"sync"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// HeldAppend is an append whose transaction is still open: its events are inserted (with their
// final positions) but not committed.
type HeldAppend struct {
	Result eventstore.AppendResult
	finish func(ctx context.Context, commit bool) error
	once   sync.Once
}

// Commit commits the held transaction, notifies like Append, and releases its connection.
func (h *HeldAppend) Commit(ctx context.Context) error { return h.end(ctx, true) }

// Rollback rolls the held transaction back and releases its connection. After Commit or
// Rollback it does nothing.
func (h *HeldAppend) Rollback(ctx context.Context) error { return h.end(ctx, false) }

func (h *HeldAppend) end(ctx context.Context, commit bool) error {
	var err error
	h.once.Do(func() { err = h.finish(ctx, commit) })
	return err
}

// AppendHeld runs Append's transaction up to, not including, COMMIT.
func (s *Store) AppendHeld(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (*HeldAppend, error) {
	if err := eventstore.Validate(stream, events); err != nil {
		return nil, err
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.write(ctx, c.Conn(), stream, expected, events, false)
	if err != nil {
		rollback(c.Conn())
		c.Release()
		return nil, err
	}
	return &HeldAppend{Result: res, finish: func(ctx context.Context, commit bool) error {
		defer c.Release()
		if !commit {
			_, err := c.Exec(ctx, "ROLLBACK")
			return err
		}
		if _, err := c.Exec(ctx, "COMMIT"); err != nil {
			return err
		}
		if _, err := c.Exec(ctx, sqlNotify, NotifyChannel); err != nil {
			return err
		}
		return nil
	}}, nil
}

// QueuedAppends is how many single-event appends wait for a group.
func (s *Store) QueuedAppends() int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return len(s.group.queue)
}

// GroupsCommitted is how many shared transactions of more than one append committed.
func (s *Store) GroupsCommitted() int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.groups
}

// GroupsRunning is how many committers are running.
func (s *Store) GroupsRunning() int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.running
}

// The queries of a subscription's live wake-ups (read.go).
const (
	SQLPendingAfter = sqlPendingAfter
	SQLHorizon      = sqlHorizon
)
