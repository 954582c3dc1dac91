package sqlite

// SetScanWindow sets how many rows one filtered Subscribe query may scan, so that a test can
// cross several windows with few events.
func SetScanWindow(o *Options, rows int64) { o.scanWindow = rows }

// PreparedStatements returns how many statement texts s keeps prepared.
func PreparedStatements(s *Store) int {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	return len(s.stmts.byText)
}

// MaxPreparedStatements is maxStmts.
const MaxPreparedStatements = maxStmts
