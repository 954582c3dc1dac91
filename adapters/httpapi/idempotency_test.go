package httpapi_test

import (
	"bytes"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auth"
)

// TestIdempotencyKeyBoundToRequest: through the API, a request repeated under its
// Idempotency-Key answers the original (same status and body, Idempotent-Replayed: true) in any
// state — also while the queue is clearing — however its JSON is written and whether a broadcast
// comes as JSON or CSV; the key with another request is 422 idempotency_key_reused and queues
// nothing (issue 10.2, 10.3).
func TestIdempotencyKeyBoundToRequest(t *testing.T) {
	e := start(t, apitest.Options{ManualClears: true})
	op := e.key(e.Tenant, auth.RoleOperator)
	sender := e.key(e.Tenant, auth.RoleSender)
	id, phone := e.register(op)
	msgs := "/v1/connections/" + id + "/messages"
	bcasts := "/v1/connections/" + id + "/broadcasts"
	clear := "/v1/connections/" + id + "/queue/clear"
	key := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }
	wantReplay := func(what string, first, again *apitest.Response) {
		t.Helper()
		if again.Status != first.Status || !bytes.Equal(first.Body, again.Body) || again.Header.Get("Idempotent-Replayed") != "true" ||
			again.Header.Get("Location") != first.Header.Get("Location") {
			t.Fatalf("%s: replay %d %s (Idempotent-Replayed %q, Location %q), want the original %d %s (Location %q)", what,
				again.Status, again.Body, again.Header.Get("Idempotent-Replayed"), again.Header.Get("Location"),
				first.Status, first.Body, first.Header.Get("Location"))
		}
	}

	rcpt := newPhone()
	first := e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"hello"}`, key("m1"))
	wantStatus(t, first, 202)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first request marked replayed")
	}
	// Another key order and whitespace: the same request.
	wantReplay("enqueue, JSON reordered", first, e.do(sender, "POST", msgs, "{\n  \"text\": \"hello\",\n  \"recipient\": \""+rcpt+"\"\n}", key("m1")))
	reused := e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"hello!"}`, key("m1"))
	wantProblem(t, reused, 422, "idempotency_key_reused")
	if reused.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("refused request marked replayed")
	}

	r1, r2 := newPhone(), newPhone()
	b := e.do(sender, "POST", bcasts, map[string]any{"recipients": []string{r1, r2}, "text": "sale"}, key("b1"))
	wantStatus(t, b, 202)
	// The same broadcast as a CSV upload: the same request.
	csv := "phone\n" + r1 + "\n" + r2 + "\n"
	wantReplay("broadcast as CSV", b, e.do(sender, "POST", bcasts+"?text=sale", csv,
		map[string]string{"Content-Type": "text/csv", "Idempotency-Key": "b1"}))
	wantProblem(t, e.do(sender, "POST", bcasts+"?text=sale", "phone\n"+r1+"\n",
		map[string]string{"Content-Type": "text/csv", "Idempotency-Key": "b1"}), 422, "idempotency_key_reused")

	cl := e.do(op, "POST", clear, map[string]any{"reason": "banned", "confirm": phone}, key("c1"))
	wantStatus(t, cl, 202)
	// While clearing: replays answer the original, not 409; new requests are refused.
	wantReplay("enqueue while clearing", first, e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"hello"}`, key("m1")))
	wantReplay("broadcast while clearing", b, e.do(sender, "POST", bcasts, map[string]any{"recipients": []string{r1, r2}, "text": "sale"}, key("b1")))
	wantReplay("clear while clearing", cl, e.do(op, "POST", clear, map[string]any{"reason": "banned", "confirm": phone}, key("c1")))
	wantProblem(t, e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"other"}`, key("m1")), 422, "idempotency_key_reused")
	wantProblem(t, e.do(op, "POST", clear, map[string]any{"reason": "other", "confirm": phone}, key("c1")), 422, "idempotency_key_reused")
	wantProblem(t, e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"hello"}`, key("m2")), 409, "queue_clearing")

	e.sync() // the clear process reads the Queue read model; commands do not wait for it
	if _, err := e.Clears.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.sync()
	wantReplay("clear after completion", cl, e.do(op, "POST", clear, map[string]any{"reason": "banned", "confirm": phone}, key("c1")))
	wantReplay("enqueue after its purge", first, e.do(sender, "POST", msgs, `{"recipient":"`+rcpt+`","text":"hello"}`, key("m1")))

	// The key of an enqueue is free on another route.
	wantStatus(t, e.do(sender, "POST", bcasts, map[string]any{"recipients": []string{r1}, "text": "x"}, key("m1")), 202)
	e.sync()
	q := e.do(sender, "GET", "/v1/connections/"+id+"/queue", nil, nil)
	wantStatus(t, q, 200)
	if num(q.Map(), "pending") != 1 {
		t.Fatalf("queue %s, want 1 pending (the last broadcast): a replay or a refused request queued", q.Body)
	}
}
