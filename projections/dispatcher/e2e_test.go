package dispatcher_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/projections"
)

// The end-to-end proof (issue 4), on both stores: a broadcast through the simulator, a temporary
// ban after banAfter messages; the queue is held; the ban lifts and nothing is sent; a clear
// purges exactly the rest; the QueueCleared report, the audit trail and the broadcast's progress
// agree with the recorded sends.
func TestEndToEndBanMidBroadcastThenClear(t *testing.T) {
	for name, open := range map[string]engine{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Sized to finish in seconds on a busy machine (the ban comes after banAfter sends,
			// counted by the simulator, not after a time): the guarantee does not need volume,
			// the randomized and fault tests bring it.
			total, banAfter := 2000, 500
			if testing.Short() {
				total, banAfter = 600, 150
			}
			endToEnd(t, open, total, banAfter)
		})
	}
}

func endToEnd(t *testing.T, open engine, total, banAfter int) {
	ctx := context.Background()
	h := newHarness(t, open)
	h.autoAdvance(100 * time.Millisecond)
	h.sim.SetScript(key("c1"), simulator.Script{BanAfter: banAfter, Ban: simulator.Ban{Code: 104, Expire: 10_000 * time.Hour}})
	d := h.start(nil)
	h.registerPaired("c1", d)
	bc := h.startBroadcast("c1", total)
	if bc.Count != total {
		t.Fatalf("broadcast queued %d, want %d", bc.Count, total)
	}

	// The ban holds the queue; nothing more is handed over.
	h.eventually("held on ban", func() bool {
		return h.linkStatus("c1") == connection.LinkStatusBanned && h.queueStatus("c1") == connection.QueueStatusHeld
	})
	h.eventually("nothing in flight", func() bool { return len(invariants.Check(h.history("c1"), nil).InFlight) == 0 })
	if got := len(h.sends("c1")); got != banAfter {
		t.Fatalf("handed over %d, want exactly %d (the ban)", got, banAfter)
	}

	// The ban lifts: the link is active again, the queue stays held, nothing is sent.
	if err := h.sim.LiftBan(key("c1")); err != nil {
		t.Fatal(err)
	}
	h.eventually("lift recorded", func() bool { return h.linkStatus("c1") == connection.LinkStatusActive })
	h.idle(d, h.lastPosition("c1", connection.TypeBanLifted))
	if got := len(h.sends("c1")); got != banAfter {
		t.Fatalf("handed over %d after the lift, want still %d", got, banAfter)
	}
	if qs := h.queueStatus("c1"); qs != connection.QueueStatusHeld {
		t.Fatalf("queue %v after the lift, want held", qs)
	}

	// The operator clears: exactly the rest is purged.
	req, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "after-ban", Reason: "banned mid-broadcast"})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually("QueueCleared", func() bool { return count[connection.QueueCleared](h.history("c1")) == 1 })
	clearedPos := h.lastPosition("c1", connection.TypeQueueCleared)
	h.idle(d, clearedPos)

	hist := h.history("c1")
	var cleared connection.QueueCleared
	for _, r := range hist {
		if c, ok := r.Event.(connection.QueueCleared); ok {
			cleared = c
		}
	}
	sent := count[connection.MessageSent](hist)
	failed := count[connection.MessageFailed](hist)
	unknown := count[connection.MessageOutcomeUnknown](hist)
	dispatched := count[connection.MessageDispatched](hist)
	sends := len(h.sends("c1"))
	if sent != sends || sends != banAfter {
		t.Errorf("MessageSent %d, simulator sends %d, want both %d", sent, sends, banAfter)
	}
	if got := sent + failed + unknown + int(cleared.PurgedCount) + cleared.InFlightCount; got != total {
		t.Errorf("sent %d + failed %d + unknown %d + purged %d + in flight %d = %d, want %d",
			sent, failed, unknown, cleared.PurgedCount, cleared.InFlightCount, got, total)
	}
	if int(cleared.PurgedCount) != total-dispatched {
		t.Errorf("purged %d, want total %d - dispatched %d", cleared.PurgedCount, total, dispatched)
	}
	if cleared.PurgedCount != req.Requested.PurgeCount || cleared.ClearID != req.ClearID {
		t.Errorf("QueueCleared %d/%s differs from the request %d/%s", cleared.PurgedCount, cleared.ClearID, req.Requested.PurgeCount, req.ClearID)
	}
	if rep := h.checkInvariants("c1"); rep.Queued != total || len(rep.Pending) != 0 || len(rep.InFlight) != 0 {
		t.Errorf("report queued %d, pending %d, in flight %d; want %d, 0, 0", rep.Queued, len(rep.Pending), len(rep.InFlight), total)
	}

	// The audit trail tells the same story, in order, with the same figures, and verifies.
	h.waitProjections(clearedPos, projections.AuditName)
	h.waitProjections(h.lastPosition("c1", connection.TypeClearQueueRequested), projections.MessageStatusName)
	var types []string
	var auditCleared struct {
		PurgedCount   uint64 `json:"purged_count"`
		InFlightCount int    `json:"in_flight_count"`
	}
	cursor := ""
	for {
		page, err := h.audit.Entries(ctx, h.env.db, tenant, projections.AuditFilter{ConnectionID: "c1", Cursor: cursor, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			types = append(types, e.EventType)
			if e.EventType == connection.TypeQueueCleared {
				if err := json.Unmarshal(e.Details, &auditCleared); err != nil {
					t.Fatal(err)
				}
			}
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	wantOrder := []string{connection.TypeConnectionBanned, connection.TypeQueueHeld, connection.TypeBanLifted,
		connection.TypeClearQueueRequested, connection.TypeQueueCleared}
	if !subsequence(types, wantOrder) {
		t.Errorf("audit trail %v does not hold %v in order", types, wantOrder)
	}
	if auditCleared.PurgedCount != cleared.PurgedCount || auditCleared.InFlightCount != cleared.InFlightCount {
		t.Errorf("audit QueueCleared purged %d in flight %d, history %d %d", auditCleared.PurgedCount, auditCleared.InFlightCount,
			cleared.PurgedCount, cleared.InFlightCount)
	}
	if v, err := h.audit.Verify(ctx, h.env.db, tenant); err != nil || !v.OK {
		t.Errorf("audit chain: %+v, %v", v, err)
	}

	// The broadcast's progress reconciles with the sends.
	p, err := h.status.Broadcast(ctx, h.env.db, tenant, bc.BroadcastID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != uint64(total) || p.Sent+p.Delivered+p.Read != uint64(sent) || p.Purged != cleared.PurgedCount ||
		p.Failed != uint64(failed) || p.Unknown != uint64(unknown) || p.Queued != 0 || p.Dispatched != 0 {
		t.Errorf("broadcast progress %+v; want count %d, sent %d, failed %d, unknown %d, purged %d", p, total, sent, failed, unknown, cleared.PurgedCount)
	}
}

// subsequence reports whether want appears in got in order (not necessarily adjacent).
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
