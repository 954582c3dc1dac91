package dispatcher

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
)

// Defaults. The pacing of a connection is its sending policy (connection.SendingPolicy, with
// its documented defaults), not configuration: see Pacing.
const (
	DefaultSendTimeout     = 60 * time.Second
	DefaultDrainTimeout    = 10 * time.Second
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = 5 * time.Minute
	DefaultMaxSendAttempts = 6
)

// Pacing is the server-wide pacing override. Each connection is paced by its own sending policy
// (connection.SendingPolicy: minimum interval, jitter, daily cap, quiet hours in its time zone;
// recorded by SendingPolicyChanged, the defaults otherwise), read by the loop at every turn.
type Pacing struct {
	// Unpaced overrides every connection's sending policy: no interval, no jitter, no daily
	// cap, no quiet hours; messages go out as fast as the transport takes them. For the
	// simulator, tests and benchmarks (--no-pacing); never for real numbers.
	Unpaced bool
}

// Config configures a Dispatcher.
type Config struct {
	// Store is the event store: its global log wakes loops, and connection streams are read to
	// rebuild the daily counts. Required.
	Store eventstore.Store
	// Repository loads connections and appends their decisions. Required.
	Repository *commands.Repository
	// Messages finds the head of a queue (the pending-queue projection, see QueueMessages).
	// Required.
	Messages commands.QueuedMessages
	// Transport sends the messages and reports connection events. Required. Run registers the
	// Dispatcher as its only event handler.
	Transport transport.Transport
	// Locator finds the queue position of a message for a receipt the Dispatcher cannot place
	// otherwise (see StatusLocator). Optional: without it receipts for messages dispatched
	// before this process started and no longer in flight are ignored.
	Locator MessageLocator
	// Clock drives pacing, the daily cap, quiet hours and retry backoff, and stamps decisions. Default
	// transport.SystemClock. (Send timeouts and projection-lag polling use real time: they wait
	// for I/O, not for a schedule.)
	Clock transport.Clock
	// Pacing spaces messages; see Pacing.
	Pacing Pacing
	// Seed seeds the jitter generator. Zero means a seed drawn at start.
	Seed uint64
	// SendTimeout bounds one Send; when it passes the outcome is unknown and recorded so.
	// Default DefaultSendTimeout (60s).
	SendTimeout time.Duration
	// DrainTimeout is how long a stopping Dispatcher (Run's context ended) lets the sends in
	// progress finish and records their outcomes, keeping its leases renewed meanwhile, before it
	// cancels the rest (recorded unknown, cause "shutdown"). No new message is dispatched once
	// the context ended. Default DefaultDrainTimeout (10s); negative: cancel at once.
	DrainTimeout time.Duration
	// RetryBackoff is the first pause before retrying a Send refused with ErrRateLimited or
	// ErrNotConnected; it doubles per attempt up to MaxRetryBackoff. A SendError.RetryAfter
	// hint, when longer, is used instead. Defaults DefaultRetryBackoff (1s) and
	// DefaultMaxRetryBackoff (5min).
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// MaxSendAttempts bounds the Sends of one message refused with ErrRateLimited; after the
	// last the message is recorded failed ("not_sent"). ErrNotConnected refusals are retried
	// without this bound for as long as the link is active and the queue open in the domain.
	// Default DefaultMaxSendAttempts (6).
	MaxSendAttempts int
	// Backlog, when set, is asked at start which connections exist and which may have work (see
	// QueueBacklog): the Dispatcher wakes the busy ones, records the idle ones without a loop,
	// and replays the event log's wake events only from the Backlog's position; with exclusive
	// leases the renewals claim the idle connections' leases in one call and connect their
	// sessions without a loop. Optional: without it the replay starts at the beginning of the
	// log and every connection it meets gets a loop (which claims its lease, recovers and finds
	// nothing to do).
	Backlog Backlog
	// LazySessions leaves the lease, and so the transport session, of a connection the Backlog
	// found idle unclaimed until its queue first gets work (exclusive leases only), instead of
	// having the renewals claim it. With many idle connections per node it saves their leases'
	// renewals (a row each per renewal on PostgreSQL) and their sessions. The price: an idle
	// number's ban or logout, and receipts of messages sent before the start, are seen only once
	// its session connects. Default false: every connection's session runs on some node.
	LazySessions bool
	// Leases are the per-connection leases that let several nodes share the dispatch: a
	// connection's loop runs, and its transport session is connected, only while this node holds
	// its lease, and every hand-over records the lease's epoch (see the package doc). Default
	// &SingleNode{} (one dispatching process: every lease granted, epoch 0, no sessions managed).
	Leases Leases
	// LeaseRenewInterval is how often the leases of this node are renewed (one statement for all
	// of them) and the connections held by others retried. Default a third of Leases.TTL();
	// unused when the TTL is 0. It must be below the TTL.
	LeaseRenewInterval time.Duration
	// Registerer receives the Dispatcher's metrics (see Metrics). Optional: nil registers none
	// (the metrics are still kept).
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = transport.SystemClock{}
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if c.MaxSendAttempts == 0 {
		c.MaxSendAttempts = DefaultMaxSendAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Leases == nil {
		c.Leases = &SingleNode{}
	}
	if c.LeaseRenewInterval == 0 {
		c.LeaseRenewInterval = c.Leases.TTL() / 3
	}
}

// Validate reports every problem of the config (after defaults), joined.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("dispatcher: Config.Store is nil"))
	}
	if c.Repository == nil {
		errs = append(errs, errors.New("dispatcher: Config.Repository is nil"))
	}
	if c.Messages == nil {
		errs = append(errs, errors.New("dispatcher: Config.Messages is nil"))
	}
	if c.Transport == nil {
		errs = append(errs, errors.New("dispatcher: Config.Transport is nil"))
	}
	if c.SendTimeout < 0 {
		errs = append(errs, fmt.Errorf("dispatcher: SendTimeout %s is negative", c.SendTimeout))
	}
	if c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 {
		errs = append(errs, fmt.Errorf("dispatcher: retry backoff %s/%s is negative", c.RetryBackoff, c.MaxRetryBackoff))
	}
	if c.RetryBackoff > 0 && c.MaxRetryBackoff > 0 && c.MaxRetryBackoff < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("dispatcher: MaxRetryBackoff %s is below RetryBackoff %s", c.MaxRetryBackoff, c.RetryBackoff))
	}
	if c.MaxSendAttempts < 0 {
		errs = append(errs, fmt.Errorf("dispatcher: MaxSendAttempts %d is negative", c.MaxSendAttempts))
	}
	if c.Leases != nil && c.Leases.TTL() > 0 && (c.LeaseRenewInterval <= 0 || c.LeaseRenewInterval >= c.Leases.TTL()) {
		errs = append(errs, fmt.Errorf("dispatcher: LeaseRenewInterval %s must be positive and below the lease TTL %s", c.LeaseRenewInterval, c.Leases.TTL()))
	}
	return errors.Join(errs...)
}
