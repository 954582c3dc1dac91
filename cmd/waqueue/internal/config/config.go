// Package config holds waqueue's runtime configuration: flags with environment variables of the
// same meaning, defaults, and validation that names every problem at start.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Transport names.
const (
	TransportSimulator = "simulator"
	TransportWhatsmeow = "whatsmeow"
)

// Config is the configuration of `waqueue serve` and the other subcommands that open stores.
type Config struct {
	// DataDir holds the SQLite database, the first admin key and other local state
	// (--data-dir, WAQUEUE_DATA_DIR). Default ".data".
	DataDir string
	// DB is where events, read models and WhatsApp sessions live: "sqlite://PATH" (the embedded
	// default, PATH relative to the working directory) or "postgres://…" (--db, WAQUEUE_DB).
	// Default sqlite://DATA_DIR/waqueue.db.
	DB string
	// EventStore optionally moves the events to EventStoreDB/KurrentDB: "esdb://host:2113?tls=…"
	// or "kurrentdb://…" (--eventstore, WAQUEUE_EVENTSTORE). Read models stay in DB, which must
	// then be PostgreSQL.
	EventStore string
	// Transport is "simulator" (default) or "whatsmeow" (--transport, WAQUEUE_TRANSPORT).
	Transport string
	// Broker is empty for the in-process bus, or "nats://host:4222" for NATS JetStream
	// (--broker, WAQUEUE_BROKER).
	Broker string
	// BrokerTokenKey is the file holding the secret that signs broker tokens, shared by every
	// node (--broker-token-key, WAQUEUE_BROKER_TOKEN_KEY). Default DATA_DIR/broker-token.key,
	// created if missing.
	BrokerTokenKey string
	// Listen is the HTTP address (--listen, WAQUEUE_LISTEN). Default 127.0.0.1:8080.
	Listen string
	// MetricsListen is the address of the Prometheus metrics listener, apart from the API
	// (--metrics-listen, WAQUEUE_METRICS_LISTEN). Default 127.0.0.1:9090; empty turns the
	// metrics listener off. It must differ from Listen: metrics are never on the API's port.
	MetricsListen string
	// MetricsToken, if set, is the bearer token the metrics listener requires
	// (--metrics-token, WAQUEUE_METRICS_TOKEN; prefer the environment, flags show in ps).
	MetricsToken string
	// MetricsTenantTop, if positive, breaks the queue depths down by tenant for that many
	// tenants with the most pending messages, the rest summed (--metrics-tenant-top,
	// WAQUEUE_METRICS_TENANT_TOP). Default 0: no tenant label. At most 100.
	MetricsTenantTop int
	// RateLimit and RateBurst are a tenant's default API rate limit (--rate-limit,
	// WAQUEUE_RATE_LIMIT, requests a second; --rate-burst, WAQUEUE_RATE_BURST), for tenants
	// whose limit the platform operator did not set. Defaults 500 and 1000; a rate of 0 turns
	// the default limit off. With PostgreSQL read models the nodes share each tenant's bucket
	// (give them the same default); with SQLite the bucket is the node's.
	RateLimit float64
	RateBurst int
	// SimulatorSeed seeds the simulator transport (--sim-seed, WAQUEUE_SIM_SEED). Default 1.
	SimulatorSeed int64
	// SimulatorLatency is the simulator's time between a hand-over and WhatsApp's acknowledgement
	// (--sim-latency, WAQUEUE_SIM_LATENCY). Default 0. The fault tests use it to catch messages in
	// flight when they kill a node.
	SimulatorLatency time.Duration
	// NoPacing sends as fast as the transport takes messages (--no-pacing, WAQUEUE_NO_PACING).
	// For the simulator and benchmarks only: real numbers get banned without pacing.
	NoPacing bool
	// NoDispatcher serves the API and runs projections without dispatching messages
	// (--no-dispatcher, WAQUEUE_NO_DISPATCHER): for API-only instances. With PostgreSQL read
	// models every instance may dispatch (per-connection leases, docs/operations.md); without,
	// only one process may dispatch.
	NoDispatcher bool
	// GroupCommit is how many shared transactions the PostgreSQL event store runs at once to
	// group concurrent single-event appends (--group-commit, WAQUEUE_GROUP_COMMIT). Default
	// server.DefaultGroupCommit (2); 0 turns group commit off. Ignored on SQLite and EventStoreDB.
	GroupCommit int
	// NodeID names this process in the dispatch leases (--node-id, WAQUEUE_NODE_ID); it must be
	// unique among the running processes. Default empty: hostname-pid-random, fixed for the
	// life of the process (a restart is a new node).
	NodeID string
	// LeaseTTL is how long a dispatch lease lasts unrenewed (--lease-ttl, WAQUEUE_LEASE_TTL):
	// a crashed node's connections resume elsewhere within LeaseTTL plus LeaseRenew. Default 6s.
	LeaseTTL time.Duration
	// LeaseRenew is how often a node renews its leases (--lease-renew, WAQUEUE_LEASE_RENEW).
	// Default 0: a third of LeaseTTL. It must be below half the TTL, so one failed renewal does
	// not lose the leases.
	LeaseRenew time.Duration
	// DrainTimeout is how long a stopping node lets the sends in progress finish and records
	// their outcomes before cancelling the rest, which are then recorded unknown (--drain-timeout,
	// WAQUEUE_DRAIN_TIMEOUT). Default 10s.
	DrainTimeout time.Duration
	// LazySessions claims the lease and connects the WhatsApp session of a connection idle at
	// start only once its queue gets work (--lazy-sessions, WAQUEUE_LAZY_SESSIONS): for nodes
	// with very many idle connections (docs/scaling.md). Default off.
	LazySessions bool
	// LogLevel is debug, info, warn or error (--log-level, WAQUEUE_LOG_LEVEL). Default info.
	LogLevel string
	// AuditKey is the file of the Ed25519 key that signs the audit chain's checkpoints
	// (--audit-key, WAQUEUE_AUDIT_KEY), created (0600) at first start when missing. The
	// database never holds it. Default DATA_DIR/audit-key.pem; with the embedded SQLite
	// database in the same directory, put it elsewhere to keep it from whoever can write the
	// database file.
	AuditKey string
	// AuditCheckpointEvery is how many new audit entries of a tenant make a checkpoint due
	// (--audit-checkpoint-every, WAQUEUE_AUDIT_CHECKPOINT_EVERY). Default 100.
	AuditCheckpointEvery int
	// AuditCheckpointInterval is the longest an audit entry waits for a checkpoint
	// (--audit-checkpoint-interval, WAQUEUE_AUDIT_CHECKPOINT_INTERVAL). Default 5m.
	AuditCheckpointInterval time.Duration
	// WebhookAllowPrivate lets webhooks reach loopback, private, link-local, metadata and other
	// non-public addresses (--webhook-allow-private, WAQUEUE_WEBHOOK_ALLOW_PRIVATE). Default
	// false: public addresses only. Prefer WebhookAllowCIDRs.
	WebhookAllowPrivate bool
	// WebhookAllowCIDRs are non-public networks webhooks may reach nonetheless, comma-separated
	// (--webhook-allow-cidrs, WAQUEUE_WEBHOOK_ALLOW_CIDRS), e.g. "10.20.0.0/16,fd00:1::/64".
	WebhookAllowCIDRs []string
	// WebhookAllowPrefixes is WebhookAllowCIDRs parsed by Validate.
	WebhookAllowPrefixes []netip.Prefix
}

// env maps each flag to its environment variable.
var env = map[string]string{
	"data-dir":   "WAQUEUE_DATA_DIR",
	"db":         "WAQUEUE_DB",
	"eventstore": "WAQUEUE_EVENTSTORE",
	"transport":  "WAQUEUE_TRANSPORT",
	"broker":     "WAQUEUE_BROKER",
	"listen":     "WAQUEUE_LISTEN",

	"metrics-listen":     "WAQUEUE_METRICS_LISTEN",
	"metrics-token":      "WAQUEUE_METRICS_TOKEN",
	"metrics-tenant-top": "WAQUEUE_METRICS_TENANT_TOP",
	"rate-limit":         "WAQUEUE_RATE_LIMIT",
	"rate-burst":         "WAQUEUE_RATE_BURST",
	"sim-seed":           "WAQUEUE_SIM_SEED",
	"sim-latency":        "WAQUEUE_SIM_LATENCY",
	"log-level":          "WAQUEUE_LOG_LEVEL",
	"no-pacing":          "WAQUEUE_NO_PACING",
	"no-dispatcher":      "WAQUEUE_NO_DISPATCHER",
	"group-commit":       "WAQUEUE_GROUP_COMMIT",
	"node-id":            "WAQUEUE_NODE_ID",
	"lease-ttl":          "WAQUEUE_LEASE_TTL",
	"lease-renew":        "WAQUEUE_LEASE_RENEW",
	"lazy-sessions":      "WAQUEUE_LAZY_SESSIONS",
	"drain-timeout":      "WAQUEUE_DRAIN_TIMEOUT",

	"audit-key":                 "WAQUEUE_AUDIT_KEY",
	"audit-checkpoint-every":    "WAQUEUE_AUDIT_CHECKPOINT_EVERY",
	"audit-checkpoint-interval": "WAQUEUE_AUDIT_CHECKPOINT_INTERVAL",
	"webhook-allow-private":     "WAQUEUE_WEBHOOK_ALLOW_PRIVATE",
	"webhook-allow-cidrs":       "WAQUEUE_WEBHOOK_ALLOW_CIDRS",

	"broker-token-key": "WAQUEUE_BROKER_TOKEN_KEY",
}

// EnvVars returns every environment variable the configuration reads, keyed by flag name (a
// copy). The packaging tests check docker-compose.yml against it.
func EnvVars() map[string]string { return maps.Clone(env) }

// Bind registers the flags on fs, with defaults.
func (c *Config) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", ".data", "directory for the SQLite database and local state ($WAQUEUE_DATA_DIR)")
	fs.StringVar(&c.DB, "db", "", "sqlite://PATH or postgres://… (default sqlite://DATA_DIR/waqueue.db) ($WAQUEUE_DB)")
	fs.StringVar(&c.EventStore, "eventstore", "", "esdb://host:2113?tls=… to keep events in EventStoreDB ($WAQUEUE_EVENTSTORE)")
	fs.StringVar(&c.Transport, "transport", TransportSimulator, "simulator or whatsmeow ($WAQUEUE_TRANSPORT)")
	fs.StringVar(&c.Broker, "broker", "", "empty for in-process, or nats://host:4222 ($WAQUEUE_BROKER)")
	fs.StringVar(&c.BrokerTokenKey, "broker-token-key", "", "file of the secret signing broker tokens, the same on every node (default DATA_DIR/broker-token.key) ($WAQUEUE_BROKER_TOKEN_KEY)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP listen address ($WAQUEUE_LISTEN)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "127.0.0.1:9090", "Prometheus metrics listen address, apart from the API; empty turns it off ($WAQUEUE_METRICS_LISTEN)")
	fs.StringVar(&c.MetricsToken, "metrics-token", "", "bearer token the metrics listener requires (prefer $WAQUEUE_METRICS_TOKEN)")
	fs.IntVar(&c.MetricsTenantTop, "metrics-tenant-top", 0, "break queue depths down by tenant for this many tenants, 0 for none, at most 100 ($WAQUEUE_METRICS_TENANT_TOP)")
	fs.Float64Var(&c.RateLimit, "rate-limit", 500, "a tenant's default API rate limit, requests a second, shared by the nodes of a PostgreSQL database; 0 for none ($WAQUEUE_RATE_LIMIT)")
	fs.IntVar(&c.RateBurst, "rate-burst", 1000, "a tenant's default API burst ($WAQUEUE_RATE_BURST)")
	fs.Int64Var(&c.SimulatorSeed, "sim-seed", 1, "seed of the simulator transport ($WAQUEUE_SIM_SEED)")
	fs.DurationVar(&c.SimulatorLatency, "sim-latency", 0, "simulator transport: time between a hand-over and its acknowledgement ($WAQUEUE_SIM_LATENCY)")
	fs.BoolVar(&c.NoPacing, "no-pacing", false, "send without pacing (simulator and benchmarks only) ($WAQUEUE_NO_PACING)")
	fs.BoolVar(&c.NoDispatcher, "no-dispatcher", false, "serve the API without dispatching (extra API-only instances) ($WAQUEUE_NO_DISPATCHER)")
	fs.IntVar(&c.GroupCommit, "group-commit", 2, "PostgreSQL event store: group concurrent single-event appends in up to N shared transactions; 0 turns it off ($WAQUEUE_GROUP_COMMIT)")
	fs.StringVar(&c.NodeID, "node-id", "", "this node's id in the dispatch leases, unique among the running nodes (default hostname-pid-random) ($WAQUEUE_NODE_ID)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 6*time.Second, "dispatch lease TTL: a crashed node's connections resume elsewhere within TTL + renew interval ($WAQUEUE_LEASE_TTL)")
	fs.BoolVar(&c.LazySessions, "lazy-sessions", false, "connect an idle connection's session (and claim its lease) only once its queue gets work ($WAQUEUE_LAZY_SESSIONS)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "at a graceful stop, how long the sends in progress may finish before they are cancelled and recorded unknown ($WAQUEUE_DRAIN_TIMEOUT)")
	fs.DurationVar(&c.LeaseRenew, "lease-renew", 0, "dispatch lease renewal interval, below half the TTL (default a third of the TTL) ($WAQUEUE_LEASE_RENEW)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error ($WAQUEUE_LOG_LEVEL)")
	fs.StringVar(&c.AuditKey, "audit-key", "", "Ed25519 key file signing audit checkpoints, created if missing (default DATA_DIR/audit-key.pem) ($WAQUEUE_AUDIT_KEY)")
	fs.IntVar(&c.AuditCheckpointEvery, "audit-checkpoint-every", 100, "sign an audit checkpoint after this many new entries of a tenant ($WAQUEUE_AUDIT_CHECKPOINT_EVERY)")
	fs.DurationVar(&c.AuditCheckpointInterval, "audit-checkpoint-interval", 5*time.Minute, "longest an audit entry waits for a signed checkpoint ($WAQUEUE_AUDIT_CHECKPOINT_INTERVAL)")
	fs.BoolVar(&c.WebhookAllowPrivate, "webhook-allow-private", false, "let webhooks reach loopback, private and other non-public addresses ($WAQUEUE_WEBHOOK_ALLOW_PRIVATE)")
	fs.StringSliceVar(&c.WebhookAllowCIDRs, "webhook-allow-cidrs", nil, "non-public networks webhooks may reach, comma-separated CIDRs ($WAQUEUE_WEBHOOK_ALLOW_CIDRS)")
}

// ApplyEnv sets every flag not given on the command line from its environment variable.
func ApplyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	for name, key := range env {
		f := fs.Lookup(name)
		if f == nil || f.Changed {
			continue
		}
		if v, ok := lookup(key); ok {
			if err := fs.Set(name, v); err != nil {
				errs = append(errs, fmt.Errorf("config: %s=%q: %w", key, v, err))
			}
		}
	}
	return errors.Join(errs...)
}

// MetricsExposed reports whether the metrics listener is configured on a non-loopback address
// without a token: `waqueue serve` warns about it.
func (c *Config) MetricsExposed() bool {
	if c.MetricsListen == "" || c.MetricsToken != "" {
		return false
	}
	host, _, err := net.SplitHostPort(c.MetricsListen)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err != nil || !a.IsLoopback()
}

// Engine is the database engine DB names.
func (c *Config) Engine() string {
	if strings.HasPrefix(c.DB, "postgres://") || strings.HasPrefix(c.DB, "postgresql://") {
		return "postgres"
	}
	return "sqlite"
}

// SQLitePath is the file of a sqlite:// DB.
func (c *Config) SQLitePath() string {
	return strings.TrimPrefix(c.DB, "sqlite://")
}

// Validate fills derived defaults and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.GroupCommit < 0 {
		errs = append(errs, fmt.Errorf("config: --group-commit %d is negative (0 turns group commit off)", c.GroupCommit))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("config: --data-dir is empty"))
	}
	if c.DB == "" {
		c.DB = "sqlite://" + filepath.Join(c.DataDir, "waqueue.db")
	}
	if c.AuditKey == "" {
		c.AuditKey = filepath.Join(c.DataDir, "audit-key.pem")
	}
	if c.AuditCheckpointEvery < 1 {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_AUDIT_CHECKPOINT_EVERY %d: want at least 1", c.AuditCheckpointEvery))
	}
	if c.AuditCheckpointInterval < time.Second {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_AUDIT_CHECKPOINT_INTERVAL %s: want at least 1s", c.AuditCheckpointInterval))
	}
	switch {
	case strings.HasPrefix(c.DB, "sqlite://"):
		if c.SQLitePath() == "" {
			errs = append(errs, errors.New("config: WAQUEUE_DB sqlite:// needs a file path, e.g. sqlite://.data/waqueue.db"))
		}
	case strings.HasPrefix(c.DB, "postgres://"), strings.HasPrefix(c.DB, "postgresql://"):
		if _, err := url.Parse(c.DB); err != nil {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_DB is not a valid postgres URL: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("config: WAQUEUE_DB %q: want sqlite://PATH or postgres://…", c.DB))
	}
	if c.EventStore != "" {
		if !strings.HasPrefix(c.EventStore, "esdb://") && !strings.HasPrefix(c.EventStore, "kurrentdb://") &&
			!strings.HasPrefix(c.EventStore, "esdb+discover://") && !strings.HasPrefix(c.EventStore, "kurrentdb+discover://") {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_EVENTSTORE %q: want esdb://host:2113?tls=… or kurrentdb://…", c.EventStore))
		}
		if c.Engine() != "postgres" {
			errs = append(errs, errors.New("config: WAQUEUE_EVENTSTORE needs WAQUEUE_DB=postgres://… for the read models"))
		}
	}
	switch c.Transport {
	case TransportSimulator, TransportWhatsmeow:
	default:
		errs = append(errs, fmt.Errorf("config: WAQUEUE_TRANSPORT %q: want simulator or whatsmeow", c.Transport))
	}
	if c.Broker != "" && !strings.HasPrefix(c.Broker, "nats://") {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_BROKER %q: want empty (in-process) or nats://host:4222", c.Broker))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_LISTEN %q: %w", c.Listen, err))
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_METRICS_LISTEN %q: %w", c.MetricsListen, err))
		} else if c.MetricsListen == c.Listen && port != "0" {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_METRICS_LISTEN %q is the API's address: metrics need a listener of their own", c.MetricsListen))
		}
	}
	if c.RateLimit < 0 || c.RateLimit > 100_000 {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_RATE_LIMIT %g: want 0 to 100000", c.RateLimit))
	}
	if c.RateBurst < 1 || c.RateBurst > 1_000_000 {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_RATE_BURST %d: want 1 to 1000000", c.RateBurst))
	}
	if c.MetricsTenantTop < 0 || c.MetricsTenantTop > 100 {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_METRICS_TENANT_TOP %d: want 0 to 100", c.MetricsTenantTop))
	}
	c.WebhookAllowPrefixes = nil
	for _, cidr := range c.WebhookAllowCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
		if err != nil {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_WEBHOOK_ALLOW_CIDRS %q: %w", cidr, err))
			continue
		}
		c.WebhookAllowPrefixes = append(c.WebhookAllowPrefixes, p.Masked())
	}
	if c.DrainTimeout < 0 || c.DrainTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("config: --drain-timeout %s: want 0 (cancel sends at once) to 10m", c.DrainTimeout))
	}
	if c.SimulatorLatency < 0 || c.SimulatorLatency > time.Minute {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_SIM_LATENCY %s: want 0 to 1m", c.SimulatorLatency))
	}
	if c.LeaseTTL < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_LEASE_TTL %s: want at least 100ms", c.LeaseTTL))
	} else {
		if c.LeaseRenew == 0 {
			c.LeaseRenew = c.LeaseTTL / 3
		}
		if c.LeaseRenew <= 0 || c.LeaseRenew >= c.LeaseTTL/2 {
			errs = append(errs, fmt.Errorf("config: WAQUEUE_LEASE_RENEW %s: want positive and below half of WAQUEUE_LEASE_TTL %s", c.LeaseRenew, c.LeaseTTL))
		}
	}
	if strings.ContainsFunc(c.NodeID, func(r rune) bool { return r < 0x21 || r > 0x7e }) || len(c.NodeID) > 200 {
		errs = append(errs, fmt.Errorf("config: WAQUEUE_NODE_ID %q: want at most 200 printable ASCII characters without spaces", c.NodeID))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("config: WAQUEUE_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
