package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/integration"
)

// deadURL refuses connections at once (the discard port on loopback): deliveries to it fail and
// are logged without the test reaching the network.
const deadURL = "http://127.0.0.1:9/hook"

// webhook registers a webhook of tenant through the service (not the API) and returns its id.
func (e *env) webhook(tenant string) string {
	e.t.Helper()
	id, _, err := e.Node.Webhooks.Register(e.ctx, tenant, deadURL, []string{integration.TypeConnectionBanned})
	if err != nil {
		e.t.Fatalf("register webhook of %s: %v", tenant, err)
	}
	return id
}

// receiver is an endpoint that records what it is sent and answers 204.
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []received
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: b})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

type deliveryPage struct {
	Deliveries []struct {
		ID        int64  `json:"id"`
		EventID   string `json:"event_id"`
		EventType string `json:"event_type"`
		Attempts  []struct {
			N          int    `json:"n"`
			StatusCode int    `json:"status_code"`
			Error      string `json:"error"`
		} `json:"attempts"`
		LastStatus    int        `json:"last_status"`
		NextAttemptAt *time.Time `json:"next_attempt_at"`
		DeliveredAt   *time.Time `json:"delivered_at"`
	} `json:"deliveries"`
	NextCursor *string `json:"next_cursor"`
}

// deliveries polls the delivery log of webhook id until done accepts it (at most 15s).
func (e *env) deliveries(key, id string, done func(deliveryPage) bool) deliveryPage {
	e.t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for {
		r := e.do(key, "GET", "/v1/webhooks/"+id+"/deliveries", nil, nil)
		wantStatus(e.t, r, 200)
		var p deliveryPage
		if err := r.JSON(&p); err != nil {
			e.t.Fatal(err)
		}
		if p.NextCursor == nil {
			e.t.Fatalf("no next_cursor in %s", r.Body)
		}
		if done(p) {
			return p
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("delivery log of %s never got there: %s", id, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWebhooks registers webhooks through the API, makes an event happen, and follows its
// delivery: signed, logged, and a failing receiver logged with its next attempt. Then deletion.
func TestWebhooks(t *testing.T) {
	e := start(t, apitestOptions())
	admin, op := e.admin(), e.key(e.Tenant, auth.RoleOperator)
	rc := newReceiver(t)
	types := []string{integration.TypeMessageStatusChanged, integration.TypeClearCompleted, integration.TypeMessageStatusChanged}

	reg := e.do(admin, "POST", "/v1/webhooks", map[string]any{"url": rc.URL + "/in", "event_types": types}, nil)
	wantStatus(t, reg, 201)
	var created struct {
		ID         string    `json:"id"`
		Secret     string    `json:"secret"`
		URL        string    `json:"url"`
		EventTypes []string  `json:"event_types"`
		CreatedAt  time.Time `json:"created_at"`
	}
	if err := reg.JSON(&created); err != nil {
		t.Fatal(err)
	}
	if created.ID == "" || !strings.HasPrefix(created.Secret, "whsec_") || created.URL != rc.URL+"/in" || created.CreatedAt.IsZero() ||
		!slices.Equal(created.EventTypes, []string{integration.TypeMessageStatusChanged, integration.TypeClearCompleted}) {
		t.Fatalf("registered %s", reg.Body)
	}
	if cc := reg.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q on the secret", cc)
	}
	dead := e.do(admin, "POST", "/v1/webhooks", map[string]any{"url": deadURL, "event_types": []string{integration.TypeMessageStatusChanged}}, nil)
	wantStatus(t, dead, 201)
	deadID := str(dead.Map(), "id")

	// The list shows both, oldest first, and never a secret.
	list := e.do(admin, "GET", "/v1/webhooks", nil, nil)
	wantStatus(t, list, 200)
	var listed struct {
		Webhooks []struct {
			ID  string `json:"id"`
			URL string `json:"url"`
		} `json:"webhooks"`
	}
	if err := list.JSON(&listed); err != nil {
		t.Fatal(err)
	}
	if len(listed.Webhooks) != 2 || listed.Webhooks[0].ID != created.ID || listed.Webhooks[1].ID != deadID ||
		strings.Contains(string(list.Body), "whsec_") || strings.Contains(string(list.Body), "secret") {
		t.Fatalf("list %s", list.Body)
	}

	// An event after the registration reaches the receiver, signed with the secret shown once.
	conn, _ := e.register(op)
	m := e.do(op, "POST", "/v1/connections/"+conn+"/messages", map[string]any{"recipient": newPhone(), "text": "hook me"}, nil)
	wantStatus(t, m, 202)
	msgID := str(m.Map(), "message_id")
	e.sync()
	page := e.deliveries(admin, created.ID, func(p deliveryPage) bool { return len(p.Deliveries) > 0 && p.Deliveries[0].DeliveredAt != nil })
	d := page.Deliveries[0]
	if d.EventType != integration.TypeMessageStatusChanged || d.LastStatus != 204 || d.NextAttemptAt != nil ||
		len(d.Attempts) != 1 || d.Attempts[0].N != 1 || d.Attempts[0].StatusCode != 204 || *page.NextCursor != "" {
		t.Fatalf("delivery log %+v", page)
	}
	var match *received
	for _, got := range rc.received() {
		if got.header.Get(webhooks.HeaderEventID) == d.EventID {
			match = &got
		}
	}
	if match == nil {
		t.Fatalf("receiver never got event %s (got %d requests)", d.EventID, len(rc.received()))
	}
	if err := webhooks.Verify(created.Secret, match.header.Get(webhooks.HeaderSignature), match.body, time.Now(), time.Hour); err != nil {
		t.Fatalf("signature %q: %v", match.header.Get(webhooks.HeaderSignature), err)
	}
	var ev map[string]any
	if err := json.Unmarshal(match.body, &ev); err != nil || !strings.Contains(string(match.body), msgID) {
		t.Fatalf("delivered body %s (%v), want the event of message %s", match.body, err, msgID)
	}

	// The dead receiver's delivery is logged as failed, with its next attempt.
	page = e.deliveries(admin, deadID, func(p deliveryPage) bool { return len(p.Deliveries) > 0 && len(p.Deliveries[0].Attempts) > 0 })
	d = page.Deliveries[0]
	if d.DeliveredAt != nil || d.NextAttemptAt == nil || d.Attempts[0].StatusCode != 0 || d.Attempts[0].Error == "" {
		t.Fatalf("failed delivery log %+v", page)
	}

	// Cursors and unknown ids.
	wantProblem(t, e.do(admin, "GET", "/v1/webhooks/"+created.ID+"/deliveries?cursor=x", nil, nil), 400, httpapi.CodeInvalidRequest)
	wantProblem(t, e.do(admin, "GET", "/v1/webhooks/no-such-hook/deliveries", nil, nil), 404, httpapi.CodeNotFound)
	wantProblem(t, e.do(admin, "DELETE", "/v1/webhooks/no-such-hook", nil, nil), 404, httpapi.CodeNotFound)

	// Deletion: gone from the list, a second delete is 404, the log stays readable.
	del := e.do(admin, "DELETE", "/v1/webhooks/"+deadID, nil, nil)
	wantStatus(t, del, 204)
	if len(del.Body) != 0 {
		t.Fatalf("204 with body %q", del.Body)
	}
	wantProblem(t, e.do(admin, "DELETE", "/v1/webhooks/"+deadID, nil, nil), 404, httpapi.CodeNotFound)
	list = e.do(admin, "GET", "/v1/webhooks", nil, nil)
	if strings.Contains(string(list.Body), deadID) || !strings.Contains(string(list.Body), created.ID) {
		t.Fatalf("list after delete %s", list.Body)
	}
	e.deliveries(admin, deadID, func(p deliveryPage) bool { return len(p.Deliveries) == 1 })
}

// TestWebhookValidation holds each malformed registration to its status, code and field.
func TestWebhookValidation(t *testing.T) {
	e := start(t, apitestOptions())
	ok := []string{integration.TypeClearCompleted}
	for _, c := range []struct {
		name   string
		body   any
		header map[string]string
		status int
		code   string
		field  string
	}{
		{"no url", map[string]any{"event_types": ok}, nil, 422, httpapi.CodeInvalidWebhook, "url"},
		{"relative url", map[string]any{"url": "/hook", "event_types": ok}, nil, 422, httpapi.CodeInvalidWebhook, "url"},
		{"ftp url", map[string]any{"url": "ftp://example.com/x", "event_types": ok}, nil, 422, httpapi.CodeInvalidWebhook, "url"},
		{"long url", map[string]any{"url": "https://example.com/" + strings.Repeat("a", 2048), "event_types": ok}, nil, 422, httpapi.CodeInvalidWebhook, "url"},
		{"no types", map[string]any{"url": deadURL}, nil, 422, httpapi.CodeInvalidWebhook, "event_types"},
		{"empty types", map[string]any{"url": deadURL, "event_types": []string{}}, nil, 422, httpapi.CodeInvalidWebhook, "event_types"},
		{"unknown type", map[string]any{"url": deadURL, "event_types": []string{"waqueue.nope.v1"}}, nil, 422, httpapi.CodeInvalidWebhook, "event_types"},
		{"types not a list", map[string]any{"url": deadURL, "event_types": "all"}, nil, 400, httpapi.CodeInvalidJSON, ""},
		{"unknown field", map[string]any{"url": deadURL, "event_types": ok, "secret": "mine"}, nil, 400, httpapi.CodeInvalidJSON, ""},
		{"empty body", "", nil, 400, httpapi.CodeInvalidJSON, ""},
		{"not JSON", "url=x", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, httpapi.CodeUnsupportedMediaType, ""},
	} {
		r := e.do(e.admin(), "POST", "/v1/webhooks", c.body, c.header)
		wantProblem(t, r, c.status, c.code)
		if got := str(r.Map(), "field"); got != c.field {
			t.Errorf("%s: field %q, want %q; body %s", c.name, got, c.field, r.Body)
		}
	}
	list := e.do(e.admin(), "GET", "/v1/webhooks", nil, nil)
	wantStatus(t, list, 200)
	if n := len(list.Map()["webhooks"].([]any)); n != 0 {
		t.Fatalf("refused registrations left %d webhooks: %s", n, list.Body)
	}
}

// TestWebhookRoutesNeedTheService: without Deps.Webhooks the routes do not exist (404 from the
// unknown-route handler), and the other routes are served as before.
func TestWebhookRoutesNeedTheService(t *testing.T) {
	e := start(t, apitestOptions())
	n := e.Node
	h, err := httpapi.New(httpapi.Deps{
		Store: n.Events, DB: n.DB, Handlers: n.Handlers, Runner: n.Runner,
		Cards: n.Cards, Queue: n.Queue, Messages: n.Messages, Audit: n.Audit, Analytics: n.Analytics, Clears: n.ClearReports,
		Keys: n.Keys, Tokens: n.Tokens, Transport: n.Transport, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/webhooks", 404},
		{"POST", "/v1/webhooks", 404},
		{"GET", "/v1/webhooks/x/deliveries", 404},
		{"GET", "/v1/keys", 200},
	} {
		req, _ := http.NewRequestWithContext(e.ctx, c.method, srv.URL+c.path, strings.NewReader(`{"url":"http://x","event_types":["waqueue.clear.completed.v1"]}`))
		req.Header.Set("Authorization", "Bearer "+e.admin())
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s without Deps.Webhooks: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
	}
}

// TestWebhookRegistrationRefusesInternalAddresses: under the production policy (public
// addresses only) a registration of a loopback, private, link-local or metadata URL is 422
// invalid_webhook on field url, and nothing is registered.
func TestWebhookRegistrationRefusesInternalAddresses(t *testing.T) {
	e := start(t, apitest.Options{WebhookEgress: &webhooks.EgressConfig{}})
	ok := []string{integration.TypeClearCompleted}
	for _, u := range []string{deadURL, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/",
		"http://[fe80::1]/", "http://100.64.0.1/", "http://2130706433/"} {
		r := e.do(e.admin(), "POST", "/v1/webhooks", map[string]any{"url": u, "event_types": ok}, nil)
		wantProblem(t, r, 422, httpapi.CodeInvalidWebhook)
		if got := str(r.Map(), "field"); got != "url" {
			t.Errorf("%s: field %q, want url; body %s", u, got, r.Body)
		}
	}
	list := e.do(e.admin(), "GET", "/v1/webhooks", nil, nil)
	wantStatus(t, list, 200)
	if n := len(list.Map()["webhooks"].([]any)); n != 0 {
		t.Fatalf("refused registrations left %d webhooks: %s", n, list.Body)
	}
}

// TestWebhookDeliveryIDsAreTheTenants (G9): a delivery's id and the log's cursor are numbers
// within the webhook — tenant-a's deliveries, interleaved with another tenant's, are 1..n with
// no gap for the other's — never the table's id, which counts every tenant's deliveries. The
// log pages newest first by them; a malformed cursor is 400 invalid_request.
func TestWebhookDeliveryIDsAreTheTenants(t *testing.T) {
	eachEngine(t, apitestOptions(), func(t *testing.T, e *env) {
		rc := newReceiver(t)
		hooks := map[string]string{}
		for _, tenant := range []string{e.Tenant, otherTenant} {
			r := e.do(e.key(tenant, auth.RoleAdmin), "POST", "/v1/webhooks",
				map[string]any{"url": rc.URL, "event_types": []string{integration.TypeMessageStatusChanged}}, nil)
			wantStatus(t, r, 201)
			hooks[tenant] = str(r.Map(), "id")
		}
		// Unpaired connections: each message stays queued, one delivery per message.
		opA, opB := e.key(e.Tenant, auth.RoleOperator), e.key(otherTenant, auth.RoleOperator)
		connA, _ := e.register(opA)
		connB, _ := e.register(opB)
		send := func(key, conn string) string {
			m := e.do(key, "POST", "/v1/connections/"+conn+"/messages", map[string]any{"recipient": newPhone(), "text": "count me"}, nil)
			wantStatus(t, m, 202)
			return m.Header.Get(httpapi.HeaderPosition)
		}
		const n = webhooks.DefaultPageSize + 5
		others, last := 0, ""
		for i := range n {
			send(opA, connA)
			for range i%2 + 1 {
				last = send(opB, connB)
				others++
			}
		}
		pos, ok := httpapi.ParsePosition(last)
		if !ok {
			t.Fatalf("position %q", last)
		}
		if err := e.Runner.WaitFor(e.ctx, []string{webhooks.OutboxName}, pos); err != nil {
			t.Fatal(err)
		}

		for tenant, want := range map[string]int{e.Tenant: n, otherTenant: others} {
			var ids []int64
			var cursors []string
			for cursor := ""; ; {
				r := e.do(e.key(tenant, auth.RoleAdmin), "GET", "/v1/webhooks/"+hooks[tenant]+"/deliveries?cursor="+cursor, nil, nil)
				wantStatus(t, r, 200)
				var p deliveryPage
				if err := r.JSON(&p); err != nil || p.NextCursor == nil {
					t.Fatalf("page %s (%v)", r.Body, err)
				}
				for _, d := range p.Deliveries {
					ids = append(ids, d.ID)
				}
				if *p.NextCursor == "" {
					break
				}
				cursor = *p.NextCursor
				cursors = append(cursors, cursor)
			}
			if len(ids) != want || ids[0] != int64(want) || ids[len(ids)-1] != 1 {
				t.Fatalf("%s's delivery ids %v, want %d down to 1", tenant, ids, want)
			}
			for i := range ids {
				if ids[i] != int64(want-i) {
					t.Fatalf("%s's delivery ids %v, want %d down to 1", tenant, ids, want)
				}
			}
			if wantCursor := strconv.Itoa(want - webhooks.DefaultPageSize + 1); len(cursors) != 1 || cursors[0] != wantCursor {
				t.Fatalf("%s's cursors %v, want [%s] (the first page's last id)", tenant, cursors, wantCursor)
			}
		}
		for _, bad := range []string{"x", "0", "-1", "1e3"} {
			wantProblem(t, e.do(e.admin(), "GET", "/v1/webhooks/"+hooks[e.Tenant]+"/deliveries?cursor="+bad, nil, nil), 400, httpapi.CodeInvalidRequest)
		}
	})
}
