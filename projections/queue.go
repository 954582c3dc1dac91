package projections

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// QueueName is the name (and checkpoint key) of the pending-queue projection.
const QueueName = "queue"

// Queue is the pending-queue read model: per connection, the messages queued and not yet
// dispatched, expired or purged, in Seq order; the messages in flight; counts per broadcast;
// and the clears requested, which the ClearProcess completes.
//
// A clear costs O(ranges) whatever the number of purged messages (G4): ClearQueueRequested
// records its Purge ranges and, for a whole-queue clear, raises the connection's purge
// watermark to UpToSeq; reads skip rows at or below the watermark and inside the ranges.
// The purged rows themselves are deleted later, in chunks, by Collect.
//
// Queue is safe for concurrent use; the Runner calls Apply from one goroutine.
type Queue struct {
	mu      sync.Mutex
	commits []func([]eventstore.RecordedEvent)
	// stmts are the statements prepared per database (prepared).
	stmts map[preparedKey]*sql.Stmt
	// rowsOnly makes Apply write one queue_messages row per message, never a run (the model
	// before issue 12; the randomized tests compare the two).
	rowsOnly bool
	// runFirst: connections whose last MessageDispatched applied took its message from a run.
	// Their next one tries the run's head first (one statement) instead of a queue_messages row
	// first (a statement that finds nothing for a broadcast's message). A hint only (guarded
	// by mu): a wrong guess costs one statement, never a wrong answer.
	runFirst map[string]bool
}

// NewQueue returns the pending-queue projection.
func NewQueue() *Queue { return &Queue{} }

var (
	_ Projection     = (*Queue)(nil)
	_ AfterCommitter = (*Queue)(nil)
)

// Name implements Projection.
func (q *Queue) Name() string { return QueueName }

// Filter implements Projection.
func (q *Queue) Filter() eventstore.Filter {
	return connectionFilter(
		connection.TypeConnectionRegistered, connection.TypeMessageQueued, connection.TypeBroadcastStarted, connection.TypeBroadcastQueued,
		connection.TypeMessageDispatched, connection.TypeMessageExpired, connection.TypeMessageCancelled, connection.TypeMessageSent,
		connection.TypeMessageDelivered, connection.TypeMessageRead, connection.TypeMessageFailed,
		connection.TypeMessageOutcomeUnknown, connection.TypeQueueHeld, connection.TypeQueueResumed,
		connection.TypeClearQueueRequested, connection.TypeQueueCleared,
	)
}

// onCommit registers f to be called after every committed batch (used by ClearProcess).
func (q *Queue) onCommit(f func([]eventstore.RecordedEvent)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.commits = append(q.commits, f)
}

// AfterCommit implements AfterCommitter: it wakes the clear processes bound to q.
func (q *Queue) AfterCommit(events []eventstore.RecordedEvent) {
	q.mu.Lock()
	fs := slices.Clone(q.commits)
	q.mu.Unlock()
	for _, f := range fs {
		f(events)
	}
}

// Reset implements Projection.
func (q *Queue) Reset(ctx context.Context, tx *Tx) error {
	q.mu.Lock()
	q.runFirst = nil
	q.mu.Unlock()
	return execAll(ctx, tx, `DELETE FROM queue_clears`, `DELETE FROM queue_purges`,
		`DELETE FROM queue_broadcasts`, `DELETE FROM queue_messages`, `DELETE FROM queue_run_gone`, `DELETE FROM queue_runs`,
		`DELETE FROM queue_conns`)
}

// queueBatch accumulates the work of one Apply.
type queueBatch struct {
	q       *Queue
	tx      *Tx
	rows    []connection.MessageQueued
	rowConn []string
	// runs to insert, and each connection's run still open to the next MessageQueued.
	runs []*queueRun
	open map[string]*queueRun
	// deltas of queue_conns counters and broadcast pending counts, flushed at the end.
	pending  map[string]int64
	inFlight map[string]int64
	lastSeq  map[string]uint64
	bcast    map[[2]string]int64
	touched  map[string]int64
	// flying: messages taken from a run by a MessageDispatched of this batch whose in-flight
	// row is not inserted yet (flushFlying), by connection and Seq. An acknowledgement in the
	// same batch ends it without the row ever being written: no INSERT and no DELETE (issue 12:
	// at 1,000 sending connections a message's dispatch and its MessageSent often share a batch).
	flying    map[flyKey]int
	flyRows   []flyRow
	flyingLen int // rows of flyRows still to insert
}

type flyKey struct {
	conn string
	seq  uint64
}

type flyRow struct {
	conn         string
	seq          uint64
	m            runMember
	dispatchedAt int64
	ended        bool
}

// maxInsertRows bounds a multi-row INSERT (9 parameters a row, under every engine's limit).
const maxInsertRows = 500

// maxBulkRows bounds the rows a projection collects before insertRows.
const maxBulkRows = 8192

// Apply implements Projection.
func (q *Queue) Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error {
	b := &queueBatch{q: q, tx: tx, pending: map[string]int64{}, inFlight: map[string]int64{},
		lastSeq: map[string]uint64{}, bcast: map[[2]string]int64{}, touched: map[string]int64{},
		open: map[string]*queueRun{}}
	decoded, err := decodeEvents(events, !q.rowsOnly)
	if err != nil {
		return err
	}
	for i, e := range events {
		d := &decoded[i]
		if !d.ok {
			continue
		}
		connID, ev := d.connID, d.ev
		b.touched[connID] = us(e.RecordedAt)
		if bq, isChunk := ev.(connection.BroadcastQueued); isChunk {
			if r, ok := chunkRun(connID, bq, us(bq.QueuedAt)); ok && !q.rowsOnly {
				delete(b.open, connID)
				if err := b.addRun(ctx, r); err != nil {
					return err
				}
				continue
			}
			for i := range bq.Recipients {
				if err := b.queued(ctx, connID, bq.Message(i)); err != nil {
					return err
				}
			}
			continue
		}
		if d.queued {
			mq := d.mq
			if d.runnable {
				if err := b.queuedInRun(ctx, connID, mq); err != nil {
					return err
				}
				continue
			}
			delete(b.open, connID)
			if err := b.queued(ctx, connID, mq); err != nil {
				return err
			}
			continue
		}
		if err := b.flushRows(ctx); err != nil {
			return err
		}
		if err := b.apply(ctx, e, connID, ev); err != nil {
			return fmt.Errorf("event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	if err := b.flushRows(ctx); err != nil {
		return err
	}
	if err := b.flushFlying(ctx); err != nil {
		return err
	}
	return b.flushCounters(ctx)
}

func (q *Queue) isRunFirst(connID string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.runFirst[connID]
}

func (q *Queue) setRunFirst(connID string, v bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !v {
		delete(q.runFirst, connID)
		return
	}
	if q.runFirst == nil {
		q.runFirst = map[string]bool{}
	}
	q.runFirst[connID] = true
}

// flushFlying inserts the in-flight rows of the messages taken from runs in this batch and not
// acknowledged in it, in one statement.
func (b *queueBatch) flushFlying(ctx context.Context) error {
	if b.flyingLen > 0 {
		rs := newRowSet("", int64(0), "", "", "", int64(0), int64(0), int64(0))
		for _, r := range b.flyRows {
			if !r.ended {
				rs.add(r.conn, int64(r.seq), r.m.messageID.String(), r.m.bid, r.m.recipient, r.m.exp, r.m.qat, r.dispatchedAt)
			}
		}
		if err := insertRows(ctx, b.tx, `INSERT INTO queue_messages (conn_id, seq, message_id, broadcast_id, recipient,
expires_at_us, queued_at_us, dispatched_at_us)`, rs); err != nil {
			return fmt.Errorf("insert %d messages in flight: %w", rs.n, err)
		}
	}
	b.flyRows, b.flyingLen = b.flyRows[:0], 0
	clear(b.flying)
	return nil
}

// queued adds a queued message to the rows of the next bulk insert (flushRows).
func (b *queueBatch) queued(ctx context.Context, connID string, mq connection.MessageQueued) error {
	b.rows = append(b.rows, mq)
	b.rowConn = append(b.rowConn, connID)
	if len(b.rows) >= maxBulkRows {
		return b.flushRows(ctx)
	}
	return nil
}

func (b *queueBatch) apply(ctx context.Context, e eventstore.RecordedEvent, connID string, ev connection.Event) error {
	tx := b.tx
	switch ev.(type) {
	case connection.MessageDispatched, connection.MessageSent, connection.MessageDelivered, connection.MessageRead,
		connection.MessageFailed, connection.MessageOutcomeUnknown:
	default:
		// Every other event sees the rows of the messages in flight as they are.
		if err := b.flushFlying(ctx); err != nil {
			return err
		}
	}
	switch ev := ev.(type) {
	case connection.ConnectionRegistered:
		_, err := tx.ExecContext(ctx, `INSERT INTO queue_conns (conn_id, tenant_id) VALUES ($1, $2)
ON CONFLICT (conn_id) DO UPDATE SET tenant_id = excluded.tenant_id`, connID, ev.TenantID)
		return err
	case connection.BroadcastStarted:
		_, err := tx.ExecContext(ctx, `INSERT INTO queue_broadcasts (conn_id, broadcast_id, text, first_seq, last_seq, total)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conn_id, broadcast_id) DO NOTHING`,
			connID, ev.BroadcastID.String(), ev.Text, int64(ev.FirstSeq), int64(ev.LastSeq()), int64(ev.Count))
		return err
	case connection.MessageDispatched:
		var bid string
		var m runMember
		var inRun, triedHead bool
		var err error
		if b.q.isRunFirst(connID) {
			// The dispatcher's order: the head of a run leaves it in one statement.
			if m, inRun, err = b.takeRunHead(ctx, connID, ev.Seq); err != nil {
				return err
			}
			triedHead = true
		}
		if !inRun {
			err = tx.QueryRowContext(ctx, `UPDATE queue_messages SET dispatched_at_us = $3
WHERE conn_id = $1 AND seq = $2 AND dispatched_at_us = 0 RETURNING broadcast_id`,
				connID, int64(ev.Seq), us(ev.DispatchedAt)).Scan(&bid)
		}
		if inRun || errors.Is(err, sql.ErrNoRows) {
			if !inRun {
				// Held in a run? Then it leaves the run for a row of its own, in flight.
				var ok bool
				if triedHead {
					m, ok, err = b.takeFromRunBehindHead(ctx, connID, ev.Seq)
				} else {
					m, ok, err = b.takeFromRun(ctx, connID, ev.Seq)
				}
				if err != nil || !ok {
					return err // !ok: already applied
				}
			}
			b.q.setRunFirst(connID, true)
			// Its row in flight is written at the end of the batch (flushFlying), or never when
			// the batch acknowledges it too.
			if b.flying == nil {
				b.flying = map[flyKey]int{}
			}
			b.flying[flyKey{connID, ev.Seq}] = len(b.flyRows)
			b.flyRows = append(b.flyRows, flyRow{conn: connID, seq: ev.Seq, m: m, dispatchedAt: us(ev.DispatchedAt)})
			b.flyingLen++
			bid = m.bid
		} else if err != nil {
			return err
		} else {
			b.q.setRunFirst(connID, false)
		}
		b.pending[connID]--
		b.inFlight[connID]++
		if bid != "" {
			b.bcast[[2]string{connID, bid}]--
		}
		return nil
	case connection.MessageExpired, connection.MessageCancelled:
		// Both end a message that was never dispatched: it leaves the pending queue.
		me, _ := connection.MessageEventOf(ev)
		var bid string
		err := tx.QueryRowContext(ctx, `DELETE FROM queue_messages WHERE conn_id = $1 AND seq = $2 AND dispatched_at_us = 0
RETURNING broadcast_id`, connID, int64(me.Seq)).Scan(&bid)
		if errors.Is(err, sql.ErrNoRows) {
			m, ok, err := b.takeFromRun(ctx, connID, me.Seq)
			if err != nil || !ok {
				return err
			}
			bid = m.bid
		} else if err != nil {
			return err
		}
		b.pending[connID]--
		if bid != "" {
			b.bcast[[2]string{connID, bid}]--
		}
		return nil
	case connection.MessageSent, connection.MessageDelivered, connection.MessageRead,
		connection.MessageFailed, connection.MessageOutcomeUnknown:
		me, _ := connection.MessageEventOf(ev)
		// The first acknowledgement ends the message's time in flight.
		if i, ok := b.flying[flyKey{connID, me.Seq}]; ok {
			delete(b.flying, flyKey{connID, me.Seq})
			b.flyRows[i].ended = true
			b.flyingLen--
			b.inFlight[connID]--
			return nil
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE conn_id = $1 AND seq = $2 AND dispatched_at_us <> 0`,
			connID, int64(me.Seq))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			b.inFlight[connID]--
		}
		return nil
	case connection.QueueHeld:
		_, err := tx.ExecContext(ctx, `UPDATE queue_conns SET held = 1 WHERE conn_id = $1`, connID)
		return err
	case connection.QueueResumed:
		_, err := tx.ExecContext(ctx, `UPDATE queue_conns SET held = 0 WHERE conn_id = $1`, connID)
		return err
	case connection.ClearQueueRequested:
		return b.clearRequested(ctx, e, connID, ev)
	case connection.QueueCleared:
		if _, err := tx.ExecContext(ctx, `UPDATE queue_clears SET completed_at_us = $2 WHERE clear_id = $1 AND completed_at_us = 0`,
			ev.ClearID.String(), max(us(ev.CompletedAt), 1)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE queue_conns SET clearing_id = '' WHERE conn_id = $1 AND clearing_id = $2`,
			connID, ev.ClearID.String())
		return err
	}
	return nil
}

// clearRequested records a clear in O(len(Purge) + broadcasts overlapping it).
func (b *queueBatch) clearRequested(ctx context.Context, e eventstore.RecordedEvent, connID string, ev connection.ClearQueueRequested) error {
	tx := b.tx
	var tenant string
	if err := tx.QueryRowContext(ctx, `SELECT tenant_id FROM queue_conns WHERE conn_id = $1`, connID).Scan(&tenant); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if tenant == "" {
		tenant = e.Metadata.TenantID
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO queue_clears (clear_id, conn_id, tenant_id, stream, revision, broadcast_id,
requested_by, reason, requested_at_us, up_to_seq, purge_count, in_flight_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (clear_id) DO NOTHING`,
		ev.ClearID.String(), connID, tenant, e.Stream, int64(e.Revision), idText(ev.Scope.BroadcastID),
		ev.RequestedBy, ev.Reason, us(ev.RequestedAt), int64(ev.UpToSeq), int64(ev.PurgeCount), int64(len(ev.InFlight)))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // recorded already
	}
	for _, r := range ev.Purge {
		if _, err := tx.ExecContext(ctx, `INSERT INTO queue_purges (conn_id, from_seq, to_seq, clear_id, gc_next)
VALUES ($1, $2, $3, $4, $2) ON CONFLICT (conn_id, from_seq) DO NOTHING`, connID, int64(r.From), int64(r.To), ev.ClearID.String()); err != nil {
			return err
		}
	}
	upto := int64(0)
	if ev.Scope.IsWholeQueue() {
		upto = int64(ev.UpToSeq)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE queue_conns SET clearing_id = $2,
purged_upto = CASE WHEN purged_upto < $3 THEN $3 ELSE purged_upto END WHERE conn_id = $1`,
		connID, ev.ClearID.String(), upto); err != nil {
		return err
	}
	b.pending[connID] -= int64(ev.PurgeCount)
	if len(ev.Purge) == 0 {
		return nil
	}
	// Purge ranges hold only pending messages, so a broadcast loses exactly its overlap.
	lo, hi := ev.Purge[0].From, ev.Purge[len(ev.Purge)-1].To
	rows, err := tx.QueryContext(ctx, `SELECT broadcast_id, first_seq, last_seq FROM queue_broadcasts
WHERE conn_id = $1 AND last_seq >= $2 AND first_seq <= $3`, connID, int64(lo), int64(hi))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var bid string
		var first, last int64
		if err := rows.Scan(&bid, &first, &last); err != nil {
			return err
		}
		b.bcast[[2]string{connID, bid}] -= int64(overlap(ev.Purge, uint64(first), uint64(last)))
	}
	return rows.Err()
}

// overlap counts the positions of [first, last] inside ranges.
func overlap(ranges []connection.SeqRange, first, last uint64) uint64 {
	var n uint64
	for _, r := range ranges {
		lo, hi := max(r.From, first), min(r.To, last)
		if lo <= hi {
			n += hi - lo + 1
		}
	}
	return n
}

func (b *queueBatch) flushRows(ctx context.Context) error {
	if err := b.flushRuns(ctx); err != nil {
		return err
	}
	if len(b.rows) == 0 {
		return nil
	}
	rs := newRowSet("", int64(0), "", "", "", "", int64(0), int64(0)).grow(len(b.rows))
	for i, m := range b.rows {
		connID := b.rowConn[i]
		rs.add(connID, int64(m.Seq), m.MessageID.String(), idText(m.BroadcastID), m.Recipient, m.Text, us(m.ExpiresAt), us(m.QueuedAt))
		b.pending[connID]++
		if m.Seq > b.lastSeq[connID] {
			b.lastSeq[connID] = m.Seq
		}
		if m.BroadcastID != uuid.Nil {
			b.bcast[[2]string{connID, m.BroadcastID.String()}]++
		}
	}
	// Events past the checkpoint are never applied twice, so no row can exist already.
	if err := insertRows(ctx, b.tx, `INSERT INTO queue_messages (conn_id, seq, message_id, broadcast_id, recipient, text, expires_at_us, queued_at_us)`, rs); err != nil {
		return fmt.Errorf("insert %d queued messages: %w", len(b.rows), err)
	}
	b.rows, b.rowConn = b.rows[:0], b.rowConn[:0]
	return nil
}

// flushCounters adds the batch's deltas to the connections' counters (one multi-row upsert for
// all of them) and to the broadcasts' pending counts (one statement on PostgreSQL): two statements
// per batch instead of one per connection and one per broadcast touched (issue 12).
func (b *queueBatch) flushCounters(ctx context.Context) error {
	conns := slices.Sorted(maps.Keys(b.touched)) // one lock order for every batch
	rs := newRowSet("", int64(0), int64(0), int64(0), int64(0))
	for _, connID := range conns {
		rs.add(connID, b.pending[connID], b.inFlight[connID], int64(b.lastSeq[connID]), b.touched[connID])
	}
	if err := insertRowsThen(ctx, b.tx, `INSERT INTO queue_conns (conn_id, pending, in_flight, last_seq, updated_at_us)`,
		` ON CONFLICT (conn_id) DO UPDATE SET
pending = queue_conns.pending + excluded.pending, in_flight = queue_conns.in_flight + excluded.in_flight,
last_seq = CASE WHEN queue_conns.last_seq < excluded.last_seq THEN excluded.last_seq ELSE queue_conns.last_seq END,
updated_at_us = excluded.updated_at_us`, rs); err != nil {
		return fmt.Errorf("update counters of %d connections: %w", len(conns), err)
	}
	keys := make([][2]string, 0, len(b.bcast))
	for k, d := range b.bcast {
		if d != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y [2]string) int { return cmp.Or(cmp.Compare(x[0], y[0]), cmp.Compare(x[1], y[1])) })
	if b.tx.Dialect == Postgres && len(keys) > 1 {
		cs, bs, ds := make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
		for i, k := range keys {
			cs[i], bs[i], ds[i] = k[0], k[1], b.bcast[k]
		}
		if _, err := b.tx.ExecContext(ctx, `UPDATE queue_broadcasts AS q SET pending = q.pending + d.n
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(conn_id, broadcast_id, n)
WHERE q.conn_id = d.conn_id AND q.broadcast_id = d.broadcast_id`, cs, bs, ds); err != nil {
			return fmt.Errorf("update %d broadcasts: %w", len(keys), err)
		}
		return nil
	}
	for _, k := range keys {
		if _, err := b.tx.ExecContext(ctx, `UPDATE queue_broadcasts SET pending = pending + $3 WHERE conn_id = $1 AND broadcast_id = $2`,
			k[0], k[1], b.bcast[k]); err != nil {
			return fmt.Errorf("update broadcast %s: %w", k[1], err)
		}
	}
	return nil
}

// PendingMessage is a message of the pending queue.
type PendingMessage struct {
	ConnectionID string
	Seq          uint64
	MessageID    uuid.UUID
	// BroadcastID is zero for a 1:1 message.
	BroadcastID uuid.UUID
	Recipient   string
	// Text is the message's text (a broadcast message's is its broadcast's).
	Text string
	// ExpiresAt is zero for a message that never expires.
	ExpiresAt time.Time
	QueuedAt  time.Time
	// DispatchedAt is zero for a pending message; set for a message in flight.
	DispatchedAt time.Time
}

// purgeRange is a Seq range a clear purged, as the queue reads it.
type purgeRange struct{ from, to uint64 }

// NextPending returns up to limit pending messages of connID with Seq > afterSeq, in Seq order:
// queued and not dispatched, not expired (no MessageExpired recorded) and not purged by a clear.
// A message whose TTL has passed but whose expiry is not recorded yet is returned, with its
// ExpiresAt, because the aggregate only expires the head of the queue (the dispatcher decides
// Expire for it). Its cost is O(limit + purge ranges), also right after a clear of 1M messages.
func (q *Queue) NextPending(ctx context.Context, db *DB, connID string, afterSeq uint64, limit int) ([]PendingMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	// One snapshot: a run and its gone positions are read by separate statements.
	tx, err := db.BeginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	var upto int64
	err = tx.QueryRowContext(ctx, `SELECT purged_upto FROM queue_conns WHERE conn_id = $1`, connID).Scan(&upto)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("projections: next pending of %q: %w", connID, err)
	}
	lo := max(afterSeq, uint64(upto))
	ranges, err := q.purges(ctx, tx, connID, lo)
	if err != nil {
		return nil, err
	}
	var out []PendingMessage
	for len(out) < limit {
		// Skip a range that covers lo+1 (ranges are sorted and disjoint).
		upper := uint64(0)
		for _, r := range ranges {
			if r.from <= lo+1 && r.to > lo {
				lo = r.to
			} else if r.from > lo+1 {
				upper = r.from
				break
			}
		}
		want := limit - len(out)
		got, err := q.scan(ctx, tx, `WHERE m.conn_id = $1 AND m.seq > $2 AND (m.seq < $3 OR $3 = 0) AND m.dispatched_at_us = 0
ORDER BY m.seq LIMIT $4`, connID, int64(lo), int64(upper), want)
		if err != nil {
			return nil, fmt.Errorf("projections: next pending of %q: %w", connID, err)
		}
		if !q.rowsOnly {
			inRuns, err := q.runPending(ctx, tx, connID, lo, upper, want)
			if err != nil {
				return nil, fmt.Errorf("projections: next pending of %q: %w", connID, err)
			}
			got = mergeBySeq(got, inRuns, want)
		}
		out = append(out, got...)
		if len(got) == want || upper == 0 {
			break
		}
		lo = upper - 1
	}
	return out, nil
}

// Pending returns connID's pending message at seq (queued, not dispatched, not expired, not
// purged by a clear), or an error matching ErrNotFound when there is none there (yet). It is what
// NextPending(seq-1, 1) returns when that message's Seq is seq, read by primary key: its cost is
// one row whatever the queue's length and whatever plan the database picks. (NextPending's
// "ORDER BY seq LIMIT n" is planned by PostgreSQL from table statistics; before autovacuum has
// analysed a freshly filled table it sorts every pending row after afterSeq, so a dispatcher
// asking for each head in turn read the whole rest of the queue per message: see
// docs/benchmarks.md.)
func (q *Queue) Pending(ctx context.Context, db *DB, connID string, seq uint64) (PendingMessage, error) {
	var got []PendingMessage
	var err error
	if q.rowsOnly {
		got, err = q.scan(ctx, db, `WHERE m.conn_id = $1 AND m.seq = $2 AND m.dispatched_at_us = 0
AND m.seq > COALESCE((SELECT c.purged_upto FROM queue_conns c WHERE c.conn_id = $1), 0)
AND NOT EXISTS (SELECT 1 FROM queue_purges p WHERE p.conn_id = $1 AND p.from_seq <= $2 AND p.to_seq >= $2)`,
			connID, int64(seq))
	} else {
		got, err = q.pendingAt(ctx, db, connID, seq)
	}
	if err != nil {
		return PendingMessage{}, fmt.Errorf("projections: pending message %q/%d: %w", connID, seq, err)
	}
	if len(got) == 0 {
		return PendingMessage{}, fmt.Errorf("projections: pending message %q/%d: %w", connID, seq, ErrNotFound)
	}
	return got[0], nil
}

// InFlight returns connID's messages dispatched and not yet acknowledged, in Seq order.
func (q *Queue) InFlight(ctx context.Context, db *DB, connID string) ([]PendingMessage, error) {
	out, err := q.scan(ctx, db, `WHERE m.conn_id = $1 AND m.dispatched_at_us <> 0 ORDER BY m.seq`, connID)
	if err != nil {
		return nil, fmt.Errorf("projections: in flight of %q: %w", connID, err)
	}
	return out, nil
}

func (q *Queue) purges(ctx context.Context, db querier, connID string, above uint64) ([]purgeRange, error) {
	rows, err := db.QueryContext(ctx, `SELECT from_seq, to_seq FROM queue_purges WHERE conn_id = $1 AND to_seq > $2 ORDER BY from_seq`,
		connID, int64(above))
	if err != nil {
		return nil, fmt.Errorf("projections: purges of %q: %w", connID, err)
	}
	defer rows.Close()
	var out []purgeRange
	for rows.Next() {
		var f, t int64
		if err := rows.Scan(&f, &t); err != nil {
			return nil, err
		}
		out = append(out, purgeRange{uint64(f), uint64(t)})
	}
	return out, rows.Err()
}

func (q *Queue) scan(ctx context.Context, db querier, where string, args ...any) ([]PendingMessage, error) {
	rows, err := db.QueryContext(ctx, `SELECT m.conn_id, m.seq, m.message_id, m.broadcast_id, m.recipient,
CASE WHEN m.text = '' AND b.text IS NOT NULL THEN b.text ELSE m.text END, m.expires_at_us, m.queued_at_us, m.dispatched_at_us
FROM queue_messages m LEFT JOIN queue_broadcasts b ON b.conn_id = m.conn_id AND b.broadcast_id = m.broadcast_id `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PendingMessage
	for rows.Next() {
		var p PendingMessage
		var seq, exp, qat, dat int64
		var mid, bid string
		if err := rows.Scan(&p.ConnectionID, &seq, &mid, &bid, &p.Recipient, &p.Text, &exp, &qat, &dat); err != nil {
			return nil, err
		}
		if p.MessageID, err = uuid.Parse(mid); err != nil {
			return nil, err
		}
		if p.BroadcastID, err = parseID(bid); err != nil {
			return nil, err
		}
		p.Seq, p.ExpiresAt, p.QueuedAt, p.DispatchedAt = uint64(seq), fromUS(exp), fromUS(qat), fromUS(dat)
		out = append(out, p)
	}
	return out, rows.Err()
}

// QueueSummary is a connection's queue as the API shows it.
type QueueSummary struct {
	ConnectionID string
	TenantID     string
	// Status is open, clearing or held.
	Status connection.QueueStatus
	// ClearID is the clear in progress (zero when not clearing).
	ClearID  uuid.UUID
	Pending  uint64
	InFlight uint64
	// LastSeq is the Seq of the last message queued.
	LastSeq uint64
	// Oldest is the head of the pending queue, if any.
	Oldest *PendingMessage
	// Broadcasts are the connection's broadcasts that still have pending messages, by Seq.
	Broadcasts []BroadcastQueue
	UpdatedAt  time.Time
}

// BroadcastQueue is a broadcast's share of a pending queue.
type BroadcastQueue struct {
	BroadcastID uuid.UUID
	FirstSeq    uint64
	LastSeq     uint64
	Total       uint64
	Pending     uint64
}

// Summary returns the queue of connection connID of tenant; ErrNotFound when the connection is
// unknown or belongs to another tenant.
func (q *Queue) Summary(ctx context.Context, db *DB, tenant, id string) (QueueSummary, error) {
	s := QueueSummary{ConnectionID: id, TenantID: tenant}
	connID := connection.Key(tenant, id)
	var held, pending, inFlight, last, upd int64
	var clearing string
	err := db.QueryRowContext(ctx, `SELECT held, clearing_id, pending, in_flight, last_seq, updated_at_us FROM queue_conns
WHERE conn_id = $1 AND tenant_id = $2`, connID, tenant).Scan(&held, &clearing, &pending, &inFlight, &last, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("projections: queue of connection %q: %w", connID, ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("projections: queue of connection %q: %w", connID, err)
	}
	s.Status = queueStatus(clearing != "", held != 0)
	if s.ClearID, err = parseID(clearing); err != nil {
		return s, err
	}
	s.Pending, s.InFlight, s.LastSeq, s.UpdatedAt = uint64(pending), uint64(inFlight), uint64(last), fromUS(upd)
	head, err := q.NextPending(ctx, db, connID, 0, 1)
	if err != nil {
		return s, err
	}
	if len(head) == 1 {
		s.Oldest = &head[0]
	}
	rows, err := db.QueryContext(ctx, `SELECT broadcast_id, first_seq, last_seq, total, pending FROM queue_broadcasts
WHERE conn_id = $1 AND pending > 0 ORDER BY first_seq`, connID)
	if err != nil {
		return s, fmt.Errorf("projections: broadcasts of %q: %w", connID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var bq BroadcastQueue
		var bid string
		var f, l, t, p int64
		if err := rows.Scan(&bid, &f, &l, &t, &p); err != nil {
			return s, err
		}
		if bq.BroadcastID, err = uuid.Parse(bid); err != nil {
			return s, err
		}
		bq.FirstSeq, bq.LastSeq, bq.Total, bq.Pending = uint64(f), uint64(l), uint64(t), uint64(p)
		s.Broadcasts = append(s.Broadcasts, bq)
	}
	return s, rows.Err()
}

func queueStatus(clearing, held bool) connection.QueueStatus {
	switch {
	case clearing:
		return connection.QueueStatusClearing
	case held:
		return connection.QueueStatusHeld
	}
	return connection.QueueStatusOpen
}

// Collect deletes up to maxRows purged rows of the pending queue (and the purge ranges it has
// finished), in one transaction; it returns how many rows it deleted. Run it in the background
// (see RunCollector) or between batches: reads never depend on it.
func (q *Queue) Collect(ctx context.Context, db *DB, maxRows int) (int, error) {
	if maxRows <= 0 {
		maxRows = 10_000
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT conn_id, from_seq, to_seq, gc_next FROM queue_purges ORDER BY conn_id, from_seq LIMIT 16`)
	if err != nil {
		return 0, fmt.Errorf("projections: collect: %w", err)
	}
	type rng struct {
		conn             string
		from, to, gcNext int64
	}
	var todo []rng
	for rows.Next() {
		var r rng
		if err := rows.Scan(&r.conn, &r.from, &r.to, &r.gcNext); err != nil {
			rows.Close()
			return 0, err
		}
		todo = append(todo, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	deleted := 0
	for _, r := range todo {
		if deleted >= maxRows {
			break
		}
		end := min(r.to, r.gcNext+int64(maxRows-deleted)-1)
		res, err := tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE conn_id = $1 AND seq >= $2 AND seq <= $3 AND dispatched_at_us = 0`,
			r.conn, r.gcNext, end)
		if err != nil {
			return 0, fmt.Errorf("projections: collect: %w", err)
		}
		n, _ := res.RowsAffected()
		if err := cutRuns(ctx, tx, r.conn, r.gcNext, end); err != nil {
			return 0, fmt.Errorf("projections: collect: %w", err)
		}
		deleted += int(max(n, end-r.gcNext+1)) // count positions, so empty stretches advance too
		if end >= r.to {
			_, err = tx.ExecContext(ctx, `DELETE FROM queue_purges WHERE conn_id = $1 AND from_seq = $2`, r.conn, r.from)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE queue_purges SET gc_next = $3 WHERE conn_id = $1 AND from_seq = $2`, r.conn, r.from, end+1)
		}
		if err != nil {
			return 0, fmt.Errorf("projections: collect: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("projections: collect: %w", err)
	}
	return deleted, nil
}

// QueueConnection is one connection of the Queue projection, for the dispatcher's start-up.
type QueueConnection struct {
	// ID is the connection's key (connection.Key).
	ID string
	// Busy is true when the connection had pending or in-flight messages.
	Busy bool
}

// Connections returns the Queue projection's checkpoint and every connection it knows as of it,
// each marked busy when it had pending or in-flight messages, read in one statement (one
// snapshot: the checkpoint is written in the transaction of the rows it covers). A connection
// not busy had nothing to dispatch and nothing to recover at that position; only an event after
// it can change that. Retired connections (as the cards read model shows them) are left out:
// nothing is dispatched through them again and they get no session. With no checkpoint yet it
// returns eventstore.Start and no connection. For the dispatcher's start-up: one query instead
// of replaying the event log from its start and looking at every registered connection.
func (q *Queue) Connections(ctx context.Context, db *DB) (eventstore.Position, []QueueConnection, error) {
	rows, err := db.QueryContext(ctx, `SELECT c.commit_pos, c.prepare_pos, q.conn_id, q.pending > 0 OR q.in_flight > 0
FROM projection_checkpoints c LEFT JOIN queue_conns q
  ON NOT EXISTS (SELECT 1 FROM card_connections k WHERE k.conn_id = q.conn_id AND k.link_status = $2)
WHERE c.name = $1`, QueueName, connection.LinkStatusRetired.String())
	if err != nil {
		return eventstore.Start, nil, fmt.Errorf("projections: queue connections: %w", err)
	}
	defer rows.Close()
	var pos eventstore.Position
	var out []QueueConnection
	for rows.Next() {
		var c, p int64
		var id sql.NullString
		var busy sql.NullBool
		if err := rows.Scan(&c, &p, &id, &busy); err != nil {
			return eventstore.Start, nil, fmt.Errorf("projections: queue connections: %w", err)
		}
		pos = eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
		if id.Valid {
			out = append(out, QueueConnection{ID: id.String, Busy: busy.Bool})
		}
	}
	if err := rows.Err(); err != nil {
		return eventstore.Start, nil, fmt.Errorf("projections: queue connections: %w", err)
	}
	return pos, out, nil
}
