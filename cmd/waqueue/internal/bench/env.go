package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/pgcluster"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
)

// Env is where the node benchmarks (clear, dispatch, api) run: one throwaway PostgreSQL
// cluster shared by every PostgreSQL node of a run (a fresh database per node), or the
// scratch database DatabaseURL, and fresh SQLite files. Make one with NewEnv; Close it.
type Env struct {
	// Adapters lists the engines measured (AdapterPostgres, AdapterSQLite).
	Adapters  []string
	parent    string // cfg.Dir: the cluster's parent (its own directory must be reachable by the postgres user)
	dir       string
	url       string // the scratch database given by the caller, if any
	cluster   *pgcluster.Cluster
	mu        sync.Mutex
	nodes     int
	pgVersion string
}

// EnvConfig configures an Env.
type EnvConfig struct {
	// DatabaseURL is a scratch PostgreSQL database every PostgreSQL node of the run uses.
	// Empty means a throwaway cluster (durable settings) with a fresh database per node.
	DatabaseURL string
	// Dir is where temporary files go. Empty means os.TempDir().
	Dir string
	// Adapters lists the engines to measure. Empty means both.
	Adapters []string
}

// NewEnv validates cfg and prepares the environment; the cluster starts on first use.
func NewEnv(cfg EnvConfig) (*Env, error) {
	if cfg.Dir == "" {
		cfg.Dir = os.TempDir()
	}
	if len(cfg.Adapters) == 0 {
		cfg.Adapters = []string{AdapterPostgres, AdapterSQLite}
	}
	if err := (Config{Adapters: cfg.Adapters}).Validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "waqueue-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: temp dir: %w", err)
	}
	return &Env{Adapters: cfg.Adapters, parent: cfg.Dir, dir: dir, url: cfg.DatabaseURL}, nil
}

// Close stops the cluster (if one was started) and removes the temporary files.
func (e *Env) Close() error {
	var errs []error
	if e.cluster != nil {
		errs = append(errs, e.cluster.Close())
	}
	errs = append(errs, os.RemoveAll(e.dir))
	return errors.Join(errs...)
}

// postgresURL returns a database for a new PostgreSQL node.
func (e *Env) postgresURL(ctx context.Context, name string) (string, error) {
	if e.url != "" {
		return e.url, nil
	}
	if e.cluster == nil {
		c, err := pgcluster.Start(ctx, pgcluster.Options{ParentDir: e.parent})
		if err != nil {
			return "", fmt.Errorf("bench: start PostgreSQL: %w", err)
		}
		e.cluster = c
	}
	if err := e.cluster.CreateDatabase(ctx, name); err != nil {
		return "", err
	}
	return e.cluster.URL(name), nil
}

// PostgresVersion returns the server_version of the PostgreSQL the run used, or "" if no
// PostgreSQL node was opened.
func (e *Env) PostgresVersion() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pgVersion
}

// node assembles a fresh node on engine (not started). The caller closes it.
func (e *Env) node(ctx context.Context, engine string, mod func(*server.Options)) (*server.Node, error) {
	e.mu.Lock()
	e.nodes++
	n := e.nodes
	e.mu.Unlock()
	dataDir, err := os.MkdirTemp(e.dir, fmt.Sprintf("node%d-", n))
	if err != nil {
		return nil, fmt.Errorf("bench: node dir: %w", err)
	}
	o := server.Options{
		DataDir:      dataDir,
		Logger:       slog.New(slog.DiscardHandler),
		BootstrapOut: io.Discard,
	}
	if engine == AdapterPostgres {
		if o.DB, err = e.postgresURL(ctx, fmt.Sprintf("bench_node%d", n)); err != nil {
			return nil, err
		}
	}
	if mod != nil {
		mod(&o)
	}
	node, err := server.New(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("bench: %s node: %w", engine, err)
	}
	if engine == AdapterPostgres {
		var v string
		if err := node.SQL.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err == nil {
			e.mu.Lock()
			e.pgVersion = v
			e.mu.Unlock()
		}
	}
	return node, nil
}

// operator returns ctx carrying an admin principal of node's bootstrap tenant, for commands.
func operator(ctx context.Context, node *server.Node) context.Context {
	return commands.WithPrincipal(ctx, auth.Principal{TenantID: node.Tenant, ID: "bench", Role: auth.RoleAdmin})
}

// countAfter counts the events of the log after pos (untimed bookkeeping).
func countAfter(ctx context.Context, st eventstore.Store, pos eventstore.Position) (int, error) {
	n := 0
	for {
		evs, err := st.ReadAll(ctx, pos, 10_000, eventstore.Filter{})
		if err != nil {
			return 0, fmt.Errorf("bench: count events: %w", err)
		}
		if len(evs) == 0 {
			return n, nil
		}
		n += len(evs)
		pos = evs[len(evs)-1].Position
	}
}

// lastPosition returns the position of the last event of the log at or after from (from if
// there is none after it; pass Start for the whole log).
func lastPosition(ctx context.Context, st eventstore.Store, from eventstore.Position) (eventstore.Position, error) {
	pos := from
	for {
		evs, err := st.ReadAll(ctx, pos, 10_000, eventstore.Filter{})
		if err != nil {
			return pos, fmt.Errorf("bench: last position: %w", err)
		}
		if len(evs) == 0 {
			return pos, nil
		}
		pos = evs[len(evs)-1].Position
	}
}

// parallel runs fn(i) for i in [0, n) on workers goroutines; it returns the first error.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range max(min(workers, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// percentile returns the p-th percentile (0 < p ≤ 100, nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Line is one printed BENCH figure: its name and its fields in order, for the results table.
type Line struct {
	Name   string
	Fields [][2]string
}

// Field returns the value of field k ("" if absent).
func (l Line) Field(k string) string {
	for _, f := range l.Fields {
		if f[0] == k {
			return f[1]
		}
	}
	return ""
}

// String formats l as a BENCH line (without the newline).
func (l Line) String() string {
	var b strings.Builder
	b.WriteString("BENCH ")
	b.WriteString(l.Name)
	for _, f := range l.Fields {
		fmt.Fprintf(&b, " %s=%s", f[0], f[1])
	}
	return b.String()
}

// emit writes a BENCH line named name with fields kv (key, value, key, value, ...) and
// rss_mib appended.
func emit(w io.Writer, name string, kv ...any) error {
	l := Line{Name: name}
	for i := 0; i+1 < len(kv); i += 2 {
		var v string
		switch x := kv[i+1].(type) {
		case float64:
			v = fmt.Sprintf("%.2f", x)
			if x >= 100 {
				v = fmt.Sprintf("%.0f", x)
			}
		default:
			v = fmt.Sprint(x)
		}
		l.Fields = append(l.Fields, [2]string{fmt.Sprint(kv[i]), v})
	}
	l.Fields = append(l.Fields, [2]string{"rss_mib", fmt.Sprintf("%.1f", peakRSSMiB())})
	_, err := fmt.Fprintln(w, l.String())
	return err
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// apiNode starts a node of engine (mod adjusts its options) with the API on a loopback
// listener and an admin key: what the figures measured over HTTP stand on. stop closes the
// listener, stops the node's processes and closes it.
func (e *Env) apiNode(ctx context.Context, engine string, mod func(*server.Options)) (node *server.Node, base string, key apikeys.Created, stop func() error, err error) {
	node, err = e.node(ctx, engine, mod)
	if err != nil {
		return nil, "", apikeys.Created{}, nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	fail := func(err error) (*server.Node, string, apikeys.Created, func() error, error) {
		cancel()
		_ = node.Close()
		return nil, "", apikeys.Created{}, nil, err
	}
	if err := node.Start(runCtx); err != nil {
		return fail(err)
	}
	key, err = node.Keys.Create(ctx, node.Tenant, auth.RoleAdmin, "bench", "bench")
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	srv := &http.Server{Handler: node.Handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return node, "http://" + ln.Addr().String(), key, func() error {
		_ = srv.Close()
		cancel()
		return node.Close()
	}, nil
}
