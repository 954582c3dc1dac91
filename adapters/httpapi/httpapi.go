// Package httpapi is waqueue's HTTP API, versioned under /v1.
//
// Every route is declared once in a table (see Routes) with its method and path (net/http
// ServeMux patterns), the right it needs, and the status codes it answers; the OpenAPI document
// (docs/openapi.yaml, served at /v1/openapi.yaml) is tested against that table.
//
// Callers authenticate with "Authorization: Bearer wq_…" (package apikeys); the key's principal
// travels in the request context to the command handlers (commands.WithPrincipal). A route first
// checks the right (403 forbidden), then touches only resources of the principal's tenant: an id
// of another tenant is answered exactly like an unknown one (404 not_found, G9).
//
// Errors are application/problem+json (RFC 9457) with a stable code, mapped from the errors of
// the lower layers with errors.Is/As in one place (problem.go). One middleware at the edge
// gives every request an id (X-Request-Id, honoured or generated), logs it with log/slog,
// counts it in Prometheus and turns a panic into a 500 problem without a stack.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/pairing"
	"github.com/waqueue/waqueue/adapters/ratelimit"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Deps are what the API stands on. New refuses a Deps missing a required field.
type Deps struct {
	// Store is the event store (a connection's history, readiness). Required.
	Store eventstore.Store
	// DB is the read-model database the projections below write. Required.
	DB *projections.DB
	// Handlers are the command handlers, called synchronously (a caller gets the command's
	// answer: 409 queue_clearing, 422 invalid_phone, …). RegisterConnection, EnqueueMessage,
	// StartBroadcast, HoldQueue, ResumeQueue, RequestClear, UnpairConnection and
	// RetireConnection are required.
	Handlers commands.Handlers
	// Runner runs the projections; its statuses decide readiness, and reads asking for a
	// Waqueue-Min-Position wait (at most Limits.ReadYourWrites) for it to reach it. Required.
	Runner *projections.Runner
	// The read models. Required.
	Cards     *projections.Cards
	Queue     *projections.Queue
	Messages  *projections.MessageStatus
	Audit     *projections.Audit
	Analytics *projections.Analytics
	Clears    *projections.Clears
	// Keys authenticates callers and serves /v1/keys. Required.
	Keys *apikeys.Keys
	// Tokens mints broker tokens (POST /v1/broker/tokens): what a command sent through the
	// broker carries instead of an API key. Required.
	Tokens *apikeys.Tokens
	// Transport pairs connections (QR code, phone code). Required.
	Transport transport.Transport
	// Pairing runs and shares the QR pairings (the node's one, shared with the console). Nil: New
	// makes one on DB and Transport, bounded by Limits.PairingTimeout.
	Pairing *pairing.Manager
	// Simulator, if set, enables the simulator-only routes (/simulator/ban, /lift, /logout).
	Simulator *simulator.Simulator
	// Webhooks, if set, enables the /v1/webhooks routes (register, list, delete, delivery log).
	// Without it those paths answer 404 not_found like any unknown route.
	Webhooks *webhooks.Service
	// Registry receives the API's metrics. Required. The API does not serve it: MetricsHandler
	// does, on a listener of its own.
	Registry *prometheus.Registry
	// PlatformTenant is the platform operator's tenant: its admin keys, and only those, are the
	// platform operator's (the tenant routes, GET /v1/admin/health). Default
	// apikeys.DefaultTenant (the bootstrap key's tenant).
	PlatformTenant string
	// RateLimiter keeps the tenants' API rate-limit buckets. Nil: ratelimit.NewLocal(), a
	// bucket per tenant on this node; nodes sharing a PostgreSQL read-model database share
	// their buckets with a ratelimit.Shared (what server.New sets up).
	RateLimiter RateLimiter
	// Logger logs one line per request. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Limits; zero fields take their defaults.
	Limits Limits
}

// Limits bound what one request may ask for. Each is answered with its own problem code.
type Limits struct {
	// MaxJSONBody is the largest JSON body, in bytes (413 body_too_large). Default 1 MiB.
	MaxJSONBody int64
	// MaxCSVBody is the largest CSV body (broadcast upload), in bytes. Default 8 MiB.
	MaxCSVBody int64
	// MaxRecipients is the largest broadcast (422 too_many_recipients). Default and maximum
	// connection.MaxRecipients.
	MaxRecipients int
	// ReadYourWrites is how long a read asking for a Waqueue-Min-Position waits for its read
	// models to reach it before answering with what they hold (Waqueue-Position-Reached:
	// false). Default 2s; negative never waits. Commands never wait for read models: they
	// answer once durable, with Waqueue-Position.
	ReadYourWrites time.Duration
	// PairingTimeout bounds a QR pairing started by the API. Default 3 minutes.
	PairingTimeout time.Duration
	// NumberChecksPerMinute and NumberCheckBurst are the per-connection token bucket of number
	// checks (POST …/contacts/check and broadcasts with check_recipients): each number checked
	// costs a token (429 rate_limited with Retry-After when they run out). Defaults 1,000 per
	// minute, burst 5,000; the burst also bounds the recipients of a checked broadcast.
	NumberChecksPerMinute int
	NumberCheckBurst      int
	// RatePerSecond and RateBurst are a tenant's API rate limit (429 rate_limited) when the
	// platform operator set none for it: a token bucket per tenant (Deps.RateLimiter). Every
	// node sharing a bucket should have the same default. Zero (or negative)
	// RatePerSecond: no default limit (a limit set for a tenant still applies); `waqueue serve`
	// sets 500/s, burst 1000 (--rate-limit, --rate-burst). RateBurst defaults to one second's
	// worth of requests.
	RatePerSecond float64
	RateBurst     int
}

func (l *Limits) setDefaults() {
	if l.MaxJSONBody <= 0 {
		l.MaxJSONBody = 1 << 20
	}
	if l.MaxCSVBody <= 0 {
		l.MaxCSVBody = 8 << 20
	}
	if l.MaxRecipients <= 0 || l.MaxRecipients > connection.MaxRecipients {
		l.MaxRecipients = connection.MaxRecipients
	}
	if l.ReadYourWrites == 0 {
		l.ReadYourWrites = 2 * time.Second
	}
	if l.PairingTimeout <= 0 {
		l.PairingTimeout = 3 * time.Minute
	}
	if l.NumberChecksPerMinute <= 0 {
		l.NumberChecksPerMinute = 1000
	}
	if l.NumberCheckBurst <= 0 {
		l.NumberCheckBurst = 5000
	}
	if l.RatePerSecond < 0 {
		l.RatePerSecond = 0
	}
	if l.RateBurst <= 0 {
		l.RateBurst = max(1, int(math.Ceil(l.RatePerSecond)))
	}
}

// Validate reports every missing required dependency.
func (d Deps) Validate() error {
	var errs []error
	req := func(ok bool, name string) {
		if !ok {
			errs = append(errs, errors.New("httpapi: Deps."+name+" is required"))
		}
	}
	req(d.Store != nil, "Store")
	req(d.DB != nil && d.DB.SQL != nil, "DB")
	req(d.Runner != nil, "Runner")
	req(d.Cards != nil, "Cards")
	req(d.Queue != nil, "Queue")
	req(d.Messages != nil, "Messages")
	req(d.Audit != nil, "Audit")
	req(d.Analytics != nil, "Analytics")
	req(d.Clears != nil, "Clears")
	req(d.Keys != nil, "Keys")
	req(d.Tokens != nil, "Tokens")
	req(d.Transport != nil, "Transport")
	req(d.Registry != nil, "Registry")
	h := d.Handlers
	req(h.RegisterConnection != nil, "Handlers.RegisterConnection")
	req(h.EnqueueMessage != nil, "Handlers.EnqueueMessage")
	req(h.StartBroadcast != nil, "Handlers.StartBroadcast")
	req(h.HoldQueue != nil, "Handlers.HoldQueue")
	req(h.ResumeQueue != nil, "Handlers.ResumeQueue")
	req(h.RequestClear != nil, "Handlers.RequestClear")
	req(h.UnpairConnection != nil, "Handlers.UnpairConnection")
	req(h.RetireConnection != nil, "Handlers.RetireConnection")
	return errors.Join(errs...)
}

// server is the API's state.
type server struct {
	d       Deps
	log     *slog.Logger
	metrics *metrics
	checks  *checkBucket // number checks, per connection key
	// defRate is the tenants' default rate limit (Limits.RatePerSecond, RateBurst).
	defRate ratelimit.Limit
}

// RateLimiter keeps a token bucket per tenant: ratelimit.Local or ratelimit.Shared.
type RateLimiter interface {
	// Allow takes one token of tenant's bucket under lim at now. When there is none it
	// returns ok false and how long until there is one.
	Allow(ctx context.Context, tenant string, lim ratelimit.Limit, now time.Time) (wait time.Duration, ok bool)
}

var (
	_ RateLimiter = (*ratelimit.Local)(nil)
	_ RateLimiter = (*ratelimit.Shared)(nil)
)

// New returns the API handler, or an error naming every missing dependency. The handler is
// safe for concurrent use. It registers its metrics on d.Registry (reusing them when another
// handler registered them there first).
func New(d Deps) (http.Handler, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.PlatformTenant == "" {
		d.PlatformTenant = apikeys.DefaultTenant
	}
	d.Limits.setDefaults()
	if d.RateLimiter == nil {
		d.RateLimiter = ratelimit.NewLocal()
	}
	if d.Pairing == nil {
		p, err := pairing.New(pairing.Config{DB: d.DB, Transport: d.Transport, Timeout: d.Limits.PairingTimeout, Logger: d.Logger})
		if err != nil {
			return nil, err
		}
		d.Pairing = p
	}
	s := &server{d: d, log: d.Logger,
		checks:  newCheckBucket(d.Limits.NumberChecksPerMinute, d.Limits.NumberCheckBurst),
		defRate: ratelimit.Limit{PerSecond: d.Limits.RatePerSecond, Burst: d.Limits.RateBurst}}
	m, err := newMetrics(d.Registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		if (rt.simulator && d.Simulator == nil) || (rt.webhook && d.Webhooks == nil) {
			continue
		}
		mux.Handle(rt.Method+" "+rt.Pattern, s.endpoint(rt))
	}
	// Unknown paths get 404 problems; a known path with another method gets 405 with Allow.
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeProblem(w, r, &Problem{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed,
				Detail: "this route answers " + strings.Join(allow, ", ")})
			return
		}
		writeProblem(w, r, &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "no such route"})
	}))
	return s.edge(mux), nil
}

// routeMethods are the methods the route table uses, in the order Allow lists them.
var routeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch, http.MethodDelete}

// allowedMethods returns the methods mux serves r's path with (a route of the table, not the
// catch-all), for the Allow header of a 405.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range routeMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			out = append(out, m)
		}
	}
	return out
}
