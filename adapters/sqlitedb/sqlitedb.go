// Package sqlitedb opens the SQLite database of waqueue's embedded mode: one file shared by the
// event store, the read models and whatsmeow's session store, through the pure-Go driver
// modernc.org/sqlite (no cgo).
//
// Every connection of the pool is configured alike:
//   - journal_mode=WAL: readers never block the writer and the writer never blocks readers;
//   - synchronous=FULL: a committed transaction is on disk (the WAL is fsynced at every commit),
//     so an accepted command's events are durable before the caller gets its answer (G6);
//   - foreign_keys=ON: required by whatsmeow's sqlstore and wanted by read models;
//   - busy_timeout: a connection that finds the database locked waits up to BusyTimeout instead
//     of failing at once with SQLITE_BUSY.
//
// # One writer
//
// SQLite allows one writer at a time per database file. waqueue does not funnel writes through a
// single connection; instead every read-write transaction is begun with BEGIN IMMEDIATE (the
// DSN's _txlock=immediate), which takes the write lock when the transaction starts, queueing
// behind the current writer under busy_timeout. That matters: a DEFERRED transaction that reads
// and then writes would try to upgrade its lock mid-way, and in WAL mode that upgrade fails at
// once with SQLITE_BUSY (the busy handler cannot help, because the transaction's snapshot is
// already stale) whenever another writer committed in between. With IMMEDIATE, a transaction's
// reads and writes see one consistent state, and transactions commit one after another.
//
// Consequences for callers:
//   - use db.BeginTx(ctx, nil) (or db.Exec) for anything that writes; keep write transactions
//     short, since they hold the only write lock;
//   - use plain queries, or BeginTx with &sql.TxOptions{ReadOnly: true} (a DEFERRED
//     transaction that never takes the write lock), for reads; many readers run concurrently;
//   - writers in one process may additionally serialize themselves (the event store does, with a
//     mutex) so that they do not spin in SQLite's busy handler.
//
// # Sharing the file
//
// Each package keeps its own tables and its own migration history (for goose, its own version
// table name). whatsmeow's session store takes the same handle:
// sqlstore.NewWithDB(db, "sqlite3", log) and then Container.Upgrade; it needs the foreign keys
// Open turns on. Use a file (t.TempDir() in tests), not :memory:, which would give every
// connection of the pool its own empty database.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// DriverName is the database/sql driver name registered by modernc.org/sqlite.
const DriverName = "sqlite"

// BusyTimeout is how long a connection waits for a lock held by another connection before it
// fails with SQLITE_BUSY.
const BusyTimeout = 30 * time.Second

// ErrInvalidPath reports a database path that cannot be used.
var ErrInvalidPath = errors.New("sqlitedb: invalid database path")

// DSN returns the data source name Open uses for the database file at path. It is exported for
// callers that must hand a DSN to a library (for example whatsmeow's sqlstore.New with driver
// DriverName); prefer Open, which also checks the settings took effect.
func DSN(path string) (string, error) {
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return "", fmt.Errorf("%w: %q (want a file path without '?' or '#', not a URI or :memory:)", ErrInvalidPath, path)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode(), nil
}

// Open opens (creating if needed) the SQLite database file at path with the settings described
// in the package documentation, and checks that they took effect. The caller closes the
// returned *sql.DB.
func Open(path string) (*sql.DB, error) {
	dsn, err := DSN(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open(DriverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %q: %w", path, err)
	}
	// Keep a few connections open: each new connection re-runs the pragmas above.
	db.SetMaxIdleConns(8)
	if err := check(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitedb: open %q: %w", path, err)
	}
	return db, nil
}

// check verifies the connection settings on one connection of db.
func check(db *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), BusyTimeout)
	defer cancel()
	var journal string
	var fk, sync, busy int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
		return err
	}
	const syncFull = 2
	if !strings.EqualFold(journal, "wal") || fk != 1 || sync != syncFull || busy != int(BusyTimeout.Milliseconds()) {
		return fmt.Errorf("connection settings did not take effect: journal_mode=%s foreign_keys=%d synchronous=%d busy_timeout=%d, want wal 1 %d %d",
			journal, fk, sync, busy, syncFull, BusyTimeout.Milliseconds())
	}
	return nil
}

// IsUniqueViolation reports whether err is SQLite's UNIQUE or PRIMARY KEY constraint failure.
func IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code()
	return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// IsBusy reports whether err is SQLite's SQLITE_BUSY (a lock was not acquired within the busy
// timeout) in any of its extended forms.
func IsBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code()&0xff == sqlite3.SQLITE_BUSY
}
