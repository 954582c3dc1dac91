package sqlitedb_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/waqueue/waqueue/adapters/sqlitedb"
)

func open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "waqueue.db"))
	if err != nil {
		t.Fatalf("Open: got error %v, want success", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestSettingsOnEveryConnection holds several connections at once and checks each one.
func TestSettingsOnEveryConnection(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	var conns []*sql.Conn
	for range 4 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("Conn: %v", err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		var journal string
		var fk, sync, busy int
		if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if journal != "wal" || fk != 1 || sync != 2 || busy != int(sqlitedb.BusyTimeout.Milliseconds()) {
			t.Fatalf("connection %d: got journal_mode=%s foreign_keys=%d synchronous=%d busy_timeout=%d, want wal 1 2 %d",
				i, journal, fk, sync, busy, sqlitedb.BusyTimeout.Milliseconds())
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestConcurrentReadModifyWrite runs read-then-write transactions from many goroutines. With
// DEFERRED transactions some would fail with SQLITE_BUSY on the lock upgrade; with BEGIN
// IMMEDIATE all succeed and no update is lost.
func TestConcurrentReadModifyWrite(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	const goroutines, increments = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				if err := increment(ctx, db); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("read-modify-write transaction: got error %v (busy: %v), want success", err, sqlitedb.IsBusy(err))
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT n FROM counter").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != goroutines*increments {
		t.Fatalf("counter: got %d, want %d (lost updates)", n, goroutines*increments)
	}
}

func increment(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT n FROM counter").Scan(&n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE counter SET n = ?", n+1); err != nil {
		return err
	}
	return tx.Commit()
}

func TestForeignKeysEnforced(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE parent (id INTEGER PRIMARY KEY);
		CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent(id))`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO child (id, parent) VALUES (1, 42)"); err == nil {
		t.Fatalf("insert referencing a missing parent: got success, want a foreign key error")
	}
}

func TestIsUniqueViolation(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE u (id INTEGER PRIMARY KEY, k TEXT UNIQUE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO u VALUES (1, 'a')"); err != nil {
		t.Fatal(err)
	}
	_, err := db.ExecContext(ctx, "INSERT INTO u VALUES (2, 'a')")
	if !sqlitedb.IsUniqueViolation(err) {
		t.Fatalf("duplicate UNIQUE key: IsUniqueViolation(%v) = false, want true", err)
	}
	_, err = db.ExecContext(ctx, "INSERT INTO u VALUES (1, 'b')")
	if !sqlitedb.IsUniqueViolation(err) {
		t.Fatalf("duplicate PRIMARY KEY: IsUniqueViolation(%v) = false, want true", err)
	}
	_, err = db.ExecContext(ctx, "INSERT INTO nope VALUES (1)")
	if err == nil || sqlitedb.IsUniqueViolation(err) {
		t.Fatalf("missing table: got error %v, IsUniqueViolation true, want an error that is not a unique violation", err)
	}
	if sqlitedb.IsUniqueViolation(errors.New("UNIQUE constraint failed")) {
		t.Fatalf("a plain error: IsUniqueViolation = true, want false")
	}
}

func TestOpenRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "a.db?mode=ro", "a#b"} {
		if db, err := sqlitedb.Open(p); !errors.Is(err, sqlitedb.ErrInvalidPath) {
			if db != nil {
				db.Close()
			}
			t.Fatalf("Open(%q): got error %v, want ErrInvalidPath", p, err)
		}
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reopen.db")
	db, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('a', 'b')"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SELECT v FROM kv WHERE k = 'a'").Scan(&v); err != nil || v != "b" {
		t.Fatalf("after reopen: got %q, %v, want \"b\", nil", v, err)
	}
}
