package transporttest

import (
	"sort"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
)

// ManualClock is a transport.Clock that only moves when told to, for tests that must not sleep.
// It is safe for concurrent use.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*manualTimer
	seq     int
	changed chan struct{} // closed and replaced whenever a timer is added
}

// NewManualClock returns a clock standing at start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, changed: make(chan struct{})}
}

var _ transport.Clock = (*ManualClock)(nil)

type manualTimer struct {
	c       *ManualClock
	at      time.Time
	seq     int
	f       func()
	stopped bool
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f; it runs in its own goroutine when Advance passes its time.
// A non-positive d fires on the next Advance (also Advance(0)).
func (c *ManualClock) AfterFunc(d time.Duration, f func()) transport.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &manualTimer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

// Stop implements transport.Timer.
func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			t.stopped = true
			return true
		}
	}
	return false
}

// Advance moves the clock forward by d and starts every timer due by then, in time order.
// It returns the number of timers started.
func (c *ManualClock) Advance(d time.Duration) int {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due, rest []*manualTimer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
		} else {
			rest = append(rest, t)
		}
	}
	c.timers = rest
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool {
		if due[i].at.Equal(due[j].at) {
			return due[i].seq < due[j].seq
		}
		return due[i].at.Before(due[j].at)
	})
	for _, t := range due {
		go t.f()
	}
	return len(due)
}

// Pending returns the number of scheduled timers.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimers blocks until at least n timers are scheduled or the real-time limit passes, and
// reports whether they are.
func (c *ManualClock) WaitForTimers(n int, limit time.Duration) bool {
	deadline := time.After(limit)
	for {
		c.mu.Lock()
		got, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// Deadlines returns the due times of the scheduled timers, earliest first: a test can wait
// until a wait of a given length is armed (and another one stopped) without advancing the clock.
func (c *ManualClock) Deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.timers))
	for _, t := range c.timers {
		out = append(out, t.at)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}
