package projections_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

const (
	tenantA = "tenant-a"
	tenantB = "tenant-b"
	connA   = "conn-a"
	connB   = "conn-b"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

// scenario is the history every end-to-end test builds on connection A (tenant A), with a
// second connection B of tenant B for isolation:
//
//	seq 1, 2   1:1 messages m1, m2
//	seq 3..7   broadcast bc (5 recipients)
//	seq 8      1:1 message m3
//	pair; dispatch m1; sent; delivered
//	clear broadcast bc (clear1) → completed by the clear process
//	ban (temporary) → queue held
//	clear the whole queue (clear2: m2, m3) → completed; queue held again
type scenario struct {
	a, b           *clearkit.Stream
	m1, m2, m3, bc uuid.UUID
	clear1, clear2 uuid.UUID
}

// checkpoints are called while the scenario is built, for the end-to-end test to look at the
// read models in between; nil hooks are skipped.
type checkpoints struct {
	afterQueued      func()
	afterDelivered   func()
	afterClear1      func()
	afterClear2      func()
	beforeCompletion func(clearID uuid.UUID)
}

func at(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

func buildScenario(t *testing.T, e *env, s *scenario, cp checkpoints) {
	t.Helper()
	ctx := context.Background()
	var err error
	if s.a, err = clearkit.Register(ctx, e.store, tenantA, connA, "+491701234567", at(0)); err != nil {
		t.Fatal(err)
	}
	if s.b, err = clearkit.Register(ctx, e.store, tenantB, connB, "+491701234568", at(0)); err != nil {
		t.Fatal(err)
	}
	do := func(decide func(c *connection.Connection) ([]connection.Event, error)) {
		t.Helper()
		if _, err := s.a.Do(ctx, "alice", decide); err != nil {
			t.Fatal(err)
		}
	}
	enqueue := func(key, to string, min int) uuid.UUID {
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: key, Recipient: to, Text: "hello " + key, Actor: "alice"}, at(min))
		})
		return connection.MessageIDFor(tenantA, connA, key)
	}
	s.m1 = enqueue("k1", "+4915100000001", 1)
	s.m2 = enqueue("k2", "+4915100000002", 1)
	s.bc = connection.BroadcastIDFor(tenantA, connA, "b1")
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.StartBroadcast(connection.StartBroadcast{BroadcastID: s.bc, Text: "sale",
			Recipients: []string{"+4915100000011", "+4915100000012", "+4915100000013", "+4915100000014", "+4915100000015"},
			TTL:        time.Hour, Actor: "alice"}, at(2))
	})
	s.m3 = enqueue("k3", "+4915100000003", 3)
	// Something on B, to show it never leaks into A's tenant.
	if _, err := s.b.Do(ctx, "bob", func(c *connection.Connection) ([]connection.Event, error) {
		return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "kb", Recipient: "+4915100000099", Text: "b", Actor: "bob"}, at(3))
	}); err != nil {
		t.Fatal(err)
	}
	if cp.afterQueued != nil {
		cp.afterQueued()
	}
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.Pair(connection.PairSession{JID: "491701234567@s.whatsapp.net", Actor: "alice"}, at(4))
	})
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.Dispatch(connection.DispatchMessage{MessageID: s.m1, Seq: 1}, at(5))
	})
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.RecordOutcome(connection.Outcome{MessageID: s.m1, Seq: 1, Kind: connection.MessageStatusSent, ServerID: "srv-1"}, at(6))
	})
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.RecordOutcome(connection.Outcome{MessageID: s.m1, Seq: 1, Kind: connection.MessageStatusDelivered}, at(7))
	})
	if cp.afterDelivered != nil {
		cp.afterDelivered()
	}
	clear := func(id uuid.UUID, scope connection.ClearScope, min int) {
		t.Helper()
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: id, Scope: scope, Reason: "ban risk", Actor: "alice"}, at(min))
		})
		if cp.beforeCompletion != nil {
			cp.beforeCompletion(id)
		}
		waitUntil(t, "QueueCleared", func() (bool, error) {
			return countEvents(t, e, connection.StreamName(connection.Key(tenantA, connA)), connection.TypeQueueCleared) >= clearsIn(s, id), nil
		})
	}
	s.clear1 = connection.ClearIDFor(tenantA, connA, "c1")
	clear(s.clear1, connection.BroadcastScope(s.bc), 8)
	if cp.afterClear1 != nil {
		cp.afterClear1()
	}
	do(func(c *connection.Connection) ([]connection.Event, error) {
		return c.Ban(connection.BanConnection{Kind: connection.BanTemporary, ExpiresAt: at(60 * 24), ReasonCode: "101", Actor: "whatsapp"}, at(9))
	})
	s.clear2 = connection.ClearIDFor(tenantA, connA, "c2")
	clear(s.clear2, connection.WholeQueue, 10)
	if cp.afterClear2 != nil {
		cp.afterClear2()
	}
}

// clearsIn is the number of QueueCleared the scenario expects once clear id is complete.
func clearsIn(s *scenario, id uuid.UUID) int {
	if id == s.clear2 {
		return 2
	}
	return 1
}

func allProjections() (*projections.Queue, []projections.Projection) {
	q := projections.NewQueue()
	return q, []projections.Projection{q, projections.NewCards(), projections.NewMessageStatus(), projections.NewAudit(), projections.NewAnalytics(), projections.NewClears()}
}

var readModelTables = []string{
	"queue_conns", "queue_messages", "queue_runs", "queue_run_gone", "queue_broadcasts", "queue_purges", "queue_clears",
	"card_connections", "card_in_flight",
	"status_conns", "status_messages", "status_broadcasts", "status_purges", "status_runs", "status_run_ids",
	"audit_conns", "audit_entries",
	"analytics_daily", "analytics_conns",
	"clear_conns", "clear_reports",
}

// collectAll runs the collectors until they have nothing left to do.
func collectAll(t *testing.T, e *env) {
	t.Helper()
	for _, c := range []projections.Collector{projections.NewQueue(), projections.NewMessageStatus()} {
		for {
			n, err := c.Collect(context.Background(), e.db, 3)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
	}
}

func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("%s: err = %v, want ErrNotFound", what, err)
	}
}

func seqs(ms []projections.PendingMessage) []uint64 {
	out := []uint64{}
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}
