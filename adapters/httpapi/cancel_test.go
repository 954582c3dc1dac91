package httpapi_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestCancelMessage cancels a queued message over HTTP: 200 with who and why, the message
// cancelled in every read, a second cancel answering the first, 409 message_not_pending once
// the message is no longer queued, 404 for an unknown message, 422 missing_reason, 403 for a
// sender key, and the cancel in the audit trail.
func TestCancelMessage(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	conn, phone := e.register(op) // not paired: nothing is dispatched
	queue := func(text string) string {
		r := e.do(op, "POST", "/v1/connections/"+conn+"/messages", map[string]any{"recipient": newPhone(), "text": text}, nil)
		wantStatus(t, r, 202)
		return str(r.Map(), "message_id")
	}
	m1, m2 := queue("one"), queue("two")
	path := "/v1/connections/" + conn + "/messages/" + m1

	wantProblem(t, e.do(op, "DELETE", path, map[string]any{}, nil), 422, string(connection.CodeMissingReason))
	wantProblem(t, e.do(e.key(e.Tenant, auth.RoleSender), "DELETE", path, map[string]any{"reason": "r"}, nil), 403, httpapi.CodeForbidden)
	wantProblem(t, e.do(op, "DELETE", "/v1/connections/"+conn+"/messages/00000000-0000-4000-8000-000000000001", map[string]any{"reason": "r"}, nil), 404, httpapi.CodeNotFound)
	wantProblem(t, e.do(op, "DELETE", "/v1/connections/"+conn+"/messages/not-a-uuid", map[string]any{"reason": "r"}, nil), 404, httpapi.CodeNotFound)

	r := e.do(op, "DELETE", path, map[string]any{"reason": "wrong text"}, nil)
	wantStatus(t, r, 200)
	body := r.Map()
	if str(body, "status") != "cancelled" || str(body, "reason") != "wrong text" || str(body, "message_id") != m1 ||
		str(body, "cancelled_by") == "" || num(body, "seq") != 1 || r.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("cancel answered %s", r.Body)
	}
	again := e.do(op, "DELETE", path, map[string]any{"reason": "again"}, nil)
	wantStatus(t, again, 200)
	if string(again.Body) != string(r.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("second cancel answered %s (replayed %q), want %s", again.Body, again.Header.Get("Idempotent-Replayed"), r.Body)
	}
	e.sync()
	msg := e.do(op, "GET", "/v1/messages/"+m1, nil, nil)
	wantStatus(t, msg, 200)
	if str(msg.Map(), "status") != "cancelled" || str(msg.Map(), "detail") != "wrong text" {
		t.Fatalf("cancelled message reads %s", msg.Body)
	}
	q := e.do(op, "GET", "/v1/connections/"+conn+"/queue", nil, nil)
	if num(q.Map(), "pending") != 1 {
		t.Fatalf("queue after the cancel: %s", q.Body)
	}
	audit := e.do(e.admin(), "GET", "/v1/audit?type=MessageCancelled&connection="+conn, nil, nil)
	wantStatus(t, audit, 200)
	if entries, _ := audit.Map()["entries"].([]any); len(entries) != 1 {
		t.Fatalf("audit of the cancel: %s", audit.Body)
	}

	// Purged by a clear: no longer pending.
	wantStatus(t, e.do(op, "POST", "/v1/connections/"+conn+"/queue/clear", map[string]any{"reason": "r", "confirm": phone}, nil), 202)
	wantProblem(t, e.do(op, "DELETE", "/v1/connections/"+conn+"/messages/"+m2, map[string]any{"reason": "late"}, nil), 409, string(connection.CodeMessageNotPending))
}

// TestChangeOnBan changes a connection's on_ban policy over HTTP: the card shows it, the change
// is audited once (setting it again records nothing), bad values are 422, a sender is 403 and
// another tenant gets 404.
func TestChangeOnBan(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	conn, _ := e.register(op)
	path := "/v1/connections/" + conn
	r := e.do(op, "PATCH", path, map[string]any{"on_ban": "resume"}, nil)
	wantStatus(t, r, 200)
	if str(r.Map(), "on_ban") != "resume" {
		t.Fatalf("card after PATCH: %s", r.Body)
	}
	wantStatus(t, e.do(op, "PATCH", path, map[string]any{"on_ban": "resume"}, nil), 200) // no-op
	wantProblem(t, e.do(op, "PATCH", path, map[string]any{"on_ban": "sometimes"}, nil), 422, string(connection.CodeInvalidPolicy))
	wantProblem(t, e.do(op, "PATCH", path, map[string]any{}, nil), 422, httpapi.CodeInvalidRequest)
	wantProblem(t, e.do(e.key(e.Tenant, auth.RoleSender), "PATCH", path, map[string]any{"on_ban": "hold"}, nil), 403, httpapi.CodeForbidden)
	wantProblem(t, e.do(e.key(otherTenant, auth.RoleAdmin), "PATCH", path, map[string]any{"on_ban": "hold"}, nil), 404, httpapi.CodeNotFound)
	e.sync()
	if c := e.do(op, "GET", path, nil, nil); str(c.Map(), "on_ban") != "resume" {
		t.Fatalf("card: %s", c.Body)
	}
	audit := e.do(e.admin(), "GET", "/v1/audit?type=OnBanPolicyChanged&connection="+conn, nil, nil)
	if entries, _ := audit.Map()["entries"].([]any); len(entries) != 1 {
		t.Fatalf("audit of the policy change: %s", audit.Body)
	}
}

// TestCancelBroadcastMessage cancels one message of a broadcast (recorded in a BroadcastQueued
// chunk, without an event of its own) right after the broadcast, asking with the broadcast's
// Waqueue-Position: 200, the message cancelled, the broadcast one message shorter; another
// connection's path for the same message is a 404.
func TestCancelBroadcastMessage(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	conn, _ := e.register(op) // not paired: nothing is dispatched
	other, _ := e.register(op)
	b := e.do(op, "POST", "/v1/connections/"+conn+"/broadcasts", map[string]any{"recipients": []string{newPhone(), newPhone(), newPhone()}, "text": "offer"},
		map[string]string{"Idempotency-Key": "b1"})
	wantStatus(t, b, 202)
	pos := b.Header.Get(httpapi.HeaderPosition)
	mid := connection.BroadcastMessageID(uuid.MustParse(str(b.Map(), "broadcast_id")), 1).String()
	min := map[string]string{httpapi.HeaderMinPosition: pos}

	wantProblem(t, e.do(op, "DELETE", "/v1/connections/"+other+"/messages/"+mid, map[string]any{"reason": "r"}, min), 404, httpapi.CodeNotFound)
	r := e.do(op, "DELETE", "/v1/connections/"+conn+"/messages/"+mid, map[string]any{"reason": "wrong list"}, min)
	wantStatus(t, r, 200)
	if str(r.Map(), "message_id") != mid || num(r.Map(), "seq") != 2 || r.Header.Get(httpapi.HeaderPositionReached) != "true" {
		t.Fatalf("cancel answered %s (%v)", r.Body, r.Header)
	}
	e.sync()
	if msg := e.do(op, "GET", "/v1/messages/"+mid, nil, nil); str(msg.Map(), "status") != "cancelled" {
		t.Fatalf("cancelled broadcast message reads %s", msg.Body)
	}
	if q := e.do(op, "GET", "/v1/connections/"+conn+"/queue", nil, nil); num(q.Map(), "pending") != 2 {
		t.Fatalf("queue after the cancel: %s", q.Body)
	}
}
