package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestLoadWithClearsBansAndLifts runs 64 API clients enqueueing into 4 connections for a bounded
// time (20 s; 5 s with -short) while an operator goroutine clears queues, bans numbers (simulator
// route), lifts bans and resumes queues at random. Then every connection is cleared and drained,
// and domain/invariants.Check runs over each connection's whole history and the simulator's
// record of sends: zero violations (G1, G2, G3, G5, G7), every message in exactly one end, and
// every message answered 202 present in the history.
func TestLoadWithClearsBansAndLifts(t *testing.T) {
	run := 20 * time.Second
	if testing.Short() {
		run = 5 * time.Second
	}
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
			defer cancel()
			db := ""
			if engine == "postgres" {
				db = pgtest.URL(t)
			}
			n := startNode(t, ctx, db)
			a := n.api
			conns := []string{"load-0", "load-1", "load-2", "load-3"}
			phones := map[string]string{}
			for i, id := range conns {
				phones[id] = fmt.Sprintf("+49170200000%d", i)
				a.register(t, ctx, id, phones[id])
				// A little latency, so that clears and bans meet messages in flight.
				n.latency(id, simulator.Script{Latency: time.Millisecond})
			}

			var (
				mu       sync.Mutex
				accepted = map[uuid.UUID]string{}
				refused  atomic.Int64 // 409 queue_clearing
				wg       sync.WaitGroup
			)
			deadline := time.Now().Add(run)
			for w := range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; time.Now().Before(deadline); i++ {
						id := conns[(w+i)%len(conns)]
						res, err := a.call(ctx, "POST", "/v1/connections/"+id+"/messages",
							map[string]any{"recipient": fmt.Sprintf("+4917595%02d%04d", w, i%10000), "text": "hi"},
							map[string]string{"Idempotency-Key": fmt.Sprintf("w%d-%d", w, i)})
						if err != nil {
							t.Errorf("enqueue: %v", err)
							return
						}
						switch res.Status {
						case http.StatusAccepted:
							var m struct {
								MessageID uuid.UUID `json:"message_id"`
							}
							if err := res.decode(&m); err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							accepted[m.MessageID] = id
							mu.Unlock()
						case http.StatusConflict:
							if p, err := asProblem(res); err != nil || p.Code != "queue_clearing" {
								t.Errorf("enqueue: 409 %v: %s", err, res.Body)
							}
							refused.Add(1)
						default:
							t.Errorf("enqueue: status %d: %s", res.Status, res.Body)
							return
						}
					}
				}()
			}
			// The operator: one action every 100–400 ms on a random connection.
			ops := map[string]int{}
			rng := rand.New(rand.NewPCG(1, 2))
			for time.Now().Before(deadline) {
				id := conns[rng.IntN(len(conns))]
				var res response
				var err error
				op := []string{"clear", "ban", "lift", "resume"}[rng.IntN(4)]
				switch op {
				case "clear":
					res, err = a.call(ctx, "POST", "/v1/connections/"+id+"/queue/clear",
						map[string]any{"reason": "load", "confirm": phones[id]}, map[string]string{"Idempotency-Key": uuid.NewString()})
				case "ban":
					res, err = a.call(ctx, "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "1h"}, nil)
					if err == nil && res.Status == http.StatusOK {
						waitFor(t, ctx, id+" banned", func() bool { return a.card(t, ctx, id).LinkStatus == "banned" })
					}
				case "lift":
					res, err = a.call(ctx, "POST", "/v1/connections/"+id+"/simulator/lift", nil, nil)
					if err == nil && res.Status == http.StatusOK {
						waitFor(t, ctx, id+" active", func() bool { return a.card(t, ctx, id).LinkStatus == "active" })
					}
				case "resume":
					// An operator resumes after the ban lifted. Resuming during a ban is a separate
					// case (TestResumeDuringBan, build tag faults): the domain and the G7 checker
					// disagree on it.
					if a.card(t, ctx, id).LinkStatus != "active" {
						continue
					}
					res, err = a.call(ctx, "POST", "/v1/connections/"+id+"/queue/resume", map[string]any{}, nil)
				}
				if err != nil {
					t.Fatalf("%s %s: %v", op, id, err)
				}
				if res.Status >= 500 {
					t.Errorf("%s %s: status %d: %s", op, id, res.Status, res.Body)
				}
				ops[fmt.Sprintf("%s %d", op, res.Status)]++
				time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
			}
			wg.Wait()

			// End: lift what is banned, then clear every queue and let it settle.
			for _, id := range conns {
				if a.card(t, ctx, id).LinkStatus == "banned" {
					a.must(t, ctx, "POST", "/v1/connections/"+id+"/simulator/lift", nil, nil, http.StatusOK, nil)
				}
				// A clear of the random phase may still be completing (on a loaded machine it
				// did, and the final clear answered 409 queue_clearing): wait for it.
				waitFor(t, ctx, id+" not clearing", func() bool { return a.card(t, ctx, id).QueueStatus != "clearing" })
				a.must(t, ctx, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "end of load", "confirm": phones[id]},
					map[string]string{"Idempotency-Key": "final-" + id}, http.StatusAccepted, nil)
			}
			total := invariantsTotals{}
			for _, id := range conns {
				waitFor(t, ctx, id+" settled", func() bool {
					c := a.card(t, ctx, id)
					return c.Pending == 0 && c.InFlight == 0 && c.QueueStatus != "clearing"
				})
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
				total.add(rep.Queued, rep.Purged, rep.Acknowledged, rep.Sends, len(h))
			}
			t.Logf("%s for %s: %d accepted, %d refused queue_clearing; operator %v; %+v",
				engine, run, len(accepted), refused.Load(), ops, total)
			if total.Purged == 0 || total.Sends == 0 {
				t.Errorf("the load did not exercise both clears and sends: %+v", total)
			}
		})
	}
}

// invariantsTotals sums the checker's reports over the connections, for the log.
type invariantsTotals struct{ Queued, Purged, Acknowledged, Sends, Events int }

func (s *invariantsTotals) add(q, p, a, sends, events int) {
	s.Queued += q
	s.Purged += p
	s.Acknowledged += a
	s.Sends += sends
	s.Events += events
}
