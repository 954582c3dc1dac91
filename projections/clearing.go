package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// ClearCompleter completes a clear: it records QueueCleared through the connection aggregate
// (connection.CompleteClear, appended at the expected revision). It must be idempotent: for a
// clear that is already complete it does nothing and returns nil. The commands package
// implements it. connKey is the connection's tenant-scoped key (connection.Key), as the read
// models hold it.
type ClearCompleter interface {
	CompleteClear(ctx context.Context, connKey string, clearID uuid.UUID) error
}

// ClearProcessConfig configures a ClearProcess.
type ClearProcessConfig struct {
	// DB is the read-model database the Queue projection writes. Required.
	DB *DB
	// Store is the event store, read to tell whether a clear is complete already. Required.
	Store eventstore.Store
	// Queue is the pending-queue projection whose committed clears this process completes. Required.
	Queue *Queue
	// Completer records QueueCleared. Required.
	Completer ClearCompleter
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// RetryInterval is how often open clears are looked for without a wake-up (after a failed
	// completion, or clears committed by another process). Default 1s.
	RetryInterval time.Duration
}

// Validate reports every missing required field.
func (c ClearProcessConfig) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("projections: ClearProcessConfig.DB is nil"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("projections: ClearProcessConfig.Store is nil"))
	}
	if c.Queue == nil {
		errs = append(errs, errors.New("projections: ClearProcessConfig.Queue is nil"))
	}
	if c.Completer == nil {
		errs = append(errs, errors.New("projections: ClearProcessConfig.Completer is nil"))
	}
	return errors.Join(errs...)
}

// ClearProcess is the clearing process manager. When the Queue projection has committed a
// ClearQueueRequested (so the pending read model no longer shows the purged messages, in O(1)),
// it calls the ClearCompleter, which records QueueCleared; the Queue marks the clear complete
// when that event reaches it.
//
// Exactly one QueueCleared per request: the clear stays open in the read model until its
// QueueCleared is projected, so a crash anywhere (before the call, during it, after it) makes
// the next sweep call the completer again, which is idempotent. Before calling, the process
// reads the connection stream after the request: if a QueueCleared for the clear is there
// already (a rebuild replaying completed clears, or a completion not yet projected), it does
// not call. The completer is called outside any read-model transaction (see AfterCommitter).
type ClearProcess struct {
	cfg  ClearProcessConfig
	wake chan struct{}
}

// NewClearProcess validates cfg and binds the process to cfg.Queue's commits.
func NewClearProcess(cfg ClearProcessConfig) (*ClearProcess, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	p := &ClearProcess{cfg: cfg, wake: make(chan struct{}, 1)}
	cfg.Queue.onCommit(func(events []eventstore.RecordedEvent) {
		for _, e := range events {
			if e.Type == connection.TypeClearQueueRequested {
				p.Wake()
				return
			}
		}
	})
	return p, nil
}

// Wake makes Run sweep now.
func (p *ClearProcess) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run sweeps open clears at start, whenever the Queue commits a clear request, and every
// RetryInterval, until ctx is done; it then returns nil. Failures are logged and retried.
func (p *ClearProcess) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.RetryInterval)
	defer t.Stop()
	for {
		if _, err := p.Sweep(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error("projections: clear process: sweep failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-t.C:
		}
	}
}

// OpenClear is a clear the Queue has applied and not yet seen completed.
type OpenClear struct {
	ClearID      uuid.UUID
	ConnectionID string
	TenantID     string
	RequestedAt  time.Time
	stream       string
	revision     uint64
}

// OpenClears returns the clears requested and not yet completed, oldest first.
func (p *ClearProcess) OpenClears(ctx context.Context) ([]OpenClear, error) {
	rows, err := p.cfg.DB.QueryContext(ctx, `SELECT clear_id, conn_id, tenant_id, requested_at_us, stream, revision
FROM queue_clears WHERE completed_at_us = 0 ORDER BY requested_at_us, clear_id`)
	if err != nil {
		return nil, fmt.Errorf("projections: open clears: %w", err)
	}
	defer rows.Close()
	var out []OpenClear
	for rows.Next() {
		var c OpenClear
		var id string
		var at, rev int64
		if err := rows.Scan(&id, &c.ConnectionID, &c.TenantID, &at, &c.stream, &rev); err != nil {
			return nil, fmt.Errorf("projections: open clears: %w", err)
		}
		if c.ClearID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("projections: open clears: %w", err)
		}
		c.RequestedAt, c.revision = fromUS(at), uint64(rev)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Sweep completes every open clear once and returns how many times it called the completer.
// Errors of single clears are joined; the others are still attempted.
func (p *ClearProcess) Sweep(ctx context.Context) (int, error) {
	open, err := p.OpenClears(ctx)
	if err != nil {
		return 0, err
	}
	calls := 0
	var errs []error
	for _, c := range open {
		done, err := p.completedInHistory(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			continue
		}
		calls++
		if err := p.cfg.Completer.CompleteClear(ctx, c.ConnectionID, c.ClearID); err != nil {
			errs = append(errs, fmt.Errorf("projections: complete clear %s of %q: %w", c.ClearID, c.ConnectionID, err))
		}
	}
	return calls, errors.Join(errs...)
}

// historyPage is how many events are read at a time after a clear request. While a clear is in
// progress a stream only grows by acknowledgements of messages in flight (at most
// connection.MaxInFlight of them), so one or two pages usually reach the end.
const historyPage = 512

// completedInHistory reads c's stream after the request for its QueueCleared.
func (p *ClearProcess) completedInHistory(ctx context.Context, c OpenClear) (bool, error) {
	from := c.revision + 1
	for {
		evs, err := p.cfg.Store.ReadStream(ctx, c.stream, eventstore.Forwards, from, historyPage)
		if err != nil {
			return false, fmt.Errorf("projections: read %q after clear %s: %w", c.stream, c.ClearID, err)
		}
		for _, e := range evs {
			if e.Type != connection.TypeQueueCleared {
				continue
			}
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				return false, fmt.Errorf("projections: read %q after clear %s: %w", c.stream, c.ClearID, err)
			}
			if ev.(connection.QueueCleared).ClearID == c.ClearID {
				return true, nil
			}
		}
		if len(evs) < historyPage {
			return false, nil
		}
		from = evs[len(evs)-1].Revision + 1
	}
}
