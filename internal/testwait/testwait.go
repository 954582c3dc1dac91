// Package testwait holds the one real-time limit tests put on waiting for progress.
//
// Tests wait for events, positions and conditions, never for a time. Limit is only the safety
// net that turns a hang into a failure: it is generous (minutes), because the machines the tests
// run on are shared and busy (a load of 5 on 2 cores is normal), and it never asserts a speed.
package testwait

import (
	"os"
	"time"
)

// Limit is how long a test waits for a condition, an event or a position before it fails as
// hung: 5 minutes, twice that under the race detector. WAQUEUE_TEST_WAIT (a Go duration)
// overrides it, e.g. to see a hang sooner while debugging.
var Limit = limit()

func limit() time.Duration {
	if v := os.Getenv("WAQUEUE_TEST_WAIT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	d := 5 * time.Minute
	if raceEnabled {
		d *= 2
	}
	return d
}

// AtLeast returns d or Limit, whichever is longer: the safety net of a test that knows it needs
// more than Limit on a loaded machine (a kill-and-restart run of the real binary).
func AtLeast(d time.Duration) time.Duration { return max(d, Limit) }
