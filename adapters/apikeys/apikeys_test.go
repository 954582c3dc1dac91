package apikeys_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections"
)

var fixed = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// open returns a registry on a fresh SQLite database whose clock stands at fixed, its event
// store and its read-model database.
func open(t testing.TB) (*apikeys.Keys, eventstore.Store, *projections.DB) {
	t.Helper()
	store, db := openSQLite(t)
	k, err := apikeys.New(store, db, func() time.Time { return fixed })
	if err != nil {
		t.Fatal(err)
	}
	return k, store, db
}

// openSQLite opens a fresh SQLite database holding the event store and the read models, with
// the registry's tables (migrated twice: the migration must be idempotent); both close when t
// ends.
func openSQLite(t testing.TB) (*sqlite.Store, *projections.DB) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "waqueue.db")
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	db := &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := apikeys.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := apikeys.Migrate(ctx, db); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	return store, db
}

func TestCreateAuthenticate(t *testing.T) {
	k, store, _ := open(t)
	ctx := t.Context()
	c, err := k.Create(ctx, "t1", auth.RoleOperator, "ops", "tester")
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.Authenticate(ctx, c.Secret)
	if err != nil || p != (auth.Principal{TenantID: "t1", ID: c.ID, Role: auth.RoleOperator}) {
		t.Fatalf("principal %+v, %v", p, err)
	}
	// The event records the hash, never the key.
	evs, err := store.ReadStream(ctx, auth.TenantStream("t1"), eventstore.Forwards, 0, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != auth.TypeAPIKeyCreated {
		t.Fatalf("stream %+v, %v", evs, err)
	}
	ev, err := auth.DecodeKeyEvent(evs[0].Type, evs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	created := ev.(auth.APIKeyCreated)
	if created.KeyHash != apikeys.Hash(c.Secret) || created.CreatedBy != "tester" || !created.CreatedAt.Equal(fixed) ||
		evs[0].Metadata.Actor != "tester" || evs[0].Metadata.TenantID != "t1" {
		t.Fatalf("event %+v (metadata %+v)", created, evs[0].Metadata)
	}
	for _, bad := range []string{"", c.Secret + "x", c.Secret[:len(c.Secret)-1] + "A", "wq_short", "Bearer " + c.Secret} {
		if bad == c.Secret {
			continue
		}
		if _, err := k.Authenticate(ctx, bad); !errors.Is(err, apikeys.ErrInvalidKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
	if _, err := k.Create(ctx, "bad tenant!", auth.RoleAdmin, "", "x"); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("invalid tenant: %v", err)
	}
	if _, err := k.Create(ctx, "t1", auth.Role{}, "", "x"); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("zero role: %v", err)
	}
}

// TestConcurrentRevoke: concurrent revocations of one key record exactly one event; each caller
// is told the key is revoked (nil, or ErrRevoked when it saw the revocation already).
func TestConcurrentRevoke(t *testing.T) {
	k, store, _ := open(t)
	ctx := t.Context()
	c, err := k.Create(ctx, "t1", auth.RoleSender, "", "tester")
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = k.Revoke(ctx, "t1", c.ID, "tester", "race") })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, apikeys.ErrRevoked) {
			t.Fatalf("revoke: %v", err)
		}
	}
	evs, err := store.ReadStream(ctx, auth.TenantStream("t1"), eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, e := range evs {
		if e.Type == auth.TypeAPIKeyRevoked {
			revoked++
		}
	}
	if revoked != 1 {
		t.Fatalf("%d revocations recorded, want 1", revoked)
	}
	if err := k.Revoke(ctx, "t1", c.ID, "tester", "again"); !errors.Is(err, apikeys.ErrRevoked) {
		t.Fatalf("revoking a revoked key: %v", err)
	}
	if _, err := k.Authenticate(ctx, c.Secret); !errors.Is(err, apikeys.ErrInvalidKey) {
		t.Fatalf("revoked key authenticates: %v", err)
	}
	if err := k.Revoke(ctx, "t2", c.ID, "tester", ""); !errors.Is(err, apikeys.ErrNotFound) {
		t.Fatalf("revoke from another tenant: %v", err)
	}
}

// TestSyncCatchesUp: an event recorded without its table write (a crash in between, or another
// process) is applied by the next Sync; Rebuild reproduces the table.
func TestSyncCatchesUp(t *testing.T) {
	k, store, db := open(t)
	ctx := t.Context()
	secret := apikeys.Prefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	typ, data, err := auth.EncodeKeyEvent(auth.APIKeyCreated{KeyID: "key_lost", TenantID: "t9", Role: auth.RoleAuditor,
		KeyHash: apikeys.Hash(secret), CreatedBy: "other-process", CreatedAt: fixed})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, auth.TenantStream("t9"), eventstore.Any, eventstore.EventData{ID: uuid.New(), Type: typ, Data: data}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Authenticate(ctx, secret); !errors.Is(err, apikeys.ErrInvalidKey) {
		t.Fatalf("before Sync: %v", err)
	}
	if err := k.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := k.Authenticate(ctx, secret)
	if err != nil || p.TenantID != "t9" || p.Role != auth.RoleAuditor {
		t.Fatalf("after Sync: %+v, %v", p, err)
	}
	if _, err := k.ChangeRole(ctx, "t9", "key_lost", auth.RoleAnalyst, "admin"); err != nil {
		t.Fatal(err)
	}
	before, err := k.List(ctx, "t9")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE api_keys SET role = 'admin'`); err != nil {
		t.Fatal(err)
	}
	if err := k.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := k.List(ctx, "t9")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0] != before[0] || after[0].Role != auth.RoleAnalyst {
		t.Fatalf("rebuilt %+v, want %+v", after, before)
	}
}
