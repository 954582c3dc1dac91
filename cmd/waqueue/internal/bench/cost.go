package bench

import (
	"context"
	"database/sql"
	"time"
)

// costMeter measures what a stretch of work costs: the process's CPU (user and system), the
// PostgreSQL server's CPU (its backends included; nothing for pid 0: SQLite, or a server not
// on this machine) and, given a stats connection, the database's committed transactions.
type costMeter struct {
	pid       int
	stats     *sql.DB
	cpu0, db0 time.Duration
	xacts0    int64
}

// startCost starts measuring the server pid's CPU (see serverPID) and, when stats is not nil,
// the transactions committed in stats' database (see openStats).
func startCost(ctx context.Context, pid int, stats *sql.DB) *costMeter {
	m := &costMeter{pid: pid, stats: stats}
	m.xacts0, _ = pgStats(ctx, stats) // before the clocks: the query is not the work's
	m.cpu0, m.db0 = processCPU(), postgresCPU(pid)
	return m
}

// opCost is what one operation cost on average.
type opCost struct {
	CPUus   float64 // the process's CPU, µs
	DBCPUus float64 // the PostgreSQL server's CPU, µs (0: SQLite, or not on this machine)
	DBXacts float64 // committed transactions (0 without a stats connection)
}

// stop ends the measurement and returns its cost per one of n operations (n below 1 counts
// as 1).
func (m *costMeter) stop(ctx context.Context, n int) opCost {
	cpu, dbCPU := processCPU()-m.cpu0, postgresCPU(m.pid)-m.db0
	xacts1, _ := pgStats(ctx, m.stats)
	return opCost{CPUus: perReq(cpu, n), DBCPUus: perReq(dbCPU, n), DBXacts: float64(xacts1-m.xacts0) / float64(max(n, 1))}
}

// perReq is d per one of n, in microseconds.
func perReq(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(max(n, 1))
}
