package httpapi_test

import (
	"strconv"
	"testing"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestTenantProvisioning: the platform operator creates a tenant and its first admin key; that
// admin stays inside its tenant (the platform routes and other tenants' ids answer 404, the
// same for an existing id as for a missing one); ids are unique and validated.
func TestTenantProvisioning(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.admin() // the bootstrap tenant's admin: the platform operator
	r := e.do(op, "POST", "/v1/tenants", map[string]any{"id": "acme", "name": "Acme Ltd"}, nil)
	wantStatus(t, r, 201)
	if m := r.Map(); str(m, "id") != "acme" || str(m, "status") != "active" || str(m, "name") != "Acme Ltd" {
		t.Fatalf("created %s", r.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": "acme"}, nil), 409, "tenant_exists")
	wantProblem(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": otherTenant}, nil), 409, "tenant_exists") // holds keys
	k := e.do(op, "POST", "/v1/tenants/acme/keys", map[string]any{"role": "admin", "label": "acme admin"}, nil)
	wantStatus(t, k, 201)
	acme := str(k.Map(), "secret")
	if str(k.Map(), "tenant_id") != "acme" {
		t.Fatalf("key %s", k.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/tenants/nobody/keys", map[string]any{"role": "admin"}, nil), 404, "not_found")

	// The tenant's admin: its own tenant only.
	wantStatus(t, e.do(acme, "GET", "/v1/tenants/acme", nil, nil), 200)
	own := e.do(acme, "GET", "/v1/tenants/"+e.Tenant, nil, nil)
	missing := e.do(acme, "GET", "/v1/tenants/nobody", nil, nil)
	wantProblem(t, own, 404, "not_found")
	if normalized(own.Body, "/v1/tenants/{tenant_id}", "/v1/tenants/"+e.Tenant) != normalized(missing.Body, "/v1/tenants/{tenant_id}", "/v1/tenants/nobody") {
		t.Errorf("an existing tenant answers %s, a missing one %s", own.Body, missing.Body)
	}
	for _, rq := range []struct{ method, path string }{
		{"GET", "/v1/tenants"}, {"POST", "/v1/tenants/acme/suspend"}, {"POST", "/v1/tenants/" + e.Tenant + "/suspend"},
		{"PATCH", "/v1/tenants/acme"}, {"POST", "/v1/tenants/acme/keys"}, {"GET", "/v1/admin/health"},
	} {
		wantProblem(t, e.do(acme, rq.method, rq.path, map[string]any{"name": "x", "role": "admin"}, nil), 404, "not_found")
	}
	// keys create makes a key of the caller's own tenant, whatever the body says.
	kk := e.do(acme, "POST", "/v1/keys", map[string]any{"role": "sender", "tenant_id": e.Tenant}, nil)
	wantProblem(t, kk, 400, "invalid_json")
	kk = e.do(acme, "POST", "/v1/keys", map[string]any{"role": "sender"}, nil)
	wantStatus(t, kk, 201)
	if str(kk.Map(), "tenant_id") != "acme" {
		t.Fatalf("acme's admin created %s", kk.Body)
	}
	// The list is the operator's, and shows both tenants.
	l := e.do(op, "GET", "/v1/tenants", nil, nil)
	wantStatus(t, l, 200)
	ids := map[string]bool{}
	for _, x := range l.Map()["tenants"].([]any) {
		ids[str(x.(map[string]any), "id")] = true
	}
	if !ids["acme"] || !ids[e.Tenant] {
		t.Errorf("tenants %s", l.Body)
	}

	// Bad input.
	wantProblem(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": "a b"}, nil), 422, string(connection.CodeInvalidID))
	wantProblem(t, e.do(op, "POST", "/v1/tenants", map[string]any{"name": "no id"}, nil), 422, string(connection.CodeInvalidID))
	wantProblem(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": "x", "extra": 1}, nil), 400, "invalid_json")
	wantProblem(t, e.do(op, "PATCH", "/v1/tenants/acme", map[string]any{}, nil), 422, "invalid_request")
	wantProblem(t, e.do(op, "PATCH", "/v1/tenants/acme", map[string]any{"rate_limit": map[string]any{"per_second": 5, "burst": 0}}, nil), 422, "invalid_request")
	wantProblem(t, e.do(op, "PATCH", "/v1/tenants/acme", map[string]any{"name": ""}, nil), 422, "invalid_request")
	wantProblem(t, e.do(op, "PATCH", "/v1/tenants/nobody", map[string]any{"name": "x"}, nil), 404, "not_found")
	wantProblem(t, e.do(op, "POST", "/v1/tenants/"+e.Tenant+"/suspend", nil, nil), 409, "platform_tenant")
	wantProblem(t, e.do(op, "POST", "/v1/tenants/a%20b/suspend", nil, nil), 422, string(connection.CodeInvalidID))
	// Never half-applied: a bad rate limit beside a good name changes neither.
	wantProblem(t, e.do(op, "PATCH", "/v1/tenants/acme", map[string]any{"name": "Half", "rate_limit": map[string]any{"per_second": 5, "burst": 0}}, nil), 422, "invalid_request")
	if g := e.do(op, "GET", "/v1/tenants/acme", nil, nil); str(g.Map(), "name") != "Acme Ltd" {
		t.Errorf("after a refused change: %s", g.Body)
	}
	r = e.do(op, "PATCH", "/v1/tenants/acme", map[string]any{"name": "Acme GmbH"}, nil)
	wantStatus(t, r, 200)
	if str(r.Map(), "name") != "Acme GmbH" {
		t.Errorf("renamed %s", r.Body)
	}
}

// TestTenantSuspension: a suspended tenant's keys get 403 tenant_suspended and its queues are
// held, never purged; resume reopens exactly the queues held for the suspension.
func TestTenantSuspension(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.admin()
	wantStatus(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": "acme"}, nil), 201)
	k := e.do(op, "POST", "/v1/tenants/acme/keys", map[string]any{"role": "admin", "label": "acme admin"}, nil)
	wantStatus(t, k, 201)
	acme, acmeID := str(k.Map(), "secret"), str(k.Map(), "id")
	open, _ := e.register(acme)
	held, _ := e.register(acme)
	wantStatus(t, e.do(acme, "POST", "/v1/connections/"+open+"/messages", map[string]any{"recipient": newPhone(), "text": "hi"}, nil), 202)
	wantStatus(t, e.do(acme, "POST", "/v1/connections/"+held+"/queue/hold", map[string]any{"note": "by hand"}, nil), 200)

	s := e.do(op, "POST", "/v1/tenants/acme/suspend", map[string]any{"reason": "unpaid"}, nil)
	wantStatus(t, s, 200)
	if num(s.Map(), "queues_held") != 1 {
		t.Errorf("suspend: %s, want 1 queue held (the other was held by hand)", s.Body)
	}
	for _, rq := range []struct{ method, path string }{{"GET", "/v1/connections"}, {"GET", "/v1/tenants/acme"}, {"POST", "/v1/broker/tokens"}} {
		wantProblem(t, e.do(acme, rq.method, rq.path, nil, nil), 403, "tenant_suspended")
	}
	// Other tenants go on.
	wantStatus(t, e.do(e.key(otherTenant, auth.RoleSender), "GET", "/v1/connections", nil, nil), 200)
	e.sync()
	c, err := e.Cards.Card(e.ctx, e.DB, "acme", open)
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueStatus != connection.QueueStatusHeld || c.Hold == nil || c.Hold.Reason != connection.HoldOnTenantSuspended || c.Pending != 1 {
		t.Fatalf("card while suspended: %+v %+v, want held for tenant_suspended with its message pending", c, c.Hold)
	}
	// Idempotent: a second suspend holds nothing more.
	s = e.do(op, "POST", "/v1/tenants/acme/suspend", nil, nil)
	wantStatus(t, s, 200)
	if num(s.Map(), "queues_held") != 0 || str(s.Map()["tenant"].(map[string]any), "suspended_reason") != "unpaid" {
		t.Errorf("second suspend: %s", s.Body)
	}

	r := e.do(op, "POST", "/v1/tenants/acme/resume", nil, nil)
	wantStatus(t, r, 200)
	if num(r.Map(), "queues_resumed") != 1 {
		t.Errorf("resume: %s, want 1 queue resumed", r.Body)
	}
	e.sync()
	g := e.do(acme, "GET", "/v1/connections/"+open, nil, nil)
	wantStatus(t, g, 200)
	if str(g.Map(), "queue_status") != "open" {
		t.Errorf("after resume: %s", g.Body)
	}
	g = e.do(acme, "GET", "/v1/connections/"+held, nil, nil)
	if str(g.Map(), "queue_status") != "held" || str(g.Map(), "held_reason") != "operator" {
		t.Errorf("the queue held by hand: %s, want still held by the operator", g.Body)
	}
	// The tenant's audit trail has the suspension (by the platform operator's key) and names
	// each key actor's label and role.
	e.sync()
	a := e.do(acme, "GET", "/v1/audit?type=TenantSuspended", nil, nil)
	wantStatus(t, a, 200)
	entries, _ := a.Map()["entries"].([]any)
	if len(entries) != 1 || str(entries[0].(map[string]any), "actor_role") != "admin" || str(entries[0].(map[string]any), "reason") != "unpaid" {
		t.Errorf("TenantSuspended entries: %s", a.Body)
	}
	a = e.do(acme, "GET", "/v1/audit?type=QueueHeld&actor="+acmeID, nil, nil)
	wantStatus(t, a, 200)
	entries, _ = a.Map()["entries"].([]any)
	if len(entries) != 1 || str(entries[0].(map[string]any), "actor_label") != "acme admin" || str(entries[0].(map[string]any), "actor_role") != "admin" {
		t.Errorf("the hold by hand: %s, want actor_label \"acme admin\", actor_role admin", a.Body)
	}
	for _, typ := range []string{"TenantCreated", "TenantResumed", "APIKeyCreated"} {
		a = e.do(acme, "GET", "/v1/audit?type="+typ, nil, nil)
		if entries, _ := a.Map()["entries"].([]any); len(entries) == 0 {
			t.Errorf("no %s in acme's audit trail: %s", typ, a.Body)
		}
	}
	// Nothing of acme in the other tenant's trail.
	a = e.do(e.key(otherTenant, auth.RoleAuditor), "GET", "/v1/audit?type=TenantSuspended", nil, nil)
	if entries, _ := a.Map()["entries"].([]any); len(entries) != 0 {
		t.Errorf("another tenant sees acme's suspension: %s", a.Body)
	}
}

// TestTenantRateLimit: a tenant's bucket of one token answers the second request 429
// rate_limited with Retry-After; other tenants are not affected; the limit is the operator's.
func TestTenantRateLimit(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.admin()
	wantStatus(t, e.do(op, "POST", "/v1/tenants", map[string]any{"id": "slow"}, nil), 201)
	k := e.do(op, "POST", "/v1/tenants/slow/keys", map[string]any{"role": "admin"}, nil)
	wantStatus(t, k, 201)
	slow := str(k.Map(), "secret")
	p := e.do(op, "PATCH", "/v1/tenants/slow", map[string]any{"rate_limit": map[string]any{"per_second": 0.001, "burst": 1}}, nil)
	wantStatus(t, p, 200)
	if rl, _ := p.Map()["rate_limit"].(map[string]any); rl == nil || rl["burst"] != float64(1) {
		t.Fatalf("patched %s", p.Body)
	}
	wantStatus(t, e.do(slow, "GET", "/v1/connections", nil, nil), 200)
	r := e.do(slow, "GET", "/v1/connections", nil, nil)
	wantProblem(t, r, 429, "rate_limited")
	if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// Another tenant, the platform operator: unaffected.
	wantStatus(t, e.do(e.key(otherTenant, auth.RoleSender), "GET", "/v1/connections", nil, nil), 200)
	wantStatus(t, e.do(op, "PATCH", "/v1/tenants/slow", map[string]any{"rate_limit": map[string]any{"per_second": 0, "burst": 0}}, nil), 200)
	wantStatus(t, e.do(slow, "GET", "/v1/connections", nil, nil), 200)
}
