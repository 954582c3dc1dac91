package httpapi_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// eachEngine runs body against a server on SQLite (the embedded default) and on PostgreSQL
// (events and read models), as package server's story test does.
func eachEngine(t *testing.T, opts apitest.Options, body func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		body(t, start(t, opts))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		o := opts
		o.DB = pgtest.URL(t)
		body(t, start(t, o))
	})
}

// transport records what only the node's own WhatsApp transport may assert (pairing, bans,
// lifts), through the same command handlers the transport event handler calls.
func (e *env) transport(connID string, cmd any) {
	e.t.Helper()
	ctx := commands.WithPrincipal(e.ctx, commands.SystemPrincipal(e.Tenant))
	var err error
	switch c := cmd.(type) {
	case commands.PairingSucceeded:
		_, err = e.Handlers.PairingSucceeded.Handle(ctx, c)
	case commands.ReportBan:
		_, err = e.Handlers.ReportBan.Handle(ctx, c)
	case commands.LiftBan:
		_, err = e.Handlers.LiftBan.Handle(ctx, c)
	default:
		e.t.Fatalf("transport: unsupported %T", cmd)
	}
	if err != nil {
		e.t.Fatalf("transport %T: %v", cmd, err)
	}
	e.sync()
}

// clear requests a clear with then ("" for none) and completes it; it returns the clear id.
func (e *env) clear(key, id, phone, then, idemKey string) string {
	e.t.Helper()
	body := map[string]any{"reason": "test " + idemKey, "confirm": phone}
	if then != "" {
		body["then"] = then
	}
	r := e.do(key, "POST", "/v1/connections/"+id+"/queue/clear", body, map[string]string{"Idempotency-Key": idemKey})
	wantStatus(e.t, r, 202)
	e.sync() // the clear process reads the Queue read model; commands do not wait for it
	if _, err := e.Clears.Sweep(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	e.sync()
	return str(r.Map(), "clear_id")
}

func (e *env) cardOf(key, id string) map[string]any {
	e.t.Helper()
	r := e.do(key, "GET", "/v1/connections/"+id, nil, nil)
	wantStatus(e.t, r, 200)
	return r.Map()
}

// TestClearThen is issue 10.8 as a new user met it: after ban → lift → clear, the queue stayed
// held and nothing said so. Now the clear says what comes after: by default the queue returns
// to what it was (held; the report's queue_after and the card's held_reason say so), then=resume
// reopens it (refused while banned: G7), then=hold holds it (held_reason after_clear).
func TestClearThen(t *testing.T) {
	eachEngine(t, apitest.Options{ManualClears: true}, func(t *testing.T, e *env) {
		op := e.key(e.Tenant, auth.RoleOperator)
		sender := e.key(e.Tenant, auth.RoleSender)
		id, phone := e.register(op)
		e.transport(id, commands.PairingSucceeded{ConnectionID: id})
		for i := range 2 {
			wantStatus(t, e.do(sender, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "hi"},
				map[string]string{"Idempotency-Key": fmt.Sprint("m", i)}), 202)
		}
		e.transport(id, commands.ReportBan{ConnectionID: id, Kind: connection.BanTemporary, ExpiresAt: time.Now().Add(time.Hour), ReasonCode: "101"})
		if c := e.cardOf(op, id); str(c, "queue_status") != "held" || str(c, "held_reason") != "banned" {
			t.Fatalf("card after the ban: %v", c)
		}

		// G7: a clear never reopens a banned connection's sending; nothing is recorded.
		wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "r", "confirm": phone, "then": "resume"},
			map[string]string{"Idempotency-Key": "refused"}), 409, "link_status")
		wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "r", "confirm": phone, "then": "later"},
			nil), 422, "invalid_then")
		e.sync()
		if c := e.cardOf(op, id); str(c, "queue_status") != "held" || num(c, "pending") != 2 {
			t.Fatalf("a refused clear changed the queue: %v", c)
		}
		if l := e.do(op, "GET", "/v1/connections/"+id+"/clears", nil, nil); len(l.Map()["clears"].([]any)) != 0 {
			t.Fatalf("a refused clear is listed: %s", l.Body)
		}

		e.transport(id, commands.LiftBan{ConnectionID: id})
		if c := e.cardOf(op, id); str(c, "link_status") != "active" || str(c, "queue_status") != "held" || str(c, "held_reason") != "banned" {
			t.Fatalf("card after the lift: %v (want active, held because of the ban)", c)
		}

		// Default (keep): the queue is what it was, held, and both the report and the card say so.
		keep := e.clear(op, id, phone, "", "c-keep")
		rep := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+keep, nil, nil)
		wantStatus(t, rep, 200)
		if m := rep.Map(); str(m, "status") != "done" || str(m, "then") != "keep" || str(m, "queue_after") != "held" || num(m, "purged_count") != 2 {
			t.Fatalf("keep report %s", rep.Body)
		}
		if c := e.cardOf(op, id); str(c, "queue_status") != "held" || str(c, "held_reason") != "banned" {
			t.Fatalf("card after clear (keep): %v", c)
		}

		// then=resume reopens the held queue once the link is active.
		resume := e.clear(op, id, phone, "resume", "c-resume")
		rep = e.do(op, "GET", "/v1/connections/"+id+"/clears/"+resume, nil, nil)
		if m := rep.Map(); str(m, "then") != "resume" || str(m, "queue_after") != "open" || str(m, "requested_by") == "" {
			t.Fatalf("resume report %s", rep.Body)
		}
		if c := e.cardOf(op, id); str(c, "queue_status") != "open" || c["held_reason"] != nil || c["hold"] != nil {
			t.Fatalf("card after clear (resume): %v", c)
		}

		// The same Idempotency-Key: with the same then it is the same clear; with another then it
		// is another request, refused.
		again := e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "test c-resume", "confirm": phone, "then": "resume"},
			map[string]string{"Idempotency-Key": "c-resume"})
		if wantStatus(t, again, 202); str(again.Map(), "clear_id") != resume || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay of the resume clear: %s", again.Body)
		}
		wantProblem(t, e.do(op, "POST", "/v1/connections/"+id+"/queue/clear", map[string]any{"reason": "test c-resume", "confirm": phone, "then": "hold"},
			map[string]string{"Idempotency-Key": "c-resume"}), 422, "idempotency_key_reused")

		// then=hold holds an open queue, and the card says why.
		hold := e.clear(op, id, phone, "hold", "c-hold")
		if m := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+hold, nil, nil).Map(); str(m, "queue_after") != "held" {
			t.Fatalf("hold report %v", m)
		}
		if c := e.cardOf(op, id); str(c, "queue_status") != "held" || str(c, "held_reason") != "after_clear" {
			t.Fatalf("card after clear (hold): %v", c)
		}

		// The connection's clears, newest first, two per page.
		p1 := e.do(op, "GET", "/v1/connections/"+id+"/clears?limit=2", nil, nil)
		wantStatus(t, p1, 200)
		var page struct {
			Clears []struct {
				ClearID string `json:"clear_id"`
				Status  string `json:"status"`
				Then    string `json:"then"`
				Report  any    `json:"report"`
			} `json:"clears"`
			NextCursor string `json:"next_cursor"`
		}
		if err := p1.JSON(&page); err != nil {
			t.Fatal(err)
		}
		if len(page.Clears) != 2 || page.Clears[0].ClearID != hold || page.Clears[1].ClearID != resume || page.NextCursor == "" ||
			page.Clears[0].Then != "hold" || page.Clears[0].Status != "done" || page.Clears[0].Report != nil {
			t.Fatalf("page 1: %s", p1.Body)
		}
		p2 := e.do(op, "GET", "/v1/connections/"+id+"/clears?limit=2&cursor="+page.NextCursor, nil, nil)
		page.Clears, page.NextCursor = nil, "x"
		if err := p2.JSON(&page); err != nil {
			t.Fatal(err)
		}
		if len(page.Clears) != 1 || page.Clears[0].ClearID != keep || page.NextCursor != "" {
			t.Fatalf("page 2: %s", p2.Body)
		}
		wantProblem(t, e.do(op, "GET", "/v1/connections/"+id+"/clears?cursor=abc", nil, nil), 400, "invalid_request")

		// Isolation: another tenant, and another connection of the same tenant, see nothing.
		other := e.key(otherTenant, auth.RoleAdmin)
		wantProblem(t, e.do(other, "GET", "/v1/connections/"+id+"/clears", nil, nil), 404, "not_found")
		wantProblem(t, e.do(other, "GET", "/v1/connections/"+id+"/clears/"+keep, nil, nil), 404, "not_found")
		id2, _ := e.register(op)
		wantProblem(t, e.do(op, "GET", "/v1/connections/"+id2+"/clears/"+keep, nil, nil), 404, "not_found")
		if l := e.do(op, "GET", "/v1/connections/"+id2+"/clears", nil, nil); len(l.Map()["clears"].([]any)) != 0 {
			t.Fatalf("another connection lists this one's clears: %s", l.Body)
		}
	})
}

// historyScanLimit is how many of a connection's latest events GET …/clears/{clear_id} used to
// read, backwards, before giving up with 404 (issue 10.5).
const historyScanLimit = 200_000

// TestClearReportOnLongHistory: a clear's report is found however many events the connection
// recorded after it. The old handler scanned at most the latest 200,000 events of the stream and
// answered 404 here. The filler events are of a type no read model knows (they are skipped by
// every projection, which keeps the test fast); the old scan counted every event whatever its
// type, so the type does not matter to what the test proves.
func TestClearReportOnLongHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 200,000 events")
	}
	eachEngine(t, apitest.Options{ManualClears: true}, func(t *testing.T, e *env) {
		op := e.key(e.Tenant, auth.RoleOperator)
		id, phone := e.register(op)
		wantStatus(t, e.do(op, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "old"},
			map[string]string{"Idempotency-Key": "old"}), 202)
		old := e.clear(op, id, phone, "", "old-clear")

		const batch = 10_000
		data := json.RawMessage(`{}`)
		for n := 0; n <= historyScanLimit; n += batch {
			evs := make([]eventstore.EventData, batch)
			for i := range evs {
				evs[i] = eventstore.EventData{ID: uuid.New(), Type: "TestFiller", Data: data}
			}
			if _, err := e.Store.Append(e.ctx, connection.StreamName(id), eventstore.Any, evs...); err != nil {
				t.Fatal(err)
			}
		}
		r := e.do(op, "GET", "/v1/connections/"+id+"/clears/"+old, nil, nil)
		wantStatus(t, r, 200)
		if m := r.Map(); str(m, "status") != "done" || num(m, "purged_count") != 1 || m["report"] == nil {
			t.Fatalf("old clear: %s", r.Body)
		}
		l := e.do(op, "GET", "/v1/connections/"+id+"/clears", nil, nil)
		if cl := l.Map()["clears"].([]any); len(cl) != 1 || str(cl[0].(map[string]any), "clear_id") != old {
			t.Fatalf("clears: %s", l.Body)
		}
	})
}
