package webhooks

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"

	"github.com/waqueue/waqueue/projections"
)

//go:embed migrations
var migrationFS embed.FS

// MigrationTable is the goose version table of the webhook schema, separate from the read
// models' so the two evolve independently in one database.
const MigrationTable = "waqueue_webhooks_migrations"

// Migrate brings the tables webhooks, webhook_deliveries and webhook_attempts up to date in
// db (the read-model database, where the Outbox projection commits its checkpoint). Safe at
// every start.
func Migrate(ctx context.Context, db *projections.DB) error {
	p, err := migrationProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("webhooks: migrate %s: %w", db.Dialect, err)
	}
	return nil
}

func migrationProvider(db *projections.DB) (*goose.Provider, error) {
	dir, dialect := "migrations/sqlite", goose.DialectSQLite3
	if db.Dialect == projections.Postgres {
		dir, dialect = "migrations/postgres", goose.DialectPostgres
	}
	sub, err := fs.Sub(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("webhooks: migrations: %w", err)
	}
	p, err := goose.NewProvider(dialect, db.SQL, sub, goose.WithTableName(MigrationTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("webhooks: migrations: %w", err)
	}
	return p, nil
}
