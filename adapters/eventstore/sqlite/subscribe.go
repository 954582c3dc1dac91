package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Subscribe implements eventstore.Store. It reads the log in pages of Options.PageSize rows;
// when it has caught up it waits for the next commit of this Store, for PollInterval (commits
// by other processes), for ctx, or for Close (then it returns eventstore.ErrClosed). An error
// from handle is returned wrapped, and handle is not called again.
//
// With a filter, Subscribe remembers how far it has scanned, not only the last event handled,
// so a sparse filter does not rescan the unmatched tail of the log on every commit.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	return s.subscribe(ctx, after, filter, func(evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := handle(e); err != nil {
				return fmt.Errorf("sqlite: subscribe: handle event %s at %s: %w", e.ID, e.Position, err)
			}
		}
		return nil
	})
}

// SubscribePages implements eventstore.PageSubscriber: Subscribe, handing over each page read
// in one call.
func (s *Store) SubscribePages(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func([]eventstore.RecordedEvent) error) error {
	return s.subscribe(ctx, after, filter, func(evs []eventstore.RecordedEvent) error {
		if err := handle(evs); err != nil {
			return fmt.Errorf("sqlite: subscribe: handle the events up to %s: %w", evs[len(evs)-1].Position, err)
		}
		return nil
	})
}

// subscribe is Subscribe and SubscribePages: handle is called with every non-empty page, and
// its error is returned as it is.
func (s *Store) subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func([]eventstore.RecordedEvent) error) error {
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	scanned := after // every event at or before scanned was handled or filtered out
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return eventstore.ErrClosed
		}
		wake := s.changed() // taken before reading, so no commit after the read is missed
		evs, upTo, more, err := s.page(ctx, scanned, filter)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if s.closed.Load() {
				return eventstore.ErrClosed
			}
			return fmt.Errorf("sqlite: subscribe after %s: %w", scanned, err)
		}
		if len(evs) > 0 {
			if err := handle(evs); err != nil {
				return err
			}
		}
		scanned = upTo
		if more {
			continue
		}
		if poll == nil {
			poll = time.NewTimer(s.opts.PollInterval)
		} else {
			poll.Reset(s.opts.PollInterval)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return eventstore.ErrClosed
		case <-wake:
		case <-poll.C:
		}
	}
}

// page reads the next events after `after` matching filter. It returns them, the position up
// to which the log has been scanned, and whether more of the log is known to follow.
//
// The latest position and the page are read in one read transaction (one snapshot). Because
// positions are assigned in commit order by the single writer, every event up to the latest
// position is in that snapshot, so the scan may safely advance past unmatched events up to it.
func (s *Store) page(ctx context.Context, after eventstore.Position, filter eventstore.Filter) (evs []eventstore.RecordedEvent, upTo eventstore.Position, more bool, err error) {
	if after.Commit >= math.MaxInt64 {
		return nil, after, false, nil
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, after, false, err
	}
	defer tx.Rollback()
	var latest sql.NullInt64
	if err := s.txQueryRow(ctx, tx, `SELECT MAX(position) FROM events`).Scan(&latest); err != nil {
		return nil, after, false, err
	}
	from := int64(after.Commit)
	if !latest.Valid || latest.Int64 <= from {
		return nil, after, false, nil
	}
	hi := latest.Int64
	if hi-from > s.opts.scanWindow {
		hi = from + s.opts.scanWindow
	}
	where, args := filterSQL(filter)
	args = append([]any{from, hi}, append(args, s.opts.PageSize)...)
	evs, err = queryEvents(ctx, txQueryer{s, tx}, selectEvent+` WHERE position > ? AND position <= ?`+where+` ORDER BY position LIMIT ?`, args...)
	if err != nil {
		return nil, after, false, err
	}
	if len(evs) == s.opts.PageSize {
		return evs, evs[len(evs)-1].Position, true, nil
	}
	return evs, position(hi), hi < latest.Int64, nil
}
