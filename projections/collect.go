package projections

import (
	"context"
	"log/slog"
	"time"
)

// Collector deletes or materializes, in the background and in bounded chunks, what a
// projection recorded in O(1) at a clear (purged queue rows, purged message statuses).
type Collector interface {
	// Collect does up to maxRows positions of work in one transaction and returns how many it
	// did; 0 means there is nothing left to do.
	Collect(ctx context.Context, db *DB, maxRows int) (int, error)
}

var (
	_ Collector = (*Queue)(nil)
	_ Collector = (*MessageStatus)(nil)
)

// RunCollector runs the collectors until ctx is done: each chunk of chunk positions, as long as
// there is work, then a pause of idle. Errors are logged and retried after idle. Run it while
// the Runner runs (it never blocks projections for longer than one chunk).
func RunCollector(ctx context.Context, db *DB, logger *slog.Logger, idle time.Duration, chunk int, cs ...Collector) {
	if logger == nil {
		logger = slog.Default()
	}
	if idle <= 0 {
		idle = time.Second
	}
	for {
		busy := false
		for _, c := range cs {
			n, err := c.Collect(ctx, db, chunk)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				logger.Error("projections: collector failed; retrying", "err", err)
				continue
			}
			busy = busy || n > 0
		}
		if busy {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(idle):
		}
	}
}
