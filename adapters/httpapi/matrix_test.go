package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/domain/auth"
)

// ghostIDs name resources that exist in no tenant, shaped like real ones.
type ghostIDs struct{ conn, message, broadcast, clear, key, webhook string }

func newGhost() ghostIDs {
	return ghostIDs{conn: "ghost-" + uuid.NewString()[:8], message: uuid.NewString(), broadcast: uuid.NewString(),
		clear: uuid.NewString(), key: "key_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20], webhook: uuid.NewString()}
}

// path fills rt's pattern with the ghost's ids.
func (g ghostIDs) path(rt httpapi.Route) string {
	p := strings.ReplaceAll(rt.Pattern, "{clear_id}", g.clear)
	id := g.conn
	switch {
	case strings.HasPrefix(rt.Pattern, "/v1/messages/"):
		id = g.message
	case strings.HasPrefix(rt.Pattern, "/v1/broadcasts/"):
		id = g.broadcast
	case strings.HasPrefix(rt.Pattern, "/v1/keys/"):
		id = g.key
	case strings.HasPrefix(rt.Pattern, "/v1/webhooks/"):
		id = g.webhook
	}
	p = strings.ReplaceAll(p, "{tenant_id}", "ghost-tenant-"+g.clear[:8])
	return strings.ReplaceAll(p, "{id}", id)
}

// normalized returns a response body with the request id (instance) dropped and the ids that
// fill pattern's parameters in path replaced by a placeholder, so that the answers about two
// different ids compare.
func normalized(body []byte, pattern, path string) string {
	var m map[string]any
	s := string(body)
	if json.Unmarshal(body, &m) == nil {
		delete(m, "instance")
		b, _ := json.Marshal(m)
		s = string(b)
	}
	pat, segs := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i := range min(len(pat), len(segs)) {
		if strings.HasPrefix(pat[i], "{") {
			s = strings.ReplaceAll(s, segs[i], pat[i])
		}
	}
	return s
}

// TestRouteRoleTenantMatrix sends every route of the router's table (httpapi.Routes, which
// httpapi.New serves: a route added later is in it and needs entries in wantRight and the
// fixture's requests, or this test fails) as:
//   - no key and a revoked key: 401 unauthorized on every authenticated route;
//   - every role of the owning tenant: never 401/403 or 404 not_found with the right, 403
//     forbidden without it;
//   - every role of another tenant, on the owner's resources: 403 forbidden without the right
//     (as for any id), and with it exactly what a resource that exists nowhere gets — the same
//     status, the same problem code, the same body up to the ids — and nothing of the owner's
//     data (G9).
//
// Public routes (health, readiness, metrics, the OpenAPI document) answer without a key.
func TestRouteRoleTenantMatrix(t *testing.T) {
	e := start(t, apitestOptions())
	f := newFixture(t, e)
	revoked, err := e.Keys.Create(e.ctx, e.Tenant, auth.RoleAdmin, "to revoke", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Keys.Revoke(e.ctx, e.Tenant, revoked.ID, "test", "matrix"); err != nil {
		t.Fatal(err)
	}
	foreign := []string{f.conn, f.phone, f.message, f.broadcast, f.clear}

	for _, right := range auth.Rights() {
		if right == auth.System {
			continue // held by the node's own principal only; no role grants it
		}
		granted := false
		for _, role := range auth.Roles() {
			granted = granted || role.Grants(right)
		}
		if !granted {
			t.Errorf("right %s is granted by no role: the matrix cannot exercise it", right)
		}
	}

	for _, rt := range httpapi.Routes() {
		name := rt.Method + " " + rt.Pattern
		if rt.Public {
			for _, key := range []string{"", revoked.Secret} {
				if r := e.do(key, rt.Method, rt.Pattern, nil, nil); r.Status == 401 || r.Status == 403 || r.Status == 404 {
					t.Errorf("public %s: %d %s", name, r.Status, r.Body)
				}
			}
			continue
		}
		right, ok := wantRight[name]
		if !ok {
			t.Errorf("no expected right for %s: add it to wantRight", name)
			continue
		}
		if right != rt.Right {
			t.Errorf("%s requires %s, want %s", name, rt.Right, right)
		}

		// No key, a revoked key.
		for label, key := range map[string]string{"no key": "", "revoked key": revoked.Secret} {
			path, body := f.request(t, e, rt)
			if r := e.do(key, rt.Method, path, body, nil); r.Status != 401 || str(r.Map(), "code") != "unauthorized" {
				t.Errorf("%s with %s: %d %s, want 401 unauthorized", name, label, r.Status, r.Body)
			}
		}

		for _, role := range auth.Roles() {
			grants := role.Grants(right)
			// The owner's own resources.
			path, body := f.request(t, e, rt)
			r := e.do(e.key(e.Tenant, role), rt.Method, path, body, nil)
			switch {
			case !grants && (r.Status != 403 || str(r.Map(), "code") != "forbidden"):
				t.Errorf("%s as own %s (lacks %s): %d %s, want 403 forbidden", name, role, right, r.Status, r.Body)
			case grants && (r.Status == 401 || r.Status == 403 || (r.Status == 404 && str(r.Map(), "code") == "not_found")):
				t.Errorf("%s as own %s (has %s): %d %s", name, role, right, r.Status, r.Body)
			}

			// Another tenant, on the owner's resources and on resources that exist nowhere.
			other := e.key(otherTenant, role)
			path, body = f.request(t, e, rt)
			got := e.do(other, rt.Method, path, body, nil)
			ghostPath := newGhost().path(rt)
			want := e.do(other, rt.Method, ghostPath, body, nil)
			if !grants {
				if got.Status != 403 || str(got.Map(), "code") != "forbidden" {
					t.Errorf("%s as other %s (lacks %s): %d %s, want 403 forbidden", name, role, right, got.Status, got.Body)
				}
				continue
			}
			if strings.Contains(rt.Pattern, "{") {
				if got.Status != want.Status || str(got.Map(), "code") != str(want.Map(), "code") ||
					normalized(got.Body, rt.Pattern, path) != normalized(want.Body, rt.Pattern, ghostPath) {
					t.Errorf("%s as other %s: the owner's resource answers %d %s, a missing one %d %s", name, role,
						got.Status, got.Body, want.Status, want.Body)
				}
				if got.Status/100 == 2 {
					t.Errorf("%s as other %s: %d on another tenant's resource: %s", name, role, got.Status, got.Body)
				}
			}
			for _, leak := range foreign {
				if strings.Contains(normalized(got.Body, rt.Pattern, path), leak) {
					t.Errorf("%s as other %s shows the owner's %q: %s", name, role, leak, got.Body)
				}
			}
		}
	}

	// Creating an id another tenant holds answers exactly like creating a free one.
	third, err := e.Key(e.ctx, "third", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	taken := e.do(third, "POST", "/v1/connections", map[string]any{"id": f.conn, "phone": newPhone()}, nil)
	free := e.do(third, "POST", "/v1/connections", map[string]any{"id": newGhost().conn, "phone": newPhone()}, nil)
	if taken.Status != 201 || free.Status != 201 {
		t.Errorf("creating another tenant's id: %d %s; a free id: %d %s; want 201 both", taken.Status, taken.Body, free.Status, free.Body)
	}
}
