package server_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestResumeWakesTheDispatcherWithoutTheLog: a queue resumed through the node is dispatched at
// once, not when the event log shows the QueueResumed. The log shows an event only after every
// transaction older than its append has ended; a transaction held open here (as the read
// models' batch transactions are, for up to 1.5 s under load in bench dispatch) hides the resume
// from every subscriber until the end of the test. Before the dispatcher took the
// Repository's OnAppended hint, nothing was sent and this test timed out.
func TestResumeWakesTheDispatcherWithoutTheLog(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	node := startNode(ctx, t, server.Options{DB: url, NoPacing: true})
	op := commands.WithPrincipal(ctx, auth.Principal{TenantID: node.Tenant, ID: "test", Role: auth.RoleAdmin})
	h := node.Handlers
	const id = "shop-1"
	if _, err := h.RegisterConnection.Handle(op, commands.RegisterConnection{ConnectionID: id, Phone: "+491701234567"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.HoldQueue.Handle(op, commands.HoldQueue{ConnectionID: id, Note: "test"}); err != nil {
		t.Fatal(err)
	}
	recipients := []string{"+4915100000001", "+4915100000002", "+4915100000003"}
	res, err := h.StartBroadcast.Handle(op, commands.StartBroadcast{ConnectionID: id, IdempotencyKey: "b1", Recipients: recipients, Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Simulator.Connect(ctx, connection.Key(node.Tenant, id)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range node.Runner.Statuses() {
		names = append(names, st.Name)
	}
	if err := node.Runner.WaitReached(ctx, names, res.Position); err != nil { // the messages are pending in the read model
		t.Fatal(err)
	}
	waitFor(t, ctx, "link active", func() bool {
		var active bool
		if err := node.Repo.View(ctx, connection.Key(node.Tenant, id), func(c *connection.Connection) error {
			active = c.LinkStatus() == connection.LinkStatusActive
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return active
	})
	if n := node.Dispatcher.Stats().Sent; n != 0 {
		t.Fatalf("%d sent while the queue was held", n)
	}

	// An open transaction with an id: nothing appended from here on is visible to subscribers.
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	blocker, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	if _, err := blocker.ExecContext(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}

	if _, err := h.ResumeQueue.Handle(op, commands.ResumeQueue{ConnectionID: id, Note: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the broadcast sent", func() bool { return node.Dispatcher.Stats().Sent == uint64(len(recipients)) })
	var dispatched int
	if err := node.Repo.View(ctx, connection.Key(node.Tenant, id), func(c *connection.Connection) error {
		_, more := c.Head()
		if more || len(c.InFlight()) != 0 {
			t.Errorf("after the sends: a head left %v, %d in flight", more, len(c.InFlight()))
		}
		dispatched = int(c.LastSeq())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if dispatched != len(recipients) {
		t.Fatalf("last seq %d, want %d", dispatched, len(recipients))
	}
}
