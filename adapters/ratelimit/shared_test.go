package ratelimit_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/ratelimit"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// t0 is the tests' clock at their start; they move it by hand.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// openDB returns a fresh migrated PostgreSQL database at dsn (a fresh one when empty).
func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	if dsn == "" {
		dsn = pgtest.URL(t)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := ratelimit.Migrate(context.Background(), &projections.DB{SQL: db, Dialect: projections.Postgres}); err != nil {
		t.Fatal(err)
	}
	return db
}

// node is one node's Shared with its own metrics; a lease may take as long as it needs
// (Timeout testwait.Limit) unless cfg says otherwise.
type node struct {
	*ratelimit.Shared
	reg *prometheus.Registry
}

func newNode(t *testing.T, cfg ratelimit.Config) node {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Timeout == 0 {
		cfg.Timeout = testwait.Limit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := ratelimit.NewShared(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return node{s, reg}
}

// count returns the value of the counter waqueue_ratelimit_<name> with the label value (any
// when empty).
func (n node) count(t *testing.T, name, label string) int {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "waqueue_ratelimit_"+name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return int(total)
}

// TestSharedBoundsTheTenantAcrossNodes: two nodes on one database, a tenant asking far above
// its limit (100/s, burst 50) through both for 2 s of its clock: together they let through
// at most the burst plus 2 s of the rate (every token spent was taken from the shared row;
// the interval starts with the bucket full and no chunk held), and not much less. Each
// node's own bucket lets through that much on each node (what happens before the change).
func TestSharedBoundsTheTenantAcrossNodes(t *testing.T) {
	db := openDB(t, "")
	lim := ratelimit.Limit{PerSecond: 100, Burst: 50}
	const steps, step = 200, 10 * time.Millisecond
	const bound = 50 + 100*2 // Burst + PerSecond × 2 s
	run := func(a, b interface {
		Allow(context.Context, string, ratelimit.Limit, time.Time) (time.Duration, bool)
	}) (allowed int) {
		ctx := context.Background()
		for i := range steps {
			now := t0.Add(time.Duration(i) * step)
			for _, n := range []interface {
				Allow(context.Context, string, ratelimit.Limit, time.Time) (time.Duration, bool)
			}{a, b, a, b} {
				wait, ok := n.Allow(ctx, "acme", lim, now)
				switch {
				case ok:
					allowed++
				case wait <= 0 || wait > time.Second/20:
					t.Fatalf("at %v: refused with wait %v, want (0, 50ms] (a chunk's refill)", now.Sub(t0), wait)
				}
			}
		}
		return allowed
	}
	a, b := newNode(t, ratelimit.Config{DB: db}), newNode(t, ratelimit.Config{DB: db})
	if got := run(a, b); got > bound || got < bound-20 {
		t.Errorf("the two nodes let %d requests through in 2 s, want at most %d (and at least %d)", got, bound, bound-20)
	}
	if got := run(ratelimit.NewLocal(), ratelimit.NewLocal()); got < 2*bound-10 {
		t.Errorf("two per-node buckets let %d through, want about %d (the gap this closes)", got, 2*bound)
	}
	// Not a query per request: the burst's 10 chunks, then at most two leases (one granted,
	// one finding the bucket empty) per node per chunk interval (50ms).
	if leases, most := a.count(t, "leases_total", "")+b.count(t, "leases_total", ""), 10+2*2*40; leases > most {
		t.Errorf("%d leases for %d requests, want at most %d", leases, 4*steps, most)
	}
	if f := a.count(t, "fallbacks_total", "") + b.count(t, "fallbacks_total", ""); f != 0 {
		t.Errorf("%d fallbacks with the database up", f)
	}
}

// TestSharedLeasesChunksAndRefusesHonestly: a node leases ceil(rate/20) tokens at a time and
// spends them alone; an empty bucket refuses with the exact time until it holds a chunk, after
// which a request passes; the node asks the database nothing while it knows the bucket is
// empty; a chunk unspent after the lease TTL is dropped, not spent later.
func TestSharedLeasesChunksAndRefusesHonestly(t *testing.T) {
	db := openDB(t, "")
	ctx := context.Background()
	n := newNode(t, ratelimit.Config{DB: db})
	lim := ratelimit.Limit{PerSecond: 100, Burst: 50} // chunk 5
	for i := range 50 {
		if _, ok := n.Allow(ctx, "acme", lim, t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if got := n.count(t, "leases_total", "granted"); got != 10 {
		t.Fatalf("%d leases for the burst of 50, want 10 chunks of 5", got)
	}
	wait, ok := n.Allow(ctx, "acme", lim, t0)
	if ok || wait != 50*time.Millisecond {
		t.Fatalf("past the burst: (%v, %v), want refused for 50ms (until a chunk is due)", wait, ok)
	}
	if wait, ok := n.Allow(ctx, "acme", lim, t0.Add(4*time.Millisecond)); ok || wait != 46*time.Millisecond {
		t.Fatalf("4ms later: (%v, %v), want refused for 46ms", wait, ok)
	}
	if got := n.count(t, "leases_total", ""); got != 11 {
		t.Fatalf("%d leases, want 11: a refusal while the bucket is known empty asks nothing", got)
	}
	t1 := t0.Add(wait)
	if _, ok := n.Allow(ctx, "acme", lim, t1); !ok {
		t.Fatal("refused at the wait it was given")
	}
	// The 4 left of that chunk are dropped after the TTL: another node empties the bucket
	// (refilled to its burst), and this node, instead of spending them, leases anew and is
	// refused.
	t2 := t1.Add(ratelimit.DefaultLeaseTTL)
	other := newNode(t, ratelimit.Config{DB: db})
	got := 0
	for {
		if _, ok := other.Allow(ctx, "acme", lim, t2); !ok {
			break
		}
		got++
	}
	if got != 50 {
		t.Fatalf("the other node got %d at t2, want 50", got)
	}
	before := n.count(t, "leases_total", "")
	if _, ok := n.Allow(ctx, "acme", lim, t2); ok {
		t.Fatal("the first node spent a dropped chunk (the bucket is empty)")
	}
	if n.count(t, "leases_total", "") != before+1 {
		t.Fatal("the first node did not lease after its chunk expired")
	}
}

// TestSharedOneLeaseInFlight: 200 requests of one tenant at once on a node share the leases:
// one in flight at a time, each bringing a chunk (50 of 1000/s) that the waiting requests
// spend — 4 leases, none refused.
func TestSharedOneLeaseInFlight(t *testing.T) {
	db := openDB(t, "")
	n := newNode(t, ratelimit.Config{DB: db})
	lim := ratelimit.Limit{PerSecond: 1000, Burst: 1000}
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for range 200 {
		wg.Go(func() {
			if _, ok := n.Allow(context.Background(), "acme", lim, t0); !ok {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := n.count(t, "leases_total", ""); refused != 0 || got != 4 {
		t.Fatalf("%d refused, %d leases; want 0 refused, 4 leases of 50", refused, got)
	}
}

// TestSharedUnlimitedAsksNothing: a tenant without a limit (as every tenant of `bench api`,
// which sets no default) costs no lease: the database is never asked.
func TestSharedUnlimitedAsksNothing(t *testing.T) {
	db, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/none") // never reached
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := newNode(t, ratelimit.Config{DB: db})
	for range 1000 {
		if _, ok := n.Allow(context.Background(), "acme", ratelimit.Limit{}, t0); !ok {
			t.Fatal("refused without a limit")
		}
	}
	if l, f := n.count(t, "leases_total", ""), n.count(t, "fallbacks_total", ""); l+f != 0 {
		t.Fatalf("%d leases, %d fallbacks without a limit", l, f)
	}
}

// TestSharedTenantsApart (G9): a tenant's answers — allowed or not, and the wait — are the
// same whether another tenant floods its own bucket on the same nodes or is idle.
func TestSharedTenantsApart(t *testing.T) {
	ctx := context.Background()
	lim := ratelimit.Limit{PerSecond: 20, Burst: 5}
	type answer struct {
		wait time.Duration
		ok   bool
	}
	script := func(flood bool) []answer {
		db := openDB(t, "")
		a, b := newNode(t, ratelimit.Config{DB: db}), newNode(t, ratelimit.Config{DB: db})
		var out []answer
		for i := range 100 {
			now := t0.Add(time.Duration(i) * 7 * time.Millisecond)
			if flood {
				for range 10 {
					a.Allow(ctx, "noisy", ratelimit.Limit{PerSecond: 1, Burst: 1}, now)
					b.Allow(ctx, "noisy", lim, now) // even under the same limit, on the other node
				}
			}
			for _, n := range []node{a, b} {
				w, ok := n.Allow(ctx, "quiet", lim, now)
				out = append(out, answer{w, ok})
			}
		}
		return out
	}
	alone, beside := script(false), script(true)
	for i := range alone {
		if alone[i] != beside[i] {
			t.Fatalf("answer %d: %+v alone, %+v beside a flooding tenant", i, alone[i], beside[i])
		}
	}
}

// TestSharedLimitChange: a new limit applies at the next request of every node: the chunk a
// node holds under the old limit is dropped, and the shared bucket keeps its tokens only up
// to the new burst.
func TestSharedLimitChange(t *testing.T) {
	db := openDB(t, "")
	ctx := context.Background()
	a, b := newNode(t, ratelimit.Config{DB: db}), newNode(t, ratelimit.Config{DB: db})
	high, low := ratelimit.Limit{PerSecond: 1000, Burst: 1000}, ratelimit.Limit{PerSecond: 1, Burst: 2}
	for range 10 {
		if _, ok := b.Allow(ctx, "acme", high, t0); !ok {
			t.Fatal("refused under the high limit")
		}
	}
	allowed := 0
	for i := range 30 { // 3 s in steps of 100ms, a and b
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		for _, n := range []node{a, b} {
			if _, ok := n.Allow(ctx, "acme", low, now); ok {
				allowed++
			}
		}
	}
	if allowed > 2+3 || allowed < 2+2 {
		t.Fatalf("%d let through in 3 s under 1/s burst 2, want 4 or 5 (b held 40 leased tokens)", allowed)
	}
}

// TestSharedFallsBackWhenTheDatabaseIsDown: with the database unreachable a node decides by
// its own bucket (not refusing everything), counts each such request, logs the outage once
// and its end once, and tries the database again after RetryInterval.
func TestSharedFallsBackWhenTheDatabaseIsDown(t *testing.T) {
	dsn := pgtest.URL(t)
	openDB(t, dsn) // migrate
	px := newProxy(t, dsn)
	var logs bytes.Buffer // the node logs from Allow, called by this goroutine alone
	n := newNode(t, ratelimit.Config{DB: openDB(t, px.url), Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	lim := ratelimit.Limit{PerSecond: 10, Burst: 3} // chunk 1
	if _, ok := n.Allow(ctx, "acme", lim, t0); !ok {
		t.Fatal("refused with the database up")
	}
	px.cut()
	// The node's own bucket: full (3), then empty for 100ms.
	for i := range 3 {
		if _, ok := n.Allow(ctx, "acme", lim, t0); !ok {
			t.Fatalf("request %d refused with the database down: want the node's own bucket (fallbacks %d, leases %d failed %d)", i+1, n.count(t, "fallbacks_total", ""), n.count(t, "leases_total", ""), n.count(t, "leases_total", "failed"))
		}
	}
	if wait, ok := n.Allow(ctx, "acme", lim, t0); ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("past the node's own burst: (%v, %v), want refused for up to 100ms", wait, ok)
	}
	// After RetryInterval the node tries again (and fails again: not logged again).
	t1 := t0.Add(ratelimit.DefaultRetryInterval)
	n.Allow(ctx, "acme", lim, t1)
	if got := n.count(t, "fallbacks_total", ""); got != 5 {
		t.Fatalf("%d fallbacks, want 5", got)
	}
	if got := n.count(t, "leases_total", "failed"); got != 2 {
		t.Fatalf("%d failed leases, want 2 (one, then one after RetryInterval)", got)
	}
	px.restore()
	t2 := t1.Add(ratelimit.DefaultRetryInterval)
	if _, ok := n.Allow(ctx, "acme", lim, t2); !ok {
		t.Fatal("refused once the database is back")
	}
	if got := n.count(t, "fallbacks_total", ""); got != 5 {
		t.Fatalf("%d fallbacks after the database came back, want still 5", got)
	}
	out := logs.String()
	if strings.Count(out, "unreachable") != 1 || strings.Count(out, "reachable again") != 1 {
		t.Fatalf("want the outage logged once and its end once, got:\n%s", out)
	}
}

// proxy forwards TCP to a PostgreSQL server until cut: then it closes every connection and
// refuses new ones, until restore.
type proxy struct {
	t               *testing.T
	network, target string // the server's address: unix socket or TCP
	url             string // the database's URL through the proxy
	addr            string
	mu              sync.Mutex
	ln              net.Listener
	conns           []net.Conn
}

// newProxy starts a proxy to the server of dsn: TCP host:port, or a unix socket as pgtest's
// clusters give (?host=DIR&port=N).
func newProxy(t *testing.T, dsn string) *proxy {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, network: "tcp", target: u.Host}
	q := u.Query()
	if dir := q.Get("host"); strings.HasPrefix(dir, "/") {
		p.network, p.target = "unix", dir+"/.s.PGSQL."+q.Get("port")
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
	}
	p.listen("127.0.0.1:0")
	u.Host = p.addr
	p.url = u.String()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial(p.network, p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.listen(p.addr)
}
