package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// ErrNotFound is returned by queries for a row that does not exist or belongs to another
// tenant (G9: another tenant's id is indistinguishable from an unknown one).
var ErrNotFound = errors.New("projections: not found")

// connectionFilter selects the given event types of connection streams.
func connectionFilter(types ...string) eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix}, EventTypes: types}
}

// decodeConn decodes a connection event. ok is false for events that are not connection events
// (another stream or an unknown type); an undecodable body is an error, so the batch fails and
// the failure is visible in the runner's status.
func decodeConn(e eventstore.RecordedEvent) (connID string, ev connection.Event, ok bool, err error) {
	connID, isConn := connection.IDFromStream(e.Stream)
	if !isConn || !connection.IsKnownType(e.Type) {
		return "", nil, false, nil
	}
	ev, err = connection.Decode(e.Type, e.Data)
	if err != nil {
		return "", nil, false, fmt.Errorf("event %s (%s at %s): %w", e.ID, e.Type, e.Position, err)
	}
	return connID, ev, true, nil
}

// decodedEvent is an event of a batch as decodeEvents read it.
type decodedEvent struct {
	connID string
	// ev is the event, unless it is a MessageQueued (queued): that is in mq, by value (a
	// catch-up decodes them by the hundred thousand; an Event interface would allocate each).
	ev     connection.Event
	mq     connection.MessageQueued
	queued bool
	ok     bool // a connection event (decodeConn)
	// runnable: a MessageQueued a queue run can hold (runnable), when asked for.
	runnable bool
}

// parallelDecodeMin is the fewest events per goroutine decodeEvents starts.
const parallelDecodeMin = 1024

// decodeEvents decodes a batch's connection events (decodeConn) and, with runs, tells which
// MessageQueued a queue run can hold. A large batch is decoded on every CPU: decoding is most
// of a projection's CPU in a catch-up, and the events are independent until applied in order.
// The error is the first event's in log order.
func decodeEvents(events []eventstore.RecordedEvent, runs bool) ([]decodedEvent, error) {
	out := make([]decodedEvent, len(events))
	decodePart := func(lo, hi int) error {
		var ids *connection.BroadcastMessageIDs
		var qd connection.QueuedDecoder // the messages of a broadcast share their times
		for i := lo; i < hi; i++ {
			e := events[i]
			if e.Type == connection.TypeMessageQueued {
				connID, isConn := connection.IDFromStream(e.Stream)
				if !isConn {
					continue
				}
				mq, err := qd.Decode(e.Data)
				if err != nil {
					return fmt.Errorf("event %s (%s at %s): %w", e.ID, e.Type, e.Position, err)
				}
				out[i] = decodedEvent{connID: connID, mq: mq, queued: true, ok: true}
				if runs {
					out[i].runnable = runnable(mq, &ids)
				}
				continue
			}
			connID, ev, ok, err := decodeConn(e)
			if err != nil {
				return err
			}
			out[i] = decodedEvent{connID: connID, ev: ev, ok: ok}
		}
		return nil
	}
	n := len(events)
	parts := min(runtime.GOMAXPROCS(0), n/parallelDecodeMin)
	if parts <= 1 {
		return out, decodePart(0, n)
	}
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := 1; p < parts; p++ {
		wg.Go(func() { errs[p] = decodePart(p*n/parts, (p+1)*n/parts) })
	}
	errs[0] = decodePart(0, n/parts)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// us converts a time to unix microseconds; the zero time is 0.
func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromUS converts unix microseconds to a UTC time; 0 is the zero time.
func fromUS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// idText is a uuid as stored: "" for the zero uuid.
func idText(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

// parseID reads a stored uuid ("" is the zero uuid).
func parseID(s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, nil
	}
	return uuid.Parse(s)
}

// execer is what Tx and DB share.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

var (
	_ execer = (*DB)(nil)
	_ execer = (*Tx)(nil)
)

// tenantOf returns the tenant of connID from table (a conn_id → tenant_id table the projection
// keeps from ConnectionRegistered), or fallback (the event's metadata) when unknown.
func tenantOf(ctx context.Context, q execer, table, connID, fallback string, cache map[string]string) (string, error) {
	if t, ok := cache[connID]; ok {
		return t, nil
	}
	var t string
	err := q.QueryRowContext(ctx, `SELECT tenant_id FROM `+table+` WHERE conn_id = $1`, connID).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		t = fallback
	} else if err != nil {
		return "", fmt.Errorf("tenant of %q: %w", connID, err)
	}
	cache[connID] = t
	return t, nil
}

// execAll runs statements in order, stopping at the first error.
func execAll(ctx context.Context, tx *Tx, stmts ...string) error {
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// valuesRow appends to sb one row "(p1,p2,…)" of n placeholders numbered from first+1. On SQLite it writes
// anonymous "?" placeholders: the driver looks every numbered parameter up by name, a cost
// that grows with the statement's parameter count, so multi-row INSERTs with numbered
// parameters are quadratic there.
func valuesRow(sb *strings.Builder, d Dialect, first, n int) {
	sb.WriteByte('(')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		if d == SQLite {
			sb.WriteByte('?')
		} else {
			fmt.Fprintf(sb, "$%d", first+i+1)
		}
	}
	sb.WriteByte(')')
}

// rowSet collects rows column by column for insertRows. Each column is a []string or an
// []int64; every column holds one value per row.
type rowSet struct {
	cols []any
	n    int
}

func newRowSet(kinds ...any) *rowSet {
	cols := make([]any, len(kinds))
	for i, k := range kinds {
		switch k.(type) {
		case string:
			cols[i] = []string(nil)
		case int64:
			cols[i] = []int64(nil)
		default:
			panic(fmt.Sprintf("projections: rowSet column of type %T", k))
		}
	}
	return &rowSet{cols: cols}
}

// grow makes room for n more rows (one allocation per column instead of a doubling series
// while a batch's rows are added) and returns r.
func (r *rowSet) grow(n int) *rowSet {
	for i, c := range r.cols {
		switch c := c.(type) {
		case []string:
			r.cols[i] = slices.Grow(c, n)
		case []int64:
			r.cols[i] = slices.Grow(c, n)
		}
	}
	return r
}

// add appends one row; its values follow the column kinds given to newRowSet.
func (r *rowSet) add(vals ...any) {
	for i, v := range vals {
		switch c := r.cols[i].(type) {
		case []string:
			r.cols[i] = append(c, v.(string))
		case []int64:
			r.cols[i] = append(c, v.(int64))
		}
	}
	r.n++
}

func (r *rowSet) reset() {
	for i, c := range r.cols {
		switch c := c.(type) {
		case []string:
			r.cols[i] = c[:0]
		case []int64:
			r.cols[i] = c[:0]
		}
	}
	r.n = 0
}

// insertRows inserts the rows of r with head ("INSERT INTO t (a, b, …)"). On PostgreSQL it is
// one statement whatever the number of rows, the columns passed as arrays and expanded by
// unnest: one parse and one round trip per batch, instead of a multi-row VALUES list whose text
// and parameter count grow with the rows (issue 12's catch-up). SQLite gets multi-row INSERTs of
// at most maxInsertRows rows.
func insertRows(ctx context.Context, tx *Tx, head string, r *rowSet) error {
	return insertRowsThen(ctx, tx, head, "", r)
}

// insertRowsThen is insertRows with tail (e.g. an ON CONFLICT clause) after the rows of every
// statement.
func insertRowsThen(ctx context.Context, tx *Tx, head, tail string, r *rowSet) error {
	if r.n == 0 {
		return nil
	}
	if tx.Dialect == Postgres {
		var sb strings.Builder
		sb.WriteString(head)
		sb.WriteString(" SELECT * FROM unnest(")
		for i, c := range r.cols {
			if i > 0 {
				sb.WriteByte(',')
			}
			typ := "text[]"
			if _, ok := c.([]int64); ok {
				typ = "bigint[]"
			}
			fmt.Fprintf(&sb, "$%d::%s", i+1, typ)
		}
		sb.WriteByte(')')
		sb.WriteString(tail)
		_, err := tx.ExecContext(ctx, sb.String(), r.cols...)
		return err
	}
	for from := 0; from < r.n; from += maxInsertRows {
		to := min(from+maxInsertRows, r.n)
		var sb strings.Builder
		sb.WriteString(head)
		sb.WriteString(" VALUES ")
		args := make([]any, 0, (to-from)*len(r.cols))
		for row := from; row < to; row++ {
			if row > from {
				sb.WriteByte(',')
			}
			valuesRow(&sb, tx.Dialect, len(args), len(r.cols))
			for _, c := range r.cols {
				switch c := c.(type) {
				case []string:
					args = append(args, c[row])
				case []int64:
					args = append(args, c[row])
				}
			}
		}
		sb.WriteString(tail)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return err
		}
	}
	return nil
}
