package projections_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// The card shows the connection's sending policy and the messages dispatched on its local day
// (in its policy's zone): counted across batches, started again on the next local day, and the
// same after a rebuild.
func TestCardSendingPolicyAndSentToday(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "alice")
		tokyo, cap := "Asia/Tokyo", 5
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeSendingPolicy(connection.SetSendingPolicy{Actor: "alice",
				Patch: connection.SendingPolicyPatch{TimeZone: &tokyo, DailyCap: &cap}}, at(0))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "system"}, at(0))
		})
		for i := 1; i <= 4; i++ {
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k" + strconv.Itoa(i), Recipient: "+4915100000009", Text: "x", Actor: "alice"}, at(0))
			})
		}
		dispatch := func(seq uint64, when time.Time) {
			t.Helper()
			id := connection.MessageIDFor(tenantA, connA, "k"+strconv.FormatUint(seq, 10))
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.Dispatch(connection.DispatchMessage{MessageID: id, Seq: seq}, when)
			})
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.RecordOutcome(connection.Outcome{MessageID: id, Seq: seq, Kind: connection.MessageStatusSent, ServerID: "srv"}, when)
			})
		}
		// t0 is 09:00 UTC, 18:00 in Tokyo; Tokyo's next day starts at 15:00 UTC.
		nextDay := time.Date(t0.Year(), t0.Month(), t0.Day(), 15, 0, 0, 0, time.UTC)
		dispatch(1, at(1))
		dispatch(2, at(2))

		_, ps := allProjections()
		cards := ps[1].(*projections.Cards)
		r := startRunner(t, e, ps...)
		r.waitFor(t, e, ps...)
		card, err := cards.Card(ctx, e.db, tenantA, connA)
		if err != nil {
			t.Fatal(err)
		}
		if p := card.SendingPolicy; p.TimeZone != tokyo || p.DailyCap != 5 || p.MinInterval != connection.DefaultMinInterval {
			t.Fatalf("card policy %+v", p)
		}
		if n := card.SentToday(at(10)); n != 2 {
			t.Fatalf("sent today %d, want 2", n)
		}
		if n := card.SentToday(nextDay); n != 0 {
			t.Fatalf("sent on the next Tokyo day %d, want 0", n)
		}
		dispatch(3, at(3)) // another batch, same day
		dispatch(4, nextDay.Add(time.Minute))
		r.waitFor(t, e, ps...)
		card, _ = cards.Card(ctx, e.db, tenantA, connA)
		if n := card.SentToday(nextDay.Add(time.Hour)); n != 1 {
			t.Fatalf("sent on the next Tokyo day %d, want 1 (card %+v)", n, card)
		}
		r.stop()
		if err := r.runner.Rebuild(ctx, projections.CardsName); err != nil {
			t.Fatal(err)
		}
		_, ps = allProjections()
		cards = ps[1].(*projections.Cards)
		r = startRunner(t, e, ps...)
		r.waitFor(t, e, ps...)
		rebuilt, err := cards.Card(ctx, e.db, tenantA, connA)
		if err != nil {
			t.Fatal(err)
		}
		if rebuilt.DayCount != card.DayCount || !rebuilt.DayStart.Equal(card.DayStart) || !rebuilt.SendingPolicy.Equal(card.SendingPolicy) {
			t.Fatalf("rebuilt card %+v\nincremental %+v", rebuilt, card)
		}
		// A connection without a recorded policy shows the defaults.
		if _, err := clearkit.Register(ctx, e.store, tenantA, "conn-b", "+491701234568", at(0)); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, e, ps...)
		if c, err := cards.Card(ctx, e.db, tenantA, "conn-b"); err != nil || !c.SendingPolicy.Equal(connection.DefaultSendingPolicy()) || c.SentToday(at(0)) != 0 {
			t.Fatalf("card without a policy %+v, %v", c, err)
		}
	})
}
