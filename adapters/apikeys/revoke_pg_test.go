package apikeys_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// waitFor polls cond until it holds; the deadline is only a safety net.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRevokeWhileOlderTransactionOpen (issue 11.1): on PostgreSQL the global log hides events
// behind the oldest open transaction. With such a transaction held open across the revocation,
// Revoke must still take effect before it returns (the API answers 204 after it), a key created
// meanwhile must authenticate at once, a second instance sharing the read-model database must
// refuse the revoked key, and an instance with a read-model database of its own (EventStoreDB
// with a per-node SQLite file has the same shape) must refuse it within its sync interval —
// all while the old transaction is still open.
func TestRevokeWhileOlderTransactionOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
	defer cancel()
	pg := openPG(t)
	store, url := pg.Store, pg.URL
	k1 := newNode(t, store, pg.DB)
	k2 := newNode(t, store, pg.DB) // a second node on the same database
	// A third node whose read models live in a database of its own.
	k3 := newNode(t, store, openOwnReadModels(t))

	victim, err := k1.Create(ctx, "t1", auth.RoleSender, "to be revoked", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := k3.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i, k := range []*apikeys.Keys{k1, k2, k3} {
		if _, err := k.Authenticate(ctx, victim.Secret); err != nil {
			t.Fatalf("node %d: live key refused: %v", i+1, err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k3.Run(runCtx, 50*time.Millisecond) }()
	t.Cleanup(func() { stop(); <-done })

	// An older transaction with an id (an analyst's session, a long broadcast append) stays open
	// across everything below.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}

	if err := k1.Revoke(ctx, "t1", victim.ID, "admin", "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, err := k1.Authenticate(ctx, victim.Secret); !errors.Is(err, apikeys.ErrInvalidKey) {
		t.Fatalf("answering node: revoked key authenticates after Revoke returned: %v", err)
	}
	if got, err := k1.Get(ctx, "t1", victim.ID); err != nil || got.RevokedAt.IsZero() {
		t.Fatalf("answering node lists the key as live: %+v, %v", got, err)
	}
	fresh, err := k1.Create(ctx, "t1", auth.RoleOperator, "new", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k1.Authenticate(ctx, fresh.Secret); err != nil || p.ID != fresh.ID {
		t.Fatalf("a key created while the old transaction is open: %+v, %v", p, err)
	}
	if _, err := k1.ChangeRole(ctx, "t1", fresh.ID, auth.RoleAuditor, "admin"); err != nil {
		t.Fatal(err)
	}
	if p, err := k1.Authenticate(ctx, fresh.Secret); err != nil || p.Role != auth.RoleAuditor {
		t.Fatalf("role change not in effect: %+v, %v", p, err)
	}
	waitFor(t, "second node (same database) refuses the revoked key", func() bool {
		_, err := k2.Authenticate(ctx, victim.Secret)
		return errors.Is(err, apikeys.ErrInvalidKey)
	})
	waitFor(t, "third node (own database) refuses the revoked key", func() bool {
		_, err := k3.Authenticate(ctx, victim.Secret)
		return errors.Is(err, apikeys.ErrInvalidKey)
	})
	// The old transaction is still open: nothing above waited for it.
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var open bool
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id() IS NOT NULL`).Scan(&open); err != nil || !open {
		t.Fatalf("the holding transaction ended early: %v", err)
	}
}
