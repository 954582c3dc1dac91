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
//	one statement: per append, read the revision, check it, insert the event ON CONFLICT (id) DO NOTHING
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
// Appends are queued; when no group is running, a queued append starts one at once (no waiting
// for company: an idle store appends with the latency of a lone append). Appends arriving while
// groups run wait for the next group, which takes everything queued, at most Options.GroupMax
// appends and one per stream; another group starts beside the running ones (at most
// Options.GroupCommitters in all) only once Options.GroupMin appends wait: a stuck group (a
// stream lock held by another transaction) holds up only the appends queued behind it until
// that many wait. Starting a group for every append while fewer than GroupCommitters ran made
// most commits lone appends under load (bench api, 64 clients: 1,191 append transactions for
// 6,400 requests, 878 of them alone, against 655 with GroupMin 16; each commit also wakes
// every subscription of the node). Nor does a stuck group hold the others up for long: once the
// running groups have taken no new group for Options.GroupStall, a waiting append starts
// another beside them (a timer sees to it when no append arrives meanwhile).

// sqlLockAll takes the advisory locks of the streams $1, in the order of their hashes.
const sqlLockAll = `SELECT count(pg_advisory_xact_lock(h)) FROM
  (SELECT DISTINCT hashtextextended(s, 0) AS h FROM unnest($1::text[]) AS s ORDER BY h) AS l`

// sqlInsertGroup inserts the events of a group in one statement: per append (one per stream,
// given as arrays in the group's order) it reads the stream's revision, checks the expectation
// ($2 kinds, $3 revisions; see expectArgs and sqlExpected) and inserts the event ON CONFLICT
// (id) DO NOTHING, so an append whose expectation fails or whose id is stored already (or
// given twice in the group) inserts nothing and leaves the others alone; it is resolved after
// the commit like a lone append. It returns per append, in order, the revision found and, if
// its event was inserted, its position. The statement's snapshot is taken after every lock
// of the group was granted (the locks are a statement of their own before it).
const sqlInsertGroup = `WITH req AS (
  SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
    WITH ORDINALITY AS r(stream, kind, rev, id, type, data, tenant_id, actor, correlation_id, causation_id, ord)
), cur AS (
  SELECT req.*, coalesce((SELECT e.revision FROM waqueue_events e WHERE e.stream = req.stream ORDER BY e.revision DESC LIMIT 1), -1) AS cur
  FROM req
), ins AS (
  INSERT INTO waqueue_events
    (id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at)
  SELECT id, stream, cur + 1, type, data::json, tenant_id, actor, correlation_id, causation_id, $11 FROM cur
  WHERE CASE kind WHEN 0 THEN true WHEN 1 THEN cur = -1 WHEN 2 THEN cur >= 0 ELSE cur = rev END
  ORDER BY ord
  ON CONFLICT (id) DO NOTHING
  RETURNING id, stream, tx_id, seq
)
SELECT cur.cur, ins.tx_id, ins.seq FROM cur LEFT JOIN ins ON ins.id = cur.id AND ins.stream = cur.stream ORDER BY cur.ord`

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
	// taken is when the last group was taken from the queue: the running groups' progress.
	taken time.Time
	// stallTimer is armed while appends wait behind running groups that may stall.
	stallTimer *time.Timer
	// groups counts the shared transactions committed with more than one append (tests).
	groups int
}

// appendGrouped queues a single-event append and waits for its result.
func (s *Store) appendGrouped(ctx context.Context, stream string, expected eventstore.ExpectedRevision, e eventstore.EventData) (eventstore.AppendResult, error) {
	p := &pendingAppend{ctx: ctx, stream: stream, expected: expected, event: e, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	now := time.Now()
	lead := s.leadLocked(now, g.running == 0 || g.running < s.opts.GroupCommitters && (len(g.queue) >= s.opts.GroupMin || s.stalledLocked(now)))
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

// leadLocked counts a group runner to start (the caller starts runGroups) when lead is true,
// and otherwise arms the stall timer for what waits; it returns lead. Called with g.mu.
func (s *Store) leadLocked(now time.Time, lead bool) bool {
	if lead {
		s.group.running++
	} else {
		s.armStallLocked(now)
	}
	return lead
}

// stalledLocked reports whether the running groups have taken no group for GroupStall.
// Called with g.mu.
func (s *Store) stalledLocked(now time.Time) bool {
	return s.opts.GroupStall > 0 && now.Sub(s.group.taken) >= s.opts.GroupStall
}

// armStallLocked makes sure a group starts for the appends waiting now if the running groups
// stall (take no group for GroupStall) and no other append comes to start it. Called with g.mu,
// after an append queued without starting a group.
func (s *Store) armStallLocked(now time.Time) {
	g := &s.group
	if s.opts.GroupStall <= 0 || g.stallTimer != nil || g.running >= s.opts.GroupCommitters {
		return
	}
	g.stallTimer = time.AfterFunc(max(s.opts.GroupStall-now.Sub(g.taken), 0), s.stallCheck)
}

// stallCheck runs when the stall timer fires: it starts a group beside stalled ones for what
// waits, or re-arms itself while the running groups make progress.
func (s *Store) stallCheck() {
	g := &s.group
	g.mu.Lock()
	g.stallTimer = nil
	if len(g.queue) == 0 || g.running >= s.opts.GroupCommitters {
		g.mu.Unlock()
		return
	}
	now := time.Now()
	lead := s.leadLocked(now, g.running == 0 || s.stalledLocked(now))
	g.mu.Unlock()
	if lead {
		go s.runGroups()
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
		g.taken = time.Now()
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
	n := len(group)
	kinds, revs := make([]int32, n), make([]int64, n)
	ids := make([][16]byte, n)
	types, data, tenants, actors, corrs, causes := make([]string, n), make([]*string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	for i, p := range group {
		kind, rev := expectArgs(p.expected)
		kinds[i], revs[i] = int32(kind), rev
		e := p.event
		ids[i], types[i] = e.ID, e.Type
		if len(e.Data) > 0 {
			d := string(e.Data)
			data[i] = &d
		}
		tenants[i], actors[i], corrs[i], causes[i] = e.Metadata.TenantID, e.Metadata.Actor, e.Metadata.CorrelationID, e.Metadata.CausationID
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlLockAll, streams)
	b.Queue(sqlInsertGroup, streams, kinds, revs, ids, types, data, tenants, actors, corrs, causes, now)
	b.Queue("COMMIT")
	b.Queue(sqlNotify, NotifyChannel, s.origin)
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: group append: begin: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: group append: lock streams: %w", err)
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("postgres: group append: insert: %w", err)
		}
		i := 0
		for rows.Next() {
			var actual int64
			var txID *uint64
			var seq *int64
			if err := rows.Scan(&actual, &txID, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("postgres: group append: insert: %w", err)
			}
			if i >= n {
				rows.Close()
				return fmt.Errorf("postgres: group append: insert: more than %d results", n)
			}
			p := group[i]
			i++
			if txID == nil || seq == nil {
				p.err = &eventstore.WrongExpectedRevisionError{Stream: p.stream, Expected: p.expected, Actual: actual}
				continue
			}
			p.res = eventstore.AppendResult{NextExpectedRevision: uint64(actual) + 1,
				Position: eventstore.Position{Commit: *txID, Prepare: uint64(*seq)}}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres: group append: insert: %w", err)
		}
		if i != n {
			return fmt.Errorf("postgres: group append: insert: %d results for %d appends", i, n)
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
