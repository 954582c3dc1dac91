package commands

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// TestReplayAnswersOriginalInAnyState: a retry with an accepted key answers the original
// result whatever happened since — held, banned, clearing (another clear in progress too),
// after the message was sent or purged, after a scoped clear emptied its broadcast — for
// enqueue, broadcast and clear alike, through a warm and a cold repository (issue 10.2).
func TestReplayAnswersOriginalInAnyState(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			clock := &fixedClock{now: t0}
			h := newHandlers(t, store, RepositoryOptions{}, clock.Now)
			h.registerActive(t, ctx, "c-1")

			enq := EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "e1", Recipient: "+491709999999", Text: "hi"}
			first, err := h.enqueue.Handle(as(ctx, sender), enq)
			if err != nil {
				t.Fatal(err)
			}
			bc := StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b1", Recipients: []string{"+491709999991", "+491709999992"}, Text: "sale"}
			firstB, err := h.broadcast.Handle(as(ctx, operator), bc)
			if err != nil {
				t.Fatal(err)
			}
			var clears []RequestClear
			firstC := map[string]RequestClearResult{}

			replayAll := func(stage string) {
				t.Helper()
				cold := newHandlers(t, store, RepositoryOptions{}, clock.Now)
				for _, hh := range []*handlers{h, cold} {
					again, err := hh.enqueue.Handle(as(ctx, sender), enq)
					if err != nil || !again.Replayed || again.MessageID != first.MessageID || again.Seq != first.Seq {
						t.Fatalf("%s: enqueue replay = %+v, %v; want the original %s at seq %d", stage, again, err, first.MessageID, first.Seq)
					}
					// A replay answers the original's position, so that a read asking for it
					// (Waqueue-Min-Position) sees the original.
					if again.Position != first.Position {
						t.Errorf("%s: enqueue replay at position %v, the original is at %v", stage, again.Position, first.Position)
					}
					b, err := hh.broadcast.Handle(as(ctx, operator), bc)
					if err != nil || !b.Replayed || b.BroadcastID != firstB.BroadcastID || b.Count != firstB.Count || b.FirstSeq != firstB.FirstSeq {
						t.Fatalf("%s: broadcast replay = %+v, %v; want the original %+v", stage, b, err, firstB)
					}
					if b.Position != firstB.Position {
						t.Errorf("%s: broadcast replay at position %v, the original is at %v", stage, b.Position, firstB.Position)
					}
					for _, rc := range clears {
						c, err := hh.requestClear.Handle(as(ctx, operator), rc)
						want := firstC[rc.IdempotencyKey]
						if err != nil || !c.Replayed || c.ClearID != want.ClearID || c.Requested.PurgeCount != want.Requested.PurgeCount {
							t.Fatalf("%s: clear %s replay = %+v, %v; want the original %s (%d purged)", stage, rc.IdempotencyKey, c, err, want.ClearID, want.Requested.PurgeCount)
						}
						if c.Position != want.Position {
							t.Errorf("%s: clear %s replay at position %v, the original is at %v", stage, rc.IdempotencyKey, c.Position, want.Position)
						}
					}
				}
			}
			requestClear := func(rc RequestClear) RequestClearResult {
				t.Helper()
				res, err := h.requestClear.Handle(as(ctx, operator), rc)
				if err != nil || res.Replayed {
					t.Fatalf("clear %s = %+v, %v", rc.IdempotencyKey, res, err)
				}
				clears = append(clears, rc)
				firstC[rc.IdempotencyKey] = res
				return res
			}
			complete := func(id uuid.UUID) {
				t.Helper()
				if _, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: id}); err != nil {
					t.Fatal(err)
				}
			}

			replayAll("open")
			if _, err := h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.sent.Handle(as(ctx, system), RecordSent{MessageRef: MessageRef{ConnectionID: "c-1", MessageID: first.MessageID, Seq: first.Seq}}); err != nil {
				t.Fatal(err)
			}
			replayAll("sent")
			if _, err := h.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1"}); err != nil {
				t.Fatal(err)
			}
			replayAll("held")
			if _, err := h.ban.Handle(as(ctx, system), ReportBan{ConnectionID: "c-1", Kind: connection.BanTemporary, ExpiresAt: t0.Add(time.Hour), ReasonCode: "101"}); err != nil {
				t.Fatal(err)
			}
			replayAll("banned")
			c1 := requestClear(RequestClear{ConnectionID: "c-1", IdempotencyKey: "c1", Reason: "ban"})
			replayAll("clearing")
			complete(c1.ClearID)
			replayAll("purged")

			// A scoped clear empties its broadcast: replaying it must not say broadcast_not_pending.
			b2, err := h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b2", Recipients: []string{"+491709999993"}, Text: "x"})
			if err != nil {
				t.Fatal(err)
			}
			cb := requestClear(RequestClear{ConnectionID: "c-1", IdempotencyKey: "cb", BroadcastID: b2.BroadcastID, Reason: "scoped"})
			complete(cb.ClearID)
			replayAll("scoped clear done")

			// Another clear in progress: earlier clears replay, they are not refused as clearing.
			requestClear(RequestClear{ConnectionID: "c-1", IdempotencyKey: "c2", Reason: "again"})
			replayAll("second clear in progress")

			hist, _ := history(t, ctx, store, "c-1")
			n := countTypes(hist)
			if n[connection.TypeMessageQueued] != 1 || n[connection.TypeBroadcastQueued] != 2 || n[connection.TypeBroadcastStarted] != 2 || n[connection.TypeClearQueueRequested] != 3 {
				t.Fatalf("events %v: a replay appended something", n)
			}
		})
	}
}

// TestKeyReusedWithAnotherRequestIsRefused: the same key with another request is refused with
// ErrIdempotencyKeyReused and appends nothing, in every state; the same request written
// differently replays; keys of other routes and connections are independent (issue 10.3).
func TestKeyReusedWithAnotherRequestIsRefused(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			h.registerActive(t, ctx, "c-1")
			h.registerActive(t, ctx, "c-2")
			reused := func(what string, err error) {
				t.Helper()
				var kr *connection.KeyReusedError
				if !errors.Is(err, connection.ErrIdempotencyKeyReused) || !errors.As(err, &kr) {
					t.Fatalf("%s: err = %v, want ErrIdempotencyKeyReused", what, err)
				}
			}

			enq := EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "hi"}
			first, err := h.enqueue.Handle(as(ctx, sender), enq)
			if err != nil {
				t.Fatal(err)
			}
			before := streamLen(t, ctx, store, "c-1")
			for name, other := range map[string]EnqueueMessage{
				"text":      {ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "hello"},
				"recipient": {ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999998", Text: "hi"},
				"ttl":       {ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "hi", TTL: time.Hour},
			} {
				_, err := h.enqueue.Handle(as(ctx, sender), other)
				reused("enqueue with another "+name, err)
			}
			unchanged := func(what string, before int) {
				t.Helper()
				if got := streamLen(t, ctx, store, "c-1"); got != before {
					t.Fatalf("%s: stream has %d events, want %d: a refused request appended", what, got, before)
				}
			}
			unchanged("enqueue under a used key", before)
			// The same request, the number written differently: a replay.
			same := enq
			same.Recipient = "+49 170 9999999"
			if again, err := h.enqueue.Handle(as(ctx, sender), same); err != nil || !again.Replayed || again.MessageID != first.MessageID {
				t.Fatalf("same request reformatted = %+v, %v; want a replay", again, err)
			}

			bc := StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b", Recipients: []string{"+491709999991", "+491709999992"}, Text: "sale"}
			if _, err := h.broadcast.Handle(as(ctx, operator), bc); err != nil {
				t.Fatal(err)
			}
			before = streamLen(t, ctx, store, "c-1")
			_, err = h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b", Recipients: []string{"+491709999992", "+491709999991"}, Text: "sale"})
			reused("broadcast with the recipients reordered", err)
			_, err = h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b", Recipients: bc.Recipients, Text: "other"})
			reused("broadcast with another text", err)
			unchanged("broadcast under a used key", before)

			rc := RequestClear{ConnectionID: "c-1", IdempotencyKey: "c", Reason: "ban"}
			cr, err := h.requestClear.Handle(as(ctx, operator), rc)
			if err != nil {
				t.Fatal(err)
			}
			before = streamLen(t, ctx, store, "c-1")
			_, err = h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "c", Reason: "other"})
			reused("clear in progress with another reason", err)
			// While clearing, another request under an accepted key is 422, not 409.
			_, err = h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "hello"})
			reused("enqueue with another text while clearing", err)
			_, err = h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b", Recipients: bc.Recipients, Text: "other"})
			reused("broadcast with another text while clearing", err)
			if _, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: cr.ClearID}); err != nil {
				t.Fatal(err)
			}
			before++ // QueueCleared
			_, err = h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "c", Reason: "other"})
			reused("clear done, another reason", err)
			_, err = h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "c", BroadcastID: uuid.New(), Reason: "ban"})
			reused("clear done, another scope", err)
			if got := streamLen(t, ctx, store, "c-1"); got != before {
				t.Fatalf("stream has %d events, want %d: a refused request appended", got, before)
			}

			// One key on other routes and connections: independent, each accepted.
			if r, err := h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "k", Recipients: []string{"+491709999991"}, Text: "x"}); err != nil || r.Replayed {
				t.Fatalf("broadcast under an enqueue's key = %+v, %v; want accepted", r, err)
			}
			if r, err := h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "k", Reason: "x"}); err != nil || r.Replayed {
				t.Fatalf("clear under an enqueue's key = %+v, %v; want accepted", r, err)
			}
			if r, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-2", IdempotencyKey: "k", Recipient: "+491709999999", Text: "other"}); err != nil || r.Replayed || r.MessageID == first.MessageID {
				t.Fatalf("enqueue on c-2 under c-1's key = %+v, %v; want accepted with another id", r, err)
			}
		})
	}
}

// TestReplayOfEventWithoutFingerprint: events recorded before fingerprints existed carry none;
// their keys replay whatever the request (documented in docs/api.md).
func TestReplayOfEventWithoutFingerprint(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
	h.registerActive(t, ctx, "c-1")
	if _, err := h.repo.Update(as(ctx, sender), connection.Key(tenant, "c-1"), "svc-1", func(c *connection.Connection) ([]connection.Event, error) {
		evs, err := c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "old", Recipient: "+491709999999", Text: "hi", Actor: "svc-1"}, t0)
		if err != nil {
			return nil, err
		}
		q := evs[0].(connection.MessageQueued)
		q.Fingerprint = ""
		return []connection.Event{q}, nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "old", Recipient: "+491709999998", Text: "other"})
	if err != nil || !r.Replayed || r.MessageID != connection.MessageIDFor(tenant, "c-1", "old") {
		t.Fatalf("request under a key recorded without fingerprint = %+v, %v; want a replay", r, err)
	}
}

// TestConcurrentRequestsWithOneKey: requests with one key race through two nodes (two
// repositories on one store). With the same request exactly one is appended and all answer its
// id; with two requests one wins, every request like it answers its id, every other is refused
// with ErrIdempotencyKeyReused — also when the loser appends at the same revision as the
// winner, where the store answers an idempotent success (AppendResult.Existing).
func TestConcurrentRequestsWithOneKey(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			nodes := []*handlers{
				newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now),
				newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0.Add(time.Second)}).Now),
			}
			nodes[0].registerActive(t, ctx, "c-1")
			const rounds, per = 12, 4
			for round := range rounds {
				for _, mixed := range []bool{false, true} {
					key := fmt.Sprintf("k-%d-%v", round, mixed)
					text := func(g int) string {
						if mixed && g%2 == 1 {
							return "b"
						}
						return "a"
					}
					type answer struct {
						res EnqueueResult
						err error
					}
					answers := make([]answer, per)
					var start, wg sync.WaitGroup
					start.Add(1)
					for g := range per {
						wg.Add(1)
						go func() {
							defer wg.Done()
							start.Wait()
							r, err := nodes[g%2].enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: key, Recipient: "+491709999999", Text: text(g)})
							answers[g] = answer{r, err}
						}()
					}
					start.Done()
					wg.Wait()

					id := connection.MessageIDFor(tenant, "c-1", key)
					hist, _ := history(t, ctx, store, "c-1")
					var stored []connection.MessageQueued
					for _, r := range hist {
						if q, ok := r.Event.(connection.MessageQueued); ok && q.MessageID == id {
							stored = append(stored, q)
						}
					}
					if len(stored) != 1 {
						t.Fatalf("key %s: %d MessageQueued, want exactly 1", key, len(stored))
					}
					fresh := 0
					for g, a := range answers {
						if text(g) == stored[0].Text {
							if a.err != nil || a.res.MessageID != id {
								t.Fatalf("key %s request %d (%q, the winner's): %+v, %v; want id %s", key, g, text(g), a.res, a.err, id)
							}
							if !a.res.Replayed {
								fresh++
							}
							continue
						}
						if !errors.Is(a.err, connection.ErrIdempotencyKeyReused) {
							t.Fatalf("key %s request %d (%q, stored %q): %+v, %v; want ErrIdempotencyKeyReused", key, g, text(g), stored[0].Text, a.res, a.err)
						}
					}
					if fresh != 1 {
						t.Fatalf("key %s: %d answers not marked replayed, want 1", key, fresh)
					}
				}
			}
		})
	}
}
