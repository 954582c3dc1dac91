package apikeys_test

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestTenantLifecycle: create, rename, suspend (keys and broker tokens refused, as forbidden),
// resume, rate limit; the table rebuilt from the events alone says the same.
func TestTenantLifecycle(t *testing.T) {
	k, _, _ := open(t)
	ctx := t.Context()
	tn, err := k.CreateTenant(ctx, "acme", "Acme Ltd", "key_op")
	if err != nil || tn.ID != "acme" || tn.Name != "Acme Ltd" || tn.Status != apikeys.TenantActive || tn.RateLimit != nil {
		t.Fatalf("create: %+v %v", tn, err)
	}
	key, err := k.Create(ctx, "acme", auth.RoleAdmin, "first admin", "key_op")
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := apikeys.NewTokens(k, []byte("0123456789abcdef0123456789abcdef"), func() time.Time { return fixed })
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.Authenticate(ctx, key.Secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Mint(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tn, err = k.RenameTenant(ctx, "acme", "Acme GmbH", "key_op"); err != nil || tn.Name != "Acme GmbH" {
		t.Fatalf("rename: %+v %v", tn, err)
	}
	if tn, err = k.SuspendTenant(ctx, "acme", "unpaid", "key_op"); err != nil || tn.Status != apikeys.TenantSuspended || tn.SuspendedReason != "unpaid" {
		t.Fatalf("suspend: %+v %v", tn, err)
	}
	if _, err := k.Authenticate(ctx, key.Secret); !errors.Is(err, apikeys.ErrTenantSuspended) || !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("authenticate a suspended tenant's key: %v", err)
	}
	_, err = tokens.AuthenticateCommand(ctx, commands.Credential{Token: tok.Token, At: fixed})
	if !errors.Is(err, apikeys.ErrTenantSuspended) || !commands.IsRefusal(err) {
		t.Fatalf("broker token of a suspended tenant: %v (refusal %v)", err, commands.IsRefusal(err))
	}
	if _, err := tokens.Mint(ctx, p, 0); !errors.Is(err, apikeys.ErrTenantSuspended) {
		t.Fatalf("mint for a suspended tenant: %v", err)
	}
	if tn, err = k.SuspendTenant(ctx, "acme", "again", "key_op"); err != nil || tn.SuspendedReason != "unpaid" {
		t.Fatalf("second suspend is not a no-op: %+v %v", tn, err)
	}
	if tn, err = k.ResumeTenant(ctx, "acme", "", "key_op"); err != nil || tn.Status != apikeys.TenantActive {
		t.Fatalf("resume: %+v %v", tn, err)
	}
	if _, err := k.Authenticate(ctx, key.Secret); err != nil {
		t.Fatalf("authenticate after resume: %v", err)
	}
	if _, err := tokens.AuthenticateCommand(ctx, commands.Credential{Token: tok.Token, At: fixed}); err != nil {
		t.Fatalf("token after resume: %v", err)
	}
	if tn, err = k.SetRateLimit(ctx, "acme", apikeys.RateLimit{PerSecond: 2.5, Burst: 5}, "key_op"); err != nil || tn.RateLimit == nil || *tn.RateLimit != (apikeys.RateLimit{PerSecond: 2.5, Burst: 5}) {
		t.Fatalf("rate limit: %+v %v", tn, err)
	}
	id, err := k.Identify(ctx, key.Secret)
	if err != nil || id.RateLimit != (apikeys.RateLimit{PerSecond: 2.5, Burst: 5}) {
		t.Fatalf("identify: %+v %v", id, err)
	}
	want, _ := k.GetTenant(ctx, "acme")
	if err := k.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := k.GetTenant(ctx, "acme"); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("rebuilt %+v, want %+v (%v)", got, want, err)
	}
}

// TestTenantBadInput: ids and names validated, unknown tenants not found, bounds of the limit.
func TestTenantBadInput(t *testing.T) {
	k, _, _ := open(t)
	ctx := t.Context()
	for _, id := range []string{"", "a b", "tenant/x", string(make([]byte, connection.MaxIDLen+1))} {
		if _, err := k.CreateTenant(ctx, id, "", "op"); err == nil {
			t.Errorf("CreateTenant(%q) accepted", id)
		} else if code, _ := connection.ErrorCode(err); code != connection.CodeInvalidID {
			t.Errorf("CreateTenant(%q): %v, want code invalid_id", id, err)
		}
	}
	if _, err := k.CreateTenant(ctx, "acme", "   ", "op"); !errors.Is(err, apikeys.ErrInvalid) {
		t.Errorf("blank name: %v", err)
	}
	for _, f := range []func() error{
		func() error { _, err := k.RenameTenant(ctx, "nobody", "x", "op"); return err },
		func() error { _, err := k.SuspendTenant(ctx, "nobody", "", "op"); return err },
		func() error { _, err := k.ResumeTenant(ctx, "nobody", "", "op"); return err },
		func() error { _, err := k.GetTenant(ctx, "nobody"); return err },
	} {
		if err := f(); !errors.Is(err, apikeys.ErrTenantNotFound) {
			t.Errorf("unknown tenant: %v", err)
		}
	}
	if _, err := k.CreateTenant(ctx, "acme", "", "op"); err != nil {
		t.Fatal(err)
	}
	for _, l := range []apikeys.RateLimit{{PerSecond: -1, Burst: 1}, {PerSecond: 1, Burst: 0}, {PerSecond: 0, Burst: 3}, {PerSecond: auth.MaxRatePerSecond + 1, Burst: 1}} {
		if _, err := k.SetRateLimit(ctx, "acme", l, "op"); !errors.Is(err, apikeys.ErrInvalid) {
			t.Errorf("rate limit %+v: %v", l, err)
		}
	}
}

// TestTenantIDsUnique: of concurrent creations of one id exactly one succeeds; an id whose
// stream holds keys (a tenant older than tenants) is taken too.
func TestTenantIDsUnique(t *testing.T) {
	k, _, _ := open(t)
	ctx := t.Context()
	const n = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, dupe int
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := k.CreateTenant(ctx, "race", "", "op")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, apikeys.ErrTenantExists):
				dupe++
			default:
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || dupe != n-1 {
		t.Fatalf("%d created, %d refused as existing; want 1 and %d", ok, dupe, n-1)
	}
	if _, err := k.Create(ctx, "legacy", auth.RoleAdmin, "", "bootstrap"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.CreateTenant(ctx, "legacy", "", "op"); !errors.Is(err, apikeys.ErrTenantExists) {
		t.Fatalf("tenant with keys created again: %v", err)
	}
	// EnsureTenant records the legacy tenant once, however often it runs.
	for range 3 {
		if err := k.EnsureTenant(ctx, "legacy", "legacy", "bootstrap"); err != nil {
			t.Fatal(err)
		}
	}
	if ts, err := k.ListTenants(ctx); err != nil || len(ts) != 2 || ts[0].ID != "legacy" || ts[1].ID != "race" {
		t.Fatalf("tenants %+v %v", ts, err)
	}
}

// TestConcurrentTenantChanges: n suspensions that all decided on an active tenant before any of
// them appended (held at a barrier) record exactly one TenantSuspended: the others lose the
// append at the revision they saw, look again and record nothing. Renames racing each other
// are all applied, the table ending at the last one recorded.
func TestConcurrentTenantChanges(t *testing.T) {
	k, store, _ := open(t)
	ctx := t.Context()
	if _, err := k.CreateTenant(ctx, "acme", "", "op"); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var (
		mu      sync.Mutex
		arrived int
		release = make(chan struct{})
	)
	apikeys.SetBeforeAppend(k, func() {
		mu.Lock()
		arrived++
		if arrived == n {
			close(release)
		}
		first := arrived <= n
		mu.Unlock()
		if first {
			<-release
		}
	})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tn, err := k.SuspendTenant(ctx, "acme", "race", "op"); err != nil || tn.Status != apikeys.TenantSuspended {
				t.Errorf("suspend: %+v %v", tn, err)
			}
		}()
	}
	wg.Wait()
	apikeys.SetBeforeAppend(k, nil)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := k.RenameTenant(ctx, "acme", fmt.Sprintf("name %d", i), "op"); err != nil {
				t.Errorf("rename: %v", err)
			}
		}()
	}
	wg.Wait()
	events, err := store.ReadStream(ctx, auth.TenantStream("acme"), eventstore.Forwards, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	suspended, renamed, last := 0, 0, ""
	for _, e := range events {
		switch e.Type {
		case auth.TypeTenantSuspended:
			suspended++
		case auth.TypeTenantRenamed:
			renamed++
			ev, err := auth.DecodeTenantEvent(e.Type, e.Data)
			if err != nil {
				t.Fatal(err)
			}
			last = ev.(auth.TenantRenamed).Name
		}
	}
	if suspended != 1 || renamed != n {
		t.Fatalf("%d TenantSuspended and %d TenantRenamed recorded, want 1 and %d", suspended, renamed, n)
	}
	if tn, err := k.GetTenant(ctx, "acme"); err != nil || tn.Name != last || tn.Status != apikeys.TenantSuspended {
		t.Fatalf("tenant %+v (%v), want named %q as the last rename and suspended", tn, err, last)
	}
}
