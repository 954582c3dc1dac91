// Package postgres is the PostgreSQL adapter of the eventstore port, on pgx/v5.
//
// # Schema
//
// One table, waqueue_events, holds every event with its stream, revision, caller-given id and
// global position. Unique indexes on (stream, revision) and (id) back optimistic concurrency
// and duplicate detection; the primary key (tx_id, seq) is the global order. There is no
// separate streams table: a stream's last revision is read from the (stream, revision) index.
// Migrate creates and upgrades the schema with goose, recording versions in its own table
// (waqueue_eventstore_migrations), so read-model packages can keep their own migration sets
// in the same database.
//
// # Global order: the xid8 snapshot technique
//
// A bigserial alone cannot be the global position: sequence values are handed out when rows
// are inserted, not when they commit. If transaction A takes seq 10 and transaction B takes
// seq 11 but commits first, a reader that sees 11 and checkpoints it skips 10 forever when A
// commits.
//
// Each event therefore also stores tx_id = pg_current_xact_id() of the transaction that wrote
// it, and the global order is (tx_id, seq): eventstore.Position{Commit: tx_id, Prepare: seq}.
// Readers only return rows with tx_id < pg_snapshot_xmin(pg_current_snapshot()), the oldest
// transaction id still running. Every transaction below that horizon has finished, and every
// transaction that commits later has an id at or above it, so no later commit can land
// before a position already returned. The cost: events of a committed transaction wait until
// every older transaction (of any database in the cluster, since transaction ids are
// cluster-wide) has ended. Keep long-running writing transactions off this cluster.
//
// Per-stream order must agree with the global order: revision r+1 must have a greater
// position than r. A transaction gets its id at its first write, so an append takes a
// per-stream lock first — pg_advisory_xact_lock(hashtextextended(stream, 0)), which assigns
// no transaction id — and only then reads the stream's revision and writes. The next writer
// of the stream waits on the lock until the previous one has committed, so its id, assigned
// afterwards, is greater. (SELECT ... FOR UPDATE would not do: row locks assign an id.)
// Two streams whose names hash alike only share a lock; their appends serialize, nothing else.
//
// # Appends
//
// An append below Options.CopyThreshold events is one transaction in one round trip, pipelined:
// BEGIN; the stream lock; one statement that reads the stream's revision, checks the
// expectation and inserts (one row, or rows unnested from arrays); COMMIT; and a NOTIFY, sent
// after the commit in its own implicit transaction — a NOTIFY inside the appending transaction
// would hold the notify queue's lock across the commit's WAL flush and serialise all commits,
// defeating group commit. Larger batches read the revision first, COPY the events, then read
// the position and commit: three exchanges, amortised over the batch. Duplicate ids surface as
// a unique violation on the id index; the store then looks the ids up in a fresh statement to
// tell an idempotent retry from a duplicate. Append returns after the commit is flushed.
//
// # Subscriptions
//
// Subscribe catches up in pages of Options.PageSize events, then waits. It wakes on a
// notification: appends through this Store wake its subscribers directly, and a dedicated
// connection LISTENs for appends of other processes (a NOTIFY carries the store's origin, so
// the listener ignores the echo of the store's own). When visible rows are known to be
// held back by an older open transaction, it polls with a short backoff (Options.PendingPoll,
// doubling up to Options.MaxPendingPoll) until they are released; otherwise it only checks
// every Options.IdlePoll, to survive a lost notification. Subscriptions at the tail share
// their page reads (tail.go): one read per commit serves every subscription of the store.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// MigrationsTable is the goose version table of the event store schema.
const MigrationsTable = "waqueue_eventstore_migrations"

// NotifyChannel is the LISTEN/NOTIFY channel on which appends announce new events.
const NotifyChannel = "waqueue_eventstore"

//go:embed migrations/*.sql
var migrations embed.FS

var _ eventstore.Store = (*Store)(nil)

// DefaultGroupCommitters is the GroupCommitters the server uses unless told otherwise: one
// shared transaction waits for its commit's WAL flush while the next fills. More groups at
// once contend for the same index pages and CPU: on 2 cores, `bench api` ran at 0.66–0.81 of
// plain INSERT commits with 2 against 0.61–0.71 with 4, using about 25 µs less database CPU
// per request, and the dispatcher stayed at 0.79–0.91 (docs/benchmarks.md, 2026-12-02).
const DefaultGroupCommitters = 2

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// Clock stamps RecordedAt, once per append. Nil means time.Now in UTC.
	Clock eventstore.Clock
	// CopyThreshold is the batch size from which appends use COPY instead of INSERT. Zero means 64.
	CopyThreshold int
	// PageSize is how many events a subscription reads per query while catching up. Zero means 5000.
	PageSize int
	// PendingPoll is the first delay of the backoff poll while committed events are held back
	// by an older open transaction. Zero means 2ms.
	PendingPoll time.Duration
	// MaxPendingPoll caps that backoff. Zero means 200ms.
	MaxPendingPoll time.Duration
	// ReadWait bounds how long ReadAll waits for older open transactions that hold back
	// events committed before the call (see ReadAll). Zero means 2s.
	ReadWait time.Duration
	// IdlePoll is how often an idle subscription checks for events without being notified
	// (a safety net for a lost notification). Zero means 2s.
	IdlePoll time.Duration
	// GroupCommitters, when positive, turns group commit of single-event appends on: at most
	// this many shared transactions run at once (see group.go). Zero or negative appends every
	// event in a transaction of its own. The store's zero value is off; the server turns it on
	// with DefaultGroupCommitters (server.Options.GroupCommit, `waqueue serve --group-commit`),
	// which measured faster for the API's enqueues and the dispatcher (docs/benchmarks.md).
	GroupCommitters int
	// GroupMax is the most appends one shared transaction takes. Zero means 256.
	GroupMax int
	// GroupMin is how many appends must be waiting for a group to start while another one
	// runs (up to GroupCommitters); with no group running one starts at once, whatever waits.
	// Under load appends thus share few, large transactions (each commit also wakes every
	// subscription), and a group stuck on a stream lock holds up only the few appends queued
	// behind it until GroupMin more arrive. Zero means 16 (64 saved the API a little more but
	// serialized the dispatcher, whose at most 32 writers rarely leave 64 waiting).
	GroupMin int
	// GroupStall is how long the running groups may go without taking a new group before an
	// append waiting for them starts one beside them (up to GroupCommitters), however few wait:
	// a group stuck on a stream lock (a broadcast's large append to one connection holds it for
	// as long as its COPY) then delays the appends of other streams by at most about this much,
	// not until GroupMin of them queue. Zero means 20ms; negative, never (GroupMin alone).
	GroupStall time.Duration
}

func (o *Options) setDefaults() {
	if o.Clock == nil {
		o.Clock = func() time.Time { return time.Now().UTC() }
	}
	if o.CopyThreshold <= 0 {
		o.CopyThreshold = 64
	}
	if o.PageSize <= 0 {
		o.PageSize = 5000
	}
	if o.PendingPoll <= 0 {
		o.PendingPoll = 2 * time.Millisecond
	}
	if o.MaxPendingPoll <= 0 {
		o.MaxPendingPoll = 200 * time.Millisecond
	}
	if o.ReadWait <= 0 {
		o.ReadWait = 2 * time.Second
	}
	if o.IdlePoll <= 0 {
		o.IdlePoll = 2 * time.Second
	}
	if o.GroupMax <= 0 {
		o.GroupMax = 256
	}
	if o.GroupMin <= 0 {
		o.GroupMin = 16
	}
	if o.GroupStall == 0 {
		o.GroupStall = 20 * time.Millisecond
	}
}

// Store is the PostgreSQL event store. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
	opts     Options
	wake     *broadcaster
	// origin tells this store's notifications from those of other stores (see sqlNotify).
	origin string

	mu       sync.Mutex
	closed   bool
	listener *listener // started by the first Subscribe
	group    grouper   // single-event appends waiting for a shared transaction
	tail     tailReads // page reads shared by the subscriptions at the tail
}

// DefaultMaxConns is the pool size Open uses when the URL sets no pool_max_conns. An append
// spends most of its time waiting for the WAL flush of its commit, not on a CPU, so a pool
// larger than the machine's cores (2 here) lets concurrent commits share one flush (group
// commit); beyond about 32 extra connections only add server memory and lock contention.
const DefaultMaxConns = 32

// Open connects to the database at url with a pool of its own, closed by Close. The URL may
// tune the pool (pool_max_conns, ...). It does not migrate: call Migrate (or `waqueue migrate`).
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := PoolConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", err)
	}
	s := New(pool, opts)
	s.ownsPool = true
	return s, nil
}

// PoolConfig parses url into a pool configuration with this package's defaults: at most
// DefaultMaxConns connections (unless the URL sets pool_max_conns), idle connections kept
// for 5 minutes.
func PoolConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database url: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.MaxConnIdleTime = 5 * time.Minute
	return cfg, nil
}

// New returns a Store on a pool owned by the caller (Close leaves it open).
func New(pool *pgxpool.Pool, opts Options) *Store {
	opts.setDefaults()
	return &Store{pool: pool, opts: opts, wake: newBroadcaster(), origin: uuid.NewString()}
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Migrate brings the event store schema to the latest version.
func (s *Store) Migrate(ctx context.Context) error { return Migrate(ctx, s.pool) }

// migrateMu serialises migrations within the process; goose's session lock does it across
// processes but polls only once a second.
var migrateMu sync.Mutex

// Migrate brings the event store schema in pool's database to the latest version. Concurrent
// callers (also in other processes) wait for each other.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrateMu.Lock()
	defer migrateMu.Unlock()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return migrateDB(ctx, db)
}

func migrateDB(ctx context.Context, db *sql.DB) error {
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(0x7761717565756531), // "waqueue1"
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return fmt.Errorf("postgres: migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrationsFS(),
		goose.WithTableName(MigrationsTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// Close stops the store's subscriptions' listener and, if Open created the pool, closes it.
// Subscriptions still running fail with ErrClosed; later calls return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	l := s.listener
	s.mu.Unlock()
	s.wake.close()
	if l != nil {
		l.stop()
	}
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ensureListener starts the LISTEN connection on first use.
func (s *Store) ensureListener() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return eventstore.ErrClosed
	}
	if s.listener == nil {
		s.listener = startListener(s.pool.Config().ConnConfig.Copy(), s.wake, s.origin)
	}
	return nil
}

// broadcaster wakes every waiter at once: waiters take the current channel, which is closed
// and replaced on each notification.
type broadcaster struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan struct{})} }

// wait returns a channel closed at the next notify (or at close).
func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	close(b.ch)
	b.ch = make(chan struct{})
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.ch)
	}
}

// listener holds a dedicated connection that LISTENs on NotifyChannel and wakes subscribers.
// It reconnects with backoff after a failure, waking subscribers on every reconnect since
// notifications may have been missed meanwhile.
type listener struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startListener(cfg *pgx.ConnConfig, wake *broadcaster, origin string) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := listen(ctx, cfg, wake, origin)
			if ctx.Err() != nil {
				return
			}
			_ = err // the subscriptions' own queries report a broken database
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
	return l
}

// listen wakes subscribers on every notification but the store's own (origin): those it
// announced to its subscribers directly, before the echo could arrive.
func listen(ctx context.Context, cfg *pgx.ConnConfig, wake *broadcaster, origin string) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	wake.notify() // anything committed while we were not listening
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload != origin {
			wake.notify()
		}
	}
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

func migrationsFS() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sub
}
