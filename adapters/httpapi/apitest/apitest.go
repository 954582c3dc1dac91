// Package apitest starts a complete waqueue API server for tests, benchmarks and tools: a SQLite
// event store and read models in one file under a directory, the projections runner and the
// clearing process running, the command handlers, API keys, and the simulator as the transport
// (its control routes enabled). Nothing is mocked.
//
// It does not import package testing: Start takes the small T interface that *testing.T and
// *testing.B satisfy, and New works without any.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// T is the part of testing.TB that Start uses.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Options configure a Server. The zero value is usable.
type Options struct {
	// Dir holds the database file; New requires it, Start uses t.TempDir() when empty.
	Dir string
	// NoSimulatorRoutes serves the API without the simulator control routes (the simulator is
	// still the transport).
	NoSimulatorRoutes bool
	// Limits are passed to the API.
	Limits httpapi.Limits
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
	// Now is the clock of commands and keys. Default time.Now in UTC.
	Now func() time.Time
	// ManualClears does not run the clearing process: clears stay pending (the queue clearing)
	// until the test calls Server.Clears.Sweep, so that what happens while clearing is testable
	// without racing the process.
	ManualClears bool
}

// Server is a running API server with everything under it.
type Server struct {
	// URL is the server's base URL ("http://127.0.0.1:port").
	URL string
	// HTTP is the test server.
	HTTP *httptest.Server
	// Handler is the API handler (as httpapi.New returned it).
	Handler http.Handler

	Store     eventstore.Store
	DB        *projections.DB
	Keys      *apikeys.Keys
	Runner    *projections.Runner
	Handlers  commands.Handlers
	Repo      *commands.Repository
	Simulator *simulator.Simulator
	Registry  *prometheus.Registry
	Cards     *projections.Cards
	Queue     *projections.Queue
	Messages  *projections.MessageStatus
	Audit     *projections.Audit
	Analytics *projections.Analytics
	// Clears is the clearing process (not running under Options.ManualClears).
	Clears *projections.ClearProcess

	// Tenant is the bootstrap tenant and AdminKey its admin key.
	Tenant   string
	AdminKey string

	projections []projections.Projection
	closers     []func()
}

// Start starts a Server for a test; it is closed when the test ends. Any failure is fatal.
func Start(t T, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a Server in opts.Dir. Close it when done.
func New(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.Dir == "" {
		return nil, errors.New("apitest: Options.Dir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Now().UTC() }
	}
	s := &Server{Tenant: apikeys.DefaultTenant}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	path := filepath.Join(opts.Dir, "waqueue.db")
	store, err := sqlite.Open(ctx, path, sqlite.Options{PollInterval: 50 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	s.Store = store
	s.closers = append(s.closers, func() { _ = store.Close() })
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = sdb.Close() })
	s.DB = &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := projections.Migrate(ctx, s.DB); err != nil {
		return nil, err
	}
	if err := apikeys.Migrate(ctx, s.DB); err != nil {
		return nil, err
	}
	if s.Keys, err = apikeys.New(store, s.DB, opts.Now); err != nil {
		return nil, err
	}
	created, err := apikeys.Bootstrap(ctx, s.Keys, opts.Dir, io.Discard)
	if err != nil {
		return nil, err
	}
	if created != nil {
		s.AdminKey = created.Secret
	}

	s.Cards, s.Queue, s.Messages = projections.NewCards(), projections.NewQueue(), projections.NewMessageStatus()
	s.Audit = projections.NewAudit(append(projections.DefaultAuditRules(), apikeys.AuditRule())...)
	s.Analytics = projections.NewAnalytics()
	s.projections = []projections.Projection{s.Cards, s.Queue, s.Messages, s.Audit, s.Analytics}
	s.Runner, err = projections.NewRunner(projections.RunnerConfig{DB: s.DB, Store: store, Projections: s.projections,
		Logger: opts.Logger, BatchSize: 256})
	if err != nil {
		return nil, err
	}
	if s.Repo, err = commands.NewRepository(store, commands.RepositoryOptions{Logger: opts.Logger}); err != nil {
		return nil, err
	}
	if s.Handlers, err = NewHandlers(s.Repo, opts.Now); err != nil {
		return nil, err
	}
	s.Clears, err = projections.NewClearProcess(projections.ClearProcessConfig{DB: s.DB, Store: store, Queue: s.Queue,
		Completer: &Completer{Repo: s.Repo, Handler: s.Handlers.CompleteClear}, Logger: opts.Logger, RetryInterval: 100 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	workers := 1
	go func() { _ = s.Runner.Run(runCtx); done <- struct{}{} }()
	if !opts.ManualClears {
		workers++
		go func() { _ = s.Clears.Run(runCtx); done <- struct{}{} }()
	}
	s.closers = append(s.closers, func() {
		cancel()
		for range workers {
			<-done
		}
	})

	s.Simulator = simulator.New(simulator.Options{Seed: 1, AssumePaired: true})
	s.closers = append(s.closers, s.Simulator.Close)
	s.Registry = prometheus.NewRegistry()
	deps := httpapi.Deps{
		Store: store, DB: s.DB, Handlers: s.Handlers, Runner: s.Runner,
		Cards: s.Cards, Queue: s.Queue, Messages: s.Messages, Audit: s.Audit, Analytics: s.Analytics,
		Keys: s.Keys, Transport: s.Simulator, Registry: s.Registry, Logger: opts.Logger, Now: opts.Now, Limits: opts.Limits,
	}
	if !opts.NoSimulatorRoutes {
		deps.Simulator = s.Simulator
	}
	if s.Handler, err = httpapi.New(deps); err != nil {
		return nil, err
	}
	s.HTTP = httptest.NewServer(s.Handler)
	s.URL = s.HTTP.URL
	s.closers = append(s.closers, s.HTTP.Close)
	return s, nil
}

// Close stops the server and everything under it, newest first. It is idempotent.
func (s *Server) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// NewHandlers builds every command handler the API and the clearing process use on repo.
func NewHandlers(repo *commands.Repository, now func() time.Time) (commands.Handlers, error) {
	var (
		h    commands.Handlers
		errs []error
	)
	c := commands.Clock(now)
	must := func(err error) { errs = append(errs, err) }
	var err error
	h.RegisterConnection, err = commands.NewRegisterConnectionHandler(repo, c)
	must(err)
	h.SetOnBanPolicy, err = commands.NewSetOnBanPolicyHandler(repo, c)
	must(err)
	h.PairingSucceeded, err = commands.NewPairingSucceededHandler(repo, c)
	must(err)
	h.SessionInvalidated, err = commands.NewSessionInvalidatedHandler(repo, c)
	must(err)
	h.ReportBan, err = commands.NewReportBanHandler(repo, c)
	must(err)
	h.LiftBan, err = commands.NewLiftBanHandler(repo, c)
	must(err)
	h.EnqueueMessage, err = commands.NewEnqueueMessageHandler(repo, c)
	must(err)
	h.StartBroadcast, err = commands.NewStartBroadcastHandler(repo, c)
	must(err)
	h.HoldQueue, err = commands.NewHoldQueueHandler(repo, c)
	must(err)
	h.ResumeQueue, err = commands.NewResumeQueueHandler(repo, c)
	must(err)
	h.RequestClear, err = commands.NewRequestClearHandler(repo, c)
	must(err)
	h.CompleteClear, err = commands.NewCompleteClearHandler(repo, c)
	must(err)
	return h, errors.Join(errs...)
}

// Completer is the projections.ClearCompleter of the clearing process, through the command
// handler: it acts as the system principal of the connection's tenant.
type Completer struct {
	Repo    *commands.Repository
	Handler *commands.CompleteClearHandler
}

var _ projections.ClearCompleter = (*Completer)(nil)

// CompleteClear implements projections.ClearCompleter. A clear completed already is a no-op.
func (c *Completer) CompleteClear(ctx context.Context, connID string, clearID uuid.UUID) error {
	var tenant string
	if err := c.Repo.View(ctx, connID, func(cn *connection.Connection) error { tenant = cn.TenantID(); return nil }); err != nil {
		return err
	}
	_, err := c.Handler.Handle(commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant)),
		commands.CompleteClear{ConnectionID: connID, ClearID: clearID})
	return err
}

// Key creates a key of role in tenant (created by "apitest") and returns its secret.
func (s *Server) Key(ctx context.Context, tenant string, role auth.Role) (string, error) {
	c, err := s.Keys.Create(ctx, tenant, role, "apitest "+role.String(), "apitest")
	return c.Secret, err
}

// Sync waits until every projection has applied the last event of the store it selects.
func (s *Server) Sync(ctx context.Context) error {
	for _, p := range s.projections {
		evs, err := lastMatching(ctx, s.Store, p.Filter())
		if err != nil {
			return err
		}
		if evs == nil {
			continue
		}
		if err := s.Runner.WaitFor(ctx, []string{p.Name()}, evs.Position); err != nil {
			return fmt.Errorf("apitest: %s did not catch up: %w", p.Name(), err)
		}
	}
	return nil
}

func lastMatching(ctx context.Context, store eventstore.Store, f eventstore.Filter) (*eventstore.RecordedEvent, error) {
	var last *eventstore.RecordedEvent
	after := eventstore.Start
	for {
		evs, err := store.ReadAll(ctx, after, 10_000, f)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return last, nil
		}
		last = &evs[len(evs)-1]
		after = last.Position
	}
}

// Response is a decoded API response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r *Response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("apitest: decode %d response %q: %w", r.Status, r.Body, err)
	}
	return nil
}

// Map decodes the body as a JSON object (nil when it is not one).
func (r *Response) Map() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// Do sends a request with key as the bearer credential (none when empty). body is sent as is
// when it is []byte or string, and as JSON otherwise (nil sends nothing). header adds headers
// ("Content-Type" defaults to application/json for a body).
func (s *Server) Do(ctx context.Context, key, method, path string, body any, header map[string]string) (*Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
