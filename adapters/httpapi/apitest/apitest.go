// Package apitest starts a complete waqueue API server for tests, benchmarks and tools. It is
// the node of package server (the composition `waqueue serve` runs) on a SQLite database in one
// directory, with the simulator as the transport (its control routes enabled) and the dispatcher
// off, so queued messages stay queued until a test sends them on. Nothing is mocked.
//
// Every response a Server started with Start gives is checked against docs/openapi.yaml
// (Contract): an undocumented route or status, or a Content-Type or body the document does not
// allow, fails the test with the method, path, status and broken rule.
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
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
)

// T is the part of testing.TB that Start uses.
type T interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Options configure a Server. The zero value is usable.
type Options struct {
	// Dir holds the database file; New requires it, Start uses t.TempDir() when empty.
	Dir string
	// DB is the database URL (server.Options.DB); empty for SQLite in Dir. A postgres:// URL
	// runs the same API on PostgreSQL (events and read models).
	DB string
	// NoSimulatorRoutes serves the API without the simulator control routes (the simulator is
	// still the transport).
	NoSimulatorRoutes bool
	// Limits are passed to the API; a zero ReadYourWrites waits up to testwait.Limit.
	Limits httpapi.Limits
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
	// Now is the clock of commands and keys. Default time.Now in UTC.
	Now func() time.Time
	// ManualClears does not run the clearing process: clears stay pending (the queue clearing)
	// until the test calls Server.Clears.Sweep, so that what happens while clearing is testable
	// without racing the process (server.Options.NoClearing).
	ManualClears bool
	// AuditCheckpointEvery signs a tenant's audit checkpoint after this many new entries
	// (server.Options.AuditCheckpointEvery; default 100).
	AuditCheckpointEvery int
	// WebhookEgress is the webhook egress policy. Nil allows loopback (127.0.0.0/8, ::1)
	// explicitly, because test receivers listen there; every other non-public class stays
	// refused as in production.
	WebhookEgress *webhooks.EgressConfig
	// ContractViolation, when set, receives every response that breaks docs/openapi.yaml (see
	// Contract.Check): an undocumented route or status, a Content-Type or a body the document
	// does not allow for it. Start sets it to fail the test (t.Errorf) unless NoContract.
	ContractViolation func(error)
	// NoContract turns the check off in Start (for a test that sends what the document forbids
	// on purpose and looks at nothing but the transport).
	NoContract bool
}

// Server is a running API server with everything under it. The fields other than URL and HTTP
// are those of Node, named as before the node existed.
type Server struct {
	// URL is the server's base URL ("http://127.0.0.1:port").
	URL string
	// HTTP is the test server.
	HTTP *httptest.Server
	// MetricsURL is the base URL of the node's metrics handler, served apart from the API as
	// `waqueue serve` does (GET MetricsURL+"/metrics").
	MetricsURL string
	// Handler is the API handler (as httpapi.New returned it).
	Handler http.Handler
	// Node is the assembled node under the server.
	Node *server.Node

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

	// last is the greatest Waqueue-Position any answer carried: Do sends it as
	// Waqueue-Min-Position, so every read of a test sees the writes the test made before it
	// (session consistency, as a client of the API is expected to do).
	lastMu sync.Mutex
	last   eventstore.Position
	// Clears is the clearing process (not running under Options.ManualClears).
	Clears *projections.ClearProcess
	// ClearReports is the clears read model.
	ClearReports *projections.Clears

	// Tenant is the bootstrap tenant and AdminKey its admin key.
	Tenant   string
	AdminKey string

	closers []func()
}

// Start starts a Server for a test; it is closed when the test ends. Any failure is fatal.
func Start(t T, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.ContractViolation == nil && !opts.NoContract {
		opts.ContractViolation = func(err error) { t.Errorf("%v", err) }
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
	if opts.Limits.ReadYourWrites == 0 {
		// A test's read of its own write waits for the read models as long as a test waits
		// for anything (testwait.Limit), not the production bound: on a busy machine the read
		// models may lag longer than 2 s, and a read answered without the write is a flaky
		// test, not a finding (a clean-clone CI run at load 30 failed TestClearQueueStory so).
		opts.Limits.ReadYourWrites = testwait.Limit
	}
	egress := webhooks.EgressConfig{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	if opts.WebhookEgress != nil {
		egress = *opts.WebhookEgress
	}
	node, err := server.New(ctx, server.Options{
		DataDir:              opts.Dir,
		DB:                   opts.DB,
		SimulatorRoutes:      !opts.NoSimulatorRoutes,
		NoDispatcher:         true,
		NoPairingRecorder:    true, // the tests record the dispatcher's part themselves
		NoClearing:           opts.ManualClears,
		Limits:               opts.Limits,
		Logger:               opts.Logger,
		Now:                  opts.Now,
		BootstrapOut:         io.Discard,
		ProjectionBatch:      256,
		ClearRetryInterval:   100 * time.Millisecond,
		AuditCheckpointEvery: opts.AuditCheckpointEvery,
		WebhookEgress:        egress,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{
		Node: node, Handler: node.Handler,
		Store: node.Events, DB: node.DB, Keys: node.Keys, Runner: node.Runner, Handlers: node.Handlers,
		Repo: node.Repo, Simulator: node.Simulator, Registry: node.Registry,
		Cards: node.Cards, Queue: node.Queue, Messages: node.Messages, Audit: node.Audit, Analytics: node.Analytics,
		Clears: node.Clears, ClearReports: node.ClearReports, Tenant: node.Tenant, AdminKey: node.AdminKey,
		closers: []func(){func() { _ = node.Close() }},
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := node.Start(context.Background()); err != nil {
		return nil, err
	}
	h := s.Handler
	if opts.ContractViolation != nil {
		c, err := LoadContract()
		if err != nil {
			return nil, err
		}
		h = c.Middleware(h, opts.ContractViolation)
	}
	s.HTTP = httptest.NewServer(h)
	s.URL = s.HTTP.URL
	s.closers = append(s.closers, s.HTTP.Close)
	msrv := httptest.NewServer(node.MetricsHandler)
	s.MetricsURL = msrv.URL
	s.closers = append(s.closers, msrv.Close)
	return s, nil
}

// Close stops the server and everything under it, newest first. It is idempotent.
func (s *Server) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Key creates a key of role in tenant (created by "apitest") and returns its secret.
func (s *Server) Key(ctx context.Context, tenant string, role auth.Role) (string, error) {
	c, err := s.Keys.Create(ctx, tenant, role, "apitest "+role.String(), "apitest")
	return c.Secret, err
}

// Sync waits until every projection has applied the last event of the store it selects.
func (s *Server) Sync(ctx context.Context) error {
	for _, p := range []projections.Projection{s.Cards, s.Queue, s.Messages, s.Audit, s.Analytics, s.ClearReports} {
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
// ("Content-Type" defaults to application/json for a body). Do asks every request to reflect
// the writes answered before it: it sends the greatest Waqueue-Position seen so far as
// Waqueue-Min-Position (header overrides it; an empty value sends none).
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
	s.lastMu.Lock()
	if !s.last.IsZero() {
		req.Header.Set(httpapi.HeaderMinPosition, httpapi.FormatPosition(s.last))
	}
	s.lastMu.Unlock()
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if pos, ok := httpapi.ParsePosition(resp.Header.Get(httpapi.HeaderPosition)); ok {
		s.lastMu.Lock()
		if s.last.Less(pos) {
			s.last = pos
		}
		s.lastMu.Unlock()
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
