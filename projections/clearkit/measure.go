package clearkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Adopt lets c complete clears on s's connection with s's cached aggregate (saves loading a
// large stream on the first completion).
func (c *Completer) Adopt(s *Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams == nil {
		c.streams = map[string]*Stream{}
	}
	c.streams[s.id] = s
}

// MeasureConfig configures MeasureClear.
type MeasureConfig struct {
	// Store is the event store. Required.
	Store eventstore.Store
	// DB is the read-model database, migrated, holding no "queue" projection yet (MeasureClear
	// runs its own Queue projection from the start of the log). Required.
	DB *projections.DB
	// Pending is how many messages are queued before the clear. Required, > 0.
	Pending int
	// Tenant and ConnectionID name the connection registered for the run. Defaults "bench" and
	// "bench-<random>".
	Tenant, ConnectionID string
	// Logger for the runner; default discards.
	Logger *slog.Logger
	// BeforeCatchUp, if set, is called after the seeded log was read once and right before the
	// catch-up is timed, with the Queue projection's checkpoint and the last event it catches
	// up to (`waqueue bench clear` times a raw read of those events there, and again after
	// the clear). Optional.
	BeforeCatchUp func(ctx context.Context, from, last eventstore.Position) error
}

// ClearTiming is what MeasureClear measured.
type ClearTiming struct {
	Pending int
	// Seed is the time to append the Pending messages (broadcasts of up to MaxRecipients).
	Seed time.Duration
	// CatchUp is the time the Queue projection took to apply the seeded events (read once
	// before, untimed: see MeasureClear).
	CatchUp time.Duration
	// Dropped is from the start of the clear request's append until the pending read model
	// shows no pending message.
	Dropped time.Duration
	// Clear is from the start of the clear request's append until QueueCleared is projected
	// (the queue is open again): the whole clear, as an operator sees it (G4).
	Clear time.Duration
	// Purged is the clear's PurgeCount.
	Purged uint64
}

// MeasureClear registers a connection, queues cfg.Pending messages, reads the log once through
// Subscribe (untimed), runs the Queue projection and the ClearProcess (with a Completer) until
// they have caught up (timed: ClearTiming.CatchUp), then clears the whole queue and measures how
// long the clear takes. It is the engine of `waqueue bench clear`.
func MeasureClear(ctx context.Context, cfg MeasureConfig) (ClearTiming, error) {
	var tm ClearTiming
	if cfg.Store == nil || cfg.DB == nil || cfg.Pending <= 0 {
		return tm, errors.New("clearkit: MeasureConfig needs Store, DB and Pending > 0")
	}
	if cfg.Tenant == "" {
		cfg.Tenant = "bench"
	}
	if cfg.ConnectionID == "" {
		cfg.ConnectionID = "bench-" + uuid.NewString()[:8]
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tm.Pending = cfg.Pending
	now := time.Now().UTC()
	s, err := Register(ctx, cfg.Store, cfg.Tenant, cfg.ConnectionID, "+491701234567", now)
	if err != nil {
		return tm, err
	}
	start := time.Now()
	if _, err := SeedPending(ctx, s, cfg.Pending, now); err != nil {
		return tm, err
	}
	tm.Seed = time.Since(start)

	q := projections.NewQueue()
	runner, err := projections.NewRunner(projections.RunnerConfig{DB: cfg.DB, Store: cfg.Store, Projections: []projections.Projection{q}, Logger: cfg.Logger, BatchSize: 4096})
	if err != nil {
		return tm, err
	}
	last, err := cfg.Store.ReadStream(ctx, connection.StreamName(connection.Key(cfg.Tenant, cfg.ConnectionID)), eventstore.Backwards, eventstore.End, 1)
	if err != nil {
		return tm, err
	}
	from, err := runner.Checkpoint(ctx, q.Name())
	if err != nil {
		return tm, err
	}
	// The catch-up reads a log that has been read before, as a rebuild does (a node's live
	// projections read every event as it commits) and as a raw read timed after it does: the
	// first read of rows just written costs PostgreSQL more CPU (it sets their hint bits).
	if err := readThrough(ctx, cfg.Store, from, last[0].Position); err != nil {
		return tm, err
	}
	if cfg.BeforeCatchUp != nil {
		if err := cfg.BeforeCatchUp(ctx, from, last[0].Position); err != nil {
			return tm, err
		}
	}
	completer := &Completer{Store: cfg.Store}
	completer.Adopt(s)
	proc, err := projections.NewClearProcess(projections.ClearProcessConfig{DB: cfg.DB, Store: cfg.Store, Queue: q, Completer: completer, Logger: cfg.Logger})
	if err != nil {
		return tm, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 2)
	go func() { runErr <- runner.Run(runCtx) }()
	go func() { runErr <- proc.Run(runCtx) }()
	defer func() {
		cancel()
		<-runErr
		<-runErr
	}()

	start = time.Now()
	if err := runner.WaitFor(ctx, []string{q.Name()}, last[0].Position); err != nil {
		return tm, err
	}
	tm.CatchUp = time.Since(start)

	clearID := uuid.New()
	start = time.Now()
	if _, err := s.Do(ctx, "bench", func(c *connection.Connection) ([]connection.Event, error) {
		return c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: connection.WholeQueue, Reason: "bench", Actor: "bench"}, time.Now().UTC())
	}); err != nil {
		return tm, err
	}
	for tm.Clear == 0 {
		if tm.Dropped == 0 {
			head, err := q.NextPending(ctx, cfg.DB, connection.Key(cfg.Tenant, cfg.ConnectionID), 0, 1)
			if err != nil {
				return tm, err
			}
			if len(head) == 0 {
				tm.Dropped = time.Since(start)
			}
		}
		sum, err := q.Summary(ctx, cfg.DB, cfg.Tenant, cfg.ConnectionID)
		if err != nil {
			return tm, err
		}
		if sum.Status == connection.QueueStatusOpen && sum.Pending == 0 {
			tm.Clear = time.Since(start)
			if tm.Dropped == 0 {
				tm.Dropped = tm.Clear
			}
			break
		}
		select {
		case <-ctx.Done():
			return tm, ctx.Err()
		case err := <-runErr:
			return tm, fmt.Errorf("clearkit: projections stopped during the clear: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	var purged int64
	if err := cfg.DB.QueryRowContext(ctx, `SELECT purge_count FROM queue_clears WHERE clear_id = $1`, clearID.String()).Scan(&purged); err != nil {
		return tm, fmt.Errorf("clearkit: read the clear: %w", err)
	}
	tm.Purged = uint64(purged)
	return tm, nil
}

// readThrough reads the log after from up to last through Subscribe, discarding it.
func readThrough(ctx context.Context, st eventstore.Store, from, last eventstore.Position) error {
	if !from.Less(last) {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reached := false
	err := st.Subscribe(ctx, from, eventstore.Filter{}, func(e eventstore.RecordedEvent) error {
		if !e.Position.Less(last) {
			reached = true
			cancel()
		}
		return nil
	})
	if reached {
		return nil
	}
	return fmt.Errorf("clearkit: read the log through %s: %w", last, err)
}
