package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Group commit of single-event appends.
//
// Concurrent single-event appends to different streams share one transaction, hence one
// commit and one WAL flush. Each keeps its own expected-revision check and its own result:
//
//	BEGIN
//	lock every stream of the group (advisory locks, in hash order: no deadlock between groups)
//	per append: read the revision, check it, insert the event ON CONFLICT (id) DO NOTHING
//	COMMIT; NOTIFY
//
// all in one pipelined round trip. An append whose expectation fails (or whose id is stored
// already) inserts nothing and does not disturb the others; after the commit it is resolved
// exactly like a lone append (idempotent retry, duplicate id, or wrong expected revision).
// The locks are all taken before the first insert, which assigns the transaction id, so the
// id is greater than that of every previous writer of each stream of the group: per-stream
// order agrees with the global (tx_id, seq) order as for a lone append (see the package doc).
// If the shared transaction fails as a whole, nothing of it is committed and every append of
// the group is retried alone.
//
// Appends are queued; while fewer than Options.GroupCommitters groups are running, a queued
// append starts one at once (no waiting for company: an idle store appends with the latency of
// a lone append). Appends arriving while groups run wait for the next group, which takes
// everything queued, at most Options.GroupMax appends and one per stream.

// sqlLockAll takes the advisory locks of the streams $1, in the order of their hashes.
const sqlLockAll = `SELECT count(pg_advisory_xact_lock(h)) FROM
  (SELECT DISTINCT hashtextextended(s, 0) AS h FROM unnest($1::text[]) AS s ORDER BY h) AS l`

// sqlInsertGrouped is sqlInsertOne that leaves an id stored already to the resolution after
// the commit instead of failing the shared transaction.
const sqlInsertGrouped = sqlCurrent + `ins AS (
  INSERT INTO waqueue_events
    (id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at)
  SELECT $4, $1, cur.rev + 1, $5, $6::json, $7, $8, $9, $10, $11 FROM cur
  WHERE ` + sqlExpected + `
  ON CONFLICT (id) DO NOTHING
  RETURNING tx_id, seq
)` + sqlResult

// pendingAppend is a queued single-event append.
type pendingAppend struct {
	ctx      context.Context
	stream   string
	expected eventstore.ExpectedRevision
	event    eventstore.EventData
	done     chan struct{}
	res      eventstore.AppendResult
	err      error
}

type grouper struct {
	mu      sync.Mutex
	queue   []*pendingAppend
	running int
	// groups counts the shared transactions committed with more than one append (tests).
	groups int
}

// appendGrouped queues a single-event append and waits for its result.
func (s *Store) appendGrouped(ctx context.Context, stream string, expected eventstore.ExpectedRevision, e eventstore.EventData) (eventstore.AppendResult, error) {
	p := &pendingAppend{ctx: ctx, stream: stream, expected: expected, event: e, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	lead := g.running < s.opts.GroupCommitters
	if lead {
		g.running++
	}
	g.mu.Unlock()
	if lead {
		go s.runGroups()
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		// The append may still be committed by its group; as with a lone append cancelled
		// during its commit, a retry with the same event id tells.
		return eventstore.AppendResult{}, ctx.Err()
	}
}

// runGroups runs groups until the queue is empty.
func (s *Store) runGroups() {
	g := &s.group
	for {
		g.mu.Lock()
		group := s.takeGroup()
		if len(group) == 0 {
			g.running--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		s.runGroup(group)
	}
}

// takeGroup removes from the queue what the next group appends: at most GroupMax appends, one
// per stream (later appends to a stream of the group stay queued, in order). Called with g.mu.
func (s *Store) takeGroup() []*pendingAppend {
	g := &s.group
	var group []*pendingAppend
	streams := map[string]bool{}
	rest := g.queue[:0]
	for _, p := range g.queue {
		switch {
		case p.ctx.Err() != nil:
			p.err = p.ctx.Err()
			close(p.done)
		case len(group) < s.opts.GroupMax && !streams[p.stream]:
			streams[p.stream] = true
			group = append(group, p)
		default:
			rest = append(rest, p)
		}
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	return group
}

// runGroup appends the group, alone when it has one append, and delivers every result.
func (s *Store) runGroup(group []*pendingAppend) {
	defer func() {
		for _, p := range group {
			close(p.done)
		}
	}()
	if len(group) == 1 {
		p := group[0]
		p.res, p.err = s.appendAlone(p.ctx, p.stream, p.expected, []eventstore.EventData{p.event})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.writeGroup(ctx, group); err != nil {
		// Nothing of the group is committed (or, if the COMMIT's answer was lost, a retry
		// finds its events stored and answers them): each append on its own.
		for _, p := range group {
			p.res, p.err = s.appendAlone(p.ctx, p.stream, p.expected, []eventstore.EventData{p.event})
		}
		return
	}
	s.group.mu.Lock()
	s.group.groups++
	s.group.mu.Unlock()
	s.wake.notify()
	for _, p := range group {
		if p.err != nil {
			p.res, p.err = s.resolve(p.ctx, p.stream, p.expected, []eventstore.EventData{p.event}, p.err)
		}
	}
}

// writeGroup runs the shared transaction: one pipelined round trip. It sets each append's
// result, or a *WrongExpectedRevisionError for one that inserted nothing (resolved later by
// the caller). An error means the transaction did not commit (as far as it knows).
func (s *Store) writeGroup(ctx context.Context, group []*pendingAppend) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	conn := c.Conn()
	now := s.opts.Clock()
	streams := make([]string, len(group))
	for i, p := range group {
		streams[i] = p.stream
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlLockAll, streams)
	for _, p := range group {
		kind, rev := expectArgs(p.expected)
		e := p.event
		b.Queue(sqlInsertGrouped, p.stream, kind, rev, [16]byte(e.ID), e.Type, jsonArg(e.Data),
			e.Metadata.TenantID, e.Metadata.Actor, e.Metadata.CorrelationID, e.Metadata.CausationID, now)
	}
	b.Queue("COMMIT")
	b.Queue(sqlNotify, NotifyChannel)
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: group append: begin: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: group append: lock streams: %w", err)
		}
		for _, p := range group {
			var actual int64
			var txID *uint64
			var seq *int64
			if err := br.QueryRow().Scan(&actual, &txID, &seq); err != nil {
				return fmt.Errorf("postgres: group append to %q: insert: %w", p.stream, err)
			}
			if txID == nil || seq == nil {
				p.err = &eventstore.WrongExpectedRevisionError{Stream: p.stream, Expected: p.expected, Actual: actual}
				continue
			}
			p.res = eventstore.AppendResult{NextExpectedRevision: uint64(actual) + 1,
				Position: eventstore.Position{Commit: *txID, Prepare: uint64(*seq)}}
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: group append: commit: %w", err)
		}
		_, _ = br.Exec() // see write: a lost notification only delays other processes
		return nil
	}()
	if err != nil {
		rollback(conn)
		for _, p := range group {
			p.res, p.err = eventstore.AppendResult{}, nil
		}
	}
	return err
}
