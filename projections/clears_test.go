package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// TestClearReports checks the clears read model over the scenario (a broadcast clear, then a
// whole-queue clear while banned): each clear's figures as its events carry them, newest
// first in pages, never across tenants or connections; TestEndToEndThenRebuild checks that a
// rebuild gives the same rows.
func TestClearReports(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		q, ps := allProjections()
		clears := ps[len(ps)-1].(*projections.Clears)
		r := startRunner(t, e, ps...)
		_, _ = startProcess(t, e, q, &clearkit.Completer{Store: e.store})
		s := &scenario{}
		buildScenario(t, e, s, checkpoints{beforeCompletion: func(id uuid.UUID) {
			r.waitFor(t, e, clears)
			rep, err := clears.ClearReport(ctx, e.db, tenantA, connA, id)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Status != projections.ClearStatusRequested && rep.Status != projections.ClearStatusCompleted {
				t.Errorf("status %q before completion", rep.Status)
			}
		}})
		r.waitFor(t, e, ps...)

		c2, err := clears.ClearReport(ctx, e.db, tenantA, connA, s.clear2)
		if err != nil {
			t.Fatal(err)
		}
		// clear2: the whole queue while banned; m2 (seq 2) and m3 (seq 8) were pending.
		if c2.Status != projections.ClearStatusCompleted || c2.PurgedCount != 2 || len(c2.Purged) != 2 ||
			c2.Purged[0] != (connection.SeqRange{From: 2, To: 2}) || c2.Purged[1] != (connection.SeqRange{From: 8, To: 8}) ||
			c2.InFlightCount != 0 || c2.RequestedBy != "alice" || c2.Reason != "ban risk" || !c2.RequestedAt.Equal(at(10)) ||
			c2.CompletedAt.IsZero() || c2.CompletedBy == "" || c2.Then != connection.ClearThenKeep ||
			c2.QueueAfter != connection.QueueStatusHeld || !c2.Scope.IsWholeQueue() || c2.UpToSeq != 8 ||
			c2.NotSentCount != 0 || c2.NotSent == nil || len(c2.NotSent) != 0 {
			t.Errorf("clear2 = %+v", c2)
		}
		var report connection.QueueCleared
		if err := json.Unmarshal(c2.Report, &report); err != nil || report.ClearID != s.clear2 || report.PurgedCount != 2 {
			t.Errorf("clear2 report body %s (%v)", c2.Report, err)
		}
		var request connection.ClearQueueRequested
		if err := json.Unmarshal(c2.Request, &request); err != nil || request.ClearID != s.clear2 {
			t.Errorf("clear2 request body %s (%v)", c2.Request, err)
		}
		c1, err := clears.ClearReport(ctx, e.db, tenantA, connA, s.clear1)
		if err != nil {
			t.Fatal(err)
		}
		if c1.Scope != connection.BroadcastScope(s.bc) || c1.PurgedCount != 5 || c1.QueueAfter != connection.QueueStatusOpen {
			t.Errorf("clear1 = %+v", c1)
		}

		// Newest first, in pages.
		p1, err := clears.ClearReports(ctx, e.db, tenantA, connA, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(p1.Clears) != 1 || p1.Clears[0].ClearID != s.clear2 || p1.NextCursor == "" {
			t.Fatalf("page 1 = %+v", p1)
		}
		p2, err := clears.ClearReports(ctx, e.db, tenantA, connA, p1.NextCursor, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(p2.Clears) != 1 || p2.Clears[0].ClearID != s.clear1 || p2.NextCursor != "" {
			t.Fatalf("page 2 = %+v", p2)
		}
		if p2.Clears[0].Report != nil || p2.Clears[0].Request != nil {
			t.Errorf("a list item carries the event bodies")
		}
		if _, err := clears.ClearReports(ctx, e.db, tenantA, connA, "x", 1); !errors.Is(err, projections.ErrBadCursor) {
			t.Errorf("bad cursor: %v", err)
		}

		// Never across tenants or connections.
		_, err = clears.ClearReport(ctx, e.db, tenantB, connA, s.clear2)
		mustNotFound(t, "clear of A as tenant B", err)
		_, err = clears.ClearReport(ctx, e.db, tenantA, connB, s.clear2)
		mustNotFound(t, "clear of A under connection B", err)
		if p, err := clears.ClearReports(ctx, e.db, tenantB, connA, "", 10); err != nil || len(p.Clears) != 0 {
			t.Errorf("clears of A as tenant B = %+v, %v", p, err)
		}
	})
}

// TestClearReportNotSent: a message dispatched but whose hand-over the transport refused is not
// in flight for a clear; the read model keeps the report's not-sent list as the event carries it.
func TestClearReportNotSent(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		q, clears := projections.NewQueue(), projections.NewClears()
		r := startRunner(t, e, q, clears)
		_, _ = startProcess(t, e, q, &clearkit.Completer{Store: e.store})
		a, err := clearkit.Register(ctx, e.store, tenantA, connA, "+491701234567", at(0))
		if err != nil {
			t.Fatal(err)
		}
		do := func(decide func(c *connection.Connection) ([]connection.Event, error)) {
			t.Helper()
			if _, err := a.Do(ctx, "alice", decide); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"k1", "k2"} {
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: k, Recipient: "+4915100000001", Text: "hi", Actor: "alice"}, at(1))
			})
		}
		m1 := connection.MessageIDFor(tenantA, connA, "k1")
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "alice"}, at(2))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Dispatch(connection.DispatchMessage{MessageID: m1, Seq: 1}, at(3))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.DeferSend(connection.SendRefused{MessageID: m1, Seq: 1, Reason: "not_connected"}, at(4))
		})
		id := connection.ClearIDFor(tenantA, connA, "c1")
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: id, Reason: "r", Actor: "alice"}, at(5))
		})
		waitUntil(t, "QueueCleared", func() (bool, error) {
			return countEvents(t, e, connection.StreamName(connection.Key(tenantA, connA)), connection.TypeQueueCleared) == 1, nil
		})
		r.waitFor(t, e, clears)
		rep, err := clears.ClearReport(ctx, e.db, tenantA, connA, id)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Status != projections.ClearStatusCompleted || rep.NotSentCount != 1 || len(rep.NotSent) != 1 || rep.NotSent[0].MessageID != m1 ||
			rep.InFlightCount != 0 || rep.PurgedCount != 1 {
			t.Fatalf("report %+v", rep)
		}
	})
}
