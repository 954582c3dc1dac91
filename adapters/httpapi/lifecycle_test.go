package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// history returns the event types of a connection's history, oldest first.
func (e *env) eventTypes(id string) []string {
	e.t.Helper()
	r := e.do(e.admin(), "GET", "/v1/connections/"+id+"/history", nil, nil)
	wantStatus(e.t, r, 200)
	var out []string
	for _, ev := range r.Map()["events"].([]any) {
		out = append(out, str(ev.(map[string]any), "type"))
	}
	return out
}

// TestLogoutAndPairAgain unpairs a connection through the API on the simulator: the logout is
// recorded with the operator as actor and the queue held before the transport session ends;
// a second logout records nothing; the pairing routes (QR and phone code) pair it again.
func TestLogoutAndPairAgain(t *testing.T) {
	eachEngine(t, apitest.Options{}, func(t *testing.T, e *env) {
		op := e.key(e.Tenant, auth.RoleOperator)
		id, phone := e.register(op)
		key := connection.Key(e.Tenant, id)
		wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/pairing/qr", nil, nil), 200)
		e.transport(id, commands.PairingSucceeded{ConnectionID: id}) // the dispatcher's part (off here)
		wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "hi"}, nil), 202)

		r := e.do(op, "POST", "/v1/connections/"+id+"/logout", nil, nil)
		wantStatus(t, r, 200)
		m := r.Map()
		if str(m, "link_status") != "session_invalid" || str(m, "queue_status") != "held" || str(m, "held_reason") != "session_invalid" ||
			m["remote_logout"] != true {
			t.Fatalf("logout answered %s", r.Body)
		}
		if lo, _ := m["logout"].(map[string]any); str(lo, "cause") != connection.ReasonUnpaired {
			t.Fatalf("card logout %v, want cause unpaired", m["logout"])
		}
		if st := e.Simulator.Status(key); st.State != transport.StateUnpaired {
			t.Fatalf("simulator after logout: %+v", st)
		}
		e.sync()
		a := e.do(e.admin(), "GET", "/v1/audit?connection="+id+"&type=SessionInvalidated", nil, nil)
		wantStatus(t, a, 200)
		entries, _ := a.Map()["entries"].([]any)
		if len(entries) != 1 || !strings.HasPrefix(str(entries[0].(map[string]any), "actor"), "key_") {
			t.Fatalf("audit of the logout: %s", a.Body)
		}

		// Again: nothing more recorded, nothing at WhatsApp.
		before := len(e.eventTypes(id))
		r = e.do(op, "POST", "/v1/connections/"+id+"/logout", nil, nil)
		wantStatus(t, r, 200)
		if r.Map()["remote_logout"] != false || len(e.eventTypes(id)) != before {
			t.Fatalf("second logout: %s, events %v", r.Body, e.eventTypes(id))
		}

		// Pair again by QR code; then log out and pair by phone code.
		wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/pairing/qr", nil, nil), 200)
		e.transport(id, commands.PairingSucceeded{ConnectionID: id})
		if c := e.cardOf(op, id); str(c, "link_status") != "active" || str(c, "queue_status") != "held" {
			t.Fatalf("card after pairing again: %v (the queue stays held until resumed)", c)
		}
		wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/logout", nil, nil), 200)
		p := e.do(op, "POST", "/v1/connections/"+id+"/pairing/phone", map[string]any{"phone": phone}, nil)
		wantStatus(t, p, 200)
		if str(p.Map(), "code") == "" {
			t.Fatalf("phone pairing: %s", p.Body)
		}
		if st := e.Simulator.Status(key); st.State != transport.StateConnected {
			t.Fatalf("simulator after pairing by phone: %+v", st)
		}

		// A banned number can be logged out too: the card shows the logout, not the ban.
		e.transport(id, commands.PairingSucceeded{ConnectionID: id})
		e.transport(id, commands.ReportBan{ConnectionID: id, Kind: connection.BanTemporary, ExpiresAt: time.Now().Add(time.Hour), ReasonCode: "101"})
		r = e.do(op, "POST", "/v1/connections/"+id+"/logout", nil, nil)
		wantStatus(t, r, 200)
		if m := r.Map(); str(m, "link_status") != "session_invalid" || m["ban"] != nil {
			t.Fatalf("logout of a banned number: %s", r.Body)
		}
	})
}

// TestRetire: refused while messages are pending (409 queue_not_empty), retired by a clear with
// clear_first, then every command refused (409 connection_retired) while reads work, and the id
// is never registered again.
func TestRetire(t *testing.T) {
	eachEngine(t, apitest.Options{ManualClears: true}, func(t *testing.T, e *env) {
		op := e.key(e.Tenant, auth.RoleOperator)
		id, phone := e.register(op)
		e.transport(id, commands.PairingSucceeded{ConnectionID: id})
		for i := range 3 {
			wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "hi"},
				map[string]string{"Idempotency-Key": fmt.Sprint("m", i)}), 202)
		}
		path := "/v1/connections/" + id + "/retire"
		r := e.do(op, "POST", path, map[string]any{"reason": "number sold", "confirm": phone}, nil)
		wantProblem(t, r, 409, "queue_not_empty")
		if num(r.Map(), "pending") != 3 {
			t.Fatalf("queue_not_empty without the counts: %s", r.Body)
		}
		wantProblem(t, e.do(op, "POST", path, map[string]any{"reason": "number sold", "confirm": "+4900"}, nil), 422, "confirm_mismatch")
		wantProblem(t, e.do(op, "POST", path, map[string]any{"confirm": phone}, nil), 422, "missing_reason")
		wantProblem(t, e.do(op, "POST", path, map[string]any{"reason": "x", "confirm": phone, "clear_first": "yes"}, nil), 400, "invalid_json")

		r = e.do(op, "POST", path, map[string]any{"reason": "number sold", "confirm": phone, "clear_first": true},
			map[string]string{"Idempotency-Key": "retire-1"})
		wantStatus(t, r, 202)
		clearID := str(r.Map(), "clear_id")
		if str(r.Map(), "status") != "retiring" || clearID == "" {
			t.Fatalf("retire with clear_first: %s", r.Body)
		}
		// While clearing: sends refused (G2), the retire not yet done.
		wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "hi"}, nil), 409, "queue_clearing")
		e.sync()
		if _, err := e.Clears.Sweep(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.sync()
		c := e.cardOf(op, id)
		if str(c, "link_status") != "retired" || num(c, "pending") != 0 {
			t.Fatalf("card after the clear: %v", c)
		}
		rep := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+clearID, nil, nil)
		wantStatus(t, rep, 200)
		if m := rep.Map(); str(m, "then") != "retire" || num(m, "purged_count") != 3 {
			t.Fatalf("clear report: %s", rep.Body)
		}

		// Every command refused; reads answer.
		refused := []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/connections/" + id + "/messages", map[string]any{"recipient": newPhone(), "text": "hi"}},
			{"POST", "/v1/connections/" + id + "/broadcasts", map[string]any{"recipients": []string{newPhone()}, "text": "hi"}},
			{"POST", "/v1/connections/" + id + "/queue/clear", map[string]any{"reason": "r", "confirm": phone}},
			{"POST", "/v1/connections/" + id + "/queue/hold", map[string]any{}},
			{"POST", "/v1/connections/" + id + "/queue/resume", map[string]any{}},
			{"PATCH", "/v1/connections/" + id, map[string]any{"on_ban": "resume"}},
			{"POST", "/v1/connections/" + id + "/logout", nil},
			{"POST", "/v1/connections/" + id + "/retire", map[string]any{"reason": "again", "confirm": phone}},
			{"POST", "/v1/connections/" + id + "/pairing/qr", nil},
			{"POST", "/v1/connections/" + id + "/pairing/phone", map[string]any{}},
			{"POST", "/v1/connections/" + id + "/contacts/check", map[string]any{"numbers": []string{newPhone()}}},
			{"POST", "/v1/connections", map[string]any{"id": id, "phone": newPhone()}}, // the id stays taken
		}
		for _, rq := range refused {
			r := e.do(op, rq.method, rq.path, rq.body, nil)
			if r.Status != 409 || str(r.Map(), "code") != "connection_retired" {
				t.Errorf("%s %s after retire: %d %s, want 409 connection_retired", rq.method, rq.path, r.Status, r.Body)
			}
		}
		for _, p := range []string{"/v1/connections/" + id, "/v1/connections/" + id + "/queue", "/v1/connections/" + id + "/clears",
			"/v1/connections/" + id + "/history", "/v1/audit?connection=" + id} {
			wantStatus(t, e.do(e.admin(), "GET", p, nil, nil), 200)
		}
		e.sync()
		a := e.do(e.admin(), "GET", "/v1/audit?connection="+id+"&type=ConnectionRetired", nil, nil)
		entries, _ := a.Map()["entries"].([]any)
		if len(entries) != 1 || str(entries[0].(map[string]any), "reason") != "number sold" {
			t.Fatalf("audit of the retirement: %s", a.Body)
		}

		// An empty connection retires at once.
		id2, phone2 := e.register(op)
		r = e.do(op, "POST", "/v1/connections/"+id2+"/retire", map[string]any{"reason": "unused", "confirm": phone2}, nil)
		wantStatus(t, r, 200)
		if str(r.Map(), "link_status") != "retired" {
			t.Fatalf("retire of an empty connection: %s", r.Body)
		}
	})
}

// TestNumberCheck asks the simulator which numbers are on WhatsApp, and checks bad input, the
// connection's state and the per-connection rate limit.
func TestNumberCheck(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	e := start(t, apitest.Options{Now: func() time.Time { return now },
		Limits: httpapi.Limits{NumberChecksPerMinute: 60, NumberCheckBurst: 6}})
	op := e.key(e.Tenant, auth.RoleOperator)
	sender := e.key(e.Tenant, auth.RoleSender)
	id, _ := e.register(op)
	path := "/v1/connections/" + id + "/contacts/check"
	on, off := newPhone(), newPhone()
	e.Simulator.SetOnWhatsApp(false, off)

	// Not connected yet: 409 not_connected (and no token spent).
	wantProblem(t, e.do(sender, "POST", path, map[string]any{"numbers": []string{on}}, nil), 409, "not_connected")
	wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/pairing/qr", nil, nil), 200)

	national := "0" + strings.TrimPrefix(off, "+49") // read in the region of the connection's number (DE)
	r := e.do(sender, "POST", path, map[string]any{"numbers": []string{on, national, on}}, nil)
	wantStatus(t, r, 200)
	m := r.Map()
	nums, _ := m["numbers"].([]any)
	if len(nums) != 3 || num(m, "on_whatsapp") != 2 || num(m, "not_on_whatsapp") != 1 {
		t.Fatalf("check: %s", r.Body)
	}
	second := nums[1].(map[string]any)
	if str(second, "number") != national || str(second, "phone") != off || second["on_whatsapp"] != false {
		t.Fatalf("the national number's answer: %v", second)
	}

	// Bad input: problem+json, nothing asked.
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("+49170%07d", 2000000+i)
	}
	wantProblem(t, e.do(sender, "POST", path, map[string]any{"numbers": many}, nil), 422, "too_many_numbers")
	bad := e.do(sender, "POST", path, map[string]any{"numbers": []string{on, "not a number"}}, nil)
	wantProblem(t, bad, 422, "invalid_phone")
	if str(bad.Map(), "field") != "numbers[1]" {
		t.Fatalf("invalid_phone names %q, want numbers[1]", str(bad.Map(), "field"))
	}
	wantProblem(t, e.do(sender, "POST", path, map[string]any{"numbers": []string{}}, nil), 422, "invalid_request")
	wantProblem(t, e.do(sender, "POST", path, map[string]any{"numbers": "+4917"}, nil), 400, "invalid_json")

	// The bucket: 6 numbers, 2 spent (distinct); 4 more pass, the next one waits a second.
	wantStatus(t, e.do(sender, "POST", path, map[string]any{"numbers": []string{newPhone(), newPhone(), newPhone(), newPhone()}}, nil), 200)
	lim := e.do(sender, "POST", path, map[string]any{"numbers": []string{newPhone()}}, nil)
	wantProblem(t, lim, 429, "rate_limited")
	if ra := lim.Header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want 1", ra)
	}
	// Another connection has its own bucket.
	id2, _ := e.register(op)
	wantStatus(t, e.do(op, "POST", "/v1/connections/"+id2+"/pairing/qr", nil, nil), 200)
	wantStatus(t, e.do(sender, "POST", "/v1/connections/"+id2+"/contacts/check", map[string]any{"numbers": []string{on}}, nil), 200)
	now = now.Add(time.Second)
	wantStatus(t, e.do(sender, "POST", path, map[string]any{"numbers": []string{newPhone()}}, nil), 200)

	// Another tenant can neither check through nor learn of the connection.
	other := e.key(otherTenant, auth.RoleAdmin)
	for p, body := range map[string]any{
		path:                                    map[string]any{"numbers": []string{on}},
		"/v1/connections/" + id + "/logout":     nil,
		"/v1/connections/" + id + "/retire":     map[string]any{"reason": "r", "confirm": "+491700000000", "clear_first": true},
		"/v1/connections/" + id + "/pairing/qr": nil,
	} {
		wantProblem(t, e.do(other, "POST", p, body, nil), 404, "not_found")
	}
	if c := e.cardOf(op, id); str(c, "link_status") != "unpaired" {
		t.Fatalf("the other tenant changed the connection: %v", c)
	}
}

// TestBroadcastCheckRecipients queues only the recipients on WhatsApp, from JSON and from CSV.
func TestBroadcastCheckRecipients(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	id, _ := e.register(op)
	wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/pairing/qr", nil, nil), 200)
	on1, on2, off := newPhone(), newPhone(), newPhone()
	e.Simulator.SetOnWhatsApp(false, off)

	r := e.do(op, "POST", "/v1/connections/"+id+"/broadcasts", map[string]any{"recipients": []string{on1, off, on2, off}, "text": "sale",
		"check_recipients": true}, nil)
	wantStatus(t, r, 202)
	m := r.Map()
	notOn, _ := m["not_on_whatsapp"].([]any)
	if num(m, "count") != 2 || len(notOn) != 1 || notOn[0] != off {
		t.Fatalf("checked broadcast: %s", r.Body)
	}
	// Without the flag nothing is checked and every recipient is queued.
	r = e.do(op, "POST", "/v1/connections/"+id+"/broadcasts", map[string]any{"recipients": []string{on1, off}, "text": "sale"}, nil)
	wantStatus(t, r, 202)
	if num(r.Map(), "count") != 2 || r.Map()["not_on_whatsapp"] != nil {
		t.Fatalf("unchecked broadcast: %s", r.Body)
	}
	// CSV.
	csv := "phone\n" + on1 + "\n" + off + "\n"
	r = e.do(op, "POST", "/v1/connections/"+id+"/broadcasts?text=sale&check_recipients=true", csv, map[string]string{"Content-Type": "text/csv"})
	wantStatus(t, r, 202)
	if notOn, _ := r.Map()["not_on_whatsapp"].([]any); num(r.Map(), "count") != 1 || len(notOn) != 1 {
		t.Fatalf("checked CSV broadcast: %s", r.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/broadcasts?text=sale&check_recipients=maybe", csv, map[string]string{"Content-Type": "text/csv"}), 422, "invalid_request")
	// Nobody on WhatsApp: the domain's no_recipients; nothing queued.
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/broadcasts", map[string]any{"recipients": []string{off}, "text": "sale",
		"check_recipients": true}, nil), 422, "no_recipients")
	e.sync()
	q := e.do(op, "GET", "/v1/connections/"+id+"/queue", nil, nil)
	wantStatus(t, q, 200)
	if num(q.Map(), "pending") != 5 {
		t.Fatalf("queue after the broadcasts: %s", q.Body)
	}
}
