package projections

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Dialect is the SQL engine that holds the read models.
type Dialect string

const (
	// SQLite is the embedded default (modernc.org/sqlite).
	SQLite Dialect = "sqlite"
	// Postgres is PostgreSQL through pgx's database/sql driver.
	Postgres Dialect = "postgres"
)

// DB is the read-model database. Projections write their SQL once, with PostgreSQL's $N
// placeholders, and DB rewrites them for SQLite (?N), so the same statements run on both.
// Keep to the common subset: INSERT … ON CONFLICT … DO UPDATE, integer unix-microsecond times,
// TEXT and BIGINT columns.
type DB struct {
	SQL     *sql.DB
	Dialect Dialect
}

// Rebind rewrites $N placeholders for the dialect.
func (db *DB) Rebind(q string) string { return rebind(db.Dialect, q) }

// ExecContext runs q after Rebind.
func (db *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return db.SQL.ExecContext(ctx, db.Rebind(q), args...)
}

// QueryContext runs q after Rebind.
func (db *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.SQL.QueryContext(ctx, db.Rebind(q), args...)
}

// QueryRowContext runs q after Rebind.
func (db *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return db.SQL.QueryRowContext(ctx, db.Rebind(q), args...)
}

// Begin starts a read-write transaction.
func (db *DB) Begin(ctx context.Context) (*Tx, error) {
	tx, err := db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("projections: begin: %w", err)
	}
	return &Tx{Tx: tx, Dialect: db.Dialect}, nil
}

// BeginRead starts a read-only transaction that sees one snapshot for all its statements
// (PostgreSQL: REPEATABLE READ; SQLite: a deferred transaction, whose first read fixes its WAL
// snapshot, and which takes no write lock). Roll it back when done.
func (db *DB) BeginRead(ctx context.Context) (*Tx, error) {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.Dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.SQL.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("projections: begin read: %w", err)
	}
	return &Tx{Tx: tx, Dialect: db.Dialect}, nil
}

// querier is what reads need of a DB or a Tx.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

var (
	_ querier = (*DB)(nil)
	_ querier = (*Tx)(nil)
)

// Tx is a read-model transaction that rebinds placeholders like DB.
type Tx struct {
	*sql.Tx
	Dialect Dialect
}

// ExecContext runs q after rebinding.
func (tx *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return tx.Tx.ExecContext(ctx, rebind(tx.Dialect, q), args...)
}

// QueryContext runs q after rebinding.
func (tx *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return tx.Tx.QueryContext(ctx, rebind(tx.Dialect, q), args...)
}

// QueryRowContext runs q after rebinding.
func (tx *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return tx.Tx.QueryRowContext(ctx, rebind(tx.Dialect, q), args...)
}

func rebind(d Dialect, q string) string {
	if d != SQLite || !strings.Contains(q, "$") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q))
	inString := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\'' {
			inString = !inString
		}
		if c == '$' && !inString && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
