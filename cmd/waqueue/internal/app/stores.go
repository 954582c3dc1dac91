// Package app assembles a waqueue server from its configuration: stores, projections, command
// handlers, the dispatcher, the transport and the HTTP API.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
	"github.com/waqueue/waqueue/projections"
)

// Stores is what a server keeps its state in.
type Stores struct {
	// Events is the event store (SQLite, PostgreSQL or EventStoreDB).
	Events eventstore.Store
	// ReadModels holds projections and API keys.
	ReadModels *projections.DB
	// SQL is the database/sql handle of the main database (read models, whatsmeow sessions).
	SQL *sql.DB
	// Dialect is "sqlite" or "postgres" (for whatsmeow's sqlstore).
	Dialect string
	pool    *pgxpool.Pool
}

// OpenStores opens the configured databases and brings every schema up to date.
func OpenStores(ctx context.Context, cfg *config.Config, clock eventstore.Clock) (*Stores, error) {
	s := &Stores{}
	switch cfg.Engine() {
	case "sqlite":
		path := cfg.SQLitePath()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("app: data directory: %w", err)
		}
		db, err := sqlitedb.Open(path)
		if err != nil {
			return nil, err
		}
		s.SQL, s.Dialect = db, "sqlite"
		s.ReadModels = &projections.DB{SQL: db, Dialect: projections.SQLite}
		if cfg.EventStore == "" {
			es, err := sqlite.New(ctx, db, sqlite.Options{Clock: clock})
			if err != nil {
				_ = db.Close()
				return nil, err
			}
			s.Events = es
		}
	case "postgres":
		pcfg, err := postgres.PoolConfig(cfg.DB)
		if err != nil {
			return nil, err
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, fmt.Errorf("app: connect to PostgreSQL: %w", err)
		}
		s.pool = pool
		s.SQL, s.Dialect = stdlib.OpenDBFromPool(pool), "postgres"
		s.ReadModels = &projections.DB{SQL: s.SQL, Dialect: projections.Postgres}
		if cfg.EventStore == "" {
			es := postgres.New(pool, postgres.Options{Clock: clock})
			if err := es.Migrate(ctx); err != nil {
				s.Close()
				return nil, err
			}
			s.Events = es
		}
	}
	if cfg.EventStore != "" {
		es, err := esdb.New(ctx, cfg.EventStore, esdb.Options{Clock: clock})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Events = es
	}
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := projections.Migrate(mctx, s.ReadModels); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases every store.
func (s *Stores) Close() error {
	var errs []error
	if s.Events != nil {
		errs = append(errs, s.Events.Close())
	}
	if s.SQL != nil {
		errs = append(errs, s.SQL.Close())
	}
	if s.pool != nil {
		s.pool.Close()
	}
	return errors.Join(errs...)
}
