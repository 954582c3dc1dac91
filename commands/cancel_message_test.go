package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
)

// enqueueN queues n 1:1 messages on connection id under keys prefix0, prefix1, … and returns
// their ids in queue order.
func enqueueN(t *testing.T, ctx context.Context, h *handlers, id, prefix string, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	for i := range n {
		res, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: id, IdempotencyKey: fmt.Sprintf("%s%d", prefix, i),
			Recipient: "+12015550123", Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = res.MessageID
	}
	return ids
}

func TestCancelMessage(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			h := newHandlers(t, s.open(t), RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			cancel := must(NewCancelMessageHandler(h.repo, (&fixedClock{now: t0}).Now))
			h.registerActive(t, ctx, "c1")
			ids := enqueueN(t, ctx, h, "c1", "k", 3)

			res, err := cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: ids[1], Reason: "wrong text"})
			if err != nil {
				t.Fatal(err)
			}
			want := connection.MessageCancelled{MessageID: ids[1], Seq: 2, Reason: "wrong text", CancelledBy: operator.ID, CancelledAt: t0}
			if res.Cancelled != want || res.Replayed {
				t.Fatalf("cancel = %+v, want %+v", res, want)
			}
			// Idempotent: a second cancel, even with another reason, answers the first.
			again, err := cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: ids[1], Reason: "again"})
			if err != nil || again.Cancelled != want || !again.Replayed {
				t.Fatalf("second cancel = %+v, %v; want a replay of %+v", again, err, want)
			}
			// The dispatcher skips it: 1 then 3.
			for _, wantID := range []uuid.UUID{ids[0], ids[2]} {
				d, err := h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c1"})
				if err != nil || d.Message.MessageID != wantID {
					t.Fatalf("dispatch = %+v, %v; want message %s", d.Message, err, wantID)
				}
			}
			// Dispatched: 409 message_not_pending.
			_, err = cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: ids[0], Reason: "late"})
			if code, _ := connection.ErrorCode(err); code != connection.CodeMessageNotPending {
				t.Fatalf("cancel of a dispatched message: %v, want message_not_pending", err)
			}
			hist, _ := history(t, ctx, h.repo.store, "c1")
			if n := countTypes(hist)[connection.TypeMessageCancelled]; n != 1 {
				t.Fatalf("%d MessageCancelled recorded, want 1", n)
			}

			refusals := []struct {
				name string
				p    auth.Principal
				cmd  CancelMessage
				want error
			}{
				{"sender lacks connection.edit", sender, CancelMessage{ConnectionID: "c1", MessageID: ids[2], Reason: "r"}, auth.ErrForbidden},
				{"other tenant", auth.Principal{TenantID: "tenant-b", ID: "op-b", Role: auth.RoleOperator},
					CancelMessage{ConnectionID: "c1", MessageID: ids[2], Reason: "r"}, ErrNotFound},
				{"unknown message", operator, CancelMessage{ConnectionID: "c1", MessageID: uuid.New(), Reason: "r"}, ErrNotFound},
				{"unknown connection", operator, CancelMessage{ConnectionID: "nope", MessageID: ids[2], Reason: "r"}, ErrNotFound},
				{"no reason", operator, CancelMessage{ConnectionID: "c1", MessageID: ids[2]}, connection.ErrInvalidCommand},
			}
			for _, r := range refusals {
				if _, err := cancel.Handle(as(ctx, r.p), r.cmd); !errors.Is(err, r.want) {
					t.Errorf("%s: %v, want %v", r.name, err, r.want)
				}
			}
			after, _ := history(t, ctx, h.repo.store, "c1")
			if len(after) != len(hist) {
				t.Fatalf("refused cancels appended %d events", len(after)-len(hist))
			}
		})
	}
}

// TestCancelRacesDispatch races, message by message, a cancel and a dispatch of the same
// message, each on its own repository (two instances sharing one store): in every round exactly
// one wins — the cancel (the dispatch finds nothing to dispatch) or the dispatch (the cancel is
// refused message_not_pending). The invariants checker then verifies over the whole history and
// every hand-over that no cancelled message was dispatched or handed over and that every
// message ended in exactly one terminal state.
func TestCancelRacesDispatch(t *testing.T) {
	rounds := 150
	if testing.Short() {
		rounds = 40
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			hd := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			hc := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			cancel := must(NewCancelMessageHandler(hc.repo, SystemClock))
			hd.registerActive(t, ctx, "c1")

			var sends []invariants.Send
			cancelled := 0
			for i := range rounds {
				id := enqueueN(t, ctx, hd, "c1", fmt.Sprintf("round%d-", i), 1)[0]
				var (
					wg         sync.WaitGroup
					start      = make(chan struct{})
					d          DispatchNextResult
					dErr, cErr error
					c          CancelMessageResult
				)
				wg.Add(2)
				go func() {
					defer wg.Done()
					<-start
					d, dErr = hd.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c1"})
				}()
				go func() {
					defer wg.Done()
					<-start
					c, cErr = cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: id, Reason: "race"})
				}()
				close(start)
				wg.Wait()
				switch {
				case cErr == nil && errors.Is(dErr, ErrNothingToDispatch):
					if c.Replayed || c.Cancelled.MessageID != id {
						t.Fatalf("round %d: cancel answered %+v", i, c)
					}
					cancelled++
				case dErr == nil && errors.Is(cErr, connection.ErrMessageNotPending):
					if d.Message.MessageID != id {
						t.Fatalf("round %d: dispatched %s, want %s", i, d.Message.MessageID, id)
					}
					sends = append(sends, invariants.Send{MessageID: id, Order: len(sends), Fence: uint64(d.Version)})
					if _, err := hd.sent.Handle(as(ctx, system), RecordSent{MessageRef: MessageRef{ConnectionID: "c1", MessageID: id, Seq: d.Message.Seq}}); err != nil {
						t.Fatal(err)
					}
				default:
					t.Fatalf("round %d: not exactly one winner: dispatch %+v, %v; cancel %+v, %v", i, d, dErr, c, cErr)
				}
			}
			t.Logf("%d rounds: the cancel won %d, the dispatch %d", rounds, cancelled, rounds-cancelled)

			hist, _ := history(t, ctx, store, "c1")
			rep := invariants.Check(hist, sends)
			if !rep.OK() {
				t.Fatalf("violations: %v", rep.Violations)
			}
			if rep.Cancelled != cancelled || rep.Acknowledged != rounds-cancelled || len(rep.Pending) != 0 || len(rep.InFlight) != 0 {
				t.Fatalf("report %+v: want %d cancelled and %d acknowledged, nothing open", rep, cancelled, rounds-cancelled)
			}
		})
	}
}

// TestCancelBroadcastMessageInChunk cancels a broadcast message recorded in a BroadcastQueued
// chunk (no event of its own): with the read model's hint (broadcast id, Seq) it is cancelled
// and skipped by the dispatcher; without a hint, or with a hint that does not hold the message
// (another Seq, another broadcast, another connection), it is a 404 like an unknown id, and
// nothing is recorded.
func TestCancelBroadcastMessageInChunk(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			h := newHandlers(t, s.open(t), RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			cancel := must(NewCancelMessageHandler(h.repo, (&fixedClock{now: t0}).Now))
			h.registerActive(t, ctx, "c1")
			h.registerActive(t, ctx, "c2")
			enqueueN(t, ctx, h, "c1", "k", 1)
			b, err := h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c1", IdempotencyKey: "b",
				Recipients: []string{"+491709999991", "+491709999992", "+491709999993"}, Text: "offer"})
			if err != nil {
				t.Fatal(err)
			}
			other, err := h.broadcast.Handle(as(ctx, operator), StartBroadcast{ConnectionID: "c2", IdempotencyKey: "b",
				Recipients: []string{"+491709999991", "+491709999992"}, Text: "offer"})
			if err != nil {
				t.Fatal(err)
			}
			mid := connection.BroadcastMessageID(b.BroadcastID, 1) // Seq 3
			for _, bad := range []CancelMessage{
				{ConnectionID: "c1", MessageID: mid},
				{ConnectionID: "c1", MessageID: mid, BroadcastID: b.BroadcastID, Seq: 2},
				{ConnectionID: "c1", MessageID: mid, BroadcastID: b.BroadcastID, Seq: 9},
				{ConnectionID: "c1", MessageID: mid, BroadcastID: other.BroadcastID, Seq: 3},
				{ConnectionID: "c2", MessageID: mid, BroadcastID: b.BroadcastID, Seq: 3},
			} {
				bad.Reason = "r"
				if _, err := cancel.Handle(as(ctx, operator), bad); !errors.Is(err, ErrNotFound) {
					t.Fatalf("cancel %+v: %v, want not found", bad, err)
				}
			}
			res, err := cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: mid, BroadcastID: b.BroadcastID, Seq: 3, Reason: "r"})
			if err != nil || res.Cancelled.MessageID != mid || res.Cancelled.Seq != 3 || res.Replayed {
				t.Fatalf("cancel = %+v, %v", res, err)
			}
			again, err := cancel.Handle(as(ctx, operator), CancelMessage{ConnectionID: "c1", MessageID: mid, BroadcastID: b.BroadcastID, Seq: 3, Reason: "again"})
			if err != nil || !again.Replayed || again.Cancelled != res.Cancelled {
				t.Fatalf("second cancel = %+v, %v; want a replay", again, err)
			}
			var got []uint64
			for range 3 {
				d, err := h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c1"})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, d.Message.Seq)
			}
			if fmt.Sprint(got) != "[1 2 4]" {
				t.Fatalf("dispatched seqs %v, want [1 2 4] (3 cancelled)", got)
			}
			hist, _ := history(t, ctx, h.repo.store, "c1")
			if n := countTypes(hist)[connection.TypeMessageCancelled]; n != 1 {
				t.Fatalf("%d MessageCancelled recorded, want 1", n)
			}
			if r := invariants.Check(hist, nil); !r.OK() {
				t.Fatalf("invariants: %v", r.Violations)
			}
		})
	}
}
