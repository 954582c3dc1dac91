package postgres

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

const eventColumns = `tx_id, seq, id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at`

// visible is the xid8 snapshot condition: only events of transactions older than every
// transaction still running (see the package doc).
const visible = `tx_id < pg_snapshot_xmin(pg_current_snapshot())`

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, dir eventstore.Direction, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	q := `SELECT ` + eventColumns + ` FROM waqueue_events WHERE stream = $1 AND revision >= $2 ORDER BY revision`
	if dir == eventstore.Backwards {
		q = `SELECT ` + eventColumns + ` FROM waqueue_events WHERE stream = $1 AND revision <= $2 ORDER BY revision DESC`
	}
	// Revisions are bigint: clamp from (End is MaxUint64).
	bound := int64(math.MaxInt64)
	if from < math.MaxInt64 {
		bound = int64(from)
	}
	args := []any{stream, bound}
	if limit > 0 {
		q += ` LIMIT $3`
		args = append(args, limit)
	}
	evs, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: read stream %q: %w", stream, err)
	}
	if len(evs) == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM waqueue_events WHERE stream = $1)`, stream).Scan(&exists); err != nil {
			return nil, fmt.Errorf("postgres: read stream %q: %w", stream, err)
		}
		if !exists {
			return nil, fmt.Errorf("%w: %q", eventstore.ErrStreamNotFound, stream)
		}
	}
	return evs, nil
}

// ReadEventByID returns the event stored under id, in whichever stream, and false if there is
// none: one lookup on the id index. Command handlers use it to find the event that accepted an
// idempotency key without scanning the stream.
func (s *Store) ReadEventByID(ctx context.Context, id uuid.UUID) (eventstore.RecordedEvent, bool, error) {
	if s.isClosed() {
		return eventstore.RecordedEvent{}, false, eventstore.ErrClosed
	}
	evs, err := s.query(ctx, `SELECT `+eventColumns+` FROM waqueue_events WHERE id = $1`, [16]byte(id))
	if err != nil {
		return eventstore.RecordedEvent{}, false, fmt.Errorf("postgres: read event %s: %w", id, err)
	}
	if len(evs) == 0 {
		return eventstore.RecordedEvent{}, false, nil
	}
	return evs[0], true, nil
}

// ReadAll implements eventstore.Store. It returns only events below the snapshot horizon
// (see the package doc): an event is not returned while a transaction older than it is open,
// and neither is anything after it. So that a caller reads its own writes, ReadAll first waits
// (polling with a short backoff, at most Options.ReadWait) for the transactions that hold
// back events committed before the call to end; appends take milliseconds, so this wait is
// short unless some transaction of the cluster stays open, in which case ReadAll returns the
// events before it once ReadWait has passed.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int, filter eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	if err := s.waitForHorizon(ctx, after); err != nil {
		return nil, fmt.Errorf("postgres: read all after %s: %w", after, err)
	}
	args := []any{after.Commit, clampSeq(after.Prepare)}
	cond := filterSQL(filter, &args)
	q := `SELECT ` + eventColumns + ` FROM waqueue_events
WHERE (tx_id, seq) > ($1::xid8, $2::bigint) AND ` + visible + cond + `
ORDER BY tx_id, seq`
	if limit > 0 {
		args = append(args, limit)
		q += ` LIMIT $` + strconv.Itoa(len(args))
	}
	evs, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: read all after %s: %w", after, err)
	}
	return evs, nil
}

// waitForHorizon waits, at most Options.ReadWait, until the snapshot horizon has passed the
// last event committed now (if that event is after the position after).
func (s *Store) waitForHorizon(ctx context.Context, after eventstore.Position) error {
	var lastTx *uint64
	var lastSeq *int64
	var xmin uint64
	err := s.pool.QueryRow(ctx, `SELECT e.tx_id, e.seq, pg_snapshot_xmin(pg_current_snapshot())
FROM (SELECT 1) one LEFT JOIN LATERAL (
  SELECT tx_id, seq FROM waqueue_events ORDER BY tx_id DESC, seq DESC LIMIT 1) e ON true`).Scan(&lastTx, &lastSeq, &xmin)
	if err != nil {
		return err
	}
	if lastTx == nil || *lastTx < xmin || !after.Less(eventstore.Position{Commit: *lastTx, Prepare: uint64(*lastSeq)}) {
		return nil
	}
	target := *lastTx
	deadline := time.Now().Add(s.opts.ReadWait)
	backoff := time.Millisecond
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
		if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())`).Scan(&xmin); err != nil {
			return err
		}
		if target < xmin {
			return nil
		}
	}
	return nil
}

func clampSeq(p uint64) int64 {
	if p > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(p)
}

// filterSQL renders f as " AND ..." conditions, appending its parameters to args.
func filterSQL(f eventstore.Filter, args *[]any) string {
	var b strings.Builder
	if len(f.StreamPrefixes) > 0 {
		pats := make([]string, len(f.StreamPrefixes))
		for i, p := range f.StreamPrefixes {
			pats[i] = likeEscape(p) + "%"
		}
		*args = append(*args, pats)
		b.WriteString(` AND stream LIKE ANY ($` + strconv.Itoa(len(*args)) + `::text[])`)
	}
	if len(f.EventTypes) > 0 {
		*args = append(*args, f.EventTypes)
		b.WriteString(` AND type = ANY ($` + strconv.Itoa(len(*args)) + `::text[])`)
	}
	return b.String()
}

// likeEscaper escapes LIKE's wildcards (with the default escape character, backslash). One
// for the package (safe for concurrent use): a Replacer builds its tables on first use, and one
// per call (per live page read) was 6 % of all bytes `bench api` allocated.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// likeEscape escapes LIKE's wildcards (with the default escape character, backslash).
func likeEscape(s string) string {
	return likeEscaper.Replace(s)
}

// query runs q and scans events.
func (s *Store) query(ctx context.Context, q string, args ...any) ([]eventstore.RecordedEvent, error) {
	return s.queryN(ctx, 0, q, args...)
}

// queryN is query with room for n events preallocated.
func (s *Store) queryN(ctx context.Context, n int, q string, args ...any) ([]eventstore.RecordedEvent, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows, n)
}

// preallocEvents is the most events a scan allocates room for before it sees them: a live
// subscription's page of up to thousands mostly returns a handful (a page of 5,000 reserved
// ~1 MB per wake-up: GBs a minute at 10,000 sending connections, and the node's RSS). 16, not
// 64: bench api's live pages held 6–7 events, and the 12 kB reserved per wake-up were 6 % of
// the bytes allocated per enqueue (issue 12); a catch-up passes the previous page's size.
const preallocEvents = 16

func scanEvents(rows pgx.Rows, n int) ([]eventstore.RecordedEvent, error) {
	defer rows.Close()
	evs := make([]eventstore.RecordedEvent, 0, min(n, preallocEvents))
	var r eventRow // reused: pgx copies every value out of its buffer
	for rows.Next() {
		if err := r.scan(rows, false); err != nil {
			return nil, err
		}
		evs = append(evs, r.event())
	}
	return evs, rows.Err()
}

// scanEventsIf scans rows of eventColumns followed by a boolean and keeps the events for which
// keep, called with every event and its boolean, returns true. The result has room for
// max(room, preallocEvents) events before it grows.
func scanEventsIf(rows pgx.Rows, room int, keep func(e eventstore.RecordedEvent, flag bool) bool) ([]eventstore.RecordedEvent, error) {
	defer rows.Close()
	evs := make([]eventstore.RecordedEvent, 0, max(room, preallocEvents))
	var r eventRow
	for rows.Next() {
		if err := r.scan(rows, true); err != nil {
			return nil, err
		}
		if e := r.event(); keep(e, r.flag) {
			evs = append(evs, e)
		}
	}
	return evs, rows.Err()
}

// eventRow holds the scan destinations of one row of eventColumns (and a boolean after them).
type eventRow struct {
	e         eventstore.RecordedEvent
	seq, rev  int64
	data      []byte
	flag      bool
	dest      []any
	destsFlag []any
}

func (r *eventRow) scan(rows pgx.Rows, withFlag bool) error {
	if r.dest == nil {
		r.dest = []any{&r.e.Position.Commit, &r.seq, (*[16]byte)(&r.e.ID), &r.e.Stream, &r.rev, &r.e.Type, &r.data,
			&r.e.Metadata.TenantID, &r.e.Metadata.Actor, &r.e.Metadata.CorrelationID, &r.e.Metadata.CausationID, &r.e.RecordedAt}
		r.destsFlag = append(r.dest[:len(r.dest):len(r.dest)], &r.flag)
	}
	if withFlag {
		return rows.Scan(r.destsFlag...)
	}
	return rows.Scan(r.dest...)
}

// event returns the event scanned last.
func (r *eventRow) event() eventstore.RecordedEvent {
	e := r.e
	e.Position.Prepare = uint64(r.seq)
	e.Revision = uint64(r.rev)
	e.Data = nil
	if len(r.data) > 0 {
		e.Data = r.data
	}
	e.RecordedAt = e.RecordedAt.UTC()
	return e
}

// page is one step of a subscription's scan of the global log.
type page struct {
	events []eventstore.RecordedEvent
	// cursor is where the next page starts: the last event scanned, matching or not, or a
	// point just below the snapshot horizon when the scan reached it.
	cursor eventstore.Position
	// more is true when the page was full: more events are visible right now.
	more bool
	// pending is true when committed events exist past the horizon, held back by an older
	// open transaction.
	pending bool
}

// scanPage reads the next page after cursor: up to PageSize visible events of the whole log, in
// one statement, of which it keeps those the filter selects (the others come without their
// data), so a filter that rarely matches does not make every wake-up rescan the log from the
// last matching event, and a filter that matches most events costs one index scan per page
// (it used to cost two: one to find the page's end, OFFSET PageSize-1, then the fetch).
//
// Every page is read in a read-only transaction that leaves the planner only the primary key's
// index (pagePlan): the statement then reads the page's entries in order and nothing more.
// Left to its statistics, PostgreSQL planned the page reads from estimates that are stale
// right after a large append (a broadcast of 100,000 events, or a rebuild after an import): it
// read every event past the cursor into a bitmap and sorted them, and the "anything held back"
// check scanned the whole table, once per page, so catching up on N events cost O(N²) (issue
// 12's catch-up profile: 50–400 ms per page of 5,000 on a table of 100,000 events).
//
// room is how many events the page's slice has room for before it grows (at most
// preallocEvents below it): the prefetch of a catch-up passes the previous page's count.
func (s *Store) scanPage(ctx context.Context, cursor eventstore.Position, filter eventstore.Filter, room int) (page, error) {
	n := s.opts.PageSize
	query, args := pageQuery(cursor, filter, n)
	// One round trip: the transaction, its planner settings, the page and the log's last event
	// are sent together. A connection left inside the transaction by an error is not reused (the
	// pool discards it).
	b := &pgx.Batch{}
	b.Queue(`BEGIN READ ONLY`)
	b.Queue(pagePlan)
	b.Queue(query, args...)
	b.Queue(lastEvent)
	b.Queue(`COMMIT`)
	br := s.pool.SendBatch(ctx, b)
	pg, err := readPage(br, cursor, n, room)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return page{}, err
	}
	return pg, nil
}

// pageQuery is the statement of a page of n events after cursor: eventColumns (data only of the
// events filter selects) and whether filter selects the event.
func pageQuery(cursor eventstore.Position, filter eventstore.Filter, n int) (string, []any) {
	args := []any{cursor.Commit, clampSeq(cursor.Prepare), n}
	match := "true"
	if cond := filterSQL(filter, &args); cond != "" {
		match = strings.TrimPrefix(cond, " AND ")
	}
	return `SELECT tx_id, seq, id, stream, revision, type, CASE WHEN ` + match + ` THEN data END,
tenant_id, actor, correlation_id, causation_id, recorded_at, ` + match + `
FROM waqueue_events WHERE (tx_id, seq) > ($1::xid8, $2::bigint) AND ` + visible + `
ORDER BY tx_id, seq LIMIT $3`, args
}

// readPage reads the results of scanPage's batch.
func readPage(br pgx.BatchResults, cursor eventstore.Position, n, room int) (page, error) {
	for range 2 { // BEGIN, pagePlan
		if _, err := br.Exec(); err != nil {
			return page{}, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return page{}, err
	}
	pg := page{cursor: cursor}
	scanned := 0
	pg.events, err = scanEventsIf(rows, room, func(e eventstore.RecordedEvent, matched bool) bool {
		scanned++
		pg.cursor = e.Position
		return matched
	})
	if err != nil {
		return page{}, err
	}
	var last *uint64
	var lastSeq *int64
	if err := br.QueryRow().Scan(&last, &lastSeq); err != nil {
		return page{}, err
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return page{}, err
	}
	pg.more = scanned == n
	// Anything past the cursor of a page that is not full is either held back by an older open
	// transaction or committed since the read.
	pg.pending = !pg.more && last != nil && pg.cursor.Less(eventstore.Position{Commit: *last, Prepare: uint64(*lastSeq)})
	return pg, nil
}

// pagePlan confines a page read's planner to index scans, for the rest of its transaction
// (scanPage). A page is a short range of the primary key in its order; nothing else reads it
// in time proportional to the page rather than to the table.
const pagePlan = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
set_config('enable_sort', 'off', true)`

// lastEvent reads the position of the log's last event (NULLs when the log is empty).
const lastEvent = `SELECT e.tx_id, e.seq FROM (SELECT 1) one LEFT JOIN LATERAL (
  SELECT tx_id, seq FROM waqueue_events ORDER BY tx_id DESC, seq DESC LIMIT 1) e ON true`

// Subscribe implements eventstore.Store. Catch-up reads pages of Options.PageSize events;
// live delivery waits for a notification, polling with backoff only while committed events
// are held back by an older open transaction (see the package doc).
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	return s.subscribe(ctx, after, filter, func(evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if err := handle(e); err != nil {
				return fmt.Errorf("postgres: subscription handler at %s: %w", e.Position, err)
			}
		}
		return nil
	})
}

// SubscribePages implements eventstore.PageSubscriber: Subscribe, handing over each page read
// (the events of it the filter selects) in one call.
func (s *Store) SubscribePages(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func([]eventstore.RecordedEvent) error) error {
	return s.subscribe(ctx, after, filter, func(evs []eventstore.RecordedEvent) error {
		if err := handle(evs); err != nil {
			return fmt.Errorf("postgres: subscription handler at %s: %w", evs[len(evs)-1].Position, err)
		}
		return nil
	})
}

// subscribe is Subscribe and SubscribePages: handle is called with every non-empty page, and
// its error is returned as it is.
func (s *Store) subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func([]eventstore.RecordedEvent) error) error {
	if err := s.ensureListener(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cursor := after
	backoff := s.opts.PendingPoll
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// While catching up, the next page is fetched while the handler works on the current one.
	type fetched struct {
		pg   page
		err  error
		wake <-chan struct{}
	}
	var prefetch chan fetched
	// atTail is set once the subscription has read a page that was not full and waited: its
	// next read is of the tail. since is when its timer woke it (zero: a notification did).
	atTail := false
	var since time.Time
	defer func() {
		if prefetch != nil {
			cancel()
			<-prefetch
		}
	}()
	for {
		var f fetched
		if prefetch != nil {
			f = <-prefetch
			prefetch = nil
		} else if atTail {
			// Woken at the tail: share the read with the store's other subscriptions (tail.go).
			f.pg, f.wake, f.err = s.tailPage(ctx, cursor, filter, since)
		} else {
			// Take the wake-up channel before reading, so a commit during the read is not missed.
			f.wake = s.wake.wait()
			f.pg, f.err = s.scanPage(ctx, cursor, filter, 0)
		}
		pg, err, wake := f.pg, f.err, f.wake
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.isClosed() {
				return eventstore.ErrClosed
			}
			return fmt.Errorf("postgres: subscribe after %s: %w", cursor, err)
		}
		if pg.more {
			prefetch = make(chan fetched, 1)
			// The page after a full one is likely as full: room for as many events as this one
			// kept (a live wake-up, which reads no further page, reserves little).
			go func(from eventstore.Position, room int, out chan<- fetched) {
				wake := s.wake.wait()
				pg, err := s.scanPage(ctx, from, filter, room)
				out <- fetched{pg: pg, err: err, wake: wake}
			}(pg.cursor, len(pg.events), prefetch)
		}
		if len(pg.events) > 0 {
			if err := handle(pg.events); err != nil {
				return err
			}
		}
		cursor = pg.cursor
		if err := ctx.Err(); err != nil {
			return err
		}
		if pg.more {
			continue
		}
		wait := s.opts.IdlePoll
		if pg.pending {
			wait = backoff
			backoff = min(2*backoff, s.opts.MaxPendingPoll)
		} else {
			backoff = s.opts.PendingPoll
		}
		timer.Reset(wait)
		atTail, since = true, time.Time{}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
			if s.isClosed() {
				return eventstore.ErrClosed
			}
		case <-timer.C:
			since = time.Now()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
