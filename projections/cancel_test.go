package projections_test

import (
	"context"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// TestCancelledMessageReadModels cancels one message of a broadcast and one 1:1 message, then
// clears the queue: every read model shows the cancelled messages cancelled (with reason and
// actor in the audit trail), none of them pending or purged, and the counts reconcile.
func TestCancelledMessageReadModels(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "alice")
		bc := connection.BroadcastIDFor(tenantA, connA, "cx")
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartBroadcast(connection.StartBroadcast{BroadcastID: bc, Text: "t", Actor: "alice",
				Recipients: []string{"+4915100000001", "+4915100000002", "+4915100000003"}}, at(1))
		})
		one := connection.MessageIDFor(tenantA, connA, "one")
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "one", Recipient: "+4915100000009", Text: "x", Actor: "alice"}, at(1))
		})
		b1 := connection.BroadcastMessageID(bc, 1)
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Cancel(connection.CancelMessage{MessageID: b1, Seq: 2, Reason: "wrong number", Actor: "bob"}, at(2))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Cancel(connection.CancelMessage{MessageID: one, Seq: 4, Reason: "typo", Actor: "bob"}, at(3))
		})

		q, ps := allProjections()
		r := startRunner(t, e, ps...)
		r.waitFor(t, e, ps...)
		status := ps[2].(*projections.MessageStatus)
		v, err := status.Message(ctx, e.db, tenantA, b1)
		if err != nil || v.Status != connection.MessageStatusCancelled || v.Detail != "wrong number" ||
			len(v.History) != 2 || v.History[1].Status != connection.MessageStatusCancelled || !v.History[1].At.Equal(at(2)) {
			t.Fatalf("cancelled message = %+v, %v", v, err)
		}
		p, err := status.Broadcast(ctx, e.db, tenantA, bc)
		if err != nil || p.Cancelled != 1 || p.Queued != 2 {
			t.Fatalf("progress = %+v, %v", p, err)
		}
		sum, err := q.Summary(ctx, e.db, tenantA, connA)
		if err != nil || sum.Pending != 2 || len(sum.Broadcasts) != 1 || sum.Broadcasts[0].Pending != 2 {
			t.Fatalf("queue = %+v, %v", sum, err)
		}
		card, err := ps[1].(*projections.Cards).Card(ctx, e.db, tenantA, connA)
		if err != nil || card.Pending != 2 {
			t.Fatalf("card = %+v, %v", card, err)
		}
		days, err := ps[4].(*projections.Analytics).Daily(ctx, e.db, tenantA, projections.AnalyticsQuery{ConnectionID: connA})
		if err != nil || len(days) != 1 || days[0].Cancelled != 2 || days[0].Queued != 4 {
			t.Fatalf("analytics = %+v, %v", days, err)
		}
		page, err := ps[3].(*projections.Audit).Entries(ctx, e.db, tenantA, projections.AuditFilter{EventType: connection.TypeMessageCancelled})
		if err != nil || len(page.Entries) != 2 || page.Entries[0].Actor != "bob" || page.Entries[0].Reason != "wrong number" {
			t.Fatalf("audit = %+v, %v", page, err)
		}

		// A clear purges the two pending messages and leaves the cancelled ones cancelled.
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: connection.ClearIDFor(tenantA, connA, "cl"), Reason: "r", Actor: "bob"}, at(4))
		})
		r.waitFor(t, e, ps...)
		if v, _ := status.Message(ctx, e.db, tenantA, b1); v.Status != connection.MessageStatusCancelled {
			t.Fatalf("after the clear the cancelled message is %s", v.Status)
		}
		if sum, _ := q.Summary(ctx, e.db, tenantA, connA); sum.Pending != 0 {
			t.Fatalf("after the clear: %+v", sum)
		}
		if days, _ := ps[4].(*projections.Analytics).Daily(ctx, e.db, tenantA, projections.AnalyticsQuery{ConnectionID: connA}); days[0].Purged != 2 {
			t.Fatalf("analytics after the clear = %+v", days)
		}
	})
}
