package faults

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestProjectionKeepsFailing makes the message-status read model refuse one event (a CHECK
// constraint on PostgreSQL rejects the row of one recipient) and checks at the node level that
// the failure is visible (/readyz 503 saying projections fail, /v1/admin/health naming it, a warning in the log, the 503 in
// /metrics), that the rest keeps working (enqueue 202, the dispatcher sends, the cards follow),
// and that after the constraint is dropped the projection catches up with no message lost.
func TestProjectionKeepsFailing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(4*time.Minute))
	defer cancel()
	n := startNode(t, ctx, pgtest.URL(t))
	a := n.api
	const id, poison = "proj-1", "+491709999999"
	a.register(t, ctx, id, "+491701000003")

	enqueue := func(recipient, key string) uuid.UUID {
		var m struct {
			MessageID uuid.UUID `json:"message_id"`
		}
		a.must(t, ctx, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": recipient, "text": "hi"},
			map[string]string{"Idempotency-Key": key}, http.StatusAccepted, &m)
		return m.MessageID
	}
	statusOf := func(msg uuid.UUID) (int, string) {
		// Without Waqueue-Min-Position: this read model is the one made to fail, and the
		// test reads what it holds (asking for the test's position would wait for it).
		res, err := a.call(ctx, "GET", "/v1/messages/"+msg.String(), nil, map[string]string{"Waqueue-Min-Position": ""})
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Status string `json:"status"`
		}
		if res.Status == http.StatusOK {
			if err := res.decode(&m); err != nil {
				t.Fatal(err)
			}
		}
		return res.Status, m.Status
	}
	before := enqueue("+491709000001", "k-0")
	waitFor(t, ctx, "first message sent", func() bool { c, s := statusOf(before); return c == 200 && s == "sent" })
	readyz := func() (int, string) {
		res, err := a.call(ctx, "GET", "/readyz", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Status, string(res.Body)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz before the fault: %d %s", code, body)
	}

	if _, err := n.node.SQL.ExecContext(ctx, `ALTER TABLE status_messages ADD CONSTRAINT faults_poison CHECK (recipient <> '`+poison+`') NOT VALID`); err != nil {
		t.Fatal(err)
	}
	poisoned := enqueue(poison, "k-poison")
	after := []uuid.UUID{enqueue("+491709000002", "k-2"), enqueue("+491709000003", "k-3")}

	var body string
	waitFor(t, ctx, "/readyz 503 (projections failing)", func() bool {
		var code int
		code, body = readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"projections":"failing"`)
	})
	if strings.Contains(body, "message_status") || strings.Contains(body, "faults_poison") {
		t.Errorf("public /readyz shows internal detail: %s", body)
	}
	// The platform admin's health route names the projection and its error.
	res, err := a.call(ctx, "GET", "/v1/admin/health", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusOK || !strings.Contains(string(res.Body), "projection:message_status") || !strings.Contains(string(res.Body), "faults_poison") {
		t.Errorf("/v1/admin/health: %d %s, want the failing projection and its error", res.Status, res.Body)
	}
	t.Logf("/readyz while failing: %s; admin health: %s", body, res.Body)
	// The rest keeps working: commands are accepted, the dispatcher sends everything (the
	// simulator's record), and the cards count it.
	after = append(after, enqueue("+491709000004", "k-4"))
	waitFor(t, ctx, "every message handed over", func() bool {
		for _, m := range append([]uuid.UUID{poisoned}, after...) {
			if n.node.Simulator.SendCount(m) != 1 {
				return false
			}
		}
		return true
	})
	waitFor(t, ctx, "cards follow", func() bool { c := a.card(t, ctx, id); return c.Pending == 0 && c.InFlight == 0 })
	if code, _ := readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while the projection still fails", code)
	}
	if code, st := statusOf(after[0]); code == http.StatusOK && st == "sent" {
		t.Fatalf("message_status moved past the failing event (%s is %q): the fault did not hold", after[0], st)
	}
	if !strings.Contains(n.logs.String(), "message_status") {
		t.Errorf("the log does not name the failing projection:\n%s", tail(n.logs.String(), 4000))
	}
	mres, err := http.Get(n.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	if !strings.Contains(string(metrics), `code="503"`) {
		t.Errorf("/metrics does not count the 503 answers of /readyz")
	}
	if !strings.Contains(string(metrics), `waqueue_projection_failures_total{projection="message_status"}`) {
		t.Errorf("/metrics does not count the failing projection's batches")
	}

	if _, err := n.node.SQL.ExecContext(ctx, `ALTER TABLE status_messages DROP CONSTRAINT faults_poison`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "/readyz 200 after the fix", func() bool { code, _ := readyz(); return code == http.StatusOK })
	for _, m := range append([]uuid.UUID{poisoned}, after...) {
		waitFor(t, ctx, "message_status caught up", func() bool { c, s := statusOf(m); return c == 200 && s == "sent" })
	}
	rep := check(t, id, a.history(t, ctx, id), n.sends(id))
	if err := settled(rep); err != nil {
		t.Error(err)
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
