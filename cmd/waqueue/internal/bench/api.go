package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/commands"
)

// APIConfig configures the API benchmark.
type APIConfig struct {
	// GroupCommit is server.Options.GroupCommit of the node measured (0: the server's
	// default, negative: off).
	GroupCommit int
	// Clients is the number of concurrent HTTP clients, each enqueuing to a connection of its
	// own. Zero means 64.
	Clients int
	// Requests is the number of enqueue requests measured (spread over the clients). Zero
	// means 6,400.
	Requests int
	// ReadYourWrites is passed to the API's Limits: how long an enqueue waits for the read
	// models to show it before answering. Zero means the server's default; negative disables
	// the wait, and the figure is then named api/<engine>/enqueue-no-ryw (a diagnostic: it
	// shows what the wait costs).
	ReadYourWrites time.Duration
	// WindowProfile, when set, names the file that receives a CPU profile of the measured
	// requests only (the baselines and the set-up left out); with several engines each gets its
	// own, FILE.<engine>. It cannot be combined with bench's --cpuprofile, which profiles the
	// whole run.
	WindowProfile string
}

// API measures, per engine, POST /v1/connections/{id}/messages through a real listener and
// net/http clients against a node with every background process running (dispatcher off, so
// the messages stay queued), and the store's single-event append at the same concurrency in
// the same run. It prints
//
//	BENCH api/<engine>/enqueue req_per_s=… p99_ms=… settled_s=… group_commit=… append_single_per_s=… baseline=insert baseline_per_s=… ratio=…
//	      cpu_us_per_req=… db_cpu_us_per_req=… db_xacts_per_req=… cpu_us_per_insert=… db_cpu_us_per_insert=…
//	      http_noop_per_s=… http_noop_cpu_us_per_req=… rss_mib=…
//
// cpu_us_per_req is the process's CPU (the API and its HTTP clients) per measured request,
// db_cpu_us_per_req the PostgreSQL server's (0 on SQLite, or when the server is not on this
// machine), db_xacts_per_req its committed transactions per request; all three run until
// settled_s, when every read model has applied the last request's event (from the first
// request), so the projections' whole share counts, and the baselines then run on a database
// no longer busy with it. The _per_insert figures are the same for the baseline's INSERTs.
// http_noop_* is the HTTP floor (httpFloor): the same clients' requests to a handler that does
// nothing, the rate and the process's CPU per request of the exchange alone.
func API(ctx context.Context, env *Env, cfg APIConfig, w io.Writer) error {
	if cfg.Clients <= 0 {
		cfg.Clients = 64
	}
	if cfg.Requests <= 0 {
		cfg.Requests = 6400
	}
	profile := cfg.WindowProfile
	for _, engine := range env.Adapters {
		if profile != "" && len(env.Adapters) > 1 {
			cfg.WindowProfile = profile + "." + engine
		}
		if err := apiOnce(ctx, env, engine, cfg, w); err != nil {
			return fmt.Errorf("bench: api/%s: %w", engine, err)
		}
	}
	return nil
}

func apiOnce(ctx context.Context, env *Env, engine string, cfg APIConfig, w io.Writer) (err error) {
	node, base, key, stop, err := env.apiNode(ctx, engine, func(o *server.Options) {
		o.NoDispatcher = true
		o.Limits.ReadYourWrites = cfg.ReadYourWrites
		o.GroupCommit = cfg.GroupCommit
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stop(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients},
		Timeout:   time.Minute,
	}
	defer client.CloseIdleConnections()

	op := operator(ctx, node)
	run := uuid.NewString()[:8]
	conn := func(c int) string { return fmt.Sprintf("api-%s-%d", run, c) }
	if err := parallel(ctx, 16, cfg.Clients, func(ctx context.Context, c int) error {
		_, err := node.Handlers.RegisterConnection.Handle(op, commands.RegisterConnection{ConnectionID: conn(c), Phone: fmt.Sprintf("+49152%08d", c)})
		return err
	}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	enqueue := func(ctx context.Context, c, i int) error {
		return postEnqueue(ctx, client, base+"/v1/connections/"+conn(c)+"/messages", key.Secret, c, i)
	}
	// Warm up the connections and caches (untimed).
	if err := parallel(ctx, cfg.Clients, cfg.Clients, func(ctx context.Context, c int) error { return enqueue(ctx, c, 9_000_000+c) }); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	lat := make([][]time.Duration, cfg.Clients)
	var mu sync.Mutex
	stats, err := openStats(node)
	if err != nil {
		return err
	}
	if stats != nil {
		defer stats.Close()
	}
	// What one request costs: the process's CPU (server and clients), the PostgreSQL
	// server's CPU and its committed transactions over the measured requests.
	pid := serverPID(ctx, env, stats)
	stopProfile, err := startWindowProfile(cfg.WindowProfile)
	if err != nil {
		return err
	}
	defer stopProfile()                                             // on the way out early; after the window's stop it does nothing
	before, err := lastPosition(ctx, node.Events, eventstore.Start) // the set-up's, untimed
	if err != nil {
		return err
	}
	meter := startCost(ctx, pid, stats)
	windowStart := time.Now()
	n, elapsed, err := concurrently(ctx, cfg.Clients, cfg.Requests, func(ctx context.Context, c, i int) error {
		t := time.Now()
		if err := enqueue(ctx, c, i); err != nil {
			return err
		}
		d := time.Since(t)
		mu.Lock()
		lat[c] = append(lat[c], d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	// The read models' share finishes after the last answer when they lag: it is part of what
	// the requests cost, and the baseline must not share the database with it.
	last, err := lastPosition(ctx, node.Events, before)
	if err != nil {
		return err
	}
	if err := node.Runner.WaitReached(ctx, projectionNames(node), last); err != nil {
		return fmt.Errorf("read models settling: %w", err)
	}
	settled := time.Since(windowStart)
	perReqCost := meter.stop(ctx, n)
	if err := stopProfile(); err != nil {
		return err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	// Baseline (issue 12): plain single-row INSERT commits by as many clients, through the
	// node's own pool, in the same database. The store's own single-event appends by as many
	// writers are printed beside it (append_single_per_s) for reference.
	meter = startCost(ctx, pid, nil) // its transactions are not printed
	baseRate, err := insertBaseline(ctx, node, cfg.Clients, cfg.Requests)
	if err != nil {
		return err
	}
	perInsert := meter.stop(ctx, cfg.Requests)
	bn, bd, err := singleAppends(node.Events, newWorkload(), Config{Writers: cfg.Clients, SingleEvents: cfg.Requests})(ctx, 0)
	if err != nil {
		return fmt.Errorf("append-single reference: %w", err)
	}
	// The HTTP floor: the same requests by the same clients to a handler that only reads the
	// body and answers 202 (no key, no command, no store): what the exchange alone costs.
	noopRate, perNoop, err := httpFloor(ctx, client, cfg.Clients, cfg.Requests, key.Secret)
	if err != nil {
		return fmt.Errorf("http floor: %w", err)
	}
	rate := perSecond(n, elapsed)
	name := fmt.Sprintf("api/%s/enqueue", engine)
	if cfg.ReadYourWrites < 0 {
		name += "-no-ryw"
	}
	return emit(w, name,
		"req_per_s", rate, "p50_ms", ms(percentile(all, 50)), "p99_ms", ms(percentile(all, 99)), "clients", cfg.Clients,
		"settled_s", settled.Seconds(),
		"group_commit", engineGroupCommit(engine, cfg.GroupCommit), "append_single_per_s", perSecond(bn, bd),
		"baseline", "insert", "baseline_per_s", baseRate, "ratio", ratio(rate, baseRate),
		"cpu_us_per_req", perReqCost.CPUus, "db_cpu_us_per_req", perReqCost.DBCPUus, "db_xacts_per_req", perReqCost.DBXacts,
		"cpu_us_per_insert", perInsert.CPUus, "db_cpu_us_per_insert", perInsert.DBCPUus,
		"http_noop_per_s", noopRate, "http_noop_cpu_us_per_req", perNoop.CPUus)
}

// postEnqueue posts message i of client c to url (an enqueue route, or the HTTP floor's
// handler) with the headers a backend sends, and wants 202 Accepted.
func postEnqueue(ctx context.Context, client *http.Client, url, secret string, c, i int) error {
	body := fmt.Sprintf(`{"recipient":"+49151%08d","text":"Hello, this is message %d of the API benchmark."}`, i, i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d-%d", c, i))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("enqueue answered %d: %s", resp.StatusCode, b)
	}
	return nil
}

// floorAnswer is the body of the HTTP floor's answer: an enqueue answer's size and shape.
const floorAnswer = `{"message_id":"0b6f2d7e-3c1a-4a8e-9a55-2b7d7c2c9f10","connection_id":"api-00000000-0"}` + "\n"

// httpFloor measures n requests by clients net/http clients (client's transport) to a
// listener of this process whose handler reads the body and answers 202 with an enqueue
// answer's bytes: the requests per second and the process's CPU per request of the HTTP
// exchange alone, server and clients, on the same machine in the same run as the enqueue. It
// is no ratio's baseline; it says how much of an enqueue's CPU no handler can save.
func httpFloor(ctx context.Context, client *http.Client, clients, n int, secret string) (float64, opCost, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, opCost{}, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, floorAnswer)
	}), ReadHeaderTimeout: time.Minute}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/v1/connections/floor/messages"
	// Warm up the clients' connections to this listener (untimed).
	if err := parallel(ctx, clients, clients, func(ctx context.Context, c int) error { return postEnqueue(ctx, client, url, secret, c, c) }); err != nil {
		return 0, opCost{}, err
	}
	meter := startCost(ctx, 0, nil)
	done, elapsed, err := concurrently(ctx, clients, n, func(ctx context.Context, c, i int) error {
		return postEnqueue(ctx, client, url, secret, c, i)
	})
	if err != nil {
		return 0, opCost{}, err
	}
	return perSecond(done, elapsed), meter.stop(ctx, done), nil
}

// startWindowProfile starts a CPU profile into path (nothing when path is empty) and returns
// the function that stops it and closes the file; calls after the first return os.ErrClosed
// and do nothing.
func startWindowProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("window profile: %w", err)
	}
	var once sync.Once
	return func() error {
		err := os.ErrClosed // a second call does nothing
		once.Do(func() {
			pprof.StopCPUProfile()
			err = f.Close()
		})
		return err
	}, nil
}

// serverPID returns the pid of the PostgreSQL server the node uses, when it runs on this
// machine: the throwaway cluster's, else the parent of stats' backend (--db); 0 if unknown.
func serverPID(ctx context.Context, env *Env, stats *sql.DB) int {
	if pid := postmasterPID(env); pid != 0 || stats == nil {
		return pid
	}
	var backend int
	if err := stats.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return 0
	}
	if f := procStatFields(backend); len(f) > 1 {
		if pid, err := strconv.Atoi(f[1]); err == nil {
			return pid
		}
	}
	return 0
}
