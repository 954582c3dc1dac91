package httpapi_test

import (
	"reflect"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestSendingPolicy sets a connection's sending policy over HTTP: the card shows the defaults,
// then each partial change merged into the policy, and dispatched_today; quiet_hours null
// removes the quiet hours; a registration can carry a policy; every bad input is 422 with its
// stable code and records nothing (also when on_ban in the same body was fine); a sender is 403,
// another tenant 404; each change is audited once.
func TestSendingPolicy(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	conn, _ := e.register(op)
	path := "/v1/connections/" + conn
	policy := func(card map[string]any) map[string]any {
		t.Helper()
		p, ok := card["sending_policy"].(map[string]any)
		if !ok {
			t.Fatalf("card without sending_policy: %v", card)
		}
		return p
	}
	want := map[string]any{"min_interval_seconds": 3.0, "jitter_seconds": 2.0, "daily_cap": 1000.0, "time_zone": "UTC", "quiet_hours": nil}
	card := e.cardOf(op, conn)
	if got := policy(card); !reflect.DeepEqual(got, want) {
		t.Fatalf("default policy %v, want %v", got, want)
	}
	if _, ok := card["dispatched_today"].(float64); !ok || num(card, "dispatched_today") != 0 {
		t.Fatalf("dispatched_today in %v", card)
	}

	r := e.do(op, "PATCH", path, map[string]any{"sending_policy": map[string]any{"daily_cap": 200, "time_zone": "Europe/Berlin",
		"quiet_hours": map[string]any{"start": "22:00", "end": "07:30"}}}, nil)
	wantStatus(t, r, 200)
	want["daily_cap"], want["time_zone"], want["quiet_hours"] = 200.0, "Europe/Berlin", map[string]any{"start": "22:00", "end": "07:30"}
	if got := policy(r.Map()); !reflect.DeepEqual(got, want) {
		t.Fatalf("policy after PATCH %v, want %v", got, want)
	}
	// Partial: only the interval changes; then the quiet hours are removed, with on_ban at once.
	r = e.do(op, "PATCH", path, map[string]any{"sending_policy": map[string]any{"min_interval_seconds": 10}}, nil)
	wantStatus(t, r, 200)
	want["min_interval_seconds"] = 10.0
	if got := policy(r.Map()); !reflect.DeepEqual(got, want) {
		t.Fatalf("policy after a partial PATCH %v, want %v", got, want)
	}
	r = e.do(op, "PATCH", path, map[string]any{"on_ban": "resume", "sending_policy": map[string]any{"quiet_hours": nil}}, nil)
	wantStatus(t, r, 200)
	want["quiet_hours"] = nil
	if got := policy(r.Map()); !reflect.DeepEqual(got, want) || str(r.Map(), "on_ban") != "resume" {
		t.Fatalf("card after removing the quiet hours %s", r.Body)
	}
	wantStatus(t, e.do(op, "PATCH", path, map[string]any{"sending_policy": map[string]any{"daily_cap": 200}}, nil), 200) // no-op

	bad := string(connection.CodeInvalidSendingPolicy)
	for _, tc := range []struct {
		name string
		body map[string]any
		code string
	}{
		{"interval below the floor", map[string]any{"min_interval_seconds": 0}, bad},
		{"interval above the ceiling", map[string]any{"min_interval_seconds": 3601}, bad},
		{"huge interval", map[string]any{"min_interval_seconds": 1e15}, bad},
		{"negative jitter", map[string]any{"jitter_seconds": -1}, bad},
		{"cap zero", map[string]any{"daily_cap": 0}, bad},
		{"cap above the ceiling", map[string]any{"daily_cap": 10001}, bad},
		{"empty policy", map[string]any{}, bad},
		{"quiet hours malformed", map[string]any{"quiet_hours": map[string]any{"start": "7:00", "end": "08:00"}}, bad},
		{"quiet hours without end", map[string]any{"quiet_hours": map[string]any{"start": "07:00"}}, bad},
		{"quiet hours empty window", map[string]any{"quiet_hours": map[string]any{"start": "07:00", "end": "07:00"}}, bad},
		{"quiet hours unknown field", map[string]any{"quiet_hours": map[string]any{"start": "07:00", "end": "08:00", "days": 5}}, bad},
		{"quiet hours not an object", map[string]any{"quiet_hours": "22-07"}, bad},
		{"unknown zone", map[string]any{"time_zone": "Mars/Olympus_Mons"}, string(connection.CodeInvalidTimeZone)},
		{"server's zone", map[string]any{"time_zone": "Local"}, string(connection.CodeInvalidTimeZone)},
		{"path as zone", map[string]any{"time_zone": "../../etc/passwd"}, string(connection.CodeInvalidTimeZone)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, e.do(op, "PATCH", path, map[string]any{"on_ban": "hold", "sending_policy": tc.body}, nil), 422, tc.code)
			wantProblem(t, e.do(op, "POST", "/v1/connections", map[string]any{"phone": newPhone(), "sending_policy": tc.body}, nil), 422, tc.code)
		})
	}
	wantProblem(t, e.do(op, "PATCH", path, map[string]any{"sending_policy": map[string]any{"daily_cap": "many"}}, nil), 400, httpapi.CodeInvalidJSON)
	wantProblem(t, e.do(op, "PATCH", path, map[string]any{"sending_policy": map[string]any{"cap": 5}}, nil), 400, httpapi.CodeInvalidJSON)
	wantProblem(t, e.do(e.key(e.Tenant, auth.RoleSender), "PATCH", path, map[string]any{"sending_policy": map[string]any{"daily_cap": 5}}, nil), 403, httpapi.CodeForbidden)
	wantProblem(t, e.do(e.key(otherTenant, auth.RoleAdmin), "PATCH", path, map[string]any{"sending_policy": map[string]any{"daily_cap": 5}}, nil), 404, httpapi.CodeNotFound)
	e.sync()
	card = e.cardOf(op, conn)
	if got := policy(card); !reflect.DeepEqual(got, want) || str(card, "on_ban") != "resume" {
		t.Fatalf("refused changes changed the card: %v", card)
	}
	audit := e.do(e.admin(), "GET", "/v1/audit?type=SendingPolicyChanged&connection="+conn, nil, nil)
	if entries, _ := audit.Map()["entries"].([]any); len(entries) != 3 {
		t.Fatalf("audit of the policy changes (want 3): %s", audit.Body)
	}

	// At registration.
	r = e.do(op, "POST", "/v1/connections", map[string]any{"phone": newPhone(), "sending_policy": map[string]any{"daily_cap": 50, "time_zone": "Asia/Tokyo"}}, nil)
	wantStatus(t, r, 201)
	if p := policy(r.Map()); p["daily_cap"] != 50.0 || p["time_zone"] != "Asia/Tokyo" || p["min_interval_seconds"] != 3.0 {
		t.Fatalf("registered with policy %v", p)
	}
}
