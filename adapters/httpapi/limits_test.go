package httpapi_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestLimits checks each limit with its own problem code, just above and at the limit.
func TestLimits(t *testing.T) {
	e := start(t, apitest.Options{Limits: httpapi.Limits{MaxJSONBody: 16 << 10, MaxCSVBody: 256, MaxRecipients: 5}})
	op := e.key(e.Tenant, auth.RoleOperator)
	id, _ := e.register(op)
	msgs := "/v1/connections/" + id + "/messages"
	bcs := "/v1/connections/" + id + "/broadcasts"

	big := `{"recipient":"+491701234567","text":"` + strings.Repeat("a", 16<<10) + `"}`
	wantProblem(t, e.do(op, "POST", msgs, big, nil), 413, "body_too_large")

	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": strings.Repeat("é", 4097)}, nil), 422, "text_too_long")
	wantStatus(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": strings.Repeat("é", 4096)}, nil), 202)
	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": "  "}, nil), 422, "text_empty")
	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": "not a phone", "text": "x"}, nil), 422, "invalid_phone")
	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": "x", "ttl_seconds": -1}, nil), 422, "invalid_ttl")
	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": "x", "ttl_seconds": int64(1) << 62}, nil), 422, "invalid_ttl")
	wantProblem(t, e.do(op, "POST", msgs, map[string]any{"recipient": newPhone(), "text": "x"},
		map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}), 422, "missing_idempotency_key")

	six := []string{newPhone(), newPhone(), newPhone(), newPhone(), newPhone(), newPhone()}
	wantProblem(t, e.do(op, "POST", bcs, map[string]any{"recipients": six, "text": "x"}, nil), 422, "too_many_recipients")
	wantStatus(t, e.do(op, "POST", bcs, map[string]any{"recipients": six[:5], "text": "x"}, nil), 202)
	wantProblem(t, e.do(op, "POST", bcs, map[string]any{"recipients": []string{six[0], six[0]}, "text": "x"}, nil), 422, "duplicate_recipient")
	wantProblem(t, e.do(op, "POST", bcs, map[string]any{"recipients": []string{}, "text": "x"}, nil), 422, "no_recipients")
	csv := strings.Join(six, "\n")
	wantProblem(t, e.do(op, "POST", bcs+"?text=x", csv, map[string]string{"Content-Type": "text/csv"}), 422, "too_many_recipients")
	wantProblem(t, e.do(op, "POST", bcs+"?text=x", strings.Repeat("+491701234567\n", 20), map[string]string{"Content-Type": "text/csv"}), 413, "body_too_large")
	five := "number\n" + strings.Join(six[:5], "\n")
	wantProblem(t, e.do(op, "POST", bcs, five, map[string]string{"Content-Type": "text/csv"}), 422, "text_empty")
	wantProblem(t, e.do(op, "POST", bcs+"?text=x&ttl_seconds=soon", five, map[string]string{"Content-Type": "text/csv"}), 422, "invalid_request")
}

// TestMalformedInput sends broken requests to every route that reads a body: each answers a
// problem with a 4xx status, never a 500.
func TestMalformedInput(t *testing.T) {
	e := start(t, apitestOptions())
	f := newFixture(t, e)
	bad := []struct {
		name, body, ctype string
		status            int
		code              string
	}{
		{"syntax", `{"text":`, "application/json", 400, "invalid_json"},
		{"not an object", `[1,2]`, "application/json", 400, "invalid_json"},
		{"wrong type", `{"text": 5, "recipient": true, "role": 1, "reason": [], "phone": {}, "kind": 3}`, "application/json", 400, "invalid_json"},
		{"unknown field", `{"surprise": 1}`, "application/json", 400, "invalid_json"},
		{"trailing data", `{} {}`, "application/json", 400, "invalid_json"},
		{"invalid utf-8", "{\"text\": \"\xff\xfe\"}", "application/json", 400, "invalid_json"},
		{"form", `a=b`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
		{"bad content type", `{}`, "application/json; charset", 415, "unsupported_media_type"},
	}
	for _, rt := range httpapi.Routes() {
		if rt.Method == "GET" || rt.Public {
			continue
		}
		if rt.Pattern == "/v1/connections/{id}/pairing/qr" || rt.Pattern == "/v1/connections/{id}/simulator/lift" ||
			rt.Pattern == "/v1/connections/{id}/simulator/logout" || rt.Pattern == "/v1/webhooks/{id}" ||
			rt.Pattern == "/v1/connections/{id}/logout" {
			continue // no body
		}
		for _, b := range bad {
			path, _ := f.request(t, e, rt)
			r := e.do(e.admin(), rt.Method, path, b.body, map[string]string{"Content-Type": b.ctype})
			if r.Status != b.status || str(r.Map(), "code") != b.code {
				t.Errorf("%s %s with %s: %d %s, want %d %s", rt.Method, rt.Pattern, b.name, r.Status, r.Body, b.status, b.code)
			}
		}
	}
	// Unknown routes and malformed ids are problems too.
	wantProblem(t, e.do(e.admin(), "GET", "/v1/nothing", nil, nil), 404, "not_found")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/messages/not-a-uuid", nil, nil), 404, "not_found")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/connections/"+f.conn+"/clears/xyz", nil, nil), 404, "not_found")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/connections/"+f.conn+"/history?cursor=-1", nil, nil), 400, "invalid_request")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/audit?cursor=garbage", nil, nil), 400, "invalid_request")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/audit?from=yesterday", nil, nil), 400, "invalid_request")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/audit?format=xml", nil, nil), 400, "invalid_request")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/analytics/daily?to=2026-13-45", nil, nil), 400, "invalid_request")
}

// TestRequestIDs checks X-Request-Id is honoured when valid, generated otherwise, and named by
// problems.
func TestRequestIDs(t *testing.T) {
	e := start(t, apitestOptions())
	r := e.do("", "GET", "/v1/connections", nil, map[string]string{"X-Request-Id": "abc-123"})
	if r.Header.Get("X-Request-Id") != "abc-123" || str(r.Map(), "instance") != "abc-123" {
		t.Fatalf("honoured id: header %q, body %s", r.Header.Get("X-Request-Id"), r.Body)
	}
	g := e.do("", "GET", "/healthz", nil, map[string]string{"X-Request-Id": "has space"})
	if id := g.Header.Get("X-Request-Id"); id == "" || id == "has space" {
		t.Fatalf("generated id %q", id)
	}
}

// TestStoreDown: with the store closed, commands answer 503 service_unavailable (never a 500)
// and the server is not ready.
func TestStoreDown(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	id, _ := e.register(op)
	wantStatus(t, e.do("", "GET", "/readyz", nil, nil), 200)
	if err := e.Store.Close(); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "x"}, nil),
		503, "service_unavailable")
	wantProblem(t, e.do(e.key(e.Tenant, auth.RoleAuditor), "GET", "/v1/connections/"+id+"/history", nil, nil), 503, "service_unavailable")
	r := e.do("", "GET", "/readyz", nil, nil)
	wantStatus(t, r, 503)
	if m := r.Map(); str(m, "status") != "not_ready" || strings.Contains(string(r.Body), "closed") ||
		m["components"].(map[string]any)["event_store"] != "unavailable" {
		t.Fatalf("readyz %s", r.Body)
	}
}

// TestKeys covers the key lifecycle through the API and its audit trail (G8).
func TestKeys(t *testing.T) {
	e := start(t, apitestOptions())
	c := e.do(e.admin(), "POST", "/v1/keys", map[string]any{"role": "sender", "label": "billing"}, nil)
	wantStatus(t, c, 201)
	var created struct{ ID, Secret, Role string }
	m := c.Map()
	created.ID, created.Secret, created.Role = str(m, "id"), str(m, "secret"), str(m, "role")
	if !strings.HasPrefix(created.Secret, apikeys.Prefix) || len(created.Secret) != len(apikeys.Prefix)+43 || created.Role != "sender" ||
		str(m, "tenant_id") != e.Tenant || c.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("created %s", c.Body)
	}
	// The new key works at once, with its role.
	wantStatus(t, e.do(created.Secret, "GET", "/v1/connections", nil, nil), 200)
	wantProblem(t, e.do(created.Secret, "GET", "/v1/audit", nil, nil), 403, "forbidden")

	l := e.do(e.admin(), "GET", "/v1/keys", nil, nil)
	wantStatus(t, l, 200)
	if !strings.Contains(string(l.Body), created.ID) || strings.Contains(string(l.Body), created.Secret) || strings.Contains(string(l.Body), "secret") {
		t.Fatalf("key list %s", l.Body)
	}
	wantProblem(t, e.do(e.admin(), "POST", "/v1/keys", map[string]any{"role": "root"}, nil), 422, "invalid_request")

	ch := e.do(e.admin(), "PATCH", "/v1/keys/"+created.ID, map[string]any{"role": "auditor"}, nil)
	wantStatus(t, ch, 200)
	wantStatus(t, e.do(created.Secret, "GET", "/v1/audit", nil, nil), 200)

	wantStatus(t, e.do(e.admin(), "DELETE", "/v1/keys/"+created.ID, map[string]any{"reason": "rotated"}, nil), 204)
	wantProblem(t, e.do(created.Secret, "GET", "/v1/connections", nil, nil), 401, "unauthorized")
	wantProblem(t, e.do(e.admin(), "DELETE", "/v1/keys/"+created.ID, nil, nil), 409, "key_revoked")
	wantProblem(t, e.do(e.admin(), "PATCH", "/v1/keys/"+created.ID, map[string]any{"role": "admin"}, nil), 409, "key_revoked")
	wantProblem(t, e.do(e.admin(), "DELETE", "/v1/keys/key_missing", nil, nil), 404, "not_found")

	// Every rights change is in the audit trail, with its actor.
	e.sync()
	adminID := principalID(t, e, e.admin())
	for typ, reason := range map[string]string{"APIKeyCreated": "", "APIKeyRoleChanged": "", "APIKeyRevoked": "rotated"} {
		a := e.do(e.admin(), "GET", "/v1/audit?type="+typ+"&actor="+adminID, nil, nil)
		wantStatus(t, a, 200)
		var page struct {
			Entries []struct {
				Stream, Reason string
				Details        map[string]any
			} `json:"entries"`
		}
		if err := a.JSON(&page); err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) != 1 || page.Entries[0].Stream != auth.TenantStream(e.Tenant) || page.Entries[0].Reason != reason ||
			page.Entries[0].Details["key_id"] != created.ID {
			t.Errorf("audit of %s by %s: %s", typ, adminID, a.Body)
		}
	}

	// The table is a projection of the events: rebuilt from the log, it authenticates alike.
	if err := e.Keys.Rebuild(e.ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, e.do(e.admin(), "GET", "/v1/keys", nil, nil), 200)
	wantProblem(t, e.do(created.Secret, "GET", "/v1/connections", nil, nil), 401, "unauthorized")
	keys, err := e.Keys.List(e.ctx, e.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + len(auth.Roles()) + 1; len(keys) != want {
		t.Fatalf("%d keys after rebuild, want %d", len(keys), want)
	}
}

// TestBootstrap checks the first start's admin key: written 0600, printed once, not twice.
func TestBootstrap(t *testing.T) {
	dir := t.TempDir()
	s := apitest.Start(t, apitest.Options{Dir: dir})
	b, err := os.ReadFile(filepath.Join(dir, apikeys.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != s.AdminKey || s.AdminKey == "" {
		t.Fatalf("admin.key holds %q, the bootstrap key is %q", b, s.AdminKey)
	}
	fi, err := os.Stat(filepath.Join(dir, apikeys.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode %v, want 0600", fi.Mode().Perm())
	}
	p, err := s.Keys.Authenticate(t.Context(), s.AdminKey)
	if err != nil || p.TenantID != apikeys.DefaultTenant || p.Role != auth.RoleAdmin {
		t.Fatalf("bootstrap principal %+v, %v", p, err)
	}
	var out strings.Builder
	again, err := apikeys.Bootstrap(t.Context(), s.Keys, dir, &out)
	if err != nil || again != nil || out.Len() != 0 {
		t.Fatalf("second bootstrap created %v (%v), printed %q", again, err, out.String())
	}
}

// TestNotReadyWhileProjectionFails: a projection that keeps failing makes /readyz 503 and says
// which component (projections) is failing, without its internal error text (the SQL error, the
// projection, positions); the platform admin's GET /v1/admin/health names the projection with
// its error; nobody else reads that route (issue 11.6).
func TestNotReadyWhileProjectionFails(t *testing.T) {
	e := start(t, apitestOptions())
	if _, err := e.DB.ExecContext(e.ctx, `DROP TABLE analytics_daily`); err != nil {
		t.Fatal(err)
	}
	r := e.do(e.admin(), "POST", "/v1/connections", map[string]any{"phone": newPhone()}, nil)
	wantStatus(t, r, 201)
	// A queued message is counted by analytics, whose table is gone.
	wantStatus(t, e.do(e.admin(), "POST", "/v1/connections/"+str(r.Map(), "id")+"/messages",
		map[string]any{"recipient": newPhone(), "text": "x"}, nil), 202)
	deadline := time.Now().Add(testwait.Limit)
	for {
		r := e.do("", "GET", "/readyz", nil, nil)
		if r.Status == 503 {
			var body struct {
				Status     string            `json:"status"`
				Components map[string]string `json:"components"`
			}
			if err := r.JSON(&body); err != nil {
				t.Fatal(err)
			}
			if body.Status != "not_ready" || body.Components["projections"] != "failing" ||
				body.Components["event_store"] != "ok" || body.Components["read_models"] != "ok" {
				t.Fatalf("readyz does not say which component fails: %s", r.Body)
			}
			for _, leak := range []string{"analytics", "no such table", "failed batches", "apply batch", "checks", "detail"} {
				if strings.Contains(string(r.Body), leak) {
					t.Fatalf("public readyz shows internal text %q: %s", leak, r.Body)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still ready with a failing projection: %d %s", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The platform admin sees the detail.
	h := e.do(e.admin(), "GET", "/v1/admin/health", nil, nil)
	wantStatus(t, h, 200)
	if !strings.Contains(string(h.Body), `"name":"projection:analytics"`) || !strings.Contains(string(h.Body), "analytics_daily") ||
		str(h.Map(), "status") != "not_ready" {
		t.Fatalf("admin health lacks the failing projection's detail: %s", h.Body)
	}
	// Nobody else: another tenant's admin gets 404 (as for a route that does not exist), a
	// platform key without the admin right 403, no key 401.
	wantProblem(t, e.do(e.key(otherTenant, auth.RoleAdmin), "GET", "/v1/admin/health", nil, nil), 404, httpapi.CodeNotFound)
	wantProblem(t, e.do(e.key(e.Tenant, auth.RoleOperator), "GET", "/v1/admin/health", nil, nil), 403, httpapi.CodeForbidden)
	wantProblem(t, e.do("", "GET", "/v1/admin/health", nil, nil), 401, httpapi.CodeUnauthorized)
	m := e.metrics()
	if !strings.Contains(m, `waqueue_http_requests_total{code="201",route="POST /v1/connections"} 1`) {
		t.Fatalf("metrics lack the request count:\n%s", m)
	}
}
