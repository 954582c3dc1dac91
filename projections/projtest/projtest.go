// Package projtest opens, for tests, an event store and a read-model database with the
// projections' tables on each engine: SQLite (the events and the read models in one file, as
// the embedded mode runs) and PostgreSQL (one fresh database of pgtest holding both). A
// package whose tests use Postgres stops the shared cluster with pgtest.Main.
package projtest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql's "pgx" driver

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/projections"
)

// Env is one engine's event store and read-model database; both close when the test ends.
type Env struct {
	Store eventstore.Store
	DB    *projections.DB // migrated (projections.Migrate)
	URL   string          // PostgreSQL only: the database's URL
}

// SQLite opens an Env in a fresh SQLite file, the store with opts.
func SQLite(t testing.TB, opts sqlite.Options) *Env {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "waqueue.db")
	store, err := sqlite.Open(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	return migrated(t, &Env{Store: store, DB: &projections.DB{SQL: sdb, Dialect: projections.SQLite}})
}

// Postgres opens an Env in a fresh PostgreSQL database (pgtest), the store with opts on a
// pool of its own.
func Postgres(t testing.TB, opts postgres.Options) *Env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store := postgres.New(pool, opts)
	t.Cleanup(func() { _ = store.Close() })
	sdb, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	return migrated(t, &Env{Store: store, DB: &projections.DB{SQL: sdb, Dialect: projections.Postgres}, URL: url})
}

func migrated(t testing.TB, e *Env) *Env {
	t.Helper()
	if err := projections.Migrate(context.Background(), e.DB); err != nil {
		t.Fatal(err)
	}
	return e
}
