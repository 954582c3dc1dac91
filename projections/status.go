package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// MessageStatusName is the name (and checkpoint key) of the message-status projection.
const MessageStatusName = "message_status"

// MessageStatus is the read model of every message's lifecycle (one row per message with the
// time of each status) and of each broadcast's progress (counts per status).
//
// A clear does not rewrite its purged messages (G4): ClearQueueRequested records its Purge
// ranges and moves the broadcasts' counts in O(ranges); queries resolve a message still marked
// queued inside a range as purged; Collect then materializes the status in chunks.
//
// A BroadcastQueued chunk is one status_runs row and one narrow status_run_ids row per message
// (its id to its position), not a status_messages row each: a message of a run answers
// "queued" (or "purged" through status_purges) from the run until its first state change
// materializes its row from the run, which then answers for it. Purge ranges that cover a run
// are kept after collection (they are what says its messages were purged).
type MessageStatus struct {
	// rowsOnly writes a status_messages row for every queued message, never a run (the model
	// before issue 12, which the randomized tests compare with).
	rowsOnly bool
	// tenants caches each connection's tenant (which never changes) across batches, as read
	// from status_conns or from its ConnectionRegistered: one SELECT per connection and
	// process instead of one per connection and batch (0.37 statements per request in bench
	// api). Guarded by mu; emptied by Reset.
	mu      sync.Mutex
	tenants map[string]string
	// perEvent moves a message's status in one statement per event on PostgreSQL as well (as
	// before issue 12's flushMoves; the randomized tests compare with it).
	perEvent bool
}

// NewMessageStatus returns the message-status projection.
func NewMessageStatus() *MessageStatus { return &MessageStatus{} }

var _ Projection = (*MessageStatus)(nil)

// Name implements Projection.
func (*MessageStatus) Name() string { return MessageStatusName }

// Filter implements Projection.
func (*MessageStatus) Filter() eventstore.Filter {
	return connectionFilter(
		connection.TypeConnectionRegistered, connection.TypeMessageQueued, connection.TypeBroadcastStarted, connection.TypeBroadcastQueued,
		connection.TypeMessageDispatched, connection.TypeMessageSent, connection.TypeMessageDelivered,
		connection.TypeMessageRead, connection.TypeMessageFailed, connection.TypeMessageExpired,
		connection.TypeMessageOutcomeUnknown, connection.TypeClearQueueRequested, connection.TypeMessageCancelled,
	)
}

// Reset implements Projection.
func (s *MessageStatus) Reset(ctx context.Context, tx *Tx) error {
	s.mu.Lock()
	s.tenants = nil
	s.mu.Unlock()
	return execAll(ctx, tx, `DELETE FROM status_purges`, `DELETE FROM status_broadcasts`,
		`DELETE FROM status_messages`, `DELETE FROM status_run_ids`, `DELETE FROM status_runs`, `DELETE FROM status_conns`)
}

type statusBatch struct {
	s       *MessageStatus
	tx      *Tx
	tenants map[string]string // this batch's, fallbacks included
	rows    []statusRow
	runs    []statusRun
	// bcast holds per broadcast the deltas of its status counts.
	bcast map[string]map[string]int64
	// moves are the batch's message status changes not yet written (PostgreSQL: flushMoves).
	moves    []statusMove
	perEvent bool
}

// statusMove is one message event's change of its status_messages row.
type statusMove struct {
	me connection.MessageEvent
	at int64
	// set holds the event's other columns (fail_code, detail, server_id) it sets.
	set map[string]string
}

type statusRow struct {
	tenant, conn string
	m            connection.MessageQueued
}

type statusEvent struct {
	e    eventstore.RecordedEvent
	conn string
	ev   connection.Event
}

// materializeRuns gives every message of a run that changes state in events (and has no row
// yet) its status_messages row, in one statement per 500 messages: apply then moves rows only,
// as for messages queued one by one (a message missed here — its run written later in the
// batch — is materialized alone by apply).
func (b *statusBatch) materializeRuns(ctx context.Context, events []statusEvent) error {
	var ids []string
	for _, d := range events {
		if me, ok := connection.MessageEventOf(d.ev); ok && me.Status != connection.MessageStatusQueued {
			ids = append(ids, me.MessageID.String())
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	const insert = `INSERT INTO status_messages (conn_id, seq, tenant_id, broadcast_id, recipient, queued_at_us, message_id, status)
SELECT r.conn_id, i.seq, r.tenant_id, r.broadcast_id, rtrim(substr(r.recipients, CAST((i.seq - r.first_seq) * 16 + 1 AS INTEGER), 16)), r.queued_at_us, i.message_id, 'queued'
FROM status_run_ids i JOIN status_runs r ON r.conn_id = i.conn_id
AND r.first_seq = (SELECT max(first_seq) FROM status_runs WHERE conn_id = i.conn_id AND first_seq <= i.seq) AND r.last_seq >= i.seq
WHERE NOT EXISTS (SELECT 1 FROM status_messages m WHERE m.message_id = i.message_id) AND i.message_id `
	for len(ids) > 0 {
		n := min(len(ids), 500)
		var err error
		if b.tx.Dialect == Postgres {
			_, err = b.tx.ExecContext(ctx, insert+`= ANY($1::text[])`, ids[:n])
		} else {
			args := make([]any, n)
			for i, id := range ids[:n] {
				args[i] = id
			}
			_, err = b.tx.ExecContext(ctx, insert+`IN (?`+strings.Repeat(",?", n-1)+`)`, args...)
		}
		if err != nil {
			return fmt.Errorf("materialize %d messages of runs: %w", n, err)
		}
		ids = ids[n:]
	}
	return nil
}

// statusRun is a BroadcastQueued chunk held as a run.
type statusRun struct {
	tenant, conn string
	bq           connection.BroadcastQueued
	qat          int64
}

// Apply implements Projection.
func (s *MessageStatus) Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error {
	b := &statusBatch{s: s, tx: tx, tenants: map[string]string{}, bcast: map[string]map[string]int64{}, perEvent: s.perEvent}
	decoded := make([]statusEvent, 0, len(events))
	for _, e := range events {
		connID, ev, ok, err := decodeConn(e)
		if err != nil {
			return err
		}
		if ok {
			decoded = append(decoded, statusEvent{e, connID, ev})
		}
	}
	// covered: the messages of runs that change state from here to the batch's end have their
	// rows (materialized in one statement); false again once more runs are written.
	covered := s.rowsOnly
	for k, d := range decoded {
		e, connID, ev := d.e, d.conn, d.ev
		var queued []connection.MessageQueued
		var run bool
		switch ev := ev.(type) {
		case connection.MessageQueued:
			queued = []connection.MessageQueued{ev}
		case connection.BroadcastQueued:
			if run = !s.rowsOnly && statusRunnable(ev); !run {
				queued = ev.Messages()
			}
		}
		if run {
			bq := ev.(connection.BroadcastQueued)
			tenant, err := b.tenant(ctx, connID, e.Metadata.TenantID)
			if err != nil {
				return err
			}
			b.runs = append(b.runs, statusRun{tenant: tenant, conn: connID, bq: bq, qat: us(bq.QueuedAt)})
			b.count(bq.BroadcastID.String(), "queued", int64(len(bq.Recipients)))
			continue
		}
		if queued != nil {
			tenant, err := b.tenant(ctx, connID, e.Metadata.TenantID)
			if err != nil {
				return err
			}
			for _, mq := range queued {
				b.rows = append(b.rows, statusRow{tenant, connID, mq})
				if len(b.rows) >= maxBulkRows {
					if err := b.flushRows(ctx); err != nil {
						return err
					}
				}
			}
			continue
		}
		if len(b.runs) > 0 {
			covered = false
		}
		if err := b.flushRows(ctx); err != nil {
			return err
		}
		if !covered {
			if me, ok := connection.MessageEventOf(ev); ok && me.Status != connection.MessageStatusQueued {
				if err := b.materializeRuns(ctx, decoded[k:]); err != nil {
					return err
				}
				covered = true
			}
		}
		if err := b.apply(ctx, e, connID, ev); err != nil {
			return fmt.Errorf("event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	if err := b.flushRows(ctx); err != nil {
		return err
	}
	if err := b.flushMoves(ctx); err != nil {
		return err
	}
	return b.flushCounts(ctx)
}

// tenant returns the tenant of connID: from the projection's cache, else from status_conns
// (then cached), else fallback (the event's metadata; for this batch only).
func (b *statusBatch) tenant(ctx context.Context, connID, fallback string) (string, error) {
	if t, ok := b.tenants[connID]; ok {
		return t, nil
	}
	b.s.mu.Lock()
	t, ok := b.s.tenants[connID]
	b.s.mu.Unlock()
	if ok {
		return t, nil
	}
	err := b.tx.QueryRowContext(ctx, `SELECT tenant_id FROM status_conns WHERE conn_id = $1`, connID).Scan(&t)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		t = fallback
	case err != nil:
		return "", fmt.Errorf("tenant of %q: %w", connID, err)
	default:
		b.s.remember(connID, t)
	}
	b.tenants[connID] = t
	return t, nil
}

func (s *MessageStatus) remember(connID, tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tenants == nil {
		s.tenants = map[string]string{}
	}
	s.tenants[connID] = tenant
}

// moveColumns returns the columns other than the status and its time that ev sets.
func moveColumns(ev connection.Event) map[string]string {
	switch ev := ev.(type) {
	case connection.MessageFailed:
		return map[string]string{"fail_code": ev.Code, "detail": ev.Detail}
	case connection.MessageOutcomeUnknown:
		return map[string]string{"detail": ev.Cause}
	case connection.MessageSent:
		return map[string]string{"server_id": ev.ServerID}
	case connection.MessageCancelled:
		return map[string]string{"detail": ev.Reason}
	}
	return nil
}

// statusRowState is what flushMoves reads, changes and writes back of a status_messages row.
type statusRowState struct {
	status, bid string
	at          map[string]int64 // per status column: its _at_us
	text        map[string]string
	changed     bool
}

// moveTextColumns are the columns a move may set besides the status and its time.
var moveTextColumns = []string{"fail_code", "detail", "server_id"}

// flushMoves writes the batch's message status changes on PostgreSQL in two statements: the
// rows they move, read and locked (FOR UPDATE), then changed in order in memory exactly as one
// UPDATE per event would (a status moves only along connection.MessageStatus.CanBecome, a
// status's time is its first, the other columns the last event's), and written back in one
// UPDATE … FROM unnest. A message of a run without its row yet gets it first (as apply does).
// Issue 12: two statements per batch instead of one per event (two per dispatched message).
func (b *statusBatch) flushMoves(ctx context.Context) error {
	if len(b.moves) == 0 {
		return nil
	}
	moves := b.moves
	b.moves = b.moves[:0]
	ids := make([]string, 0, len(moves))
	for _, m := range moves {
		ids = append(ids, m.me.MessageID.String())
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	rows, err := b.readMoved(ctx, ids)
	if err != nil {
		return err
	}
	if len(rows) < len(ids) {
		// Messages of runs changing state for the first time (materializeRuns missed them).
		for _, m := range moves {
			id := m.me.MessageID.String()
			if _, ok := rows[id]; ok {
				continue
			}
			n, err := materializeRunMessage(ctx, b.tx, m.me.MessageID)
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("message %s (seq %d) was never queued", m.me.MessageID, m.me.Seq)
			}
			more, err := b.readMoved(ctx, []string{id})
			if err != nil {
				return err
			}
			rows[id] = more[id]
		}
	}
	for _, m := range moves {
		r := rows[m.me.MessageID.String()]
		next := m.me.Status.String()
		var old connection.MessageStatus
		if err := old.UnmarshalText([]byte(r.status)); err != nil {
			return err
		}
		if old.CanBecome(m.me.Status) {
			if r.bid != "" {
				b.count(r.bid, r.status, -1)
				b.count(r.bid, next, +1)
			}
			r.status = next
		}
		if r.at[next] == 0 {
			r.at[next] = m.at
		}
		for k, v := range m.set {
			r.text[k] = v
		}
		r.changed = true
	}
	// One array per column: message_id, status, the times in statusColumns' order, the texts.
	n := len(ids)
	args := make([]any, 0, 2+len(statusColumns)+len(moveTextColumns))
	idArr, stArr := make([]string, 0, n), make([]string, 0, n)
	atArr := make([][]int64, len(statusColumns))
	txtArr := make([][]string, len(moveTextColumns))
	for _, id := range ids {
		r := rows[id]
		idArr, stArr = append(idArr, id), append(stArr, r.status)
		for i, c := range statusColumns {
			atArr[i] = append(atArr[i], r.at[c])
		}
		for i, c := range moveTextColumns {
			txtArr[i] = append(txtArr[i], r.text[c])
		}
	}
	args = append(args, idArr, stArr)
	var types, names, sets []string
	types = append(types, "$1::text[]", "$2::text[]")
	names = append(names, "message_id", "status")
	sets = append(sets, "status = u.status")
	for i, c := range statusColumns {
		args = append(args, atArr[i])
		types = append(types, fmt.Sprintf("$%d::bigint[]", len(args)))
		names = append(names, c)
		sets = append(sets, fmt.Sprintf("%s_at_us = u.%s", c, c))
	}
	for i, c := range moveTextColumns {
		args = append(args, txtArr[i])
		types = append(types, fmt.Sprintf("$%d::text[]", len(args)))
		names = append(names, c)
		sets = append(sets, fmt.Sprintf("%s = u.%s", c, c))
	}
	if _, err := b.tx.ExecContext(ctx, `UPDATE status_messages AS m SET `+strings.Join(sets, ", ")+`
FROM unnest(`+strings.Join(types, ", ")+`) AS u(`+strings.Join(names, ", ")+`)
WHERE m.message_id = u.message_id`, args...); err != nil {
		return fmt.Errorf("move %d message statuses: %w", n, err)
	}
	return nil
}

// readMoved reads and locks the status_messages rows of ids (PostgreSQL).
func (b *statusBatch) readMoved(ctx context.Context, ids []string) (map[string]*statusRowState, error) {
	cols := make([]string, 0, len(statusColumns)+len(moveTextColumns))
	for _, c := range statusColumns {
		cols = append(cols, c+"_at_us")
	}
	cols = append(cols, moveTextColumns...)
	rs, err := b.tx.QueryContext(ctx, `SELECT message_id, status, broadcast_id, `+strings.Join(cols, ", ")+`
FROM status_messages WHERE message_id = ANY($1::text[]) FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("read %d message statuses: %w", len(ids), err)
	}
	defer rs.Close()
	out := make(map[string]*statusRowState, len(ids))
	for rs.Next() {
		var id string
		r := &statusRowState{at: make(map[string]int64, len(statusColumns)), text: make(map[string]string, len(moveTextColumns))}
		ats := make([]int64, len(statusColumns))
		txts := make([]string, len(moveTextColumns))
		dest := []any{&id, &r.status, &r.bid}
		for i := range ats {
			dest = append(dest, &ats[i])
		}
		for i := range txts {
			dest = append(dest, &txts[i])
		}
		if err := rs.Scan(dest...); err != nil {
			return nil, err
		}
		for i, c := range statusColumns {
			r.at[c] = ats[i]
		}
		for i, c := range moveTextColumns {
			r.text[c] = txts[i]
		}
		out[id] = r
	}
	return out, rs.Err()
}

func (b *statusBatch) count(bid, status string, d int64) {
	m := b.bcast[bid]
	if m == nil {
		m = map[string]int64{}
		b.bcast[bid] = m
	}
	m[status] += d
}

func (b *statusBatch) apply(ctx context.Context, e eventstore.RecordedEvent, connID string, ev connection.Event) error {
	tx := b.tx
	switch ev := ev.(type) {
	case connection.ConnectionRegistered:
		b.tenants[connID] = ev.TenantID
		b.s.remember(connID, ev.TenantID)
		_, err := tx.ExecContext(ctx, `INSERT INTO status_conns (conn_id, tenant_id) VALUES ($1, $2)
ON CONFLICT (conn_id) DO UPDATE SET tenant_id = excluded.tenant_id`, connID, ev.TenantID)
		return err
	case connection.BroadcastStarted:
		tenant, err := b.tenant(ctx, connID, e.Metadata.TenantID)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO status_broadcasts (broadcast_id, tenant_id, conn_id, total, first_seq, started_at_us)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (broadcast_id) DO NOTHING`,
			ev.BroadcastID.String(), tenant, connID, int64(ev.Count), int64(ev.FirstSeq), us(ev.StartedAt))
		return err
	case connection.ClearQueueRequested:
		if err := b.flushMoves(ctx); err != nil {
			return err
		}
		return b.clearRequested(ctx, connID, ev)
	}
	me, ok := connection.MessageEventOf(ev)
	if !ok {
		return nil
	}
	at := us(eventTime(ev, e.RecordedAt))
	if tx.Dialect == Postgres && !b.perEvent {
		// Written with the batch's other moves in two statements (flushMoves).
		b.moves = append(b.moves, statusMove{me: me, at: at, set: moveColumns(ev)})
		return nil
	}
	// One statement reads the status the message had and moves it if the transition is
	// allowed (the broadcast counts need the old status).
	next := me.Status.String()
	set := `status = CASE WHEN o.old_status IN (` + predecessors(me.Status) + `) THEN $2 ELSE status END,
` + next + `_at_us = CASE WHEN ` + next + `_at_us = 0 THEN $3 ELSE ` + next + `_at_us END`
	args := []any{me.MessageID.String(), next, at}
	switch ev := ev.(type) {
	case connection.MessageFailed:
		set += `, fail_code = $4, detail = $5`
		args = append(args, ev.Code, ev.Detail)
	case connection.MessageOutcomeUnknown:
		set += `, detail = $4`
		args = append(args, ev.Cause)
	case connection.MessageSent:
		set += `, server_id = $4`
		args = append(args, ev.ServerID)
	case connection.MessageCancelled:
		set += `, detail = $4`
		args = append(args, ev.Reason)
	}
	var cur, bid string
	var err error
	move := func() error {
		if tx.Dialect == Postgres {
			return tx.QueryRowContext(ctx, `UPDATE status_messages SET `+set+`
FROM (SELECT message_id AS old_id, status AS old_status FROM status_messages WHERE message_id = $1) o
WHERE message_id = o.old_id RETURNING o.old_status, broadcast_id`, args...).Scan(&cur, &bid)
		}
		// SQLite's RETURNING cannot name the FROM clause's columns; its statements cost no
		// round trip: read, then update.
		err := tx.QueryRowContext(ctx, `SELECT status, broadcast_id FROM status_messages WHERE message_id = $1`, me.MessageID.String()).Scan(&cur, &bid)
		if err == nil {
			_, err = tx.ExecContext(ctx, `UPDATE status_messages SET `+set+`
FROM (SELECT message_id AS old_id, status AS old_status FROM status_messages WHERE message_id = $1) o
WHERE message_id = o.old_id`, args...)
		}
		return err
	}
	err = move()
	if errors.Is(err, sql.ErrNoRows) {
		// A message of a run changes state for the first time: its row, from the run.
		var n int64
		if n, err = materializeRunMessage(ctx, tx, me.MessageID); err == nil && n == 1 {
			err = move()
		} else if err == nil {
			err = sql.ErrNoRows
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("message %s (seq %d) was never queued", me.MessageID, me.Seq)
	}
	if err != nil {
		return err
	}
	var old connection.MessageStatus
	if err := old.UnmarshalText([]byte(cur)); err != nil {
		return err
	}
	if old.CanBecome(me.Status) && bid != "" {
		b.count(bid, cur, -1)
		b.count(bid, next, +1)
	}
	return nil
}

// allStatuses are the message statuses, for predecessors.
var allStatuses = []connection.MessageStatus{
	connection.MessageStatusQueued, connection.MessageStatusDispatched, connection.MessageStatusSent,
	connection.MessageStatusDelivered, connection.MessageStatusRead, connection.MessageStatusFailed,
	connection.MessageStatusPurged, connection.MessageStatusExpired, connection.MessageStatusUnknown,
	connection.MessageStatusCancelled,
}

// predecessors returns, as a list of SQL string literals, the statuses that can become next
// (connection.MessageStatus.CanBecome), or the empty literal when none can.
func predecessors(next connection.MessageStatus) string {
	var out []string
	for _, s := range allStatuses {
		if s.CanBecome(next) {
			out = append(out, "'"+s.String()+"'")
		}
	}
	if len(out) == 0 {
		return "''"
	}
	return strings.Join(out, ", ")
}

// eventTime is the business time a message event carries.
func eventTime(ev connection.Event, fallback time.Time) time.Time {
	var t time.Time
	switch ev := ev.(type) {
	case connection.MessageQueued:
		t = ev.QueuedAt
	case connection.MessageDispatched:
		t = ev.DispatchedAt
	case connection.MessageSent:
		t = ev.SentAt
	case connection.MessageDelivered:
		t = ev.DeliveredAt
	case connection.MessageRead:
		t = ev.ReadAt
	case connection.MessageFailed:
		t = ev.FailedAt
	case connection.MessageExpired:
		t = ev.ExpiredAt
	case connection.MessageOutcomeUnknown:
		t = ev.At
	case connection.MessageCancelled:
		t = ev.CancelledAt
	}
	if t.IsZero() {
		return fallback
	}
	return t
}

func (b *statusBatch) clearRequested(ctx context.Context, connID string, ev connection.ClearQueueRequested) error {
	tx := b.tx
	for _, r := range ev.Purge {
		if _, err := tx.ExecContext(ctx, `INSERT INTO status_purges (conn_id, from_seq, to_seq, clear_id, purged_at_us, gc_next)
VALUES ($1, $2, $3, $4, $5, $2) ON CONFLICT (conn_id, from_seq) DO NOTHING`,
			connID, int64(r.From), int64(r.To), ev.ClearID.String(), us(ev.RequestedAt)); err != nil {
			return err
		}
	}
	if len(ev.Purge) == 0 {
		return nil
	}
	lo, hi := ev.Purge[0].From, ev.Purge[len(ev.Purge)-1].To
	rows, err := tx.QueryContext(ctx, `SELECT broadcast_id, first_seq, total FROM status_broadcasts
WHERE conn_id = $1 AND first_seq <= $2 AND first_seq + total - 1 >= $3`, connID, int64(hi), int64(lo))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var bid string
		var first, total int64
		if err := rows.Scan(&bid, &first, &total); err != nil {
			return err
		}
		n := int64(overlap(ev.Purge, uint64(first), uint64(first+total-1)))
		b.count(bid, "queued", -n)
		b.count(bid, "purged", +n)
	}
	return rows.Err()
}

// statusRunnable reports whether a chunk can be held as a run: every recipient packs.
func statusRunnable(bq connection.BroadcastQueued) bool {
	if len(bq.Recipients) == 0 {
		return false
	}
	for _, r := range bq.Recipients {
		if !packable(r) {
			return false
		}
	}
	return true
}

// runMessageSQL selects, for the message id $1, its run's columns and its own (seq, recipient).
const runMessageSQL = `SELECT r.conn_id, i.seq, r.tenant_id, r.broadcast_id, rtrim(substr(r.recipients, CAST((i.seq - r.first_seq) * 16 + 1 AS INTEGER), 16)), r.queued_at_us
FROM status_run_ids i JOIN status_runs r ON r.conn_id = i.conn_id
AND r.first_seq = (SELECT max(first_seq) FROM status_runs WHERE conn_id = i.conn_id AND first_seq <= i.seq) AND r.last_seq >= i.seq
WHERE i.message_id = $1`

// materializeRunMessage gives the message id of a run its status_messages row (status
// queued), as flushRows would have written it; it returns 0 when id is in no run.
func materializeRunMessage(ctx context.Context, tx *Tx, id uuid.UUID) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO status_messages (conn_id, seq, tenant_id, broadcast_id, recipient, queued_at_us, message_id, status)
SELECT q.*, $1, 'queued' FROM (`+runMessageSQL+`) q`, id.String())
	if err != nil {
		return 0, fmt.Errorf("materialize message %s from its run: %w", id, err)
	}
	return res.RowsAffected()
}

func (b *statusBatch) flushRows(ctx context.Context) error {
	if err := b.flushRuns(ctx); err != nil {
		return err
	}
	if len(b.rows) == 0 {
		return nil
	}
	rs := newRowSet("", "", "", int64(0), "", "", int64(0), "").grow(len(b.rows))
	for _, r := range b.rows {
		rs.add(r.m.MessageID.String(), r.tenant, r.conn, int64(r.m.Seq), idText(r.m.BroadcastID), r.m.Recipient, us(r.m.QueuedAt), "queued")
		if r.m.BroadcastID != uuid.Nil {
			b.count(r.m.BroadcastID.String(), "queued", +1)
		}
	}
	if err := insertRows(ctx, b.tx, `INSERT INTO status_messages (message_id, tenant_id, conn_id, seq, broadcast_id, recipient, queued_at_us, status)`, rs); err != nil {
		return fmt.Errorf("insert %d message statuses: %w", len(b.rows), err)
	}
	b.rows = b.rows[:0]
	return nil
}

// flushRuns writes the batch's runs: a status_runs row each, and the ids of their messages.
func (b *statusBatch) flushRuns(ctx context.Context) error {
	if len(b.runs) == 0 {
		return nil
	}
	runs := newRowSet("", int64(0), int64(0), "", "", "", int64(0))
	ids := newRowSet("", "", int64(0))
	flushIDs := func() error {
		if err := insertRows(ctx, b.tx, `INSERT INTO status_run_ids (message_id, conn_id, seq)`, ids); err != nil {
			return fmt.Errorf("insert %d message ids of runs: %w", ids.n, err)
		}
		ids.reset()
		return nil
	}
	for _, r := range b.runs {
		var packed strings.Builder
		packed.Grow(len(r.bq.Recipients) * runWidth)
		for i, rc := range r.bq.Recipients {
			packRecipient(&packed, rc)
			ids.add(connection.BroadcastMessageID(r.bq.BroadcastID, r.bq.FirstIndex+i).String(), r.conn, int64(r.bq.FirstSeq)+int64(i))
			if ids.n >= maxBulkRows {
				if err := flushIDs(); err != nil {
					return err
				}
			}
		}
		runs.add(r.conn, int64(r.bq.FirstSeq), int64(r.bq.LastSeq()), r.tenant, r.bq.BroadcastID.String(), packed.String(), r.qat)
	}
	if err := insertRows(ctx, b.tx, `INSERT INTO status_runs (conn_id, first_seq, last_seq, tenant_id, broadcast_id, recipients, queued_at_us)`, runs); err != nil {
		return fmt.Errorf("insert %d status runs: %w", len(b.runs), err)
	}
	b.runs = b.runs[:0]
	return flushIDs()
}

// statusColumns are the message statuses, each a column of status_broadcasts and, with
// suffix _at_us, of status_messages.
var statusColumns = []string{"queued", "dispatched", "sent", "delivered", "read", "failed", "purged", "expired", "unknown", "cancelled"}

func (b *statusBatch) flushCounts(ctx context.Context) error {
	if b.tx.Dialect == Postgres && len(b.bcast) > 1 {
		// One statement for the batch's broadcasts (issue 12: a dispatch of many connections'
		// broadcasts moved one row each per batch).
		bids := make([]string, 0, len(b.bcast))
		for bid := range b.bcast {
			bids = append(bids, bid)
		}
		slices.Sort(bids) // a stable lock order
		args := []any{bids}
		types, names, sets := []string{"$1::text[]"}, []string{"broadcast_id"}, make([]string, 0, len(statusColumns))
		for _, c := range statusColumns {
			ds := make([]int64, len(bids))
			for i, bid := range bids {
				ds[i] = b.bcast[bid][c]
			}
			args = append(args, ds)
			types = append(types, fmt.Sprintf("$%d::bigint[]", len(args)))
			names = append(names, c)
			sets = append(sets, fmt.Sprintf("%s = s.%s + d.%s", c, c, c))
		}
		if _, err := b.tx.ExecContext(ctx, `UPDATE status_broadcasts AS s SET `+strings.Join(sets, ", ")+`
FROM unnest(`+strings.Join(types, ", ")+`) AS d(`+strings.Join(names, ", ")+`)
WHERE s.broadcast_id = d.broadcast_id`, args...); err != nil {
			return fmt.Errorf("update progress of %d broadcasts: %w", len(bids), err)
		}
		return nil
	}
	for bid, m := range b.bcast {
		var sets []string
		args := []any{bid}
		for _, c := range statusColumns {
			if d := m[c]; d != 0 {
				args = append(args, d)
				sets = append(sets, fmt.Sprintf("%s = %s + $%d", c, c, len(args)))
			}
		}
		if len(sets) == 0 {
			continue
		}
		if _, err := b.tx.ExecContext(ctx, `UPDATE status_broadcasts SET `+strings.Join(sets, ", ")+` WHERE broadcast_id = $1`, args...); err != nil {
			return fmt.Errorf("update progress of broadcast %s: %w", bid, err)
		}
	}
	return nil
}

// StatusChange is one step of a message's lifecycle.
type StatusChange struct {
	Status connection.MessageStatus
	At     time.Time
}

// MessageView is a message's status as the API shows it.
type MessageView struct {
	MessageID    uuid.UUID
	TenantID     string
	ConnectionID string
	Seq          uint64
	BroadcastID  uuid.UUID
	Recipient    string
	Status       connection.MessageStatus
	// History lists each status the message reached, with its time, in lifecycle order.
	History []StatusChange
	// ClearID is the clear that purged the message (zero unless purged).
	ClearID uuid.UUID
	// FailureCode and Detail describe a failed or unknown outcome; Detail is a cancel's reason.
	FailureCode string
	Detail      string
	// ServerID is WhatsApp's id of a sent message.
	ServerID string
}

// Message returns message id of tenant; ErrNotFound when unknown or another tenant's.
func (s *MessageStatus) Message(ctx context.Context, db *DB, tenant string, id uuid.UUID) (MessageView, error) {
	v := MessageView{MessageID: id, TenantID: tenant}
	times := make([]int64, len(statusColumns))
	dest := []any{&v.ConnectionID, new(int64), new(string), &v.Recipient, new(string), new(string), &v.FailureCode, &v.Detail, &v.ServerID, new(sql.NullString), new(sql.NullInt64)}
	for i := range times {
		dest = append(dest, &times[i])
	}
	cols := make([]string, len(statusColumns))
	for i, c := range statusColumns {
		cols[i] = "m." + c + "_at_us"
	}
	err := db.QueryRowContext(ctx, `SELECT m.conn_id, m.seq, m.broadcast_id, m.recipient, m.status, m.clear_id, m.fail_code, m.detail,
m.server_id, p.clear_id, p.purged_at_us, `+strings.Join(cols, ", ")+`
FROM status_messages m LEFT JOIN status_purges p ON m.status = 'queued' AND p.conn_id = m.conn_id AND p.from_seq <= m.seq AND p.to_seq >= m.seq
WHERE m.message_id = $1 AND m.tenant_id = $2`, id.String(), tenant).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return s.runMessage(ctx, db, tenant, id)
	}
	if err != nil {
		return v, fmt.Errorf("projections: message %s: %w", id, err)
	}
	_, v.ConnectionID = connection.SplitKey(v.ConnectionID)
	v.Seq = uint64(*dest[1].(*int64))
	if v.BroadcastID, err = parseID(*dest[2].(*string)); err != nil {
		return v, err
	}
	if err := v.Status.UnmarshalText([]byte(*dest[4].(*string))); err != nil {
		return v, err
	}
	clearID := *dest[5].(*string)
	if pc := dest[9].(*sql.NullString); pc.Valid {
		// Covered by a clear not yet materialized.
		v.Status, clearID = connection.MessageStatusPurged, pc.String
		times[slices.Index(statusColumns, "purged")] = dest[10].(*sql.NullInt64).Int64
	}
	if v.ClearID, err = parseID(clearID); err != nil {
		return v, err
	}
	for i, c := range statusColumns {
		if times[i] == 0 {
			continue
		}
		var st connection.MessageStatus
		if err := st.UnmarshalText([]byte(c)); err != nil {
			return v, err
		}
		v.History = append(v.History, StatusChange{Status: st, At: fromUS(times[i])})
	}
	return v, nil
}

// runMessage is Message for a message of a run (no status_messages row yet): queued, or purged
// when a purge range covers it — what its row would answer.
func (s *MessageStatus) runMessage(ctx context.Context, db *DB, tenant string, id uuid.UUID) (MessageView, error) {
	v := MessageView{MessageID: id, TenantID: tenant, Status: connection.MessageStatusQueued}
	var seq, qat int64
	var runTenant, bid string
	var clearID sql.NullString
	var purgedAt sql.NullInt64
	err := db.QueryRowContext(ctx, `SELECT q.*, p.clear_id, p.purged_at_us FROM (`+runMessageSQL+`) q
LEFT JOIN status_purges p ON p.conn_id = q.conn_id AND p.from_seq <= q.seq AND p.to_seq >= q.seq`, id.String()).Scan(
		&v.ConnectionID, &seq, &runTenant, &bid, &v.Recipient, &qat, &clearID, &purgedAt)
	if errors.Is(err, sql.ErrNoRows) || err == nil && runTenant != tenant {
		return MessageView{MessageID: id, TenantID: tenant}, fmt.Errorf("projections: message %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("projections: message %s: %w", id, err)
	}
	_, v.ConnectionID = connection.SplitKey(v.ConnectionID)
	v.Seq = uint64(seq)
	if v.BroadcastID, err = parseID(bid); err != nil {
		return v, err
	}
	v.History = []StatusChange{{Status: connection.MessageStatusQueued, At: fromUS(qat)}}
	if clearID.Valid {
		v.Status = connection.MessageStatusPurged
		if v.ClearID, err = parseID(clearID.String); err != nil {
			return v, err
		}
		v.History = append(v.History, StatusChange{Status: connection.MessageStatusPurged, At: fromUS(purgedAt.Int64)})
	}
	return v, nil
}

// BroadcastProgress counts a broadcast's messages by current status.
type BroadcastProgress struct {
	BroadcastID  uuid.UUID
	ConnectionID string
	StartedAt    time.Time
	// Count is the number of recipients; the other fields sum to it once every message is queued.
	Count, Queued, Dispatched, Sent, Delivered, Read, Failed, Purged, Expired, Unknown, Cancelled uint64
}

// Broadcast returns the progress of broadcast id of tenant; ErrNotFound when unknown or another
// tenant's.
func (s *MessageStatus) Broadcast(ctx context.Context, db *DB, tenant string, id uuid.UUID) (BroadcastProgress, error) {
	p := BroadcastProgress{BroadcastID: id}
	var started int64
	n := make([]int64, 11)
	err := db.QueryRowContext(ctx, `SELECT conn_id, started_at_us, total, queued, dispatched, sent, delivered, read, failed, purged, expired, unknown, cancelled
FROM status_broadcasts WHERE broadcast_id = $1 AND tenant_id = $2`, id.String(), tenant).Scan(
		&p.ConnectionID, &started, &n[0], &n[1], &n[2], &n[3], &n[4], &n[5], &n[6], &n[7], &n[8], &n[9], &n[10])
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("projections: broadcast %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("projections: broadcast %s: %w", id, err)
	}
	p.StartedAt = fromUS(started)
	_, p.ConnectionID = connection.SplitKey(p.ConnectionID)
	p.Count, p.Queued, p.Dispatched, p.Sent, p.Delivered = uint64(n[0]), uint64(n[1]), uint64(n[2]), uint64(n[3]), uint64(n[4])
	p.Read, p.Failed, p.Purged, p.Expired, p.Unknown = uint64(n[5]), uint64(n[6]), uint64(n[7]), uint64(n[8]), uint64(n[9])
	p.Cancelled = uint64(n[10])
	return p, nil
}

// Collect implements Collector: it marks up to maxRows positions of purged messages purged in
// their rows, and drops the purge ranges it has finished.
func (s *MessageStatus) Collect(ctx context.Context, db *DB, maxRows int) (int, error) {
	if maxRows <= 0 {
		maxRows = 10_000
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT conn_id, from_seq, to_seq, gc_next, clear_id, purged_at_us FROM status_purges
WHERE gc_next <= to_seq ORDER BY conn_id, from_seq LIMIT 16`)
	if err != nil {
		return 0, fmt.Errorf("projections: materialize purges: %w", err)
	}
	type rng struct {
		conn, clear            string
		from, to, gcNext, when int64
	}
	var todo []rng
	for rows.Next() {
		var r rng
		if err := rows.Scan(&r.conn, &r.from, &r.to, &r.gcNext, &r.clear, &r.when); err != nil {
			rows.Close()
			return 0, err
		}
		todo = append(todo, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	done := 0
	for _, r := range todo {
		if done >= maxRows {
			break
		}
		end := min(r.to, r.gcNext+int64(maxRows-done)-1)
		if _, err := tx.ExecContext(ctx, `UPDATE status_messages SET status = 'purged', purged_at_us = $4, clear_id = $5
WHERE conn_id = $1 AND seq >= $2 AND seq <= $3 AND status = 'queued'`, r.conn, r.gcNext, end, r.when, r.clear); err != nil {
			return 0, fmt.Errorf("projections: materialize purges: %w", err)
		}
		done += int(end - r.gcNext + 1)
		if end >= r.to {
			// Its rows are done. A range covering a run stays (gc_next past to_seq): it is
			// what says the run's messages there were purged.
			_, err = tx.ExecContext(ctx, `DELETE FROM status_purges WHERE conn_id = $1 AND from_seq = $2
AND NOT EXISTS (SELECT 1 FROM status_runs WHERE conn_id = $1 AND first_seq <= $3 AND last_seq >= $2)`, r.conn, r.from, r.to)
			if err == nil {
				_, err = tx.ExecContext(ctx, `UPDATE status_purges SET gc_next = $3 WHERE conn_id = $1 AND from_seq = $2`, r.conn, r.from, r.to+1)
			}
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE status_purges SET gc_next = $3 WHERE conn_id = $1 AND from_seq = $2`, r.conn, r.from, end+1)
		}
		if err != nil {
			return 0, fmt.Errorf("projections: materialize purges: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("projections: materialize purges: %w", err)
	}
	return done, nil
}
