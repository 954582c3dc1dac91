// Package ratelimit keeps the tenants' API rate limits: a token bucket per tenant, refilled at
// the tenant's PerSecond and holding up to its Burst.
//
// Local keeps the buckets in this process: right for one node (SQLite), and what Shared falls
// back to. Shared keeps them in the PostgreSQL read-model database, so that every node sharing
// it draws from one bucket per tenant: N nodes behind a balancer let a tenant through at its
// limit, not N times it.
//
// # Leases
//
// A database round trip per request would make the limit the most expensive part of a cheap
// request, and would serialise a tenant's requests on its row. So a node leases tokens in
// chunks: one atomic statement (INSERT … ON CONFLICT DO UPDATE … RETURNING on the tenant's row
// of rate_buckets) refills the bucket by the time elapsed since its last lease (capped at
// Burst) and takes up to a chunk — the tenant's rate over LeaseChunk (1/20 s), at least one
// token, never more than the bucket holds. The node then spends the chunk locally, one token
// a request. A chunk not spent within LeaseTTL (1 s) is dropped, not returned nor banked: the
// tokens are lost to the cluster, never counted twice.
//
// The bound: every token spent was taken from the shared row, atomically. Over any interval
// of length T the nodes together let a tenant through at most what the row held at its start,
// plus PerSecond×T refilled, plus what the nodes held leased at its start — at most one chunk
// per node. From a full bucket with no chunk held: at most Burst + PerSecond×T.
//
// One lease per tenant is in flight on a node at a time: a request finding the node's chunk
// spent while a lease is running waits for it (bounded by Config.Timeout) and then takes from
// what it brought, or leases the next chunk. When a lease finds the shared bucket empty, the
// request is refused with the time until the bucket holds a chunk again, and the node refuses
// the tenant's requests locally until then, without asking the database: a tenant flooding the
// API costs the database about two leases per node per chunk interval (1/20 s), whatever its
// rate and its flood, not a query per request. (Retry-After is in whole seconds: the wait of
// at most a chunk interval, rather than a token's, changes nothing a client sees there.)
//
// # Isolation (G9)
//
// Each tenant has its own row and its own state on the node; a lease locks its tenant's row
// only. A refusal's wait is computed from the tenant's own bucket, so nothing in a 429, nor in
// how long an answer takes, depends on another tenant's use.
//
// # When the database cannot be reached
//
// A lease that fails or takes longer than Config.Timeout does not refuse the request: the node
// decides by its own Local bucket (as if it were alone: during an outage N nodes let a tenant
// through up to N times its limit), counts it (waqueue_ratelimit_fallbacks_total), and keeps
// deciding locally for Config.RetryInterval before it tries the database again. The first
// failure of an outage is logged, and so is the recovery; nothing in between.
package ratelimit

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/pressly/goose/v3"
	"golang.org/x/time/rate"

	"github.com/waqueue/waqueue/projections"
)

// Limit is a token bucket: refilled at PerSecond tokens a second, holding up to Burst. A
// PerSecond of zero or less is no limit.
type Limit struct {
	PerSecond float64
	Burst     int
}

// unlimited reports whether l lets everything through.
func (l Limit) unlimited() bool { return l.PerSecond <= 0 }

// burst is l.Burst, at least 1.
func (l Limit) burst() int { return max(1, l.Burst) }

// Local keeps one token bucket per tenant in this process (golang.org/x/time/rate), so with
// several nodes each has its own. A tenant's bucket starts full, and again when its limit
// changes. Safe for concurrent use.
type Local struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// NewLocal returns buckets in memory, none used yet.
func NewLocal() *Local { return &Local{m: map[string]*rate.Limiter{}} }

// Allow takes one token of tenant's bucket under lim at now. When there is none it returns ok
// false and how long until there is one. ctx is not used.
func (l *Local) Allow(_ context.Context, tenant string, lim Limit, now time.Time) (time.Duration, bool) {
	if lim.unlimited() {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[tenant]
	if b == nil || b.Limit() != rate.Limit(lim.PerSecond) || b.Burst() != lim.burst() {
		b = rate.NewLimiter(rate.Limit(lim.PerSecond), lim.burst())
		l.m[tenant] = b
	}
	res := b.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

//go:embed migrations
var migrationFS embed.FS

// MigrationTable is the goose version table of the rate-limit schema, apart from the read
// models' so the two evolve independently in one database.
const MigrationTable = "waqueue_ratelimit_migrations"

// Migrate brings the table rate_buckets up to date in db, the read-model database, when it is
// PostgreSQL; on SQLite (one node) there is nothing to share, and it does nothing. Safe at
// every start and from several processes.
func Migrate(ctx context.Context, db *projections.DB) error {
	if db.Dialect != projections.Postgres {
		return nil
	}
	sub, err := fs.Sub(migrationFS, "migrations/postgres")
	if err != nil {
		return fmt.Errorf("ratelimit: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db.SQL, sub, goose.WithTableName(MigrationTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("ratelimit: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("ratelimit: migrate %s: %w", db.Dialect, err)
	}
	return nil
}
