package ratelimit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	// DefaultLeaseTTL is how long a node keeps a leased chunk.
	DefaultLeaseTTL = time.Second
	// DefaultTimeout bounds a lease's round trip.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultRetryInterval is how long a node decides alone after a failed lease.
	DefaultRetryInterval = time.Second
)

// LeaseChunk is the share of a second of a tenant's rate that one lease takes: a chunk is
// ceil(PerSecond/LeaseChunk) tokens, at least 1 and at most Burst. A node busy with a tenant
// leases about LeaseChunk times a second; an idle one never.
const LeaseChunk = 20

// Config configures Shared.
type Config struct {
	// DB is the PostgreSQL read-model database, with rate_buckets (Migrate). Required.
	DB *sql.DB
	// LeaseTTL is how long leased tokens stay spendable on the node; what is left then is
	// dropped. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Timeout bounds one lease's round trip (wall-clock time); a lease past it counts as the
	// database not reachable. Default DefaultTimeout.
	Timeout time.Duration
	// RetryInterval is how long, after a failed lease, the node decides by its own buckets
	// before it tries the database again. Default DefaultRetryInterval.
	RetryInterval time.Duration
	// Logger logs the first failure of an outage and the recovery. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics (waqueue_ratelimit_*). Optional.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Shared keeps one token bucket per tenant in the PostgreSQL database every node shares, and
// leases tokens from it in chunks (see the package doc). Safe for concurrent use.
type Shared struct {
	cfg   Config
	local *Local // the fallback
	m     metrics

	mu sync.Mutex
	// held is this node's state of each tenant's bucket.
	held map[string]*held
	// downUntil: the last lease failed; until then the node decides by local.
	downUntil time.Time
	down      bool
}

// held is what a node knows of a tenant's shared bucket.
type held struct {
	// lim is the limit the tokens were leased under; another limit drops them.
	lim Limit
	// tokens are leased and not yet spent; they are dropped at expires.
	tokens  int
	expires time.Time
	// emptyUntil: the last lease found the shared bucket empty, with a token due then.
	emptyUntil time.Time
	// lease is closed when the lease in flight ends; nil when none is.
	lease chan struct{}
}

type metrics struct {
	leases    *prometheus.CounterVec
	fallbacks prometheus.Counter
}

// NewShared returns the shared buckets of cfg.DB. It registers its metrics on cfg.Registerer.
func NewShared(cfg Config) (*Shared, error) {
	if cfg.DB == nil {
		return nil, errors.New("ratelimit: Config.DB is required")
	}
	cfg.setDefaults()
	s := &Shared{cfg: cfg, local: NewLocal(), held: map[string]*held{}}
	s.m = metrics{
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "ratelimit", Name: "leases_total",
			Help: "Leases of tokens from the shared API rate-limit buckets, by result (granted, empty, failed).",
		}, []string{"result"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "ratelimit", Name: "fallbacks_total",
			Help: "API requests decided by this node's own rate-limit bucket because the shared one could not be reached.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.m.leases, s.m.fallbacks} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Allow takes one token of tenant's bucket under lim at now, or returns ok false and how long
// until this node will let a request through again (more than zero). It spends a token this
// node holds for tenant under lim; without one it leases a chunk from the shared bucket (or
// waits for the lease in flight), at most one round trip per chunk. ctx is the request's: its
// end does not cancel a lease other requests wait for. When the database cannot be reached,
// tenant's bucket on this node decides.
func (s *Shared) Allow(ctx context.Context, tenant string, lim Limit, now time.Time) (time.Duration, bool) {
	if lim.unlimited() {
		return 0, true
	}
	s.mu.Lock()
	h := s.held[tenant]
	if h == nil {
		h = &held{lim: lim}
		s.held[tenant] = h
	}
	for {
		if h.lim != lim { // a new limit: what was leased under the old one is dropped
			h.lim, h.tokens, h.emptyUntil = lim, 0, time.Time{}
		}
		if !now.Before(h.expires) {
			h.tokens = 0
		}
		switch {
		case h.tokens > 0:
			h.tokens--
			s.mu.Unlock()
			return 0, true
		case now.Before(s.downUntil):
			s.mu.Unlock()
			return s.fallback(ctx, tenant, lim, now)
		case now.Before(h.emptyUntil):
			wait := h.emptyUntil.Sub(now)
			s.mu.Unlock()
			return wait, false
		case h.lease != nil:
			done := h.lease
			s.mu.Unlock()
			<-done // bounded by cfg.Timeout
			s.mu.Lock()
			continue
		}
		done := make(chan struct{})
		h.lease = done
		s.mu.Unlock()
		got, wait, err := s.lease(ctx, tenant, lim, now)
		s.mu.Lock()
		h.lease = nil
		close(done)
		if err != nil {
			s.failed(now, err)
			s.mu.Unlock()
			return s.fallback(ctx, tenant, lim, now)
		}
		s.recovered()
		if h.lim != lim {
			// A request under another limit came meanwhile: this one takes a token of what it
			// leased, if any, and the rest is dropped.
			s.mu.Unlock()
			return wait, got > 0
		}
		h.tokens, h.expires = got, now.Add(s.cfg.LeaseTTL)
		if got == 0 {
			h.emptyUntil = now.Add(wait)
			s.mu.Unlock()
			return wait, false
		}
	}
}

// leaseSQL refills tenant's row by the time since its last lease, capped at the burst, and
// takes up to the chunk ($4) of what it holds, in one statement: the row's lock makes
// concurrent leases of every node take turns. A new row starts full. The refill uses the
// leasing node's limit ($2, $3): a limit change applies at the next lease of any node, the
// bucket keeping its tokens up to the new burst. The time ($5, unix µs) never goes back, so a
// node whose clock is behind refills nothing until it catches up. The epsilon absorbs the
// rounding of the float sums (a token is not missed for a rounding error; at most a millionth
// of one is given away).
const leaseSQL = `
INSERT INTO rate_buckets AS b (tenant_id, per_second, burst, tokens, at_us, leased)
VALUES ($1, $2::float8, $3::bigint, ($3::bigint - LEAST($4::bigint, $3::bigint))::float8, $5::bigint, LEAST($4::bigint, $3::bigint))
ON CONFLICT (tenant_id) DO UPDATE SET
	per_second = EXCLUDED.per_second,
	burst = EXCLUDED.burst,
	at_us = GREATEST(b.at_us, EXCLUDED.at_us),
	leased = LEAST($4::bigint, FLOOR(` + availSQL + ` + 1e-6))::bigint,
	tokens = GREATEST(0, ` + availSQL + ` - LEAST($4::bigint, FLOOR(` + availSQL + ` + 1e-6)))
RETURNING leased, tokens, at_us`

// availSQL is what the existing row holds at the lease's time (the old row's values: every
// SET expression sees them).
const availSQL = `LEAST(EXCLUDED.burst::float8, b.tokens + GREATEST(EXCLUDED.at_us - b.at_us, 0) * EXCLUDED.per_second / 1e6)`

// chunk is how many tokens one lease under lim asks for.
func chunk(lim Limit) int {
	return min(lim.burst(), max(1, int(math.Ceil(lim.PerSecond/LeaseChunk))))
}

// lease takes a chunk of tenant's shared bucket at now: got tokens (up to a chunk), or none and
// the wait until the bucket holds a chunk.
func (s *Shared) lease(ctx context.Context, tenant string, lim Limit, now time.Time) (got int, wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	var leased, atUS int64
	var tokens float64
	err = s.cfg.DB.QueryRowContext(ctx, leaseSQL, tenant, lim.PerSecond, lim.burst(), chunk(lim), now.UnixMicro()).Scan(&leased, &tokens, &atUS)
	if err != nil {
		s.m.leases.WithLabelValues("failed").Inc()
		return 0, 0, fmt.Errorf("ratelimit: lease for tenant %s: %w", tenant, err)
	}
	if leased > 0 {
		s.m.leases.WithLabelValues("granted").Inc()
		return int(leased), 0, nil
	}
	s.m.leases.WithLabelValues("empty").Inc()
	// The node asks again when the bucket holds a chunk (not a token: at a chunk a lease, not
	// a lease a token, whatever the demand), in whole microseconds, never earlier (less the
	// float noise); after the bucket's time, which may be ahead of ours (another node's clock).
	us := math.Ceil((float64(chunk(lim))-tokens)/lim.PerSecond*1e6-1e-6) + float64(max(0, atUS-now.UnixMicro()))
	return 0, time.Duration(max(1, us)) * time.Microsecond, nil
}

// fallback decides by the node's own bucket (the database cannot be reached).
func (s *Shared) fallback(ctx context.Context, tenant string, lim Limit, now time.Time) (time.Duration, bool) {
	s.m.fallbacks.Inc()
	return s.local.Allow(ctx, tenant, lim, now)
}

// failed records a failed lease at now: the node decides alone for RetryInterval; the first
// failure of an outage is logged. Called with s.mu held.
func (s *Shared) failed(now time.Time, err error) {
	s.downUntil = now.Add(s.cfg.RetryInterval)
	if !s.down {
		s.down = true
		s.cfg.Logger.Warn("shared API rate limits unreachable: each node applies the limits alone until the database answers",
			slog.String("error", err.Error()), slog.Duration("retry_interval", s.cfg.RetryInterval))
	}
}

// recovered records a lease that worked; the end of an outage is logged. Called with s.mu held.
func (s *Shared) recovered() {
	s.downUntil = time.Time{}
	if s.down {
		s.down = false
		s.cfg.Logger.Info("shared API rate limits reachable again")
	}
}
