package httpapi_test

import (
	"github.com/google/uuid"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections/integration"
)

// fixture is one connection of the default tenant with a message, a broadcast and a completed
// clear, and a key: real ids for every path parameter.
type fixture struct {
	conn, phone, message, broadcast, clear string
}

func newFixture(t *testing.T, e *env) fixture {
	t.Helper()
	op := e.key(e.Tenant, auth.RoleOperator)
	var f fixture
	f.conn, f.phone = e.register(op)
	m := e.do(op, "POST", "/v1/connections/"+f.conn+"/messages", map[string]any{"recipient": newPhone(), "text": "x"}, nil)
	wantStatus(t, m, 202)
	f.message = str(m.Map(), "message_id")
	b := e.do(op, "POST", "/v1/connections/"+f.conn+"/broadcasts", map[string]any{"recipients": []string{newPhone()}, "text": "y"}, nil)
	wantStatus(t, b, 202)
	f.broadcast = str(b.Map(), "broadcast_id")
	c := e.do(op, "POST", "/v1/connections/"+f.conn+"/queue/clear", map[string]any{"reason": "fixture", "confirm": f.phone}, nil)
	wantStatus(t, c, 202)
	f.clear = str(c.Map(), "clear_id")
	e.sync()
	return f
}

// request returns a valid request for route rt on the fixture's resources: path and body.
// Every route must have an entry, so that a new route cannot escape the access tests.
func (f fixture) request(t *testing.T, e *env, rt httpapi.Route) (string, any) {
	t.Helper()
	path := strings.ReplaceAll(rt.Pattern, "{clear_id}", f.clear)
	path = strings.ReplaceAll(path, "{message_id}", f.message)
	switch {
	case strings.HasPrefix(rt.Pattern, "/v1/messages/"):
		path = strings.ReplaceAll(path, "{id}", f.message)
	case strings.HasPrefix(rt.Pattern, "/v1/broadcasts/"):
		path = strings.ReplaceAll(path, "{id}", f.broadcast)
	case strings.HasPrefix(rt.Pattern, "/v1/keys/"):
		k, err := e.Keys.Create(e.ctx, e.Tenant, auth.RoleSender, "target", "test")
		if err != nil {
			t.Fatal(err)
		}
		path = strings.ReplaceAll(path, "{id}", k.ID)
	case strings.Contains(rt.Pattern, "{tenant_id}"):
		// A fresh tenant per request, so that a suspension does not change the next request.
		id := "fx-" + uuid.NewString()[:8]
		if _, err := e.Keys.CreateTenant(e.ctx, id, "fixture", "test"); err != nil {
			t.Fatal(err)
		}
		path = strings.ReplaceAll(path, "{tenant_id}", id)
	case strings.HasPrefix(rt.Pattern, "/v1/webhooks/"):
		// A fresh webhook per request, so that a DELETE that succeeded does not turn the next
		// role's request into a 404.
		path = strings.ReplaceAll(path, "{id}", e.webhook(e.Tenant))
	default:
		path = strings.ReplaceAll(path, "{id}", f.conn)
	}
	bodies := map[string]any{
		"POST /v1/connections":                              map[string]any{"phone": newPhone()},
		"GET /v1/connections":                               nil,
		"GET /v1/connections/{id}":                          nil,
		"PATCH /v1/connections/{id}":                        map[string]any{"on_ban": "resume", "sending_policy": map[string]any{"daily_cap": 500, "time_zone": "Europe/Berlin"}},
		"POST /v1/connections/{id}/pairing/qr":              nil,
		"GET /v1/connections/{id}/pairing/qr":               nil,
		"POST /v1/connections/{id}/pairing/phone":           map[string]any{},
		"POST /v1/connections/{id}/logout":                  nil,
		"POST /v1/connections/{id}/retire":                  map[string]any{"reason": "r", "confirm": f.phone},
		"POST /v1/connections/{id}/contacts/check":          map[string]any{"numbers": []string{newPhone()}},
		"POST /v1/connections/{id}/messages":                map[string]any{"recipient": newPhone(), "text": "hi"},
		"GET /v1/messages/{id}":                             nil,
		"DELETE /v1/connections/{id}/messages/{message_id}": map[string]any{"reason": "r"},
		"POST /v1/connections/{id}/broadcasts":              map[string]any{"recipients": []string{newPhone()}, "text": "hi"},
		"GET /v1/broadcasts/{id}":                           nil,
		"GET /v1/connections/{id}/queue":                    nil,
		"GET /v1/connections/{id}/queue/clear-preview":      nil,
		"POST /v1/connections/{id}/queue/clear":             map[string]any{"reason": "r", "confirm": f.phone},
		"GET /v1/connections/{id}/clears/{clear_id}":        nil,
		"GET /v1/connections/{id}/clears":                   nil,
		"POST /v1/connections/{id}/queue/hold":              map[string]any{},
		"POST /v1/connections/{id}/queue/resume":            map[string]any{},
		"GET /v1/connections/{id}/history":                  nil,
		"GET /v1/audit":                                     nil,
		"GET /v1/audit/verify":                              nil,
		"GET /v1/audit/checkpoints":                         nil,
		"GET /v1/analytics/daily":                           nil,
		"POST /v1/keys":                                     map[string]any{"role": "auditor"},
		"GET /v1/keys":                                      nil,
		"PATCH /v1/keys/{id}":                               map[string]any{"role": "analyst"},
		"DELETE /v1/keys/{id}":                              nil,
		"POST /v1/broker/tokens":                            map[string]any{},
		"POST /v1/webhooks":                                 map[string]any{"url": deadURL, "event_types": []string{integration.TypeConnectionBanned}},
		"GET /v1/webhooks":                                  nil,
		"DELETE /v1/webhooks/{id}":                          nil,
		"GET /v1/webhooks/{id}/deliveries":                  nil,
		"GET /v1/admin/health":                              nil,
		"POST /v1/connections/{id}/simulator/ban":           map[string]any{"kind": "temporary"},
		"POST /v1/connections/{id}/simulator/lift":          nil,
		"POST /v1/connections/{id}/simulator/logout":        nil,
		"POST /v1/tenants":                                  map[string]any{"id": "new-" + uuid.NewString()[:8], "name": "New"},
		"GET /v1/tenants":                                   nil,
		"GET /v1/tenants/{tenant_id}":                       nil,
		"PATCH /v1/tenants/{tenant_id}":                     map[string]any{"name": "Renamed", "rate_limit": map[string]any{"per_second": 50, "burst": 100}},
		"POST /v1/tenants/{tenant_id}/suspend":              map[string]any{"reason": "matrix"},
		"POST /v1/tenants/{tenant_id}/resume":               nil,
		"POST /v1/tenants/{tenant_id}/keys":                 map[string]any{"role": "admin", "label": "first"},
	}
	key := rt.Method + " " + rt.Pattern
	body, ok := bodies[key]
	if !ok {
		t.Fatalf("no test request for route %s: add one", key)
	}
	return path, body
}

// wantRight is the right each route must require, written down independently of the route
// table (which the API enforces): the role matrix holds the table to it.
var wantRight = map[string]auth.Right{
	"POST /v1/connections":                              auth.ConnectionEdit,
	"GET /v1/connections":                               auth.ConnectionView,
	"GET /v1/connections/{id}":                          auth.ConnectionView,
	"PATCH /v1/connections/{id}":                        auth.ConnectionEdit,
	"POST /v1/connections/{id}/pairing/qr":              auth.ConnectionEdit,
	"GET /v1/connections/{id}/pairing/qr":               auth.ConnectionEdit,
	"POST /v1/connections/{id}/pairing/phone":           auth.ConnectionEdit,
	"POST /v1/connections/{id}/logout":                  auth.ConnectionEdit,
	"POST /v1/connections/{id}/retire":                  auth.ConnectionEdit,
	"POST /v1/connections/{id}/contacts/check":          auth.MessageSend,
	"POST /v1/connections/{id}/messages":                auth.MessageSend,
	"GET /v1/messages/{id}":                             auth.ConnectionView,
	"DELETE /v1/connections/{id}/messages/{message_id}": auth.ConnectionEdit,
	"POST /v1/connections/{id}/broadcasts":              auth.BroadcastMgmt,
	"GET /v1/broadcasts/{id}":                           auth.ConnectionView,
	"GET /v1/connections/{id}/queue":                    auth.ConnectionView,
	"GET /v1/connections/{id}/queue/clear-preview":      auth.ConnectionView,
	"POST /v1/connections/{id}/queue/clear":             auth.ConnectionEdit,
	"GET /v1/connections/{id}/clears/{clear_id}":        auth.ConnectionView,
	"GET /v1/connections/{id}/clears":                   auth.ConnectionView,
	"POST /v1/connections/{id}/queue/hold":              auth.ConnectionEdit,
	"POST /v1/connections/{id}/queue/resume":            auth.ConnectionEdit,
	"GET /v1/connections/{id}/history":                  auth.AuditRead,
	"GET /v1/audit":                                     auth.AuditRead,
	"GET /v1/audit/verify":                              auth.AuditRead,
	"GET /v1/audit/checkpoints":                         auth.AuditRead,
	"GET /v1/analytics/daily":                           auth.AnalyticsRead,
	"POST /v1/keys":                                     auth.Admin,
	"GET /v1/keys":                                      auth.Admin,
	"PATCH /v1/keys/{id}":                               auth.Admin,
	"DELETE /v1/keys/{id}":                              auth.Admin,
	"POST /v1/broker/tokens":                            auth.ConnectionView,
	"POST /v1/webhooks":                                 auth.Admin,
	"GET /v1/webhooks":                                  auth.Admin,
	"DELETE /v1/webhooks/{id}":                          auth.Admin,
	"GET /v1/webhooks/{id}/deliveries":                  auth.Admin,
	"GET /v1/admin/health":                              auth.Admin,
	"POST /v1/connections/{id}/simulator/ban":           auth.Admin,
	"POST /v1/connections/{id}/simulator/lift":          auth.Admin,
	"POST /v1/connections/{id}/simulator/logout":        auth.Admin,
	"POST /v1/tenants":                                  auth.Admin,
	"GET /v1/tenants":                                   auth.Admin,
	"GET /v1/tenants/{tenant_id}":                       auth.Admin,
	"PATCH /v1/tenants/{tenant_id}":                     auth.Admin,
	"POST /v1/tenants/{tenant_id}/suspend":              auth.Admin,
	"POST /v1/tenants/{tenant_id}/resume":               auth.Admin,
	"POST /v1/tenants/{tenant_id}/keys":                 auth.Admin,
}

// TestRoleMatrix sends every authenticated route with the key of every role: a role that grants
// the route's right (wantRight) is never refused (neither 401 nor 403), any other gets 403
// forbidden.
func TestRoleMatrix(t *testing.T) {
	e := start(t, apitestOptions())
	f := newFixture(t, e)
	for _, rt := range httpapi.Routes() {
		if rt.Public {
			continue
		}
		right, ok := wantRight[rt.Method+" "+rt.Pattern]
		if !ok {
			t.Errorf("no expected right for %s %s: add it to wantRight", rt.Method, rt.Pattern)
			continue
		}
		if right != rt.Right {
			t.Errorf("%s %s requires %s, want %s", rt.Method, rt.Pattern, rt.Right, right)
		}
		rt.Right = right
		for _, role := range auth.Roles() {
			path, body := f.request(t, e, rt)
			r := e.do(e.key(e.Tenant, role), rt.Method, path, body, nil)
			if role.Grants(rt.Right) {
				if r.Status == 401 || r.Status == 403 {
					t.Errorf("%s %s as %s (has %s): %d %s", rt.Method, rt.Pattern, role, rt.Right, r.Status, r.Body)
				}
			} else if r.Status != 403 || str(r.Map(), "code") != "forbidden" {
				t.Errorf("%s %s as %s (lacks %s): %d %s, want 403 forbidden", rt.Method, rt.Pattern, role, rt.Right, r.Status, r.Body)
			}
		}
	}
}

// TestOtherTenantIsNotFound sends every route that names a resource with another tenant's
// admin key: each answers 404 not_found, exactly like an unknown id (G9). Routes without ids
// do not show the other tenant's resources.
func TestOtherTenantIsNotFound(t *testing.T) {
	e := start(t, apitestOptions())
	f := newFixture(t, e)
	other := e.key(otherTenant, auth.RoleAdmin)
	for _, rt := range httpapi.Routes() {
		if rt.Public || !strings.Contains(rt.Pattern, "{") {
			continue
		}
		path, body := f.request(t, e, rt)
		r := e.do(other, rt.Method, path, body, nil)
		if r.Status != 404 || str(r.Map(), "code") != "not_found" {
			t.Errorf("%s %s with another tenant's ids: %d %s, want 404 not_found", rt.Method, path, r.Status, r.Body)
		}
	}
	e.sync()
	// The fixture is untouched: still registered, its clear done, nothing queued by the other tenant.
	q := e.do(e.admin(), "GET", "/v1/connections/"+f.conn+"/queue", nil, nil)
	if m := q.Map(); num(m, "pending") != 0 || str(m, "status") != "open" {
		t.Fatalf("fixture queue changed by another tenant: %s", q.Body)
	}
	hook := e.webhook(e.Tenant)
	for _, path := range []string{"/v1/connections", "/v1/audit", "/v1/analytics/daily", "/v1/keys", "/v1/audit?format=jsonl", "/v1/webhooks"} {
		r := e.do(other, "GET", path, nil, nil)
		wantStatus(t, r, 200)
		for _, leak := range []string{f.conn, f.message, f.broadcast, f.clear, principalID(t, e, e.admin()), hook} {
			if strings.Contains(string(r.Body), leak) {
				t.Errorf("GET %s as another tenant shows %s: %s", path, leak, r.Body)
			}
		}
	}
	// The same route works for the owner, so the 404s above are about the tenant.
	wantStatus(t, e.do(e.admin(), "GET", "/v1/messages/"+f.message, nil, nil), 200)
}

// TestAuthentication covers missing, malformed, unknown and revoked keys, and public routes.
func TestAuthentication(t *testing.T) {
	e := start(t, apitestOptions())
	for name, h := range map[string]map[string]string{
		"none":      nil,
		"basic":     {"Authorization": "Basic dXNlcjpwYXNz"},
		"malformed": {"Authorization": "Bearer not-a-key"},
		"unknown":   {"Authorization": "Bearer wq_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
	} {
		r := e.do("", "GET", "/v1/connections", nil, h)
		if r.Status != 401 || str(r.Map(), "code") != "unauthorized" {
			t.Errorf("%s credential: %d %s", name, r.Status, r.Body)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/v1/openapi.yaml"} {
		wantStatus(t, e.do("", "GET", p, nil, nil), 200)
	}
	// Metrics are never served on the API's port (issue 11.4), with or without a key.
	wantProblem(t, e.do("", "GET", "/metrics", nil, nil), 404, httpapi.CodeNotFound)
	wantProblem(t, e.do(e.admin(), "GET", "/metrics", nil, nil), 404, httpapi.CodeNotFound)
}
