package commands

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// TestRequestClearThen: the clear command carries then (also on the broker, as JSON); resume
// while banned is a refusal that records nothing (G7); after the lift the completed clear
// reopens the queue.
func TestRequestClearThen(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")

	var onBus RequestClear
	if err := json.Unmarshal([]byte(`{"connection_id":"c-1","idempotency_key":"k","reason":"r","then":"resume"}`), &onBus); err != nil ||
		onBus.Then != connection.ClearThenResume {
		t.Fatalf("decode then from the bus: %+v, %v", onBus, err)
	}
	if err := json.Unmarshal([]byte(`{"connection_id":"c-1","then":"later"}`), &RequestClear{}); err == nil {
		t.Fatal("then \"later\" decoded")
	}

	if _, err := h.ban.Handle(as(ctx, system), ReportBan{ConnectionID: "c-1", Kind: connection.BanTemporary, ExpiresAt: time.Now().Add(time.Hour), ReasonCode: "101"}); err != nil {
		t.Fatal(err)
	}
	before, _ := history(t, ctx, store, "c-1")
	_, err := h.requestClear.Handle(as(ctx, operator), onBus)
	if !errors.Is(err, connection.ErrLinkStatus) || !IsRefusal(err) {
		t.Fatalf("clear then=resume while banned: %v, want a link_status refusal", err)
	}
	if after, _ := history(t, ctx, store, "c-1"); len(after) != len(before) {
		t.Fatalf("a refused clear recorded %d events", len(after)-len(before))
	}

	if _, err := h.lift.Handle(as(ctx, system), LiftBan{ConnectionID: "c-1"}); err != nil {
		t.Fatal(err)
	}
	res, err := h.requestClear.Handle(as(ctx, operator), onBus)
	if err != nil || res.Requested.Then != connection.ClearThenResume {
		t.Fatalf("clear then=resume after the lift: %+v, %v", res.Requested, err)
	}
	done, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: res.ClearID})
	if err != nil || done.Cleared.QueueAfter != connection.QueueStatusOpen {
		t.Fatalf("complete: %+v, %v", done.Cleared, err)
	}
	var status connection.QueueStatus
	if err := h.repo.View(ctx, connection.Key(tenant, "c-1"), func(c *connection.Connection) error { status = c.QueueStatus(); return nil }); err != nil {
		t.Fatal(err)
	}
	if status != connection.QueueStatusOpen {
		t.Fatalf("queue %v after clear then=resume, want open", status)
	}
}

// TestStaleDecisionIDCollisionIsAConflict: an event without a natural key (QueueHeld, …) gets
// an id from the revision it will take. A decision on a cached state that other writers have
// moved past can then name an event already stored at that revision, and the store answers
// "id stored elsewhere" instead of "wrong expected revision". Found by the randomized test once
// a clear's completion decided QueueCleared + QueueHeld (then=hold): the clearing process's
// stale node collided with an operator's hold on another node, and the completion failed. The
// repository must treat it as the conflict it is: catch up and decide again.
func TestStaleDecisionIDCollisionIsAConflict(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			ctx := testCtx(t)
			store := openSQLite(t)
			if engine == "postgres" {
				store = openPostgres(t)
			}
			a := newHandlers(t, store, RepositoryOptions{}, SystemClock) // the clearing process's node
			b := newHandlers(t, store, RepositoryOptions{}, SystemClock) // an operator's node
			a.registerActive(t, ctx, "c-1")
			res, err := a.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "k", Reason: "r", Then: connection.ClearThenHold})
			if err != nil {
				t.Fatal(err)
			}
			// Node b moves the stream on: one event, then an operator's hold at the revision a's
			// stale completion would give its QueueHeld.
			if _, err := b.problem.Handle(as(ctx, system), RecordTransportProblem{ConnectionID: "c-1", Kind: connection.ProblemKeepAliveTimeout}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1"}); err != nil {
				t.Fatal(err)
			}
			done, err := a.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: res.ClearID})
			if err != nil {
				t.Fatalf("complete on a stale node: %v", err)
			}
			if done.AlreadyCompleted || done.Cleared.QueueAfter != connection.QueueStatusHeld {
				t.Fatalf("complete: %+v", done)
			}
			hist, _ := history(t, ctx, store, "c-1")
			if n := countTypes(hist)[connection.TypeQueueHeld]; n != 1 {
				t.Fatalf("%d QueueHeld, want the operator's only (the clear's hold is not needed)", n)
			}
		})
	}
}
