package httpapi

import (
	"math"
	"sync"
	"time"
)

// checkBucket is a per-connection token bucket for number checks: each number checked costs a
// token; tokens come back at rate per second up to burst. WhatsApp watches lookups of numbers
// (many lookups, like many messages to strangers, are a ban signal), so the API spends them
// sparingly, per connection (the number whose account asks).
type checkBucket struct {
	rate  float64 // tokens per second
	burst float64

	mu    sync.Mutex
	conns map[string]*bucketState
}

type bucketState struct {
	tokens float64
	at     time.Time
}

func newCheckBucket(perMinute, burst int) *checkBucket {
	return &checkBucket{rate: float64(perMinute) / 60, burst: float64(burst), conns: map[string]*bucketState{}}
}

// take spends cost tokens of connection key at now, or reports how long to wait until they
// are there (the bucket is left as it was). A cost above the burst can never be paid: callers
// bound it first.
func (b *checkBucket) take(key string, cost int, now time.Time) (ok bool, retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.conns[key]
	if st == nil {
		st = &bucketState{tokens: b.burst, at: now}
		b.conns[key] = st
	}
	if elapsed := now.Sub(st.at).Seconds(); elapsed > 0 {
		st.tokens = math.Min(b.burst, st.tokens+elapsed*b.rate)
		st.at = now
	}
	c := float64(cost)
	if st.tokens >= c {
		st.tokens -= c
		return true, 0
	}
	wait := time.Duration(math.Ceil((c - st.tokens) / b.rate * float64(time.Second)))
	return false, max(wait, time.Second)
}

// refund gives back cost tokens of key (a check that never reached WhatsApp), up to the burst.
func (b *checkBucket) refund(key string, cost int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.conns[key]; st != nil {
		st.tokens = math.Min(b.burst, st.tokens+float64(cost))
	}
}
