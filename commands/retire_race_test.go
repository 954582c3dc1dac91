package commands

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// TestRetireRacingEnqueues: enqueuers on several repositories race one retire on a shared
// store. The store's expected revision orders them: either the retire wins and no message is
// queued after it (every enqueue refused connection_retired), or an enqueue lands first and the
// retire is refused queue_not_empty. Never both, and nothing queued on a retired stream.
func TestRetireRacingEnqueues(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			for round := range 4 {
				ctx := testCtx(t)
				store := s.open(t)
				clock := &fixedClock{now: time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)}
				hs := []*handlers{newHandlers(t, store, RepositoryOptions{}, clock.Now), newHandlers(t, store, RepositoryOptions{}, clock.Now),
					newHandlers(t, store, RepositoryOptions{}, clock.Now)}
				id := fmt.Sprintf("race-%d", round)
				hs[0].registerActive(t, ctx, id)
				retire := must(NewRetireConnectionHandler(hs[2].repo, clock.Now))

				var wg sync.WaitGroup
				var mu sync.Mutex
				queued := 0
				var retireErr error
				start := make(chan struct{})
				for w := range 2 {
					wg.Go(func() {
						<-start
						for i := range 5 {
							_, err := hs[w].enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: id,
								IdempotencyKey: fmt.Sprintf("k%d-%d", w, i), Recipient: "+4915112345678", Text: "x"})
							switch {
							case err == nil:
								mu.Lock()
								queued++
								mu.Unlock()
							case errors.Is(err, connection.ErrConnectionRetired):
							default:
								t.Errorf("enqueue: %v", err)
							}
						}
					})
				}
				wg.Go(func() {
					<-start
					_, retireErr = retire.Handle(as(ctx, operator), RetireConnection{ConnectionID: id, Reason: "race"})
				})
				close(start)
				wg.Wait()

				recorded, _ := history(t, ctx, store, id)
				counts := countTypes(recorded)
				switch {
				case retireErr == nil:
					if queued != 0 || counts[connection.TypeMessageQueued] != 0 {
						t.Fatalf("round %d: retired, yet %d enqueues accepted (%d recorded)", round, queued, counts[connection.TypeMessageQueued])
					}
				case errors.Is(retireErr, connection.ErrQueueNotEmpty):
					if queued == 0 || counts[connection.TypeConnectionRetired] != 0 {
						t.Fatalf("round %d: retire refused with nothing queued: %v", round, retireErr)
					}
				default:
					t.Fatalf("round %d: retire: %v", round, retireErr)
				}
				if counts[connection.TypeMessageQueued] != queued {
					t.Fatalf("round %d: %d accepted, %d recorded", round, queued, counts[connection.TypeMessageQueued])
				}
			}
		})
	}
}
