package apikeys_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections"
)

// openOn returns a registry on engine ("sqlite" or "postgres": a fresh database) and its
// read-model database handle.
func openOn(t *testing.T, engine string) (*apikeys.Keys, *sql.DB) {
	t.Helper()
	if engine == "postgres" {
		pg := openPG(t)
		return newNode(t, pg.Store, pg.DB), pg.DB.SQL
	}
	store, db := openSQLite(t)
	return newNode(t, store, db), db.SQL
}

// wantIdentity is what Identify must answer for a credential: a principal, or an error.
type wantIdentity struct {
	principal auth.Principal
	invalid   bool   // ErrInvalidKey
	suspended string // a *SuspendedError of this tenant
}

func checkIdentity(secret string, want wantIdentity, got apikeys.Identity, err error) error {
	var se *apikeys.SuspendedError
	switch {
	case want.invalid:
		if !errors.Is(err, apikeys.ErrInvalidKey) {
			return fmt.Errorf("key %.12s…: %+v, %v; want ErrInvalidKey", secret, got, err)
		}
	case want.suspended != "":
		if !errors.As(err, &se) || se.TenantID != want.suspended {
			return fmt.Errorf("key %.12s…: %+v, %v; want tenant %s suspended", secret, got, err, want.suspended)
		}
	case err != nil || got.Principal != want.principal:
		return fmt.Errorf("key %.12s…: %+v, %v; want %+v", secret, got.Principal, err, want.principal)
	}
	return nil
}

// TestSharedLookups: concurrent authentications share key queries, and each still gets
// exactly its own key's answer (G9: never another key's tenant or role), read after it was
// asked — so a revocation or suspension that returned before is in effect, also for lookups
// that queued behind queries already running. Both read-model engines (the query differs).
func TestSharedLookups(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) { testSharedLookups(t, engine) })
	}
}

func testSharedLookups(t *testing.T, engine string) {
	k, sdb := openOn(t, engine)
	ctx := t.Context()
	// The hook holds every query while a gate is set, counting the queries it holds.
	var gate atomic.Pointer[chan struct{}]
	var held atomic.Int32
	apikeys.SetBeforeLookup(k, func() {
		if g := gate.Load(); g != nil {
			held.Add(1)
			<-*g
		}
	})
	hold := func() func() {
		g := make(chan struct{})
		held.Store(0)
		gate.Store(&g)
		return func() { gate.Store(nil); close(g) }
	}

	want := map[string]wantIdentity{}
	create := func(tenant string, role auth.Role) apikeys.Created {
		c, err := k.Create(ctx, tenant, role, "k", "admin")
		if err != nil {
			t.Fatal(err)
		}
		want[c.Secret] = wantIdentity{principal: auth.Principal{TenantID: tenant, ID: c.ID, Role: role}}
		return c
	}
	admin := create("t1", auth.RoleAdmin)
	sender := create("t1", auth.RoleSender)
	create("t2", auth.RoleOperator)
	revoked := create("t3", auth.RoleAuditor)
	if _, err := k.CreateTenant(ctx, "t4", "Four", "platform"); err != nil {
		t.Fatal(err)
	}
	suspended := create("t4", auth.RoleSender)
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	unknown := apikeys.Prefix + base64.RawURLEncoding.EncodeToString(raw)
	want[unknown] = wantIdentity{invalid: true}
	secrets := make([]string, 0, len(want))
	for s := range want {
		secrets = append(secrets, s)
	}
	for _, s := range secrets {
		got, err := k.Identify(ctx, s)
		if err := checkIdentity(s, want[s], got, err); err != nil {
			t.Fatalf("alone: %v", err)
		}
	}

	type answer struct {
		secret string
		id     apikeys.Identity
		err    error
	}
	answers := make(chan answer, 1000)
	lookup := func(s string) {
		id, err := k.Identify(ctx, s)
		answers <- answer{s, id, err}
	}
	collect := func(n int) {
		t.Helper()
		for range n {
			a := <-answers
			if err := checkIdentity(a.secret, want[a.secret], a.id, a.err); err != nil {
				t.Error(err)
			}
		}
	}

	// Hold the running queries (of two keys nothing below changes); revoke a key and suspend a
	// tenant; queue lookups of every key behind the held queries. They must share one query,
	// and see both changes.
	release := hold()
	q0, _ := apikeys.LookupQueries(k)
	early := []string{admin.Secret, sender.Secret}[:apikeys.MaxLookupQueries]
	occupy := func() {
		t.Helper()
		for i, s := range early { // one by one: two at once could share a query
			go lookup(s)
			waitFor(t, "a running query held", func() bool { return held.Load() == int32(i+1) })
		}
	}
	occupy()
	if err := k.Revoke(ctx, "t3", revoked.ID, "admin", "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.SuspendTenant(ctx, "t4", "unpaid", "platform"); err != nil {
		t.Fatal(err)
	}
	want[revoked.Secret] = wantIdentity{invalid: true}
	want[suspended.Secret] = wantIdentity{suspended: "t4"}
	const queued = 60
	for i := range queued {
		go lookup(secrets[i%len(secrets)])
	}
	waitFor(t, "the lookups queued", func() bool { return apikeys.QueuedLookups(k) == queued })
	release()
	collect(queued + len(early))
	if q, _ := apikeys.LookupQueries(k); q-q0 != apikeys.MaxLookupQueries+1 {
		t.Fatalf("%d key queries for %d lookups queued behind %d held ones, want %d", q-q0, queued,
			apikeys.MaxLookupQueries, apikeys.MaxLookupQueries+1)
	}

	// Many lookups at once, nothing held: whatever the batches, every answer is its own key's.
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
			for range 100 {
				lookup(secrets[r.IntN(len(secrets))])
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	collect(32 * 100)
	<-done
	if t.Failed() {
		t.FailNow()
	}

	// A lookup whose request gives up while it waits returns at once, without its answer; the
	// next ones are answered as usual.
	release = hold()
	occupy()
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := k.Identify(cctx, admin.Secret)
		gaveUp <- err
	}()
	waitFor(t, "the lookup queued", func() bool { return apikeys.QueuedLookups(k) == 1 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled lookup: %v, want context.Canceled", err)
	}
	release()
	collect(len(early))

	// A database that fails is an error of its own, never an invalid key (which would answer
	// 401 to a valid key).
	_ = sdb.Close()
	if _, err := k.Identify(ctx, admin.Secret); err == nil || errors.Is(err, apikeys.ErrInvalidKey) {
		t.Fatalf("lookup on a closed database: %v, want a database error", err)
	}
}

// TestKeyLookupPlanIsReused: after Analyze, PostgreSQL reuses one generic plan for the key
// lookup instead of planning it again on every request (without statistics on the small key
// tables it planned every lookup afresh, which cost more of its CPU than running it).
func TestKeyLookupPlanIsReused(t *testing.T) {
	k, sdb := openOn(t, "postgres")
	ctx := t.Context()
	sdb.SetMaxOpenConns(1) // one session: its prepared statements are the lookups'
	c, err := k.Create(ctx, "t1", auth.RoleSender, "k", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := apikeys.Analyze(ctx, &projections.DB{SQL: sdb, Dialect: projections.Postgres}); err != nil {
		t.Fatal(err)
	}
	const lookups = 12
	for range lookups {
		if _, err := k.Identify(ctx, c.Secret); err != nil {
			t.Fatal(err)
		}
	}
	var generic, custom int64
	if err := sdb.QueryRowContext(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements
WHERE statement LIKE '%FROM api_keys k LEFT JOIN tenants t%'`).Scan(&generic, &custom); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL plans the first five executions of a prepared statement for their
	// parameters, then keeps the generic plan if it is not costlier.
	if generic < lookups-6 {
		t.Fatalf("%d generic and %d custom plans for %d key lookups: the lookup is planned on every request", generic, custom, lookups)
	}
}
