package projections

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed migrations
var migrationFS embed.FS

// MigrationTable is the goose version table of the read-model schema; the event store keeps
// its own, so the two schemas evolve independently in one database.
const MigrationTable = "waqueue_readmodel_migrations"

// Migrate brings the read-model schema (checkpoints and every projection's tables) up to date.
// It is safe to run at every start and from several processes (goose serialises on PostgreSQL).
func Migrate(ctx context.Context, db *DB) error {
	dir, dialect := "migrations/sqlite", goose.DialectSQLite3
	if db.Dialect == Postgres {
		dir, dialect = "migrations/postgres", goose.DialectPostgres
	}
	sub, err := fs.Sub(migrationFS, dir)
	if err != nil {
		return fmt.Errorf("projections: migrations: %w", err)
	}
	p, err := goose.NewProvider(dialect, db.SQL, sub, goose.WithTableName(MigrationTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("projections: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("projections: migrate %s: %w", db.Dialect, err)
	}
	return nil
}
