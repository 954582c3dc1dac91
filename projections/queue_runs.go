package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// The Queue projection holds a broadcast's queued messages as runs (table queue_runs), not as
// one queue_messages row per message (issue 12): a BroadcastQueued chunk is one run, and so is
// a stretch of consecutive MessageQueued events of one broadcast (streams written before the
// chunks existed, and clearkit's seeding). A run is
//
//	conn_id, first_seq … last_seq, broadcast_id, first_index, recipients, expires_at_us, queued_at_us
//
// with the recipients packed at runWidth characters each (E.164 numbers are at most 16 with
// the '+'), space-padded, so that the recipient at seq is one substr; the message id at seq is
// connection.BroadcastMessageID(broadcast_id, first_index + seq - first_seq) and the text is the
// broadcast's (queue_broadcasts). A message leaves its run when it changes state: the head
// advances live_from, any other position is recorded in queue_run_gone; a dispatched message
// gets its queue_messages row (in flight) from then on. A run whose live_from passes its
// last_seq is deleted. Clears never touch runs (purge ranges and the watermark hide them, as
// they hide rows); the collector cuts the purged positions out of them.
//
// Invariants: runs of a connection are disjoint, and disjoint from its pending queue_messages
// rows; no queue_run_gone seq is below or at its run's live_from; a run's shape depends only
// on the event log, never on how the runner cut it into batches (a stretch of MessageQueued
// split across batches extends its stored run; runs never cross a multiple of
// connection.BroadcastChunk in broadcast index), so a rebuild reproduces the tables.

// runWidth is the width of one packed recipient.
const runWidth = 16

// queueRun is a run being built in one Apply.
type queueRun struct {
	conn        string
	first, last uint64
	bid         uuid.UUID
	firstIndex  int
	exp, qat    int64
	recipients  strings.Builder
	// chunk: the run is one BroadcastQueued (complete; never extends a stored run).
	chunk bool
}

// packable reports whether a recipient fits a run.
func packable(r string) bool {
	return r != "" && len(r) <= runWidth && !strings.ContainsAny(r, " \n")
}

func packRecipient(sb *strings.Builder, r string) {
	sb.WriteString(r)
	for range runWidth - len(r) {
		sb.WriteByte(' ')
	}
}

// runRecipient returns the recipient at position i of packed recipients.
func runRecipient(packed string, i uint64) string {
	return strings.TrimRight(packed[i*runWidth:(i+1)*runWidth], " ")
}

// chunkRun returns the run of bq, or false when it cannot be one (a recipient too long to pack).
func chunkRun(connID string, bq connection.BroadcastQueued, qat int64) (*queueRun, bool) {
	if len(bq.Recipients) == 0 {
		return nil, false
	}
	r := &queueRun{conn: connID, first: bq.FirstSeq, last: bq.LastSeq(), bid: bq.BroadcastID, firstIndex: bq.FirstIndex,
		exp: us(bq.ExpiresAt), qat: qat, chunk: true}
	r.recipients.Grow(len(bq.Recipients) * runWidth)
	for _, rc := range bq.Recipients {
		if !packable(rc) {
			return nil, false
		}
		packRecipient(&r.recipients, rc)
	}
	return r, true
}

// runnable reports whether mq can be held in a run: a broadcast message with the derived id, no
// text of its own and a packable recipient. *ids derives the ids of a broadcast's messages; it
// is replaced when nil or of another broadcast (a batch holds long stretches of one broadcast).
func runnable(mq connection.MessageQueued, ids **connection.BroadcastMessageIDs) bool {
	if mq.BroadcastID == uuid.Nil || mq.Text != "" || !packable(mq.Recipient) {
		return false
	}
	if *ids == nil || (*ids).Broadcast() != mq.BroadcastID {
		*ids = connection.NewBroadcastMessageIDs(mq.BroadcastID)
	}
	return mq.MessageID == (*ids).ID(mq.BroadcastIndex)
}

// extends reports whether mq continues run r.
func (r *queueRun) extends(mq connection.MessageQueued) bool {
	return !r.chunk && mq.BroadcastID == r.bid && mq.Seq == r.last+1 &&
		mq.BroadcastIndex == r.firstIndex+int(r.last-r.first)+1 &&
		mq.BroadcastIndex/connection.BroadcastChunk == r.firstIndex/connection.BroadcastChunk &&
		us(mq.ExpiresAt) == r.exp && us(mq.QueuedAt) == r.qat
}

// queuedInRun adds a runnable MessageQueued to connID's open run, or opens one.
func (b *queueBatch) queuedInRun(ctx context.Context, connID string, mq connection.MessageQueued) error {
	if r := b.open[connID]; r != nil && r.extends(mq) {
		r.last = mq.Seq
		packRecipient(&r.recipients, mq.Recipient)
		return nil
	}
	r := &queueRun{conn: connID, first: mq.Seq, last: mq.Seq, bid: mq.BroadcastID, firstIndex: mq.BroadcastIndex,
		exp: us(mq.ExpiresAt), qat: us(mq.QueuedAt)}
	packRecipient(&r.recipients, mq.Recipient)
	b.open[connID] = r
	return b.addRun(ctx, r)
}

// addRun adds r to the runs of the next flush.
func (b *queueBatch) addRun(ctx context.Context, r *queueRun) error {
	b.runs = append(b.runs, r)
	if len(b.runs) >= maxBulkRows/64 {
		return b.flushRows(ctx)
	}
	return nil
}

// flushRuns writes the runs collected since the last flush and counts their messages.
func (b *queueBatch) flushRuns(ctx context.Context) error {
	if len(b.runs) == 0 {
		return nil
	}
	rs := newRowSet("", int64(0), int64(0), int64(0), "", int64(0), "", int64(0), int64(0))
	for _, r := range b.runs {
		n := int64(r.last - r.first + 1)
		b.pending[r.conn] += n
		b.lastSeq[r.conn] = max(b.lastSeq[r.conn], r.last)
		b.bcast[[2]string{r.conn, r.bid.String()}] += n
		if !r.chunk {
			extended, err := b.extendStored(ctx, r)
			if err != nil {
				return err
			}
			if extended {
				continue
			}
		}
		rs.add(r.conn, int64(r.first), int64(r.last), int64(r.first), r.bid.String(), int64(r.firstIndex), r.recipients.String(), r.exp, r.qat)
	}
	if err := insertRows(ctx, b.tx, `INSERT INTO queue_runs (conn_id, first_seq, last_seq, live_from, broadcast_id, first_index, recipients, expires_at_us, queued_at_us)`, rs); err != nil {
		return fmt.Errorf("insert %d queue runs: %w", rs.n, err)
	}
	b.runs = b.runs[:0]
	clear(b.open)
	return nil
}

// extendStored appends r to the stored run it continues (one split by a batch boundary), if any,
// in one statement: the run that ends just before r, of the same broadcast, expiry and queue
// time, whose broadcast indexes r continues within the same chunk (BroadcastChunk).
func (b *queueBatch) extendStored(ctx context.Context, r *queueRun) (bool, error) {
	res, err := b.tx.ExecContext(ctx, `UPDATE queue_runs SET last_seq = $6, recipients = recipients || $7
WHERE conn_id = $1 AND last_seq = $2 AND broadcast_id = $3 AND expires_at_us = $4 AND queued_at_us = $5
AND first_index - first_seq = $8 AND first_index / $9 = $10`,
		r.conn, int64(r.first-1), r.bid.String(), r.exp, r.qat, int64(r.last), r.recipients.String(),
		int64(r.firstIndex)-int64(r.first), int64(connection.BroadcastChunk), int64(r.firstIndex/connection.BroadcastChunk))
	if err != nil {
		return false, fmt.Errorf("extend queue run: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("extend queue run: %w", err)
	}
	return n > 0, nil
}

// runMember is a message of a run, as takeFromRun found it.
type runMember struct {
	bid       string
	messageID uuid.UUID
	recipient string
	exp, qat  int64
}

// takeFromRun removes seq from connID's run holding it (live: not before live_from, not in
// queue_run_gone) and returns the message; false when no run holds seq. Like a row of the
// pending queue, a position purged but not collected yet is still held.
func (b *queueBatch) takeFromRun(ctx context.Context, connID string, seq uint64) (runMember, bool, error) {
	m, ok, err := b.takeRunHead(ctx, connID, seq)
	if err != nil || ok {
		return m, ok, err
	}
	return b.takeFromRunBehindHead(ctx, connID, seq)
}

// takeRunHead is takeFromRun for seq at the head of its run (the dispatcher's order; expiries):
// one statement; false when no run has seq at its head.
func (b *queueBatch) takeRunHead(ctx context.Context, connID string, seq uint64) (runMember, bool, error) {
	tx := b.tx
	var first, last, gone, firstIndex, exp, qat int64
	var bid, recipient string
	err := tx.QueryRowContext(ctx, `UPDATE queue_runs SET live_from = live_from + 1
WHERE conn_id = $1 AND live_from = $2 AND first_seq <= $2 AND last_seq >= $2
RETURNING first_seq, last_seq, gone_count, broadcast_id, first_index,
substr(recipients, CAST(($2 - first_seq) * 16 + 1 AS INTEGER), 16), expires_at_us, queued_at_us`, connID, int64(seq)).
		Scan(&first, &last, &gone, &bid, &firstIndex, &recipient, &exp, &qat)
	switch {
	case err == nil:
		if int64(seq) == last {
			_, err = tx.ExecContext(ctx, `DELETE FROM queue_runs WHERE conn_id = $1 AND first_seq = $2`, connID, first)
		} else if gone > 0 {
			err = advanceRun(ctx, tx, connID, first, last, int64(seq)+1)
		}
		if err != nil {
			return runMember{}, false, fmt.Errorf("queue run of %d: %w", seq, err)
		}
		return newRunMember(bid, firstIndex, int64(seq)-first, recipient, exp, qat)
	case !errors.Is(err, sql.ErrNoRows):
		return runMember{}, false, fmt.Errorf("queue run of %d: %w", seq, err)
	}
	return runMember{}, false, nil
}

// takeFromRunBehindHead is takeFromRun for seq not at the head of its run (takeRunHead found
// none): it is marked gone.
func (b *queueBatch) takeFromRunBehindHead(ctx context.Context, connID string, seq uint64) (runMember, bool, error) {
	tx := b.tx
	var first, last, live, firstIndex, exp, qat int64
	var bid, recipient string
	err := tx.QueryRowContext(ctx, `SELECT first_seq, last_seq, live_from, broadcast_id, first_index,
CASE WHEN last_seq >= $2 THEN substr(recipients, CAST(($2 - first_seq) * 16 + 1 AS INTEGER), 16) ELSE '' END, expires_at_us, queued_at_us
FROM queue_runs WHERE conn_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1`, connID, int64(seq)).
		Scan(&first, &last, &live, &bid, &firstIndex, &recipient, &exp, &qat)
	if errors.Is(err, sql.ErrNoRows) {
		return runMember{}, false, nil
	}
	if err != nil {
		return runMember{}, false, fmt.Errorf("queue run of %d: %w", seq, err)
	}
	if int64(seq) > last || int64(seq) <= live { // the head was taken above
		return runMember{}, false, nil
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO queue_run_gone (conn_id, seq) VALUES ($1, $2) ON CONFLICT (conn_id, seq) DO NOTHING`,
		connID, int64(seq))
	if err != nil {
		return runMember{}, false, fmt.Errorf("queue run of %d: %w", seq, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return runMember{}, false, nil // gone already
	}
	if _, err := tx.ExecContext(ctx, `UPDATE queue_runs SET gone_count = gone_count + 1 WHERE conn_id = $1 AND first_seq = $2`,
		connID, first); err != nil {
		return runMember{}, false, fmt.Errorf("queue run of %d: %w", seq, err)
	}
	return newRunMember(bid, firstIndex, int64(seq)-first, recipient, exp, qat)
}

func newRunMember(bid string, firstIndex, i int64, recipient string, exp, qat int64) (runMember, bool, error) {
	id, err := parseID(bid)
	if err != nil {
		return runMember{}, false, err
	}
	return runMember{bid: bid, messageID: connection.BroadcastMessageID(id, int(firstIndex+i)),
		recipient: strings.TrimRight(recipient, " "), exp: exp, qat: qat}, true, nil
}

// advanceRun sets the live_from of run (connID, first) to the first position at or after from
// not in queue_run_gone (deleting the gone markers it passes, and counting them off its
// gone_count), or deletes the run when none is left.
func advanceRun(ctx context.Context, tx *Tx, connID string, first, last, from int64) error {
	rows, err := tx.QueryContext(ctx, `SELECT seq FROM queue_run_gone WHERE conn_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq`,
		connID, from, last)
	if err != nil {
		return fmt.Errorf("advance queue run: %w", err)
	}
	live := from
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return err
		}
		if s != live {
			break
		}
		live++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if live > from {
		if _, err := tx.ExecContext(ctx, `DELETE FROM queue_run_gone WHERE conn_id = $1 AND seq >= $2 AND seq < $3`, connID, from, live); err != nil {
			return fmt.Errorf("advance queue run: %w", err)
		}
	}
	if live > last {
		_, err = tx.ExecContext(ctx, `DELETE FROM queue_runs WHERE conn_id = $1 AND first_seq = $2`, connID, first)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE queue_runs SET live_from = $3, gone_count = gone_count - $4 WHERE conn_id = $1 AND first_seq = $2`,
			connID, first, live, live-from)
	}
	if err != nil {
		return fmt.Errorf("advance queue run: %w", err)
	}
	return nil
}

// storedRun is a queue_runs row.
type storedRun struct {
	first, last, live, gone, firstIndex, exp, qat int64
	bid, recipients, text                         string
}

// cutRuns removes the positions from … to of connID from its runs (the collector's share of a
// purge range): a run wholly inside goes, one overlapping the edge is trimmed, one around the
// range is split in two.
func cutRuns(ctx context.Context, tx *Tx, connID string, from, to int64) error {
	rows, err := tx.QueryContext(ctx, `SELECT first_seq, last_seq, live_from, broadcast_id, first_index, recipients, expires_at_us, queued_at_us
FROM queue_runs WHERE conn_id = $1 AND last_seq >= $2 AND first_seq <= $3 ORDER BY first_seq`, connID, from, to)
	if err != nil {
		return fmt.Errorf("cut queue runs: %w", err)
	}
	var runs []storedRun
	for rows.Next() {
		var r storedRun
		if err := rows.Scan(&r.first, &r.last, &r.live, &r.bid, &r.firstIndex, &r.recipients, &r.exp, &r.qat); err != nil {
			rows.Close()
			return err
		}
		runs = append(runs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range runs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM queue_runs WHERE conn_id = $1 AND first_seq = $2`, connID, r.first); err != nil {
			return fmt.Errorf("cut queue runs: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM queue_run_gone WHERE conn_id = $1 AND seq >= $2 AND seq <= $3`,
			connID, max(from, r.first), min(to, r.last)); err != nil {
			return fmt.Errorf("cut queue runs: %w", err)
		}
		if r.first < from && r.live < from {
			left := r
			left.last = from - 1
			left.recipients = r.recipients[:(from-r.first)*runWidth]
			if err := insertRun(ctx, tx, connID, left); err != nil {
				return err
			}
		}
		if r.last > to {
			right := r
			right.first, right.live = to+1, max(r.live, to+1)
			right.firstIndex += to + 1 - r.first
			right.recipients = r.recipients[(to+1-r.first)*runWidth:]
			if err := insertRun(ctx, tx, connID, right); err != nil {
				return err
			}
			if right.live == to+1 {
				if err := advanceRun(ctx, tx, connID, right.first, right.last, right.live); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func insertRun(ctx context.Context, tx *Tx, connID string, r storedRun) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO queue_runs (conn_id, first_seq, last_seq, live_from, broadcast_id, first_index, recipients,
expires_at_us, queued_at_us, gone_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, (SELECT COUNT(*) FROM queue_run_gone WHERE conn_id = $1 AND seq >= $2 AND seq <= $3))`,
		connID, r.first, r.last, r.live, r.bid, r.firstIndex, r.recipients, r.exp, r.qat)
	if err != nil {
		return fmt.Errorf("cut queue runs: %w", err)
	}
	return nil
}

// runPending returns up to limit pending messages of connID's runs with lo < Seq < upper (upper
// 0: no bound), in Seq order, purge ranges not applied (the caller's window excludes them).
func (q *Queue) runPending(ctx context.Context, db querier, connID string, lo, upper uint64, limit int) ([]PendingMessage, error) {
	var out []PendingMessage
	after := int64(-1) // first_seq of the last run read
	for len(out) < limit {
		rows, err := db.QueryContext(ctx, `SELECT r.first_seq, r.last_seq, r.live_from, r.broadcast_id, r.first_index,
r.expires_at_us, r.queued_at_us, COALESCE(b.text, '')
FROM queue_runs r LEFT JOIN queue_broadcasts b ON b.conn_id = r.conn_id AND b.broadcast_id = r.broadcast_id
WHERE r.conn_id = $1 AND r.last_seq > $2 AND ($3 = 0 OR r.first_seq < $3) AND r.first_seq > $4 ORDER BY r.first_seq LIMIT 4`,
			connID, int64(lo), int64(upper), after)
		if err != nil {
			return nil, err
		}
		var runs []storedRun
		for rows.Next() {
			var r storedRun
			if err := rows.Scan(&r.first, &r.last, &r.live, &r.bid, &r.firstIndex, &r.exp, &r.qat, &r.text); err != nil {
				rows.Close()
				return nil, err
			}
			runs = append(runs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, r := range runs {
			after = r.first
			from := max(int64(lo)+1, r.live)
			to := r.last
			if upper != 0 {
				to = min(to, int64(upper)-1)
			}
			if from > to {
				continue
			}
			gone, err := q.gone(ctx, db, connID, from, to)
			if err != nil {
				return nil, err
			}
			bid, err := parseID(r.bid)
			if err != nil {
				return nil, err
			}
			var take []int64
			for s := from; s <= to && len(out)+len(take) < limit; s++ {
				if !gone[s] {
					take = append(take, s)
				}
			}
			if len(take) == 0 {
				continue
			}
			// Only the stretch of recipients needed (a run packs up to 5,000).
			i0, i1 := take[0]-r.first, take[len(take)-1]-r.first
			var packed string
			if err := db.QueryRowContext(ctx, `SELECT substr(recipients, CAST($3 AS INTEGER), CAST($4 AS INTEGER)) FROM queue_runs
WHERE conn_id = $1 AND first_seq = $2`, connID, r.first, i0*runWidth+1, (i1-i0+1)*runWidth).Scan(&packed); err != nil {
				return nil, err
			}
			if int64(len(packed)) != (i1-i0+1)*runWidth {
				return nil, fmt.Errorf("queue run %d…%d: %d bytes of recipients, want %d", r.first, r.last, len(packed), (i1-i0+1)*runWidth)
			}
			for _, s := range take {
				i := s - r.first
				out = append(out, PendingMessage{ConnectionID: connID, Seq: uint64(s),
					MessageID: connection.BroadcastMessageID(bid, int(r.firstIndex+i)), BroadcastID: bid,
					Recipient: runRecipient(packed, uint64(i-i0)), Text: r.text,
					ExpiresAt: fromUS(r.exp), QueuedAt: fromUS(r.qat)})
			}
			if len(out) >= limit {
				break
			}
		}
		if len(runs) < 4 {
			break
		}
	}
	return out, nil
}

func (q *Queue) gone(ctx context.Context, db querier, connID string, from, to int64) (map[int64]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT seq FROM queue_run_gone WHERE conn_id = $1 AND seq >= $2 AND seq <= $3`, connID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out[s] = true
	}
	return out, rows.Err()
}

// pendingAt is Pending's read: connID's pending message at seq, from its row or from the run
// holding it, in one statement (one snapshot, one round trip).
func (q *Queue) pendingAt(ctx context.Context, db *DB, connID string, seq uint64) ([]PendingMessage, error) {
	var rows *sql.Rows
	var err error
	if db.Dialect == Postgres {
		rows, err = db.QueryContext(ctx, pendingAtQuery, connID, int64(seq)) // pgx caches its prepared statements
	} else {
		stmt, perr := q.prepared(ctx, db, pendingAtQuery)
		if perr != nil {
			return nil, perr
		}
		rows, err = stmt.QueryContext(ctx, connID, int64(seq))
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PendingMessage
	for rows.Next() {
		var kind, exp, qat, idx int64
		var mid, bid string
		p := PendingMessage{ConnectionID: connID, Seq: seq}
		if err := rows.Scan(&kind, &mid, &bid, &p.Recipient, &p.Text, &exp, &qat, &idx); err != nil {
			return nil, err
		}
		if err := p.fromRow(kind, mid, bid, exp, qat, idx); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// prepared returns query prepared on db, once per db: the dispatcher reads one message per
// dispatch, and SQLite parsing pendingAtQuery cost more than running it (issue 12's profile).
// PostgreSQL needs none: pgx prepares and caches every statement per connection.
func (q *Queue) prepared(ctx context.Context, db *DB, query string) (*sql.Stmt, error) {
	key := preparedKey{db.SQL, query}
	q.mu.Lock()
	stmt := q.stmts[key]
	q.mu.Unlock()
	if stmt != nil {
		return stmt, nil
	}
	stmt, err := db.SQL.PrepareContext(ctx, db.Rebind(query))
	if err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if other := q.stmts[key]; other != nil {
		_ = stmt.Close()
		return other, nil
	}
	if q.stmts == nil {
		q.stmts = map[preparedKey]*sql.Stmt{}
	}
	q.stmts[key] = stmt
	return stmt, nil
}

type preparedKey struct {
	db    *sql.DB
	query string
}

// pendingAtQuery reads the pending message at $2 of connection $1 from its row or its run.
const pendingAtQuery = `SELECT x.kind, x.message_id, x.broadcast_id, x.recipient, x.text, x.expires_at_us, x.queued_at_us, x.idx FROM (
SELECT 0 AS kind, m.message_id, m.broadcast_id, m.recipient,
  CASE WHEN m.text = '' AND b.text IS NOT NULL THEN b.text ELSE m.text END AS text, m.expires_at_us, m.queued_at_us, 0 AS idx
FROM queue_messages m LEFT JOIN queue_broadcasts b ON b.conn_id = m.conn_id AND b.broadcast_id = m.broadcast_id
WHERE m.conn_id = $1 AND m.seq = $2 AND m.dispatched_at_us = 0
UNION ALL
SELECT 1, '', r.broadcast_id, substr(r.recipients, CAST(($2 - r.first_seq) * 16 + 1 AS INTEGER), 16), COALESCE(b.text, ''),
  r.expires_at_us, r.queued_at_us, r.first_index + $2 - r.first_seq
FROM (SELECT * FROM queue_runs WHERE conn_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1) r
LEFT JOIN queue_broadcasts b ON b.conn_id = r.conn_id AND b.broadcast_id = r.broadcast_id
WHERE r.last_seq >= $2 AND r.live_from <= $2 AND NOT EXISTS (SELECT 1 FROM queue_run_gone g WHERE g.conn_id = $1 AND g.seq = $2)
) x WHERE $2 > COALESCE((SELECT c.purged_upto FROM queue_conns c WHERE c.conn_id = $1), 0)
AND NOT EXISTS (SELECT 1 FROM queue_purges p WHERE p.conn_id = $1 AND p.from_seq <= $2 AND p.to_seq >= $2)`

// mergeBySeq merges two Seq-ordered lists of disjoint Seqs and keeps the first limit.
func mergeBySeq(a, b []PendingMessage, limit int) []PendingMessage {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b[:min(len(b), limit)]
	}
	out := make([]PendingMessage, 0, min(len(a)+len(b), limit))
	for len(out) < limit && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || (len(a) > 0 && a[0].Seq < b[0].Seq) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// PendingWindow returns connID's pending messages (as Pending: queued, not dispatched, not
// purged by a clear) whose Seq lies in [seq, seq+n), in Seq order, in one statement. It reads at
// most n rows of each table whatever the queue's length and the planner's statistics (the range is
// bounded on both ends, unlike NextPending's ORDER BY … LIMIT): the rows in the range, and the
// positions of the runs that overlap it (the one holding seq and those starting in the range). A
// position missing from the answer holds no pending message (yet). The dispatcher reads a connection's next
// messages this way once per window instead of one point read per message (issue 12).
func (q *Queue) PendingWindow(ctx context.Context, db *DB, connID string, seq uint64, n int) ([]PendingMessage, error) {
	if n <= 0 || seq == 0 {
		return nil, nil
	}
	end := int64(seq) + int64(n)
	var rows *sql.Rows
	var err error
	if db.Dialect == Postgres {
		rows, err = db.QueryContext(ctx, pendingWindowQuery, connID, int64(seq), end)
	} else {
		stmt, perr := q.prepared(ctx, db, pendingWindowQuery)
		if perr != nil {
			return nil, perr
		}
		rows, err = stmt.QueryContext(ctx, connID, int64(seq), end)
	}
	if err != nil {
		return nil, fmt.Errorf("projections: pending window %q/%d+%d: %w", connID, seq, n, err)
	}
	defer rows.Close()
	var out []PendingMessage
	for rows.Next() {
		var s, kind, exp, qat, idx int64
		var mid, bid string
		p := PendingMessage{ConnectionID: connID}
		if err := rows.Scan(&s, &kind, &mid, &bid, &p.Recipient, &p.Text, &exp, &qat, &idx); err != nil {
			return nil, err
		}
		if err := p.fromRow(kind, mid, bid, exp, qat, idx); err != nil {
			return nil, err
		}
		p.Seq = uint64(s)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projections: pending window %q/%d+%d: %w", connID, seq, n, err)
	}
	return out, nil
}

// pendingWindowQuery reads the pending messages at $2 … $3-1 of connection $1: pendingAtQuery
// over a range (w enumerates the range for the runs' positions).
const pendingWindowQuery = `WITH RECURSIVE w(seq) AS (SELECT CAST($2 AS BIGINT) UNION ALL SELECT seq + 1 FROM w WHERE seq + 1 < $3)
SELECT x.seq, x.kind, x.message_id, x.broadcast_id, x.recipient, x.text, x.expires_at_us, x.queued_at_us, x.idx FROM (
SELECT m.seq AS seq, 0 AS kind, m.message_id, m.broadcast_id, m.recipient,
  CASE WHEN m.text = '' AND b.text IS NOT NULL THEN b.text ELSE m.text END AS text, m.expires_at_us, m.queued_at_us, 0 AS idx
FROM queue_messages m LEFT JOIN queue_broadcasts b ON b.conn_id = m.conn_id AND b.broadcast_id = m.broadcast_id
WHERE m.conn_id = $1 AND m.seq >= $2 AND m.seq < $3 AND m.dispatched_at_us = 0
UNION ALL
SELECT w.seq, 1, '', r.broadcast_id, substr(r.recipients, CAST((w.seq - r.first_seq) * 16 + 1 AS INTEGER), 16), COALESCE(b.text, ''),
  r.expires_at_us, r.queued_at_us, r.first_index + w.seq - r.first_seq
FROM (SELECT * FROM (SELECT * FROM queue_runs WHERE conn_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1) r0
  UNION ALL SELECT * FROM queue_runs WHERE conn_id = $1 AND first_seq > $2 AND first_seq < $3) r
JOIN w ON w.seq <= r.last_seq AND w.seq >= r.live_from
LEFT JOIN queue_broadcasts b ON b.conn_id = r.conn_id AND b.broadcast_id = r.broadcast_id
WHERE NOT EXISTS (SELECT 1 FROM queue_run_gone g WHERE g.conn_id = $1 AND g.seq = w.seq)
) x WHERE x.seq > COALESCE((SELECT c.purged_upto FROM queue_conns c WHERE c.conn_id = $1), 0)
AND NOT EXISTS (SELECT 1 FROM queue_purges p WHERE p.conn_id = $1 AND p.from_seq <= x.seq AND p.to_seq >= x.seq)
ORDER BY x.seq`

// fromRow completes p from the columns a pending-message row (a message row, kind 0, or a run
// position, kind 1, whose id derives from its broadcast and index) shares with the others.
func (p *PendingMessage) fromRow(kind int64, mid, bid string, exp, qat, idx int64) (err error) {
	if p.BroadcastID, err = parseID(bid); err != nil {
		return err
	}
	if kind == 1 {
		p.MessageID = connection.BroadcastMessageID(p.BroadcastID, int(idx))
		p.Recipient = strings.TrimRight(p.Recipient, " ")
	} else if p.MessageID, err = uuid.Parse(mid); err != nil {
		return err
	}
	p.ExpiresAt, p.QueuedAt = fromUS(exp), fromUS(qat)
	return nil
}
