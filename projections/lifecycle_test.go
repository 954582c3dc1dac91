package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// TestMessageLifecycles follows every terminal status but purged (see the end-to-end test):
// read (with a late delivery receipt), failed, unknown and expired, and checks that every
// read model reconciles.
func TestMessageLifecycles(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "alice")
		bc := connection.BroadcastIDFor(tenantA, connA, "lc")
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "alice"}, at(0))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartBroadcast(connection.StartBroadcast{BroadcastID: bc, Text: "t", TTL: time.Hour, Actor: "alice",
				Recipients: []string{"+4915100000001", "+4915100000002", "+4915100000003", "+4915100000004"}}, at(1))
		})
		msg := func(i int) (connection.DispatchMessage, uint64) {
			return connection.DispatchMessage{MessageID: connection.BroadcastMessageID(bc, i), Seq: uint64(i + 1), ExpiresAt: at(61)}, uint64(i + 1)
		}
		outcome := func(i int, kind connection.MessageStatus, min int) {
			m, seq := msg(i)
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.RecordOutcome(connection.Outcome{MessageID: m.MessageID, Seq: seq, Kind: kind, Code: "not_on_whatsapp", Detail: "timeout"}, at(min))
			})
		}
		for i := range 3 {
			m, _ := msg(i)
			do(func(c *connection.Connection) ([]connection.Event, error) { return c.Dispatch(m, at(2+i)) })
		}
		outcome(0, connection.MessageStatusSent, 10)
		outcome(0, connection.MessageStatusRead, 11)
		outcome(0, connection.MessageStatusDelivered, 12) // late receipt: stays read
		outcome(1, connection.MessageStatusFailed, 13)
		outcome(2, connection.MessageStatusUnknown, 14)
		m3, _ := msg(3)
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Expire(connection.ExpireMessage{MessageID: m3.MessageID, Seq: m3.Seq, ExpiresAt: m3.ExpiresAt}, at(70))
		})

		q, ps := allProjections()
		r := startRunner(t, e, ps...)
		r.waitFor(t, e, ps...)
		status := ps[2].(*projections.MessageStatus)
		want := map[int]connection.MessageStatus{0: connection.MessageStatusRead, 1: connection.MessageStatusFailed,
			2: connection.MessageStatusUnknown, 3: connection.MessageStatusExpired}
		for i, st := range want {
			m, _ := msg(i)
			v, err := status.Message(ctx, e.db, tenantA, m.MessageID)
			if err != nil || v.Status != st {
				t.Errorf("message %d = %+v, %v; want %s", i, v, err, st)
			}
		}
		m0, _ := msg(0)
		if v, _ := status.Message(ctx, e.db, tenantA, m0.MessageID); len(v.History) != 5 {
			t.Errorf("history of the read message = %+v, want queued, dispatched, sent, delivered, read", v.History)
		}
		m1, _ := msg(1)
		if v, _ := status.Message(ctx, e.db, tenantA, m1.MessageID); v.FailureCode != "not_on_whatsapp" {
			t.Errorf("failed message = %+v", v)
		}
		p, err := status.Broadcast(ctx, e.db, tenantA, bc)
		if err != nil {
			t.Fatal(err)
		}
		if p.Count != 4 || p.Read != 1 || p.Failed != 1 || p.Unknown != 1 || p.Expired != 1 ||
			p.Queued+p.Dispatched+p.Sent+p.Delivered+p.Purged != 0 {
			t.Errorf("progress = %+v", p)
		}
		sum, err := q.Summary(ctx, e.db, tenantA, connA)
		if err != nil || sum.Pending != 0 || sum.InFlight != 0 || len(sum.Broadcasts) != 0 {
			t.Errorf("queue = %+v, %v", sum, err)
		}
		card, err := ps[1].(*projections.Cards).Card(ctx, e.db, tenantA, connA)
		if err != nil || card.Pending != 0 || card.InFlight != 0 || card.LastProblem != "outcome_unknown: timeout" || !card.LastProblemAt.Equal(at(14)) {
			t.Errorf("card = %+v, %v", card, err)
		}
		days, err := ps[4].(*projections.Analytics).Daily(ctx, e.db, tenantA, projections.AnalyticsQuery{ConnectionID: connA})
		if err != nil || len(days) != 1 {
			t.Fatalf("analytics = %+v, %v", days, err)
		}
		d := days[0]
		if d.Queued != 4 || d.Dispatched != 3 || d.Sent != 1 || d.Read != 1 || d.Delivered != 1 || d.Failed != 1 || d.Unknown != 1 || d.Expired != 1 {
			t.Errorf("analytics day = %+v", d)
		}
	})
}
