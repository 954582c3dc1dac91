// Package server assembles a complete waqueue node — stores, projections, the clearing process,
// command handlers and the command bus, API keys, webhooks, the transport and its dispatcher, and
// the HTTP API — from one Options value. `waqueue serve` and the end-to-end tests and benchmarks
// build their node here, so what is tested is what runs.
package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/auditkey"
	"github.com/waqueue/waqueue/adapters/broker"
	"github.com/waqueue/waqueue/adapters/bus"
	"github.com/waqueue/waqueue/adapters/console"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/pairing"
	"github.com/waqueue/waqueue/adapters/ratelimit"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/webhooks"
	wmtransport "github.com/waqueue/waqueue/adapters/whatsmeow"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/internal/buildinfo"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/integration"
)

// Transport names.
const (
	TransportSimulator = "simulator"
	TransportWhatsmeow = "whatsmeow"
)

// Options configure a Node. Zero fields take the defaults documented on each.
type Options struct {
	// DataDir holds the SQLite database (when DB is empty or sqlite://) and the first admin key.
	// Required.
	DataDir string
	// DB is "sqlite://PATH", "postgres://…", or empty for sqlite://DATA_DIR/waqueue.db.
	DB string
	// EventStore, if set ("esdb://…" or "kurrentdb://…"), keeps the events in EventStoreDB; the
	// read models stay in DB.
	EventStore string
	// Transport is TransportSimulator (default) or TransportWhatsmeow.
	Transport string
	// Simulator configures the simulator transport; Seed defaults to 1 and AssumePaired is
	// forced on, so a fresh connection can send without a pairing step.
	Simulator simulator.Options
	// SimulatorRoutes enables the simulator's control routes in the API (ban, lift, logout).
	// Ignored unless Transport is the simulator.
	SimulatorRoutes bool
	// Broker is empty for the in-process command bus or "nats://host:4222".
	Broker string
	// BrokerTokenSecretFile holds the secret that signs broker tokens (apikeys.Tokens); it is
	// created if missing. Every node of a deployment must share its content. Default
	// DATA_DIR/broker-token.key.
	BrokerTokenSecretFile string
	// Pacing of the dispatcher; the zero value takes dispatcher's safe defaults. Set
	// NoPacing for tests and benchmarks.
	Pacing   dispatcher.Pacing
	NoPacing bool
	// NoDispatcher leaves the dispatcher off (messages stay queued). Such an API-only node still
	// records the pairings its transport completes (see dispatcher.PairingRecorder), unless
	// NoPairingRecorder.
	NoDispatcher bool
	// NoPairingRecorder leaves the transport's events of a node without a dispatcher unrecorded:
	// for API tests that record the dispatcher's part themselves.
	NoPairingRecorder bool
	// NodeID names this process in the dispatch leases (PostgreSQL read models, or EventStoreDB
	// with a NATS broker: JetStream key-value leases). It must
	// be unique among the running processes. Default hostname-pid-random.
	NodeID string
	// LeaseTTL is the dispatch lease TTL on PostgreSQL (lease.DefaultTTL, 6s, when zero); the
	// leases are renewed every third of it. A crashed node's connections resume on the others
	// within LeaseTTL plus a renewal interval.
	LeaseTTL time.Duration
	// DrainTimeout is how long a graceful stop lets the sends in progress finish (their outcomes
	// recorded, the leases renewed meanwhile) before cancelling the rest; default
	// dispatcher.DefaultDrainTimeout, negative cancels at once.
	DrainTimeout time.Duration
	// LeaseRenewInterval is how often the leases are renewed; default a third of LeaseTTL. It
	// must be below LeaseTTL (the dispatcher refuses otherwise; `waqueue serve` asks for
	// below half).
	LeaseRenewInterval time.Duration
	// LazySessions connects the WhatsApp session (and claims the dispatch lease, PostgreSQL) of
	// a connection idle at start only once its queue gets work (dispatcher.Config.LazySessions).
	// For nodes with very many idle connections; default off.
	LazySessions bool
	// NoClearing does not run the clearing process: Node.Clears is built, and clears stay
	// pending (the queue clearing) until the caller runs Node.Clears.Sweep. For tests of what
	// happens while a queue is clearing.
	NoClearing bool
	// Limits of the HTTP API.
	Limits httpapi.Limits
	// RateLimitTimeout bounds a lease of the tenants' shared API rate-limit buckets (PostgreSQL
	// read models; ratelimit.Config.Timeout): past it, the node applies the limits alone until
	// the database answers again. Default ratelimit.DefaultTimeout.
	RateLimitTimeout time.Duration
	// Logger defaults to a JSON logger on stderr.
	Logger *slog.Logger
	// Now is the clock of commands, keys and events. Default time.Now in UTC.
	Now func() time.Time
	// BootstrapOut receives the first admin key when one is created. Default os.Stdout.
	BootstrapOut io.Writer
	// ProjectionBatch is the projections' RunnerConfig.BatchSize: a transaction applies up to 8× as
	// many (what has been read and not yet applied) while they catch up. Default 512.
	ProjectionBatch int
	// GroupCommit is how many shared transactions the PostgreSQL event store runs at once to
	// group concurrent single-event appends (postgres.Options.GroupCommitters). Zero means
	// DefaultGroupCommit; negative turns group commit off (every append its own transaction).
	GroupCommit int
	// MetricsToken, if set, is the bearer token MetricsHandler requires.
	MetricsToken string
	// MetricsTenantTop, if positive, breaks the queue depths down by tenant for that many
	// tenants (projections.MetricsOptions.TenantTop). Default 0: no tenant label.
	MetricsTenantTop int
	// WebhookEgress is the policy of the addresses webhooks may reach; the zero value reaches
	// public addresses only (see webhooks.Egress).
	WebhookEgress webhooks.EgressConfig
	// ClearRetryInterval is how often the clearing process looks for open clears without a
	// wake-up. Default 1s.
	ClearRetryInterval time.Duration
	// AuditKey is the file of the Ed25519 key signing the audit checkpoints, created (0600)
	// when missing. Default DataDir/audit-key.pem.
	AuditKey string
	// AuditCheckpointEvery and AuditCheckpointInterval make a tenant's audit checkpoint due
	// (projections.AuditCheckpointerConfig Every and Interval; defaults 100 and 5m).
	AuditCheckpointEvery    int
	AuditCheckpointInterval time.Duration
	// KeySyncInterval bounds how long an API key change recorded by another instance with a
	// read-model database of its own (or by a request that failed after recording it) takes to
	// be in effect here (apikeys.Keys.Run). Instances sharing the read-model database see a
	// change at once. Default 5s.
	KeySyncInterval time.Duration
}

// Node is an assembled waqueue server. Start runs its background work; Handler serves its API.
type Node struct {
	Options Options

	Events    eventstore.Store
	DB        *projections.DB
	SQL       *sql.DB
	Registry  *prometheus.Registry
	Keys      *apikeys.Keys
	Tokens    *apikeys.Tokens
	Repo      *commands.Repository
	Handlers  commands.Handlers
	Runner    *projections.Runner
	Queue     *projections.Queue
	Cards     *projections.Cards
	Messages  *projections.MessageStatus
	Audit     *projections.Audit
	Analytics *projections.Analytics
	Clears    *projections.ClearProcess
	// AuditCheckpoints signs the audit chain's checkpoints; its PublicKey is what verifiers need.
	AuditCheckpoints *projections.AuditCheckpointer
	// AuditKeyCreated is true when this start created the audit key file.
	AuditKeyCreated bool
	// ClearReports is the clears read model (a clear's report, a connection's clears).
	ClearReports *projections.Clears
	Webhooks     *webhooks.Service
	Transport    transport.Transport
	// Pairing runs the QR pairings of the API and the console and shares them with the other nodes.
	Pairing    *pairing.Manager
	Simulator  *simulator.Simulator
	Dispatcher *dispatcher.Dispatcher
	// Leases are the dispatcher's leases: NATS key-value ones with EventStoreDB and a NATS broker,
	// PostgreSQL ones with PostgreSQL read models, nil otherwise (one dispatching process).
	Leases dispatcher.Leases
	// Handler serves the HTTP API under / and the operator console under /console/. It does
	// not serve the metrics.
	Handler http.Handler
	// MetricsHandler serves the Prometheus registry at GET /metrics (behind Options.MetricsToken,
	// if set). Serve it on its own listener (waqueue serve --metrics-listen), never on the API's.
	MetricsHandler http.Handler
	// API is the API handler alone (httpapi.New).
	API http.Handler
	// Console is the operator console (mounted at console.Prefix in Handler).
	Console *console.Console
	// AdminKey is the key Bootstrap created on this start (empty when keys existed).
	AdminKey string
	// Tenant is the bootstrap tenant.
	Tenant string

	log      *slog.Logger
	projs    []projections.Projection
	pub      message.Publisher
	sub      message.Subscriber
	webhookW *webhooks.Worker
	// routerMetrics instrument both watermill routers (projections, command processor).
	routerMetrics *bus.RouterMetrics
	closers       []func() error
	mu            sync.Mutex
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	runErrs       chan error
}

// New opens the stores, runs every migration, and assembles the node. Nothing runs in the
// background until Start. Close releases everything.
func New(ctx context.Context, o Options) (_ *Node, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{Options: o, log: o.Logger, Tenant: apikeys.DefaultTenant, runErrs: make(chan error, 16)}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if err := n.openStores(ctx); err != nil {
		return nil, err
	}
	if n.Keys, err = apikeys.New(n.Events, n.DB, o.Now); err != nil {
		return nil, err
	}
	created, err := apikeys.Bootstrap(ctx, n.Keys, o.DataDir, o.BootstrapOut)
	if err != nil {
		return nil, err
	}
	if created != nil {
		n.AdminKey = created.Secret
	}
	if err := apikeys.Analyze(ctx, n.DB); err != nil {
		return nil, err
	}
	secret, err := apikeys.LoadOrCreateTokenSecret(o.BrokerTokenSecretFile)
	if err != nil {
		return nil, err
	}
	if n.Tokens, err = apikeys.NewTokens(n.Keys, secret, o.Now); err != nil {
		return nil, err
	}

	n.Registry = prometheus.NewRegistry()
	n.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := buildinfo.Register(n.Registry); err != nil {
		return nil, err
	}

	if n.Repo, err = commands.NewRepository(n.Events, commands.RepositoryOptions{Logger: o.Logger}); err != nil {
		return nil, err
	}
	if n.Handlers, err = commands.NewHandlers(n.Repo, commands.Clock(o.Now)); err != nil {
		return nil, err
	}

	wlog := watermill.NewSlogLogger(o.Logger)
	n.pub, n.sub, err = n.openBroker(ctx, wlog)
	if err != nil {
		return nil, err
	}
	n.Cards, n.Queue, n.Messages = projections.NewCards(), projections.NewQueue(), projections.NewMessageStatus()
	n.Audit = projections.NewAudit(append(projections.DefaultAuditRules(), apikeys.AuditRule())...)
	n.Analytics = projections.NewAnalytics()
	auditKey, keyCreated, err := auditkey.LoadOrCreate(o.AuditKey)
	if err != nil {
		return nil, err
	}
	n.AuditKeyCreated = keyCreated
	if n.AuditCheckpoints, err = projections.NewAuditCheckpointer(projections.AuditCheckpointerConfig{
		DB: n.DB, Store: n.Events, Key: auditKey, Every: o.AuditCheckpointEvery, Interval: o.AuditCheckpointInterval,
		Now: o.Now, Logger: o.Logger,
	}); err != nil {
		return nil, err
	}
	n.Audit.OnCommit(n.AuditCheckpoints.Wake)
	n.ClearReports = projections.NewClears()
	egress := webhooks.NewEgress(o.WebhookEgress)
	if n.webhookW, err = webhooks.NewWorker(webhooks.WorkerConfig{DB: n.DB, Logger: o.Logger, Egress: egress, Registerer: n.Registry}); err != nil {
		return nil, err
	}
	if n.Webhooks, err = webhooks.NewService(n.DB, o.Now, egress); err != nil {
		return nil, err
	}
	integ, err := integration.NewPublisher(n.pub)
	if err != nil {
		return nil, err
	}
	metrics, err := projections.NewMetrics(n.Registry, n.DB, projections.MetricsOptions{TenantTop: o.MetricsTenantTop})
	if err != nil {
		return nil, err
	}
	n.projs = []projections.Projection{n.Cards, n.Queue, n.Messages, n.Audit, n.Analytics, n.ClearReports, metrics, integ, webhooks.NewOutbox(n.webhookW.Wake)}
	if n.routerMetrics, err = bus.NewRouterMetrics(n.Registry); err != nil {
		return nil, err
	}
	if n.Runner, err = projections.NewRunner(projections.RunnerConfig{
		DB: n.DB, Store: n.Events, Projections: n.projs, Logger: o.Logger, BatchSize: o.ProjectionBatch,
		Registerer: n.Registry, ConfigureRouter: n.routerMetrics.Instrument,
		// Two groups, each one log read and one transaction per batch: the pending queue (what
		// the dispatcher reads and a broadcast's "all pending" waits for) apart from the eight
		// others. One group of all nine made a 100k broadcast pending 1.1–2.2× later (its
		// queue rows committed only after every other read model's); docs/benchmarks.md.
		Groups: [][]string{{projections.QueueName}},
	}); err != nil {
		return nil, err
	}
	if n.Clears, err = projections.NewClearProcess(projections.ClearProcessConfig{
		DB: n.DB, Store: n.Events, Queue: n.Queue, Logger: o.Logger, RetryInterval: o.ClearRetryInterval,
		Completer: commands.NewClearCompleter(n.Repo, n.Handlers.CompleteClear),
	}); err != nil {
		return nil, err
	}
	if err := n.openTransport(ctx); err != nil {
		return nil, err
	}
	if !o.NoDispatcher {
		pacing := o.Pacing
		if o.NoPacing {
			pacing = dispatcher.Pacing{Unpaced: true}
		}
		// Several processes may dispatch when PostgreSQL holds the read models: each
		// connection's loop and session run under a lease in that database. On SQLite one
		// process dispatches by nature (SingleNode).
		var leases dispatcher.Leases
		switch {
		case o.EventStore != "" && strings.HasPrefix(o.Broker, "nats://"):
			// EventStoreDB + NATS: the leases live in a JetStream key-value bucket, beside the
			// engines that hold the events and carry the commands.
			if leases, err = n.openNATSLeases(ctx); err != nil {
				return nil, err
			}
		case n.DB.Dialect == projections.Postgres:
			ldb, err := n.openLeasePool(ctx)
			if err != nil {
				return nil, err
			}
			if leases, err = lease.NewPostgres(ctx, ldb, o.NodeID, o.LeaseTTL); err != nil {
				return nil, err
			}
		}
		n.Leases = leases
		if n.Dispatcher, err = dispatcher.New(dispatcher.Config{
			Leases:             leases,
			LeaseRenewInterval: o.LeaseRenewInterval,
			DrainTimeout:       o.DrainTimeout,
			Store:              n.Events, Repository: n.Repo, Transport: n.Transport,
			Messages: dispatcher.QueueMessages{DB: n.DB, Queue: n.Queue},
			// Idle connections get no loop at start: one query finds those with work.
			Backlog:      dispatcher.QueueBacklog{DB: n.DB, Queue: n.Queue},
			LazySessions: o.LazySessions,
			Locator:      dispatcher.StatusLocator{DB: n.DB, Status: n.Messages},
			Pacing:       pacing,
			Registerer:   n.Registry,
			Logger:       o.Logger,
		}); err != nil {
			return nil, err
		}
		// A resume (or a lifted ban, a completed clear) through this node starts the
		// connection's loop at once, not when the event log shows it.
		n.Repo.OnAppended(n.Dispatcher.Appended)
	}
	// One QR pairing manager serves the API and the console; its state is shared with the other
	// nodes through the read-model database.
	if n.Pairing, err = pairing.New(pairing.Config{DB: n.DB, Transport: n.Transport, NodeID: o.NodeID,
		Timeout: o.Limits.PairingTimeout, Logger: o.Logger}); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() error { n.Pairing.Close(); return nil })
	deps := httpapi.Deps{
		Store: n.Events, DB: n.DB, Handlers: n.Handlers, Runner: n.Runner,
		Cards: n.Cards, Queue: n.Queue, Messages: n.Messages, Audit: n.Audit, Analytics: n.Analytics,
		Clears: n.ClearReports, Keys: n.Keys, Tokens: n.Tokens, Transport: n.Transport, Registry: n.Registry, Logger: o.Logger, Now: o.Now, Limits: o.Limits,
		Webhooks: n.Webhooks, Pairing: n.Pairing,
	}
	if n.Simulator != nil && o.SimulatorRoutes {
		deps.Simulator = n.Simulator
	}
	// On PostgreSQL every node sharing the read-model database draws from one bucket per
	// tenant; on SQLite (one node) the buckets stay in memory.
	if n.DB.Dialect == projections.Postgres {
		if deps.RateLimiter, err = ratelimit.NewShared(ratelimit.Config{DB: n.SQL, Timeout: o.RateLimitTimeout,
			Logger: o.Logger, Registerer: n.Registry}); err != nil {
			return nil, err
		}
	}
	if n.API, err = httpapi.New(deps); err != nil {
		return nil, err
	}
	n.MetricsHandler = httpapi.MetricsHandler(n.Registry, o.MetricsToken)
	if n.Console, err = console.New(console.Deps{
		Store: n.Events, DB: n.DB, Handlers: n.Handlers, Runner: n.Runner,
		Cards: n.Cards, Queue: n.Queue, Messages: n.Messages, Audit: n.Audit, Analytics: n.Analytics,
		Clears: n.ClearReports, Keys: n.Keys, Transport: n.Transport, Logger: o.Logger, Now: o.Now, Pairing: n.Pairing,
	}); err != nil {
		return nil, err
	}
	n.Cards.OnCommit(n.Console.Notify)
	n.closers = append(n.closers, func() error { n.Console.Close(); return nil })
	// The console's pages are HTML, not part of the JSON API: they are mounted beside it, so
	// the API's route table (and docs/openapi.yaml) holds only the API.
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, n.Console)
	mux.Handle("/", n.API)
	n.Handler = mux
	return n, nil
}

func (o *Options) setDefaults() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("server: Options.DataDir is empty"))
	}
	if o.DB == "" {
		o.DB = "sqlite://" + filepath.Join(o.DataDir, "waqueue.db")
	}
	if o.Transport == "" {
		o.Transport = TransportSimulator
	}
	if o.AuditKey == "" {
		o.AuditKey = filepath.Join(o.DataDir, auditkey.FileName)
	}
	if o.Transport != TransportSimulator && o.Transport != TransportWhatsmeow {
		errs = append(errs, fmt.Errorf("server: transport %q: want simulator or whatsmeow", o.Transport))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if o.NodeID == "" {
		host, _ := os.Hostname()
		o.NodeID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), rand.Text()[:8])
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	if o.BootstrapOut == nil {
		o.BootstrapOut = os.Stdout
	}
	if o.Simulator.Seed == 0 {
		o.Simulator.Seed = 1
	}
	o.Simulator.AssumePaired = true
	if o.BrokerTokenSecretFile == "" && o.DataDir != "" {
		o.BrokerTokenSecretFile = filepath.Join(o.DataDir, "broker-token.key")
	}
	if o.KeySyncInterval <= 0 {
		o.KeySyncInterval = 5 * time.Second
	}
	return errors.Join(errs...)
}

// DefaultGroupCommit is Options.GroupCommit's default: on PostgreSQL, concurrent single-event
// appends (commands of different connections, the dispatcher's records of many connections)
// share up to this many transactions at once, each append keeping its own expected-revision
// check and result (issue 12; docs/benchmarks.md has the measurements).
const DefaultGroupCommit = postgres.DefaultGroupCommitters

// groupCommitters is the postgres.Options.GroupCommitters of GroupCommit (0: off).
func (o *Options) groupCommitters() int {
	switch {
	case o.GroupCommit < 0:
		return 0
	case o.GroupCommit == 0:
		return DefaultGroupCommit
	}
	return o.GroupCommit
}

// IsPostgres reports whether the read models (and events, unless EventStore is set) are in
// PostgreSQL.
func (o *Options) IsPostgres() bool {
	return strings.HasPrefix(o.DB, "postgres://") || strings.HasPrefix(o.DB, "postgresql://")
}

// leasePoolConns is the size of the leases' own connection pool: a renewal, a claim and a
// release at once, and a spare.
const leasePoolConns = 4

// openLeasePool opens the small connection pool of the PostgreSQL leases, apart from the node's
// main pool: the renewal that keeps this node's session alive must never queue for a connection
// behind thousands of busy send loops (on the shared pool of 32, under load, the session lapsed
// and the node dropped every lease it held: leases_held=0 in bench scale at 100,000 / 10,000).
func (n *Node) openLeasePool(ctx context.Context) (*sql.DB, error) {
	pcfg, err := postgres.PoolConfig(n.Options.DB)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns, pcfg.MinConns = leasePoolConns, 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("server: connect to PostgreSQL for the leases: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	n.closers = append(n.closers, func() error { pool.Close(); return nil }, db.Close)
	return db, nil
}

func (n *Node) openStores(ctx context.Context) error {
	o := n.Options
	clock := eventstore.Clock(o.Now)
	if o.IsPostgres() {
		pcfg, err := postgres.PoolConfig(o.DB)
		if err != nil {
			return err
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return fmt.Errorf("server: connect to PostgreSQL: %w", err)
		}
		n.closers = append(n.closers, func() error { pool.Close(); return nil })
		n.SQL = stdlib.OpenDBFromPool(pool)
		n.closers = append(n.closers, n.SQL.Close)
		n.DB = &projections.DB{SQL: n.SQL, Dialect: projections.Postgres}
		if o.EventStore == "" {
			es := postgres.New(pool, postgres.Options{Clock: clock, GroupCommitters: o.groupCommitters()})
			if err := es.Migrate(ctx); err != nil {
				return err
			}
			n.Events = es
		}
	} else {
		path := strings.TrimPrefix(o.DB, "sqlite://")
		if path == "" {
			return errors.New("server: sqlite:// needs a file path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("server: data directory: %w", err)
		}
		db, err := sqlitedb.Open(path)
		if err != nil {
			return err
		}
		n.SQL = db
		n.closers = append(n.closers, db.Close)
		n.DB = &projections.DB{SQL: db, Dialect: projections.SQLite}
		if o.EventStore == "" {
			es, err := sqlite.New(ctx, db, sqlite.Options{Clock: clock, PollInterval: 250 * time.Millisecond})
			if err != nil {
				return err
			}
			n.Events = es
		}
	}
	if o.EventStore != "" {
		es, err := esdb.New(ctx, o.EventStore, esdb.Options{Clock: clock, Logger: o.Logger})
		if err != nil {
			return err
		}
		n.Events = es
	}
	n.closers = append(n.closers, n.Events.Close)
	if err := projections.Migrate(ctx, n.DB); err != nil {
		return err
	}
	if err := apikeys.Migrate(ctx, n.DB); err != nil {
		return err
	}
	if err := console.Migrate(ctx, n.DB); err != nil {
		return err
	}
	if err := pairing.Migrate(ctx, n.DB); err != nil {
		return err
	}
	if err := ratelimit.Migrate(ctx, n.DB); err != nil {
		return err
	}
	return webhooks.Migrate(ctx, n.DB)
}

// Migrate opens the stores of o, brings every schema (event store, read models, API keys,
// webhooks, console sessions, QR pairings, shared rate-limit buckets) up to date, and closes them. It creates no key and starts nothing.
func Migrate(ctx context.Context, o Options) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	n := &Node{Options: o, log: o.Logger}
	err := n.openStores(ctx)
	return errors.Join(err, n.Close())
}

func (n *Node) openBroker(ctx context.Context, wlog watermill.LoggerAdapter) (message.Publisher, message.Subscriber, error) {
	pub, sub, closer, err := broker.Open(ctx, n.Options.Broker, wlog)
	if err != nil {
		return nil, nil, err
	}
	n.closers = append(n.closers, closer.Close)
	return pub, sub, nil
}

// openNATSLeases connects to the broker's NATS server and returns the JetStream key-value leases
// of this node.
func (n *Node) openNATSLeases(ctx context.Context) (*lease.NATS, error) {
	nc, err := nats.Connect(n.Options.Broker, nats.Name("waqueue leases "+n.Options.NodeID), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("server: connect to NATS for the leases: %w", err)
	}
	n.closers = append(n.closers, func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("server: JetStream for the leases: %w", err)
	}
	return lease.NewNATS(ctx, js, "", 1, n.Options.NodeID, n.Options.LeaseTTL)
}

func (n *Node) openTransport(ctx context.Context) error {
	switch n.Options.Transport {
	case TransportWhatsmeow:
		dialect := wmtransport.DialectSQLite
		if n.Options.IsPostgres() {
			dialect = wmtransport.DialectPostgres
		}
		m, err := wmtransport.New(ctx, wmtransport.Config{DB: n.SQL, Dialect: dialect,
			Log: wmtransport.SlogLogger(n.log.With("component", "whatsmeow"))})
		if err != nil {
			return err
		}
		n.closers = append(n.closers, func() error { m.Close(); return nil })
		n.Transport = m
	default:
		n.Simulator = simulator.New(n.Options.Simulator)
		n.closers = append(n.closers, func() error { n.Simulator.Close(); return nil })
		n.Transport = n.Simulator
	}
	return nil
}

// Start runs the background work: projections, the clearing process, the collector of purged
// rows, the webhook worker, the command processor and the dispatcher. It returns at once; the
// work stops at Close or when ctx is done.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cancel != nil {
		return errors.New("server: node already started")
	}
	ctx, n.cancel = context.WithCancel(ctx)
	wlog := watermill.NewSlogLogger(n.log)
	router, err := commands.NewRouter(wlog)
	if err != nil {
		return err
	}
	n.routerMetrics.Instrument(router)
	if _, err := commands.RegisterProcessor(commands.ProcessorConfig{
		Router: router, Subscriber: n.sub, Authenticator: n.Tokens, Handlers: n.Handlers, Logger: wlog,
	}); err != nil {
		return err
	}
	n.goRun("projections", func() error { return n.Runner.Run(ctx) })
	n.goRun("api-keys", func() error { return n.Keys.Run(ctx, n.Options.KeySyncInterval) })
	if !n.Options.NoClearing {
		n.goRun("clearing", func() error { return n.Clears.Run(ctx) })
	}
	n.goRun("collector", func() error {
		projections.RunCollector(ctx, n.DB, n.log, 2*time.Second, 5000, n.Queue, n.Messages)
		return nil
	})
	n.goRun("webhooks", func() error { return n.webhookW.Run(ctx) })
	n.goRun("audit-checkpoints", func() error { return n.AuditCheckpoints.Run(ctx) })
	n.goRun("command-processor", func() error { return router.Run(ctx) })
	if n.Dispatcher != nil {
		n.goRun("dispatcher", func() error { return n.Dispatcher.Run(ctx) })
		if !n.Dispatcher.ManagesSessions() {
			n.goRun("connector", func() error { return connectAll(ctx, n.Events, n.Transport, n.log) })
		}
	} else if !n.Options.NoPairingRecorder {
		n.Transport.SetHandler(dispatcher.PairingRecorder(ctx, n.Handlers.PairingSucceeded, n.log))
	}
	return nil
}

func (n *Node) goRun(name string, f func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			n.log.Error("background work stopped", "component", name, "err", err)
			select {
			case n.runErrs <- fmt.Errorf("server: %s: %w", name, err):
			default:
			}
		}
	}()
}

// Errors delivers the error of any background component that stopped on its own.
func (n *Node) Errors() <-chan error { return n.runErrs }

// Close stops the background work and releases every store, newest first. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.cancel != nil {
		n.cancel()
	}
	n.mu.Unlock()
	n.wg.Wait()
	var errs []error
	if n.Dispatcher != nil && n.cancel != nil {
		// A graceful stop hands the connections over at once instead of after the lease TTL.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.Dispatcher.ReleaseLeases(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	for i := len(n.closers) - 1; i >= 0; i-- {
		if err := n.closers[i](); err != nil && !errors.Is(err, eventstore.ErrClosed) {
			errs = append(errs, err)
		}
	}
	n.closers = nil
	return errors.Join(errs...)
}
