// Package sqlite is the embedded event store: the eventstore port on a SQLite database opened
// by package sqlitedb (pure Go, no server).
//
// Writes are serialized: an in-process mutex lets one Append at a time into SQLite, and each
// Append runs in a BEGIN IMMEDIATE transaction (see sqlitedb), which also serializes writers in
// other processes sharing the file. A position is the events table's rowid, assigned as max+1
// under that write lock, so positions are assigned in commit order and every reader's snapshot
// is a gapless prefix of the log: reading `position > checkpoint` can never skip an event that
// commits later with a lower position. Position is {Commit: rowid, Prepare: rowid}.
//
// Subscribers wake on commits of this Store through an in-process broadcast, and poll every
// Options.PollInterval for commits made by other processes or other Store values on the same
// file.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
)

var _ eventstore.Store = (*Store)(nil)

// MigrationsTable is the goose version table of this package's schema, named apart from
// goose's default so that other packages can run their own migration sets in the same file.
const MigrationsTable = "waqueue_eventstore_migrations"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateMu serializes migrations within the process: goose takes no lock on SQLite, and
// stores opened concurrently on one file would otherwise race to create the tables.
var migrateMu sync.Mutex

// Migrate brings the event store schema of db up to date. New calls it; it is exported for
// tools that migrate without opening a store. Migrations are serialized within the process;
// goose takes no lock on SQLite, so two processes must not run a first migration of the same
// file at the same moment.
func Migrate(ctx context.Context, db *sql.DB) error {
	migrateMu.Lock()
	defer migrateMu.Unlock()
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithTableName(MigrationsTable))
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// Options configures a Store. The zero value is usable.
type Options struct {
	// Clock stamps RecordedAt on appended events (one reading per Append). Default: time.Now in
	// UTC.
	Clock eventstore.Clock
	// PageSize is how many rows Subscribe reads per query while catching up. Default 2000.
	PageSize int
	// PollInterval is how often an idle Subscribe looks for events committed by other
	// processes; commits of this Store wake it at once. Default 1s.
	PollInterval time.Duration

	// scanWindow bounds how many rows one filtered Subscribe query may scan; tests lower it.
	scanWindow int64
}

func (o *Options) setDefaults() {
	if o.Clock == nil {
		o.Clock = func() time.Time { return time.Now().UTC() }
	}
	if o.PageSize <= 0 {
		o.PageSize = 2000
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.scanWindow <= 0 {
		o.scanWindow = 50_000
	}
}

// Store is the SQLite event store. It is safe for concurrent use.
type Store struct {
	db     *sql.DB
	ownsDB bool
	opts   Options

	writeMu sync.Mutex // one Append at a time in this process

	notifyMu sync.Mutex
	notifyCh chan struct{} // closed and replaced after every commit

	stmts stmtCache // prepared statements (stmts.go)

	closed    atomic.Bool
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// New returns a Store on db, migrating the schema first. db must come from sqlitedb.Open (its
// transactions must begin IMMEDIATE). Close does not close db.
func New(ctx context.Context, db *sql.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlite: New: nil *sql.DB")
	}
	opts.setDefaults()
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	return &Store{
		db:       db,
		opts:     opts,
		notifyCh: make(chan struct{}),
		done:     make(chan struct{}),
	}, nil
}

// Open opens the database file at path with sqlitedb.Open and returns a Store that owns it:
// Close closes the database too.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, db, opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.ownsDB = true
	return s, nil
}

// Close stops running subscriptions (they return eventstore.ErrClosed) and makes every later
// call fail with eventstore.ErrClosed. It closes the database if the Store opened it.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		// Wait for a running Append, which may use the statements.
		s.writeMu.Lock()
		s.closeStmts()
		s.writeMu.Unlock()
		if s.ownsDB {
			// Wait for a running Append to finish before closing the database under it.
			s.writeMu.Lock()
			err = s.db.Close()
			s.writeMu.Unlock()
		}
	})
	return err
}

// changed returns a channel closed at the next commit of this Store.
func (s *Store) changed() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notifyCh
}

func (s *Store) notify() {
	s.notifyMu.Lock()
	close(s.notifyCh)
	s.notifyCh = make(chan struct{})
	s.notifyMu.Unlock()
}

// Append implements eventstore.Store. See the package documentation for how writes are
// serialized. The batch is inserted with one prepared statement in one transaction; the
// events all carry one reading of the clock.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if err := eventstore.Validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	res, wrote, err := s.appendTx(ctx, stream, expected, events)
	if wrote {
		s.notify()
	}
	return res, err
}

func (s *Store) appendTx(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData) (_ eventstore.AppendResult, wrote bool, _ error) {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock from here
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: begin: %w", stream, err)
	}
	defer tx.Rollback()

	var last sql.NullInt64
	if err := s.txQueryRow(ctx, tx, `SELECT MAX(revision) FROM events WHERE stream = ?`, stream).Scan(&last); err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: read revision: %w", stream, err)
	}
	actual := eventstore.NoRevision
	if last.Valid {
		actual = last.Int64
	}

	if len(events) > 0 {
		// Idempotency probe: one index lookup on the first id. A retry of a stored batch is
		// recognized here, before the expected revision is checked (the stream has moved on
		// by the retried batch itself).
		var foundStream string
		var foundRev int64
		err := s.txQueryRow(ctx, tx, `SELECT stream, revision FROM events WHERE id = ?`, events[0].ID[:]).Scan(&foundStream, &foundRev)
		switch {
		case err == nil:
			res, err := s.retried(ctx, tx, stream, expected, events, foundStream, foundRev)
			return res, false, err
		case !errors.Is(err, sql.ErrNoRows):
			return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: look up event id: %w", stream, err)
		}
	}

	if !expected.Check(actual) {
		return eventstore.AppendResult{}, false, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}
	if len(events) == 0 {
		return eventstore.AppendResult{NextExpectedRevision: uint64(max(actual, 0))}, false, nil
	}

	stmt, err := s.txStmt(ctx, tx, `INSERT INTO events (stream, revision, id, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: prepare: %w", stream, err)
	}
	defer stmt.Close()
	recorded := s.opts.Clock().UTC().UnixNano()
	var pos int64
	for i, e := range events {
		meta, err := encodeMetadata(e.Metadata)
		if err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: %w", stream, err)
		}
		var data []byte
		if len(e.Data) > 0 {
			data = e.Data
		}
		r, err := stmt.ExecContext(ctx, stream, actual+1+int64(i), e.ID[:], e.Type, data, meta, recorded)
		if err != nil {
			// Under the write lock the revision cannot collide, so a unique violation is the id.
			if sqlitedb.IsUniqueViolation(err) {
				return eventstore.AppendResult{}, false, &eventstore.DuplicateEventError{ID: e.ID, Stream: stream}
			}
			return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: insert: %w", stream, err)
		}
		if pos, err = r.LastInsertId(); err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: position: %w", stream, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("sqlite: append to %q: commit: %w", stream, err)
	}
	return eventstore.AppendResult{
		NextExpectedRevision: uint64(actual) + uint64(len(events)),
		Position:             position(pos),
	}, true, nil
}

// retried decides an append whose first event id is already stored at (foundStream,
// foundRev): an idempotent success if the whole batch is stored there, in order, at
// consecutive revisions, and the expectation held when it was first appended; otherwise a
// DuplicateEventError.
func (s *Store) retried(ctx context.Context, tx *sql.Tx, stream string, expected eventstore.ExpectedRevision, events []eventstore.EventData, foundStream string, foundRev int64) (eventstore.AppendResult, error) {
	dup := &eventstore.DuplicateEventError{ID: events[0].ID, Stream: stream}
	if foundStream != stream || !expected.Check(foundRev-1) {
		return eventstore.AppendResult{}, dup
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, position FROM events WHERE stream = ? AND revision >= ? ORDER BY revision LIMIT ?`,
		stream, foundRev, len(events))
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("sqlite: append to %q: read stored batch: %w", stream, err)
	}
	defer rows.Close()
	i := 0
	var pos int64
	for ; rows.Next(); i++ {
		var id []byte
		if err := rows.Scan(&id, &pos); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("sqlite: append to %q: read stored batch: %w", stream, err)
		}
		if uuid.UUID(id) != events[i].ID {
			return eventstore.AppendResult{}, dup
		}
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("sqlite: append to %q: read stored batch: %w", stream, err)
	}
	if i != len(events) {
		return eventstore.AppendResult{}, dup
	}
	return eventstore.AppendResult{
		NextExpectedRevision: uint64(foundRev) + uint64(len(events)) - 1,
		Position:             position(pos),
		Existing:             true,
	}, nil
}

const selectEvent = `SELECT position, stream, revision, id, type, data, metadata, recorded_at FROM events`

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, dir eventstore.Direction, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	lim := int64(-1) // SQLite: a negative LIMIT is no limit
	if limit > 0 {
		lim = int64(limit)
	}
	var (
		evs []eventstore.RecordedEvent
		err error
	)
	switch {
	case dir == eventstore.Backwards:
		evs, err = s.query(ctx, selectEvent+` WHERE stream = ? AND revision <= ? ORDER BY revision DESC LIMIT ?`,
			stream, int64(min(from, math.MaxInt64)), lim)
	case from <= math.MaxInt64:
		evs, err = s.query(ctx, selectEvent+` WHERE stream = ? AND revision >= ? ORDER BY revision LIMIT ?`,
			stream, int64(from), lim)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read stream %q: %w", stream, err)
	}
	if len(evs) > 0 {
		return evs, nil
	}
	// Streams never shrink: if the stream exists now, it existed for the read above.
	var one int
	switch err := s.db.QueryRowContext(ctx, `SELECT 1 FROM events WHERE stream = ? LIMIT 1`, stream).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("sqlite: read stream %q: %w", stream, eventstore.ErrStreamNotFound)
	case err != nil:
		return nil, fmt.Errorf("sqlite: read stream %q: %w", stream, err)
	}
	return nil, nil
}

// ReadEventByID returns the event stored under id, in whichever stream, and false if there is
// none: one lookup on the id index. Command handlers use it to find the event that accepted an
// idempotency key without scanning the stream.
func (s *Store) ReadEventByID(ctx context.Context, id uuid.UUID) (eventstore.RecordedEvent, bool, error) {
	if s.closed.Load() {
		return eventstore.RecordedEvent{}, false, eventstore.ErrClosed
	}
	evs, err := s.query(ctx, selectEvent+` WHERE id = ?`, id[:])
	if err != nil {
		return eventstore.RecordedEvent{}, false, fmt.Errorf("sqlite: read event %s: %w", id, err)
	}
	if len(evs) == 0 {
		return eventstore.RecordedEvent{}, false, nil
	}
	return evs[0], true, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int, filter eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	if after.Commit >= math.MaxInt64 {
		return nil, nil
	}
	where, args := filterSQL(filter)
	lim := int64(-1)
	if limit > 0 {
		lim = int64(limit)
	}
	args = append([]any{int64(after.Commit)}, append(args, lim)...)
	evs, err := s.query(ctx, selectEvent+` WHERE position > ?`+where+` ORDER BY position LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read all after %s: %w", after, err)
	}
	return evs, nil
}

// filterSQL renders f as " AND ..." conditions and their arguments. Stream prefixes compare
// bytes (a BLOB substring), so that no collation or character counting gets in the way.
func filterSQL(f eventstore.Filter) (string, []any) {
	var b strings.Builder
	var args []any
	if len(f.StreamPrefixes) > 0 {
		b.WriteString(" AND (")
		for i, p := range f.StreamPrefixes {
			if i > 0 {
				b.WriteString(" OR ")
			}
			b.WriteString("substr(CAST(stream AS BLOB), 1, ?) = ?")
			args = append(args, len(p), []byte(p))
		}
		b.WriteString(")")
	}
	if len(f.EventTypes) > 0 {
		b.WriteString(" AND type IN (")
		for i, t := range f.EventTypes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			args = append(args, t)
		}
		b.WriteString(")")
	}
	return b.String(), args
}

// queryer is *sql.DB or *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]eventstore.RecordedEvent, error) {
	return queryEvents(ctx, s.db, q, args...)
}

func queryEvents(ctx context.Context, db queryer, q string, args ...any) ([]eventstore.RecordedEvent, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []eventstore.RecordedEvent
	for rows.Next() {
		var (
			e        eventstore.RecordedEvent
			pos, rev int64
			id, data []byte
			meta     sql.NullString
			recorded int64
		)
		if err := rows.Scan(&pos, &e.Stream, &rev, &id, &e.Type, &data, &meta, &recorded); err != nil {
			return nil, err
		}
		if len(id) != len(e.ID) {
			return nil, fmt.Errorf("event at position %d has a %d-byte id, want %d", pos, len(id), len(e.ID))
		}
		copy(e.ID[:], id)
		e.Position = position(pos)
		e.Revision = uint64(rev)
		if len(data) > 0 {
			e.Data = json.RawMessage(data)
		}
		if meta.Valid {
			if err := json.Unmarshal([]byte(meta.String), &e.Metadata); err != nil {
				return nil, fmt.Errorf("event %s: metadata: %w", e.ID, err)
			}
		}
		e.RecordedAt = time.Unix(0, recorded).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

func encodeMetadata(m eventstore.Metadata) (any, error) {
	if m == (eventstore.Metadata{}) {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return string(b), nil
}

func position(rowid int64) eventstore.Position {
	return eventstore.Position{Commit: uint64(rowid), Prepare: uint64(rowid)}
}
