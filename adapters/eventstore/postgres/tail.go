package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Shared tail reads.
//
// Every subscription of a Store at the log's tail wakes on the same commit and reads the same
// page: the events after the same cursor (the subscriptions' filters only decide which of a
// page's events come with their data, and a page's events and cursor are those of the whole
// log whatever the filter). A node runs several subscriptions (two projection runner groups,
// the dispatcher, the integration publisher, the connector), so each commit cost that many
// read transactions of five statements, and the rows decoded that many times.
//
// A subscription at the tail therefore reads through tailPage, which shares one read of the
// unfiltered page among the subscriptions that want the page after the same cursor, and gives
// each the events its filter selects (filtered in Go: Filter.Match is what filterSQL renders).
//
// A shared read serves a subscription only if it is as fresh as a read of its own would be:
//   - woken by a notification, a subscription needs a read that began after that
//     notification. A read whose wake channel (taken just before it began) is still open began
//     after every notification so far, the one that woke the subscription included: a read
//     taken before it would hold a channel that notification closed.
//   - woken by its timer (the idle poll, a lost notification's safety net, or the poll of
//     events held back by an older transaction) it needs a read that began after the timer
//     fired, since no notification announced what it looks for.
//
// The subscription then waits on the read's wake channel: anything committed after the read's
// snapshot notifies after it, and closes that channel, as it would the subscription's own.

// tailReads are a Store's shared tail reads, by the cursor they read after.
type tailReads struct {
	mu    sync.Mutex
	reads map[eventstore.Position]*tailRead
	// started and joined count reads begun and reads served to another subscription (tests).
	started, joined int
}

// tailRead is one read of the unfiltered page after a cursor.
type tailRead struct {
	wake    <-chan struct{} // taken before the read began
	started time.Time
	done    chan struct{} // closed when pg and err are set
	pg      page
	err     error
}

// tailPage returns the page after cursor that filter selects, and the channel that announces
// commits after it, for a subscription at the tail woken at since (the zero time when a
// notification woke it). It shares a read with other subscriptions when one fresh enough for
// this one is running or done (see above), and reads the page otherwise.
func (s *Store) tailPage(ctx context.Context, cursor eventstore.Position, filter eventstore.Filter, since time.Time) (page, <-chan struct{}, error) {
	t := &s.tail
	t.mu.Lock()
	r := t.reads[cursor]
	if r != nil && !closed(r.wake) && r.started.After(since) {
		t.joined++
		t.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return page{}, nil, ctx.Err()
		}
		if r.err != nil {
			// The reader failed (its context ended, say): read alone.
			wake := s.wake.wait()
			pg, err := s.scanPage(ctx, cursor, filter, 0)
			return pg, wake, err
		}
		return r.pg.filtered(filter), r.wake, nil
	}
	r = &tailRead{wake: s.wake.wait(), started: time.Now(), done: make(chan struct{})}
	if t.reads == nil {
		t.reads = map[eventstore.Position]*tailRead{}
	}
	for c, old := range t.reads {
		if closed(old.wake) {
			delete(t.reads, c) // no subscription may join it any more
		}
	}
	t.reads[cursor] = r
	t.started++
	t.mu.Unlock()

	r.pg, r.err = s.scanPage(ctx, cursor, eventstore.Filter{}, 0)
	close(r.done)
	if r.err != nil {
		t.mu.Lock()
		if t.reads[cursor] == r {
			delete(t.reads, cursor)
		}
		t.mu.Unlock()
		return page{}, nil, r.err
	}
	return r.pg.filtered(filter), r.wake, nil
}

// filtered returns the page with only the events f selects, in a slice of its own (a shared
// page is read by several subscriptions; each handler owns the slice it is given).
func (p page) filtered(f eventstore.Filter) page {
	n := 0
	for _, e := range p.events {
		if f.Match(e) {
			n++
		}
	}
	evs := make([]eventstore.RecordedEvent, 0, n)
	for _, e := range p.events {
		if f.Match(e) {
			evs = append(evs, e)
		}
	}
	p.events = evs
	return p
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
