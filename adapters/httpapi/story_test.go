package httpapi_test

import (
	"bytes"
	"encoding/json"
	"image/png"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

func apitestOptions() apitest.Options { return apitest.Options{} }

// TestClearQueueStory walks the whole Clear Queue story through the API: queue messages and
// broadcasts, preview, a refused confirmation, the clear, sends refused while clearing, the
// exact report, and the audit trail.
func TestClearQueueStory(t *testing.T) {
	e := start(t, apitest.Options{ManualClears: true})
	op := e.key(e.Tenant, auth.RoleOperator)
	sender := e.key(e.Tenant, auth.RoleSender)
	auditor := e.key(e.Tenant, auth.RoleAuditor)
	id, phone := e.register(op)

	// One message, retried with the same Idempotency-Key: same id, same body, nothing queued twice.
	msg := map[string]any{"recipient": newPhone(), "text": "hello"}
	first := e.do(sender, "POST", "/v1/connections/"+id+"/messages", msg, map[string]string{"Idempotency-Key": "order-1"})
	wantStatus(t, first, 202)
	again := e.do(sender, "POST", "/v1/connections/"+id+"/messages", msg, map[string]string{"Idempotency-Key": "order-1"})
	wantStatus(t, again, 202)
	if !bytes.Equal(first.Body, again.Body) {
		t.Fatalf("replay body %s, want %s", again.Body, first.Body)
	}
	if again.Header.Get("Idempotent-Replayed") != "true" || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("Idempotent-Replayed: first %q, replay %q", first.Header.Get("Idempotent-Replayed"), again.Header.Get("Idempotent-Replayed"))
	}
	msgID := str(first.Map(), "message_id")
	if loc := first.Header.Get("Location"); loc != "/v1/messages/"+msgID {
		t.Fatalf("Location %q", loc)
	}

	// A broadcast from JSON, and one from a CSV upload with a header line.
	b1 := e.do(sender, "POST", "/v1/connections/"+id+"/broadcasts",
		map[string]any{"recipients": []string{newPhone(), newPhone(), newPhone()}, "text": "sale"}, map[string]string{"Idempotency-Key": "b1"})
	wantStatus(t, b1, 202)
	if num(b1.Map(), "count") != 3 {
		t.Fatalf("broadcast: %s", b1.Body)
	}
	csv := "phone,name\n" + newPhone() + ",Ann\n\n" + newPhone() + ",Bob\n"
	b2 := e.do(sender, "POST", "/v1/connections/"+id+"/broadcasts?text=csv+sale", csv,
		map[string]string{"Content-Type": "text/csv", "Idempotency-Key": "b2"})
	wantStatus(t, b2, 202)
	if num(b2.Map(), "count") != 2 {
		t.Fatalf("CSV broadcast: %s", b2.Body)
	}
	b2replay := e.do(sender, "POST", "/v1/connections/"+id+"/broadcasts?text=csv+sale", csv,
		map[string]string{"Content-Type": "text/csv", "Idempotency-Key": "b2"})
	if !bytes.Equal(b2replay.Body, b2.Body) {
		t.Fatalf("broadcast replay %s, want %s", b2replay.Body, b2.Body)
	}
	e.sync()

	q := e.do(sender, "GET", "/v1/connections/"+id+"/queue", nil, nil)
	wantStatus(t, q, 200)
	if m := q.Map(); num(m, "pending") != 6 || str(m, "status") != "open" {
		t.Fatalf("queue %s, want 6 pending, open", q.Body)
	}
	bp := e.do(sender, "GET", "/v1/broadcasts/"+str(b1.Map(), "broadcast_id"), nil, nil)
	wantStatus(t, bp, 200)
	if m := bp.Map(); num(m, "count") != 3 || num(m, "queued") != 3 {
		t.Fatalf("broadcast progress %s", bp.Body)
	}

	prev := e.do(op, "GET", "/v1/connections/"+id+"/queue/clear-preview", nil, nil)
	wantStatus(t, prev, 200)
	var preview struct {
		Total      int    `json:"total"`
		Phone      string `json:"phone"`
		Broadcasts []struct {
			Pending int `json:"pending"`
		} `json:"broadcasts"`
	}
	if err := prev.JSON(&preview); err != nil {
		t.Fatal(err)
	}
	if preview.Total != 6 || preview.Phone != phone || len(preview.Broadcasts) != 2 ||
		preview.Broadcasts[0].Pending+preview.Broadcasts[1].Pending != 5 {
		t.Fatalf("preview %s", prev.Body)
	}

	// The confirmation must be the connection's number.
	bad := e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "ban", "confirm": "+4917000000"}, nil)
	wantProblem(t, bad, 422, "confirm_mismatch")
	// A sender may not clear.
	wantProblem(t, e.do(sender, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "ban", "confirm": phone}, nil), 403, "forbidden")

	spaced := phone[:3] + " " + phone[3:6] + " " + phone[6:]
	cl := e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "number banned", "confirm": spaced},
		map[string]string{"Idempotency-Key": "clear-1"})
	wantStatus(t, cl, 202)
	clearID := str(cl.Map(), "clear_id")
	if clearID == "" || cl.Header.Get("Location") != "/v1/connections/"+id+"/clears/"+clearID {
		t.Fatalf("clear answer %s (Location %q)", cl.Body, cl.Header.Get("Location"))
	}

	// G2 through the API: while clearing, sends and broadcasts are refused with 409 queue_clearing.
	refused := e.do(sender, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "late"}, nil)
	wantProblem(t, refused, 409, "queue_clearing")
	if str(refused.Map(), "clear_id") != clearID {
		t.Fatalf("queue_clearing names clear %v, want %s", refused.Map()["clear_id"], clearID)
	}
	wantProblem(t, e.do(sender, "POST", "/v1/connections/"+id+"/broadcasts",
		map[string]any{"recipients": []string{newPhone()}, "text": "late"}, nil), 409, "queue_clearing")

	pending := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+clearID, nil, nil)
	wantStatus(t, pending, 200)
	if str(pending.Map(), "status") != "pending" {
		t.Fatalf("clear before completion: %s", pending.Body)
	}

	e.sync() // the clear process reads the Queue read model; commands do not wait for it
	if _, err := e.Clears.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.sync()
	done := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+clearID, nil, nil)
	wantStatus(t, done, 200)
	var report struct {
		Status string `json:"status"`
		Report struct {
			PurgedCount int    `json:"purged_count"`
			Reason      string `json:"reason"`
			RequestedBy string `json:"requested_by"`
		} `json:"report"`
	}
	if err := done.JSON(&report); err != nil {
		t.Fatal(err)
	}
	if report.Status != "done" || report.Report.PurgedCount != 6 || report.Report.Reason != "number banned" || report.Report.RequestedBy == "" {
		t.Fatalf("clear report %s", done.Body)
	}
	if m := e.do(op, "GET", "/v1/connections/"+id+"/queue", nil, nil).Map(); num(m, "pending") != 0 || str(m, "status") != "open" {
		t.Fatalf("queue after clear: %v", m)
	}
	if m := e.do(op, "GET", "/v1/messages/"+msgID, nil, nil).Map(); str(m, "status") != "purged" || str(m, "clear_id") != clearID {
		t.Fatalf("message after clear: %v", m)
	}
	// Sends are accepted again.
	wantStatus(t, e.do(sender, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "after"}, nil), 202)

	// Hold and resume.
	h := e.do(op, "POST", "/v1/connections/"+id+"/queue/hold", map[string]any{"note": "checking"}, nil)
	wantStatus(t, h, 200)
	if str(h.Map(), "queue_status") != "held" {
		t.Fatalf("hold: %s", h.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/queue/hold", nil, nil), 409, "already_held")
	rs := e.do(op, "POST", "/v1/connections/"+id+"/queue/resume", nil, nil)
	wantStatus(t, rs, 200)
	if str(rs.Map(), "queue_status") != "open" {
		t.Fatalf("resume: %s", rs.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/queue/resume", nil, nil), 409, "not_held")
	e.sync()

	// The audit trail has the clear, who asked and why; the chain verifies.
	au := e.do(auditor, "GET", "/v1/audit?connection="+id+"&type=ClearQueueRequested", nil, nil)
	wantStatus(t, au, 200)
	var page struct {
		Entries []struct {
			Actor  string `json:"actor"`
			Reason string `json:"reason"`
		} `json:"entries"`
	}
	if err := au.JSON(&page); err != nil {
		t.Fatal(err)
	}
	opID := principalID(t, e, op)
	if len(page.Entries) != 1 || page.Entries[0].Actor != opID || page.Entries[0].Reason != "number banned" {
		t.Fatalf("audit entries %s, want one by %s", au.Body, opID)
	}
	v := e.do(auditor, "GET", "/v1/audit/verify", nil, nil)
	wantStatus(t, v, 200)
	if ok, _ := v.Map()["ok"].(bool); !ok || num(v.Map(), "checked") == 0 {
		t.Fatalf("verify %s", v.Body)
	}
	jsonl := e.do(auditor, "GET", "/v1/audit?format=jsonl&connection="+id, nil, nil)
	wantStatus(t, jsonl, 200)
	lines := strings.Split(strings.TrimSpace(string(jsonl.Body)), "\n")
	types := map[string]bool{}
	for _, l := range lines {
		var en struct {
			EventType string `json:"event_type"`
		}
		if err := json.Unmarshal([]byte(l), &en); err != nil {
			t.Fatalf("jsonl line %q: %v", l, err)
		}
		types[en.EventType] = true
	}
	for _, want := range []string{"ConnectionRegistered", "ClearQueueRequested", "QueueCleared", "QueueHeld", "QueueResumed"} {
		if !types[want] {
			t.Errorf("audit export lacks %s: %s", want, jsonl.Body)
		}
	}
	csvOut := e.do(auditor, "GET", "/v1/audit?format=csv&connection="+id, nil, nil)
	wantStatus(t, csvOut, 200)
	if rows := strings.Count(strings.TrimSpace(string(csvOut.Body)), "\n"); rows != len(lines) {
		t.Fatalf("csv has %d data rows, jsonl %d lines", rows, len(lines))
	}

	// Analytics count the clear and its purged messages.
	an := e.do(e.key(e.Tenant, auth.RoleAnalyst), "GET", "/v1/analytics/daily?connection="+id, nil, nil)
	wantStatus(t, an, 200)
	var days struct {
		Days []struct {
			Purged, Clears, Queued int
		} `json:"days"`
	}
	if err := an.JSON(&days); err != nil {
		t.Fatal(err)
	}
	if len(days.Days) != 1 || days.Days[0].Purged != 6 || days.Days[0].Clears != 1 || days.Days[0].Queued != 7 {
		t.Fatalf("analytics %s", an.Body)
	}

	// History pages through every event by revision.
	var all []string
	cursor := ""
	for range 100 {
		hr := e.do(auditor, "GET", "/v1/connections/"+id+"/history?limit=3&cursor="+cursor, nil, nil)
		wantStatus(t, hr, 200)
		var hp struct {
			Events []struct {
				Revision int    `json:"revision"`
				Type     string `json:"type"`
			} `json:"events"`
			NextCursor string `json:"next_cursor"`
		}
		if err := hr.JSON(&hp); err != nil {
			t.Fatal(err)
		}
		for _, ev := range hp.Events {
			if ev.Revision != len(all) {
				t.Fatalf("history revision %d at index %d", ev.Revision, len(all))
			}
			all = append(all, ev.Type)
		}
		if cursor = hp.NextCursor; cursor == "" {
			break
		}
	}
	evs, err := e.Store.ReadStream(e.ctx, "connection-"+id, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(evs) {
		t.Fatalf("history returned %d events, the stream has %d", len(all), len(evs))
	}
}

// principalID returns the key id of a secret (the actor recorded for it).
func principalID(t *testing.T, e *env, secret string) string {
	t.Helper()
	p, err := e.Keys.Authenticate(e.ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}

func TestConnectionsAndPairing(t *testing.T) {
	e := start(t, apitestOptions())
	op := e.key(e.Tenant, auth.RoleOperator)
	r := e.do(op, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": "+49 170 5550001", "on_ban": "resume"}, nil)
	wantStatus(t, r, 201)
	if m := r.Map(); str(m, "id") != "shop-1" || str(m, "phone") != "+491705550001" || str(m, "link_status") != "unpaired" || str(m, "on_ban") != "resume" {
		t.Fatalf("created %s", r.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": "+491705550001"}, nil), 409, "already_registered")
	wantProblem(t, e.do(op, "POST", "/v1/connections", map[string]any{"phone": "12"}, nil), 422, "invalid_phone")
	wantProblem(t, e.do(op, "POST", "/v1/connections", map[string]any{"phone": "+491705550001", "on_ban": "maybe"}, nil), 422, "invalid_policy")

	list := e.do(e.key(e.Tenant, auth.RoleAnalyst), "GET", "/v1/connections", nil, nil)
	wantStatus(t, list, 200)
	if !strings.Contains(string(list.Body), `"shop-1"`) {
		t.Fatalf("list %s", list.Body)
	}
	wantStatus(t, e.do(op, "GET", "/v1/connections/shop-1", nil, nil), 200)
	wantProblem(t, e.do(op, "GET", "/v1/connections/nope", nil, nil), 404, "not_found")

	// QR pairing: no code before POST; JSON, text and PNG renderings of the same code while the
	// pairing runs (the simulator holds it until scanned); no code once it ended.
	key := connection.Key(e.Tenant, "shop-1")
	e.Simulator.HoldQR(key)
	wantProblem(t, e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, nil), 404, "no_pairing")
	qr := e.do(op, "POST", "/v1/connections/shop-1/pairing/qr", nil, nil)
	wantStatus(t, qr, 200)
	code := str(qr.Map(), "code")
	if code == "" || qr.Map()["running"] != true {
		t.Fatalf("qr %s", qr.Body)
	}
	txt := e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, map[string]string{"Accept": "text/plain"})
	wantStatus(t, txt, 200)
	if strings.TrimSpace(string(txt.Body)) != code {
		t.Fatalf("text QR %q, want %q", txt.Body, code)
	}
	img := e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, map[string]string{"Accept": "image/png"})
	wantStatus(t, img, 200)
	if _, err := png.Decode(bytes.NewReader(img.Body)); err != nil || img.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("PNG QR: %v (%s)", err, img.Header.Get("Content-Type"))
	}
	wantProblem(t, e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, map[string]string{"Accept": "application/xml"}), 406, "not_acceptable")
	if err := e.Simulator.ScanQR(key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the scanned pairing ended", func() bool {
		return e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, nil).Status == 404
	})
	wantProblem(t, e.do(op, "GET", "/v1/connections/shop-1/pairing/qr", nil, nil), 404, "no_pairing")

	// The simulator paired the first connection when its QR was "scanned"; pair another by phone.
	id2, phone2 := e.register(op)
	ph := e.do(op, "POST", "/v1/connections/"+id2+"/pairing/phone", map[string]any{}, nil)
	wantStatus(t, ph, 200)
	if m := ph.Map(); str(m, "code") == "" || str(m, "phone") != phone2 {
		t.Fatalf("phone pairing %s", ph.Body)
	}
	wantProblem(t, e.do(op, "POST", "/v1/connections/"+id2+"/pairing/phone", map[string]any{}, nil), 409, "already_paired")
}

func TestSimulatorRoutes(t *testing.T) {
	e := start(t, apitestOptions())
	id, _ := e.register(e.admin())
	// Not logged in yet: the simulator refuses.
	wantProblem(t, e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "temporary"}, nil), 409, "simulator_state")
	if err := e.Simulator.Connect(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	ban := e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "30m"}, nil)
	wantStatus(t, ban, 200)
	if m := ban.Map(); m["simulated"] != true || ban.Header.Get("X-Waqueue-Simulated") != "true" || str(m, "expires_in") != "30m0s" {
		t.Fatalf("ban %s", ban.Body)
	}
	if st := e.Simulator.Status(id); st.State.String() != "temporarily_banned" {
		t.Fatalf("simulator state %v after ban", st.State)
	}
	lift := e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/lift", nil, nil)
	wantStatus(t, lift, 200)
	wantProblem(t, e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/lift", nil, nil), 409, "simulator_state")
	wantStatus(t, e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/logout", nil, nil), 200)
	wantProblem(t, e.do(e.admin(), "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "sometimes"}, nil), 422, "invalid_request")

	// Without the simulator flag the routes do not exist.
	plain := start(t, apitest.Options{NoSimulatorRoutes: true})
	id2, _ := plain.register(plain.admin())
	wantProblem(t, plain.do(plain.admin(), "POST", "/v1/connections/"+id2+"/simulator/logout", nil, nil), 404, "not_found")
}
