//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/pgcluster"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestPostgresDownUnderLoad stops the node's PostgreSQL (clean fast shutdown) while 16 clients
// enqueue, keeps it down for a while, and starts it again. While it is down every answer must be
// a 503 problem+json with code service_unavailable (never a 500, never a hang past the client's
// 60 s timeout) and /readyz must be 503; afterwards the node must recover without a restart, and
// every message answered 202 — before, during or after the outage — must exist and be sent once.
func TestPostgresDownUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(6*time.Minute))
	defer cancel()
	cluster := pgtest.Start(t, pgcluster.Options{})
	if err := cluster.CreateDatabase(ctx, "faults"); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, ctx, cluster.URL("faults"))
	a := n.api
	conns := []string{"down-1", "down-2"}
	for i, id := range conns {
		a.register(t, ctx, id, fmt.Sprintf("+49170100010%d", i))
	}

	var (
		mu       sync.Mutex
		accepted = map[uuid.UUID]string{} // message id -> connection
		statuses = map[int]int{}          // answers while down, by status
		down     atomic.Bool
		around   int // answers other than 503 service_unavailable at the edges of the outage
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := conns[(w+i)%len(conns)]
				wasDown := down.Load()
				res, err := a.call(ctx, "POST", "/v1/connections/"+id+"/messages",
					map[string]any{"recipient": fmt.Sprintf("+4917496%02d%04d", w, i%10000), "text": "hi"},
					map[string]string{"Idempotency-Key": fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					t.Errorf("enqueue (postgres down: %v): no answer: %v", wasDown, err)
					return
				}
				mu.Lock()
				switch {
				case res.Status == http.StatusAccepted:
					var m struct {
						MessageID uuid.UUID `json:"message_id"`
					}
					if err := res.decode(&m); err != nil {
						t.Error(err)
					}
					accepted[m.MessageID] = id
				case wasDown && down.Load():
					statuses[res.Status]++
					if p, err := asProblem(res); err != nil || res.Status != http.StatusServiceUnavailable || p.Code != "service_unavailable" {
						t.Errorf("enqueue while postgres is down: status %d (%v): %s", res.Status, err, res.Body)
					}
				case res.Status >= 500:
					if p, err := asProblem(res); err != nil || res.Status != http.StatusServiceUnavailable || p.Code != "service_unavailable" {
						around++
						if around <= 3 {
							t.Errorf("enqueue around the outage: status %d (%v): %s", res.Status, err, res.Body)
						}
					}
				default:
					t.Errorf("enqueue: status %d: %s", res.Status, res.Body)
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	acceptedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	waitFor(t, ctx, "load under way", func() bool { return acceptedCount() >= 100 })

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	stoppedAt := acceptedCount()
	waitFor(t, ctx, "/readyz 503 while postgres is down", func() bool {
		res, err := a.call(ctx, "GET", "/readyz", nil, nil)
		return err == nil && res.Status == http.StatusServiceUnavailable
	})
	time.Sleep(3 * time.Second) // keep it down while the clients hammer
	down.Store(false)
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "enqueue accepted again", func() bool { return acceptedCount() >= stoppedAt+100 })
	close(stop)
	wg.Wait()
	mu.Lock()
	t.Logf("accepted %d messages; answers while postgres was down: %v", len(accepted), statuses)
	if around > 0 {
		t.Errorf("%d answers at the edges of the outage were not 503 service_unavailable; node log:\n%s", around, errorLines(n.logs.String(), 8))
	}
	if statuses[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no 503 while postgres was down: %v", statuses)
	}
	mu.Unlock()
	waitFor(t, ctx, "/readyz 200 after the restart", func() bool {
		res, err := a.call(ctx, "GET", "/readyz", nil, nil)
		return err == nil && res.Status == http.StatusOK
	})

	for _, id := range conns {
		drain, cancelDrain := context.WithTimeout(ctx, 2*time.Minute)
		var c card
		for c = a.card(t, ctx, id); (c.Pending > 0 || c.InFlight > 0) && drain.Err() == nil; c = a.card(t, ctx, id) {
			time.Sleep(100 * time.Millisecond)
		}
		cancelDrain()
		if c.Pending > 0 || c.InFlight > 0 {
			t.Errorf("%s did not drain in 2 minutes after the restart: %+v; dispatched, never acknowledged: %s; node log:\n%s",
				id, c, unacknowledged(a.history(t, ctx, id)), errorLines(n.logs.String(), 8))
			continue
		}
		h := a.history(t, ctx, id)
		rep := check(t, id, h, n.sends(id))
		if err := settled(rep); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		queued := map[uuid.UUID]bool{}
		for _, e := range h {
			if q, ok := messageQueued(e); ok {
				queued[q] = true
			}
		}
		for msg, c := range accepted {
			if c == id && !queued[msg] {
				t.Errorf("accepted message %s of %s is not in the history", msg, id)
			}
		}
	}
	for msg := range accepted {
		if got := n.node.Simulator.SendCount(msg); got > 1 {
			t.Errorf("message %s handed over %d times", msg, got)
		}
	}
}
