package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

const (
	// sqlLock is the first statement of an append transaction. It assigns no transaction id, so
	// the id assigned by the insert afterwards is greater than that of the stream's previous
	// writer, which has committed by the time the lock is granted.
	sqlLock = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`
	// sqlLastRevision runs after sqlLock in a statement of its own, so that (in READ COMMITTED)
	// its snapshot is taken after the lock was granted and sees the previous writer's events.
	sqlLastRevision = `SELECT revision FROM waqueue_events WHERE stream = $1 ORDER BY revision DESC LIMIT 1`

	// sqlCurrent is the stream's last revision, -1 when it has none; the CTEs below share it.
	sqlCurrent = `WITH cur AS (
  SELECT coalesce((SELECT revision FROM waqueue_events WHERE stream = $1 ORDER BY revision DESC LIMIT 1), -1) AS rev
), `
	// sqlExpected checks the expected revision ($2 kind, $3 revision; see expectArgs) in SQL.
	sqlExpected = `CASE $2::int WHEN 0 THEN true WHEN 1 THEN cur.rev = -1 WHEN 2 THEN cur.rev >= 0 ELSE cur.rev = $3::bigint END`
	// sqlResult returns the revision found and, if the insert happened, the position of the
	// last event inserted.
	sqlResult = `
SELECT cur.rev, (SELECT tx_id FROM ins LIMIT 1), (SELECT max(seq) FROM ins) FROM cur`

	// sqlInsertOne reads the revision, checks the expectation and inserts one event, in one
	// statement (so with one snapshot, taken after sqlLock was granted).
	sqlInsertOne = sqlCurrent + `ins AS (
  INSERT INTO waqueue_events
    (id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at)
  SELECT $4, $1, cur.rev + 1, $5, $6::json, $7, $8, $9, $10, $11 FROM cur
  WHERE ` + sqlExpected + `
  RETURNING tx_id, seq
)` + sqlResult

	// sqlInsertMany is sqlInsertOne for a small batch given as arrays; seq follows the array
	// order, as does the revision.
	sqlInsertMany = sqlCurrent + `ins AS (
  INSERT INTO waqueue_events
    (id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at)
  SELECT u.id, $1, cur.rev + u.ord, u.type, u.data::json, u.tenant_id, u.actor, u.correlation_id, u.causation_id, $4
  FROM cur, unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
    WITH ORDINALITY AS u(id, type, data, tenant_id, actor, correlation_id, causation_id, ord)
  WHERE ` + sqlExpected + `
  ORDER BY u.ord
  RETURNING tx_id, seq
)` + sqlResult

	// sqlPosition returns the position of the last event this transaction inserted.
	sqlPosition = `SELECT pg_current_xact_id(), currval('waqueue_events_seq_seq')`

	// sqlNotify announces a commit to the stores of other processes: $1 is NotifyChannel, $2
	// the announcing store's origin, by which its own listener ignores the echo (the store
	// wakes its own subscriptions directly).
	sqlNotify = `SELECT pg_notify($1, $2)`

	sqlLookupIDs = `SELECT id, stream, revision, tx_id, seq FROM waqueue_events WHERE id = ANY($1::uuid[])`

	constraintID = "waqueue_events_id_key"
)

var copyColumns = []string{"id", "stream", "revision", "type", "data", "tenant_id", "actor", "correlation_id", "causation_id", "recorded_at"}

// Append implements eventstore.Store. See the package doc for how an append is ordered and
// how many round trips it takes. It returns after the commit is durable (synchronous_commit).
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if err := eventstore.Validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	if s.isClosed() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	if len(events) == 0 {
		return s.appendNothing(ctx, stream, expected)
	}
	if len(events) == 1 && s.opts.GroupCommitters > 0 {
		return s.appendGrouped(ctx, stream, expected, events[0])
	}
	return s.appendAlone(ctx, stream, expected, events)
}

// appendAlone appends events in a transaction of their own.
func (s *Store) appendAlone(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData) (eventstore.AppendResult, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: %w", stream, err)
	}
	defer c.Release()
	res, err := s.write(ctx, c.Conn(), stream, expected, events, true)
	if err != nil {
		rollback(c.Conn())
		// An error after COMMIT leaves the events committed: wake the subscriptions anyway
		// (this store's listener ignores its own NOTIFY, if that went out).
		s.wake.notify()
		return s.resolve(ctx, stream, expected, events, err)
	}
	s.wake.notify()
	return res, nil
}

// appendNothing validates expected against the stream's current revision.
func (s *Store) appendNothing(ctx context.Context, stream string, expected eventstore.ExpectedRevision) (eventstore.AppendResult, error) {
	actual := eventstore.NoRevision
	err := s.pool.QueryRow(ctx, sqlLastRevision, stream).Scan(&actual)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: read revision: %w", stream, err)
	}
	if !expected.Check(actual) {
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}
	return eventstore.AppendResult{NextExpectedRevision: uint64(max(actual, 0))}, nil
}

// expectArgs encodes expected for sqlExpected.
func expectArgs(expected eventstore.ExpectedRevision) (kind int, rev int64) {
	switch {
	case expected.IsNoStream():
		return 1, 0
	case expected.IsStreamExists():
		return 2, 0
	default:
		if r, ok := expected.Revision(); ok {
			if r > math.MaxInt64 {
				return 3, -2 // matches no stream
			}
			return 3, int64(r)
		}
		return 0, 0
	}
}

// write runs the append transaction on conn. With commit false it leaves the transaction open
// after the insert (for tests that hold a transaction open); the caller then sends COMMIT or
// ROLLBACK. On error the transaction may be open or aborted: the caller rolls back.
//
// Below CopyThreshold events it is one round trip: BEGIN, lock, one statement that reads the
// revision, checks it and inserts, COMMIT, NOTIFY — pipelined. Each statement of the pipeline
// takes its snapshot when the server reaches it, so the insert sees the stream as the previous
// lock holder left it. From CopyThreshold on, the revision is read first, then the events are
// copied, then the position is read and the transaction committed.
func (s *Store) write(ctx context.Context, conn *pgx.Conn, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData, commit bool) (eventstore.AppendResult, error) {
	if len(events) >= s.opts.CopyThreshold {
		return s.writeCopy(ctx, conn, stream, expected, events, commit)
	}
	now := s.opts.Clock()
	kind, rev := expectArgs(expected)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlLock, stream)
	if len(events) == 1 {
		e := events[0]
		b.Queue(sqlInsertOne, stream, kind, rev, [16]byte(e.ID), e.Type, jsonArg(e.Data),
			e.Metadata.TenantID, e.Metadata.Actor, e.Metadata.CorrelationID, e.Metadata.CausationID, now)
	} else {
		b.Queue(sqlInsertMany, manyArgs(stream, kind, rev, now, events)...)
	}
	if commit {
		b.Queue("COMMIT")
		// Outside the appending transaction: see the package doc.
		b.Queue(sqlNotify, NotifyChannel, s.origin)
	}
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: begin: %w", stream, err)
	}
	if _, err := br.Exec(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: lock stream: %w", stream, err)
	}
	var actual int64
	var txID *uint64
	var seq *int64
	if err := br.QueryRow().Scan(&actual, &txID, &seq); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: insert: %w", stream, err)
	}
	if commit {
		if _, err := br.Exec(); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: commit: %w", stream, err)
		}
		// The events are durable; a failed notification only delays other processes'
		// subscribers until their idle poll.
		_, _ = br.Exec()
	}
	if txID == nil || seq == nil {
		// Nothing inserted: the expectation failed (the COMMIT committed nothing).
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}
	return eventstore.AppendResult{
		NextExpectedRevision: uint64(actual) + uint64(len(events)),
		Position:             eventstore.Position{Commit: *txID, Prepare: uint64(*seq)},
	}, nil
}

// writeCopy is write for large batches, through COPY.
func (s *Store) writeCopy(ctx context.Context, conn *pgx.Conn, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData, commit bool) (eventstore.AppendResult, error) {
	// Round trip 1: begin, take the stream lock, read the revision.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlLock, stream)
	b.Queue(sqlLastRevision, stream)
	br := conn.SendBatch(ctx, b)
	actual := eventstore.NoRevision
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(&actual)
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: lock stream: %w", stream, err)
	}
	if !expected.Check(actual) {
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}

	first := uint64(actual + 1)
	now := s.opts.Clock()
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"waqueue_events"}, copyColumns, copyRows(stream, first, now, events)); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: copy: %w", stream, err)
	}
	b = &pgx.Batch{}
	b.Queue(sqlPosition)
	if commit {
		b.Queue("COMMIT")
		b.Queue(sqlNotify, NotifyChannel, s.origin)
	}
	// Last round trip: read the position, commit, notify.
	br = conn.SendBatch(ctx, b)
	defer br.Close()
	var pos eventstore.Position
	var seq int64
	if err := br.QueryRow().Scan(&pos.Commit, &seq); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: read position: %w", stream, err)
	}
	pos.Prepare = uint64(seq)
	if commit {
		if _, err := br.Exec(); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: commit: %w", stream, err)
		}
		_, _ = br.Exec()
	}
	return eventstore.AppendResult{NextExpectedRevision: first + uint64(len(events)) - 1, Position: pos}, nil
}

func jsonArg(data []byte) any {
	if len(data) == 0 {
		return nil
	}
	return string(data)
}

func manyArgs(stream string, kind int, rev int64, now time.Time, events []eventstore.EventData) []any {
	n := len(events)
	ids := make([][16]byte, n)
	types := make([]string, n)
	data := make([]*string, n)
	tenants := make([]string, n)
	actors := make([]string, n)
	corrs := make([]string, n)
	causes := make([]string, n)
	for i, e := range events {
		ids[i] = e.ID
		types[i] = e.Type
		if len(e.Data) > 0 {
			d := string(e.Data)
			data[i] = &d
		}
		tenants[i] = e.Metadata.TenantID
		actors[i] = e.Metadata.Actor
		corrs[i] = e.Metadata.CorrelationID
		causes[i] = e.Metadata.CausationID
	}
	return []any{stream, kind, rev, now, ids, types, data, tenants, actors, corrs, causes}
}

func copyRows(stream string, first uint64, now time.Time, events []eventstore.EventData) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(events), func(i int) ([]any, error) {
		e := events[i]
		var data any
		if len(e.Data) > 0 {
			data = []byte(e.Data)
		}
		return []any{[16]byte(e.ID), stream, int64(first) + int64(i), e.Type, data,
			e.Metadata.TenantID, e.Metadata.Actor, e.Metadata.CorrelationID, e.Metadata.CausationID, now}, nil
	})
}

// rollback ends whatever transaction a failed append left on conn. If that fails the pool
// discards the connection on release (it is not idle).
func rollback(conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = conn.Close(ctx)
	}
}

// resolve turns a failed append into its result. A wrong expected revision or a unique
// violation on the id index may be an idempotent retry of an append that already succeeded:
// the ids are looked up in a fresh statement and, if all are stored in order at a place the
// expectation is compatible with, the original result is returned. Otherwise an id already
// stored yields a *DuplicateEventError (also when the expectation failed); other errors pass
// through.
func (s *Store) resolve(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData, cause error) (eventstore.AppendResult, error) {
	var wrong *eventstore.WrongExpectedRevisionError
	var pgErr *pgconn.PgError
	isWrong := errors.As(cause, &wrong)
	isDup := errors.As(cause, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraintID
	if !isWrong && !isDup {
		return eventstore.AppendResult{}, cause
	}
	ids := make([][16]byte, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	rows, err := s.pool.Query(ctx, sqlLookupIDs, ids)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: look up ids after %v: %w", stream, cause, err)
	}
	type place struct {
		stream string
		rev    int64
		pos    eventstore.Position
	}
	stored := make(map[uuid.UUID]place, len(events))
	for rows.Next() {
		var id [16]byte
		var p place
		var seq int64
		if err := rows.Scan(&id, &p.stream, &p.rev, &p.pos.Commit, &seq); err != nil {
			rows.Close()
			return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: look up ids: %w", stream, err)
		}
		p.pos.Prepare = uint64(seq)
		stored[id] = p
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres: append to %q: look up ids: %w", stream, err)
	}

	if len(stored) == len(events) {
		first := stored[events[0].ID]
		inOrder := true
		for i, e := range events {
			p := stored[e.ID]
			if p.stream != stream || p.rev != first.rev+int64(i) {
				inOrder = false
				break
			}
		}
		compatible := true
		switch {
		case expected.IsNoStream():
			compatible = first.rev == 0
		case expected.IsStreamExists():
			compatible = first.rev > 0
		default:
			if rev, ok := expected.Revision(); ok {
				compatible = uint64(first.rev) == rev+1
			}
		}
		if inOrder && compatible {
			last := stored[events[len(events)-1].ID]
			return eventstore.AppendResult{NextExpectedRevision: uint64(last.rev), Position: last.pos, Existing: true}, nil
		}
	}
	// Not a retry: an id already stored anywhere makes it a duplicate, even when the
	// expectation failed too.
	for _, e := range events {
		if _, ok := stored[e.ID]; ok {
			return eventstore.AppendResult{}, &eventstore.DuplicateEventError{ID: e.ID, Stream: stream}
		}
	}
	// A wrong expected revision with fresh ids; or the row behind a unique violation is gone
	// (its transaction rolled back): report the failure as is.
	return eventstore.AppendResult{}, cause
}
