package postgres

import (
	"context"
	"strings"
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
		s.wake.notify()
		if _, err := c.Exec(ctx, sqlNotify, NotifyChannel, s.origin); err != nil {
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

// ExplainPage returns the plan PostgreSQL makes for a subscription's page after cursor under
// filter, with the planner settings every page read uses (pagePlan), and the plan of the log's
// last event (the held-back check), one line each.
func (s *Store) ExplainPage(ctx context.Context, cursor eventstore.Position, filter eventstore.Filter) (string, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, pagePlan); err != nil {
		return "", err
	}
	query, args := pageQuery(cursor, filter, s.opts.PageSize)
	var plan strings.Builder
	for _, q := range []struct {
		sql  string
		args []any
	}{{query, args}, {lastEvent, nil}} {
		rows, err := tx.Query(ctx, "EXPLAIN "+q.sql, q.args...)
		if err != nil {
			return "", err
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				rows.Close()
				return "", err
			}
			plan.WriteString(line + "\n")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return "", err
		}
	}
	return plan.String(), nil
}

// TailReads returns how many shared tail reads began and how many times one served another
// subscription.
func (s *Store) TailReads() (started, joined int) {
	s.tail.mu.Lock()
	defer s.tail.mu.Unlock()
	return s.tail.started, s.tail.joined
}
