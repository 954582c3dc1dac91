package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
)

// Adapter names accepted in Config.Adapters.
const (
	AdapterPostgres = "postgres"
	AdapterSQLite   = "sqlite"
)

// Config configures the store benchmark. The zero value measures both adapters at full size
// on a throwaway PostgreSQL cluster and a temporary SQLite file.
type Config struct {
	// DatabaseURL is the PostgreSQL database to measure. It must be a scratch database: the
	// benchmark appends events to it and creates (then drops) the table bench_plain. Empty
	// means a throwaway cluster started with pgcluster (durable settings).
	DatabaseURL string
	// SQLitePath is the SQLite file to measure (a scratch file). Empty means a file in Dir.
	SQLitePath string
	// Dir is where temporary files go. Empty means os.TempDir().
	Dir string
	// CatchUpEvents is how many events the catch-up figure reads through Subscribe.
	// Zero means 1,000,000.
	CatchUpEvents int
	// BatchEvents is how many events the batch-append figure writes, in batches of
	// BatchSize. Zero means 200,000.
	BatchEvents int
	// BatchSize is the number of events per batch append. Zero means 1,000.
	BatchSize int
	// SingleEvents is how many single-event appends the single-append figure makes, spread
	// over Writers. Zero means 8,000.
	SingleEvents int
	// Writers is the number of concurrent writers (each to its own stream) for single
	// appends and their baseline. Zero means 32.
	Writers int
	// GroupCommit is as server.Options.GroupCommit for the PostgreSQL store measured: 0 means
	// server.DefaultGroupCommit, negative off.
	GroupCommit int
	// Rounds is how many times each figure and its baseline are measured, alternately; the
	// best rate of each is reported, which damps the noise of a shared machine. Zero means 3.
	Rounds int
	// Adapters lists the adapters to measure (AdapterPostgres, AdapterSQLite). Empty means both.
	Adapters []string
}

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = os.TempDir()
	}
	if c.CatchUpEvents <= 0 {
		c.CatchUpEvents = 1_000_000
	}
	if c.BatchEvents <= 0 {
		c.BatchEvents = 200_000
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.SingleEvents <= 0 {
		c.SingleEvents = 8000
	}
	if c.Writers <= 0 {
		c.Writers = 32
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if len(c.Adapters) == 0 {
		c.Adapters = []string{AdapterPostgres, AdapterSQLite}
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	for _, a := range c.Adapters {
		if a != AdapterPostgres && a != AdapterSQLite {
			errs = append(errs, fmt.Errorf("bench: unknown adapter %q (want %s or %s)", a, AdapterPostgres, AdapterSQLite))
		}
	}
	if c.BatchSize > 0 && c.BatchEvents > 0 && c.BatchEvents < c.BatchSize {
		errs = append(errs, fmt.Errorf("bench: BatchEvents %d is less than one batch of %d", c.BatchEvents, c.BatchSize))
	}
	return errors.Join(errs...)
}

// Store measures the event store adapters and writes BENCH lines to w: for each adapter,
// append-batch (baseline: the same rows copied into a plain table with the same indexes —
// COPY on PostgreSQL, INSERTs in one transaction on SQLite), append-single (baseline:
// single-row INSERT commits at the same concurrency) and catch-up through Subscribe
// (baseline: a plain SELECT of the same rows).
func Store(ctx context.Context, cfg Config, w io.Writer) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	for _, a := range cfg.Adapters {
		var err error
		switch a {
		case AdapterPostgres:
			err = benchPostgres(ctx, cfg, w)
		case AdapterSQLite:
			err = benchSQLite(ctx, cfg, w)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// workload builds the events the benchmark appends: realistic message-queue events with a
// JSON body of about 200 bytes and full metadata.
type workload struct {
	run string // unique per run, so streams never collide with an earlier run's
}

func newWorkload() workload { return workload{run: uuid.NewString()[:8]} }

func (wl workload) stream(kind string, i int) string {
	return fmt.Sprintf("bench-%s-%s-%d", wl.run, kind, i)
}

func (wl workload) events(n int) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		id := uuid.New()
		evs[i] = eventstore.EventData{
			ID:   id,
			Type: "MessageQueued",
			Data: json.RawMessage(fmt.Sprintf(`{"message_id":"%s","to":"+4915112345678","text":"Hello, this is message %d of the benchmark run %s.","ttl_s":86400}`, id, i, wl.run)),
			Metadata: eventstore.Metadata{
				TenantID: "tenant-bench", Actor: "api-key:bench", CorrelationID: id.String(), CausationID: id.String(),
			},
		}
	}
	return evs
}

// measure runs one round of a figure or a baseline: it returns how many events it handled
// and how long that took.
type measure func(ctx context.Context, round int) (events int, elapsed time.Duration, err error)

// best runs m and its baseline b alternately for rounds rounds and keeps the best rate of each.
func best(ctx context.Context, rounds int, name, baseline string, m, b measure) (result, error) {
	r := result{name: name, baseline: baseline}
	for i := range rounds {
		n, d, err := m(ctx, i)
		if err != nil {
			return r, fmt.Errorf("bench: %s: %w", name, err)
		}
		if perSecond(n, d) > perSecond(r.events, r.elapsed) {
			r.events, r.elapsed = n, d
		}
		n, d, err = b(ctx, i)
		if err != nil {
			return r, fmt.Errorf("bench: %s baseline %s: %w", name, baseline, err)
		}
		if perSecond(n, d) > perSecond(r.baseEvents, r.baseElapsed) {
			r.baseEvents, r.baseElapsed = n, d
		}
	}
	return r, nil
}

// batchAppends returns a measure appending cfg.BatchEvents events to one stream per round,
// cfg.BatchSize at a time, each batch at the exact expected revision.
func batchAppends(st eventstore.Store, wl workload, cfg Config) measure {
	return func(ctx context.Context, round int) (int, time.Duration, error) {
		batches := wl.batches(cfg)
		stream := wl.stream("batch", round)
		exp := eventstore.NoStream
		start := time.Now()
		for _, b := range batches {
			res, err := st.Append(ctx, stream, exp, b...)
			if err != nil {
				return 0, 0, err
			}
			exp = eventstore.Exact(res.NextExpectedRevision)
		}
		return len(batches) * cfg.BatchSize, time.Since(start), nil
	}
}

func (wl workload) batches(cfg Config) [][]eventstore.EventData {
	all := make([][]eventstore.EventData, cfg.BatchEvents/cfg.BatchSize)
	for i := range all {
		all[i] = wl.events(cfg.BatchSize)
	}
	return all
}

// concurrently runs fn(writer, i) for i in [0, n/writers) on each of writers goroutines and
// returns the number of calls and the elapsed time. It stops at the first error.
func concurrently(ctx context.Context, writers, n int, fn func(ctx context.Context, w, i int) error) (int, time.Duration, error) {
	per := max(n/writers, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if err := fn(ctx, w, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return per * writers, time.Since(start), first
}

// singles makes the events of one round of single appends: per writer, n/writers events.
func (wl workload) singles(cfg Config) [][]eventstore.EventData {
	evs := make([][]eventstore.EventData, cfg.Writers)
	for w := range evs {
		evs[w] = wl.events(max(cfg.SingleEvents/cfg.Writers, 1))
	}
	return evs
}

// singleAppends returns a measure of cfg.Writers concurrent writers, each appending single
// events to a stream of its own at the exact expected revision.
func singleAppends(st eventstore.Store, wl workload, cfg Config) measure {
	return func(ctx context.Context, round int) (int, time.Duration, error) {
		evs := wl.singles(cfg)
		return concurrently(ctx, cfg.Writers, cfg.SingleEvents, func(ctx context.Context, w, i int) error {
			exp := eventstore.NoStream
			if i > 0 {
				exp = eventstore.Exact(uint64(i - 1))
			}
			_, err := st.Append(ctx, wl.stream(fmt.Sprintf("single-%d", round), w), exp, evs[w][i])
			return err
		})
	}
}

// loadCatchUp appends cfg.CatchUpEvents events in batches of cfg.BatchSize.
func loadCatchUp(ctx context.Context, st eventstore.Store, wl workload, cfg Config) error {
	left := cfg.CatchUpEvents
	for i := 0; left > 0; i++ {
		n := min(left, cfg.BatchSize)
		if _, err := st.Append(ctx, wl.stream("catchup", i), eventstore.NoStream, wl.events(n)...); err != nil {
			return fmt.Errorf("bench: load catch-up events: %w", err)
		}
		left -= n
	}
	return nil
}

// catchUp returns a measure reading cfg.CatchUpEvents events through Subscribe from before.
func catchUp(st eventstore.Store, cfg Config, before eventstore.Position) measure {
	return func(ctx context.Context, _ int) (int, time.Duration, error) {
		subCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		count := 0
		var elapsed time.Duration
		start := time.Now()
		err := st.Subscribe(subCtx, before, eventstore.Filter{}, func(e eventstore.RecordedEvent) error {
			count++
			if count == cfg.CatchUpEvents {
				elapsed = time.Since(start)
				cancel()
			}
			return nil
		})
		if count < cfg.CatchUpEvents {
			return 0, 0, fmt.Errorf("catch-up delivered %d of %d events: %w", count, cfg.CatchUpEvents, err)
		}
		return count, elapsed, nil
	}
}

// ---- PostgreSQL ----

const pgPlainTable = `CREATE TABLE bench_plain (
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq            bigserial   NOT NULL,
    id             uuid        NOT NULL,
    stream         text        NOT NULL,
    revision       bigint      NOT NULL,
    type           text        NOT NULL,
    data           json,
    tenant_id      text        NOT NULL DEFAULT '',
    actor          text        NOT NULL DEFAULT '',
    correlation_id text        NOT NULL DEFAULT '',
    causation_id   text        NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (tx_id, seq),
    UNIQUE (stream, revision),
    UNIQUE (id)
)`

var pgPlainColumns = []string{"id", "stream", "revision", "type", "data", "tenant_id", "actor", "correlation_id", "causation_id", "recorded_at"}

func pgRow(e eventstore.EventData, stream string, rev int, now time.Time) []any {
	return []any{[16]byte(e.ID), stream, int64(rev), e.Type, []byte(e.Data),
		e.Metadata.TenantID, e.Metadata.Actor, e.Metadata.CorrelationID, e.Metadata.CausationID, now}
}

func benchPostgres(ctx context.Context, cfg Config, w io.Writer) (err error) {
	url := cfg.DatabaseURL
	if url == "" {
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{ParentDir: cfg.Dir})
		if err != nil {
			return fmt.Errorf("bench: start PostgreSQL: %w", err)
		}
		defer func() {
			if cerr := cluster.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}()
		if err := cluster.CreateDatabase(ctx, "bench"); err != nil {
			return err
		}
		url = cluster.URL("bench")
	}
	st, err := postgres.Open(ctx, url, postgres.Options{GroupCommitters: groupCommitters(cfg.GroupCommit)})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	// The baseline pool has as many connections as the store's and the writers.
	poolCfg, err := postgres.PoolConfig(url)
	if err != nil {
		return err
	}
	poolCfg.MaxConns = max(poolCfg.MaxConns, int32(cfg.Writers))
	basePool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("bench: baseline pool: %w", err)
	}
	defer basePool.Close()
	if _, err := basePool.Exec(ctx, "DROP TABLE IF EXISTS bench_plain; "+pgPlainTable); err != nil {
		return fmt.Errorf("bench: create bench_plain: %w", err)
	}
	defer basePool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_plain")
	wl := newWorkload()

	batch, err := best(ctx, cfg.Rounds, "store/postgres/append-batch", "copy", batchAppends(st, wl, cfg),
		func(ctx context.Context, round int) (int, time.Duration, error) {
			batches := wl.batches(cfg)
			stream := wl.stream("plain-batch", round)
			now := time.Now().UTC()
			start := time.Now()
			for b, evs := range batches {
				_, err := basePool.CopyFrom(ctx, pgx.Identifier{"bench_plain"}, pgPlainColumns,
					pgx.CopyFromSlice(len(evs), func(i int) ([]any, error) { return pgRow(evs[i], stream, b*cfg.BatchSize+i, now), nil }))
				if err != nil {
					return 0, 0, err
				}
			}
			return len(batches) * cfg.BatchSize, time.Since(start), nil
		})
	if err != nil {
		return err
	}
	if err := batch.print(w); err != nil {
		return err
	}

	insert := `INSERT INTO bench_plain (` + strings.Join(pgPlainColumns, ", ") + `) VALUES ($1, $2, $3, $4, $5::json, $6, $7, $8, $9, $10)`
	single, err := best(ctx, cfg.Rounds, "store/postgres/append-single", "insert", singleAppends(st, wl, cfg),
		func(ctx context.Context, round int) (int, time.Duration, error) {
			evs := wl.singles(cfg)
			return concurrently(ctx, cfg.Writers, cfg.SingleEvents, func(ctx context.Context, w, i int) error {
				_, err := basePool.Exec(ctx, insert, pgRow(evs[w][i], wl.stream(fmt.Sprintf("plain-single-%d", round), w), i, time.Now().UTC())...)
				return err
			})
		})
	if err != nil {
		return err
	}
	if err := single.print(w); err != nil {
		return err
	}

	before, err := pgLastPosition(ctx, basePool)
	if err != nil {
		return err
	}
	if err := loadCatchUp(ctx, st, wl, cfg); err != nil {
		return err
	}
	cu, err := best(ctx, cfg.Rounds, "store/postgres/catch-up", "select", catchUp(st, cfg, before),
		func(ctx context.Context, _ int) (int, time.Duration, error) {
			start := time.Now()
			rs, err := basePool.Query(ctx, `SELECT tx_id, seq, id, stream, revision, type, data, tenant_id, actor, correlation_id, causation_id, recorded_at
FROM waqueue_events WHERE (tx_id, seq) > ($1::xid8, $2::bigint) ORDER BY tx_id, seq`, before.Commit, int64(before.Prepare))
			if err != nil {
				return 0, 0, err
			}
			defer rs.Close()
			n := 0
			for rs.Next() {
				var e eventstore.RecordedEvent
				var seq, rev int64
				var data []byte
				if err := rs.Scan(&e.Position.Commit, &seq, (*[16]byte)(&e.ID), &e.Stream, &rev, &e.Type, &data,
					&e.Metadata.TenantID, &e.Metadata.Actor, &e.Metadata.CorrelationID, &e.Metadata.CausationID, &e.RecordedAt); err != nil {
					return 0, 0, err
				}
				n++
			}
			return n, time.Since(start), rs.Err()
		})
	if err != nil {
		return err
	}
	return cu.print(w)
}

func pgLastPosition(ctx context.Context, pool *pgxpool.Pool) (eventstore.Position, error) {
	var p eventstore.Position
	var seq int64
	err := pool.QueryRow(ctx, `SELECT tx_id, seq FROM waqueue_events ORDER BY tx_id DESC, seq DESC LIMIT 1`).Scan(&p.Commit, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Start, nil
	}
	if err != nil {
		return p, fmt.Errorf("bench: last position: %w", err)
	}
	p.Prepare = uint64(seq)
	return p, nil
}

// ---- SQLite ----

const sqlitePlainTable = `CREATE TABLE bench_plain (
    position    INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    id          BLOB    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    data        BLOB,
    metadata    TEXT,
    recorded_at INTEGER NOT NULL,
    UNIQUE (stream, revision)
) STRICT`

const sqlitePlainInsert = `INSERT INTO bench_plain (stream, revision, id, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)`

func sqliteArgs(e eventstore.EventData, stream string, rev int) ([]any, error) {
	md, err := json.Marshal(e.Metadata)
	if err != nil {
		return nil, err
	}
	return []any{stream, rev, e.ID[:], e.Type, []byte(e.Data), string(md), time.Now().UnixNano()}, nil
}

func benchSQLite(ctx context.Context, cfg Config, w io.Writer) (err error) {
	path := cfg.SQLitePath
	if path == "" {
		dir, err := os.MkdirTemp(cfg.Dir, "waqueue-bench-")
		if err != nil {
			return fmt.Errorf("bench: temp dir: %w", err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "events.db")
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	db, err := sqlitedb.Open(path)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS bench_plain"); err != nil {
		return fmt.Errorf("bench: drop bench_plain: %w", err)
	}
	if _, err := db.ExecContext(ctx, sqlitePlainTable); err != nil {
		return fmt.Errorf("bench: create bench_plain: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_plain")
	wl := newWorkload()

	batch, err := best(ctx, cfg.Rounds, "store/sqlite/append-batch", "insert-tx", batchAppends(st, wl, cfg),
		func(ctx context.Context, round int) (int, time.Duration, error) {
			batches := wl.batches(cfg)
			start := time.Now()
			for b, evs := range batches {
				if err := sqliteInsertTx(ctx, db, evs, wl.stream("plain-batch", round), b*cfg.BatchSize); err != nil {
					return 0, 0, err
				}
			}
			return len(batches) * cfg.BatchSize, time.Since(start), nil
		})
	if err != nil {
		return err
	}
	if err := batch.print(w); err != nil {
		return err
	}

	single, err := best(ctx, cfg.Rounds, "store/sqlite/append-single", "insert", singleAppends(st, wl, cfg),
		func(ctx context.Context, round int) (int, time.Duration, error) {
			evs := wl.singles(cfg)
			return concurrently(ctx, cfg.Writers, cfg.SingleEvents, func(ctx context.Context, w, i int) error {
				args, err := sqliteArgs(evs[w][i], wl.stream(fmt.Sprintf("plain-single-%d", round), w), i)
				if err != nil {
					return err
				}
				_, err = db.ExecContext(ctx, sqlitePlainInsert, args...)
				return err
			})
		})
	if err != nil {
		return err
	}
	if err := single.print(w); err != nil {
		return err
	}

	var last sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT max(position) FROM events").Scan(&last); err != nil {
		return fmt.Errorf("bench: last position: %w", err)
	}
	before := eventstore.Position{Commit: uint64(last.Int64), Prepare: uint64(last.Int64)}
	if err := loadCatchUp(ctx, st, wl, cfg); err != nil {
		return err
	}
	cu, err := best(ctx, cfg.Rounds, "store/sqlite/catch-up", "select", catchUp(st, cfg, before),
		func(ctx context.Context, _ int) (int, time.Duration, error) {
			start := time.Now()
			rs, err := db.QueryContext(ctx, `SELECT position, stream, revision, id, type, data, metadata, recorded_at FROM events WHERE position > ? ORDER BY position`, last.Int64)
			if err != nil {
				return 0, 0, err
			}
			defer rs.Close()
			n := 0
			for rs.Next() {
				var pos, rev, at int64
				var stream, typ string
				var id, data []byte
				var md sql.NullString
				if err := rs.Scan(&pos, &stream, &rev, &id, &typ, &data, &md, &at); err != nil {
					return 0, 0, err
				}
				var meta eventstore.Metadata
				if md.Valid {
					if err := json.Unmarshal([]byte(md.String), &meta); err != nil {
						return 0, 0, fmt.Errorf("metadata: %w", err)
					}
				}
				n++
			}
			return n, time.Since(start), rs.Err()
		})
	if err != nil {
		return err
	}
	return cu.print(w)
}

func sqliteInsertTx(ctx context.Context, db *sql.DB, evs []eventstore.EventData, stream string, first int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bench: baseline begin: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, sqlitePlainInsert)
	if err != nil {
		return fmt.Errorf("bench: baseline prepare: %w", err)
	}
	defer stmt.Close()
	for i, e := range evs {
		args, err := sqliteArgs(e, stream, first+i)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("bench: baseline insert: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("bench: baseline commit: %w", err)
	}
	return nil
}

// groupCommitters maps a --group-commit value to postgres.Options.GroupCommitters as the server
// does: 0 is server.DefaultGroupCommit, negative is off.
func groupCommitters(n int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return server.DefaultGroupCommit
	}
	return n
}

// engineGroupCommit is the group_commit a figure of engine prints: the shared transactions of
// the PostgreSQL store, 0 (none) for SQLite.
func engineGroupCommit(engine string, n int) int {
	if engine != AdapterPostgres {
		return 0
	}
	return groupCommitters(n)
}
