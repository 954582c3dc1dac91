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
	if err := h.repo.View(ctx, "c-1", func(c *connection.Connection) error { status = c.QueueStatus(); return nil }); err != nil {
		t.Fatal(err)
	}
	if status != connection.QueueStatusOpen {
		t.Fatalf("queue %v after clear then=resume, want open", status)
	}
}
