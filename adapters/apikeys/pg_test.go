package apikeys_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/projections"
)

// pgDB is a fresh PostgreSQL database holding both the event store and the read models, as
// the nodes of a PostgreSQL deployment share them.
type pgDB struct {
	URL   string
	Store *postgres.Store // migrated
	DB    *projections.DB // the same database, with the registry's tables
}

// openPG opens a pgDB on a fresh database of the test cluster; both handles close when t ends.
func openPG(t testing.TB) pgDB {
	t.Helper()
	ctx := context.Background()
	url := pgtest.URL(t)
	store, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sdb, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	db := &projections.DB{SQL: sdb, Dialect: projections.Postgres}
	if err := apikeys.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return pgDB{URL: url, Store: store, DB: db}
}

// openOwnReadModels opens a read-model database of a node's own, apart from the event store
// (an SQLite file, the shape of EventStoreDB with a per-node SQLite file), with the
// registry's tables; it closes when t ends.
func openOwnReadModels(t testing.TB) *projections.DB {
	t.Helper()
	odb, err := sqlitedb.Open(filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = odb.Close() })
	db := &projections.DB{SQL: odb, Dialect: projections.SQLite}
	if err := apikeys.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// newNode returns a key registry (one node's) on store with its read models in db.
func newNode(t testing.TB, store eventstore.Store, db *projections.DB) *apikeys.Keys {
	t.Helper()
	k, err := apikeys.New(store, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
