package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// Prepared statements.
//
// Parsing a statement costs the pure-Go SQLite more than running the small ones the store runs
// most: a subscription's live wake-up (the log's end, then the page, whose filter lists every
// event type its projections take) and an append (the stream's revision, the id probe, the
// insert). Profile of api/sqlite/enqueue: preparing them was ≈ 25 % of the process's CPU. The
// store therefore prepares each of its statement texts once and reuses it; database/sql keeps
// one prepared copy per connection and prepares again on a connection that has none. Texts
// built from a filter vary with the filter: the cache holds at most maxStmts of them and runs
// the others unprepared.

// maxStmts bounds the prepared statements a Store keeps.
const maxStmts = 64

type stmtCache struct {
	mu     sync.Mutex
	byText map[string]*sql.Stmt
	closed bool
}

// stmt returns the prepared statement of q, preparing it on first use; nil (run q unprepared)
// when the cache is full or closed, or preparing failed (running it will report why).
func (s *Store) stmt(ctx context.Context, q string) *sql.Stmt {
	c := &s.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.byText[q]; ok {
		return st
	}
	if c.closed || len(c.byText) >= maxStmts {
		return nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	if c.byText == nil {
		c.byText = map[string]*sql.Stmt{}
	}
	c.byText[q] = st
	return st
}

// closeStmts closes the prepared statements; later calls of stmt prepare nothing.
func (s *Store) closeStmts() {
	c := &s.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, st := range c.byText {
		_ = st.Close()
	}
	c.byText = nil
}

// txQuery runs q with args in tx, prepared (see stmt).
func (s *Store) txQuery(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	if st := s.stmt(ctx, q); st != nil {
		return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}

// txQueryRow is txQuery for one row.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	if st := s.stmt(ctx, q); st != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, q, args...)
}

// txStmt returns q prepared for tx; the caller closes it (or the transaction's end does).
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	if st := s.stmt(ctx, q); st != nil {
		return tx.StmtContext(ctx, st), nil
	}
	return tx.PrepareContext(ctx, q)
}

// txQueryer runs queries of tx prepared (see stmt); queryEvents takes it.
type txQueryer struct {
	s  *Store
	tx *sql.Tx
}

func (q txQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return q.s.txQuery(ctx, q.tx, query, args...)
}
