package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

// browser is a cookie-keeping HTTP client that does not follow redirects, so tests see them.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in the page (status %d): %.400s", p.status, p.body)
	}
	return m[1]
}

// signIn signs b in with key and returns the session's CSRF token.
func (b *browser) signIn(key string) string {
	b.t.Helper()
	p := b.do("GET", "/console/signin", nil, nil)
	if p.status != http.StatusOK {
		b.t.Fatalf("GET signin: %d", p.status)
	}
	p = b.do("POST", "/console/signin", url.Values{"csrf": {csrfOf(b.t, p)}, "key": {key}, "next": {"/console/connections"}}, nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/connections" {
		b.t.Fatalf("sign-in: %d %q: %.300s", p.status, p.header.Get("Location"), p.body)
	}
	p = b.do("GET", "/console/connections", nil, nil)
	if p.status != http.StatusOK {
		b.t.Fatalf("connections after sign-in: %d", p.status)
	}
	return csrfOf(b.t, p)
}

func startServer(t *testing.T, now func() time.Time) (*apitest.Server, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	t.Cleanup(cancel)
	srv := apitest.Start(t, apitest.Options{Now: now})
	return srv, ctx
}

// bootstrapShopAndOtherTenant registers the bootstrap tenant's shop-1 (+491701234567) and
// returns an admin key of the tenant "other-tenant", which has no connection yet.
func bootstrapShopAndOtherTenant(t *testing.T, ctx context.Context, srv *apitest.Server) string {
	t.Helper()
	register(t, ctx, srv, "shop-1", "+491701234567")
	key, err := srv.Key(ctx, "other-tenant", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func register(t *testing.T, ctx context.Context, srv *apitest.Server, id, phone string) {
	t.Helper()
	res, err := srv.Do(ctx, srv.AdminKey, "POST", "/v1/connections", map[string]any{"id": id, "phone": phone}, nil)
	if err != nil || res.Status != http.StatusCreated {
		t.Fatalf("register %s: %v %v %s", id, err, res.Status, res.Body)
	}
	// The API's commands answer once durable; the console reads the read models.
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSessionCookieAndHeaders: sign-in exchanges the key for an HttpOnly, SameSite=Strict
// session cookie scoped to /console/ (Secure behind TLS), and every page carries a strict CSP
// with no inline script or style.
func TestSessionCookieAndHeaders(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	b := newBrowser(t, srv.URL)
	p := b.do("GET", "/console/connections", nil, nil)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/console/signin") {
		t.Fatalf("signed out: %d %q, want a redirect to sign-in", p.status, p.header.Get("Location"))
	}
	p = b.do("GET", "/console/signin", nil, nil)
	p = b.do("POST", "/console/signin", url.Values{"csrf": {csrfOf(t, p)}, "key": {srv.AdminKey}}, map[string]string{"X-Forwarded-Proto": "https"})
	if p.status != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", p.status)
	}
	var session *http.Cookie
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		if c.Name == "waqueue_session" && c.Value != "" {
			session = c
		}
	}
	if session == nil {
		t.Fatalf("no session cookie: %v", p.header["Set-Cookie"])
	}
	if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/console/" || !session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console/, Secure behind TLS", session)
	}
	if strings.Contains(session.Value, srv.AdminKey) || strings.Contains(p.body, srv.AdminKey) {
		t.Fatal("the API key reached the browser")
	}
	b2 := newBrowser(t, srv.URL)
	b2.signIn(srv.AdminKey)
	p = b2.do("GET", "/console/connections", nil, nil)
	csp := p.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|style="|<style`).MatchString(p.body) {
		t.Error("a page has inline script or style")
	}
	if !strings.Contains(p.body, `id="card-shop-1"`) {
		t.Error("the connections page has no card for shop-1")
	}
	if !strings.Contains(p.body, `href="/docs"`) {
		t.Error("the console does not link the API reference (/docs)")
	}
}

// TestBadKeyIsRefused: a wrong key signs nobody in.
func TestBadKeyIsRefused(t *testing.T) {
	srv, _ := startServer(t, nil)
	b := newBrowser(t, srv.URL)
	p := b.do("GET", "/console/signin", nil, nil)
	p = b.do("POST", "/console/signin", url.Values{"csrf": {csrfOf(t, p)}, "key": {"wq_" + strings.Repeat("A", 43)}}, nil)
	if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "not valid") {
		t.Fatalf("bad key: %d", p.status)
	}
	// The sign-in form itself needs its token.
	p = b.do("POST", "/console/signin", url.Values{"key": {srv.AdminKey}}, nil)
	if p.status != http.StatusForbidden {
		t.Fatalf("sign-in without its token: %d, want 403", p.status)
	}
}

// TestPostWithoutCSRFIsRefused: a state-changing POST without the session's CSRF token, with a
// wrong one, or from another origin, is refused and changes nothing.
func TestPostWithoutCSRFIsRefused(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(srv.AdminKey)
	for name, tc := range map[string]struct {
		form   url.Values
		header map[string]string
	}{
		"no token":     {url.Values{"note": {"x"}}, nil},
		"wrong token":  {url.Values{"note": {"x"}, "csrf": {csrf + "x"}}, nil},
		"other origin": {url.Values{"note": {"x"}, "csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		p := b.do("POST", "/console/connections/shop-1/hold", tc.form, tc.header)
		if p.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, p.status)
		}
	}
	res, err := srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if err != nil || res.Map()["queue_status"] != "open" {
		t.Fatalf("a refused POST changed the queue: %v %s", err, res.Body)
	}
	// With the token it works.
	p := b.do("POST", "/console/connections/shop-1/hold", url.Values{"note": {"x"}, "csrf": {csrf}}, map[string]string{"Origin": srv.URL})
	if p.status != http.StatusSeeOther {
		t.Fatalf("hold with the token: %d %.300s", p.status, p.body)
	}
	res, _ = srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if res.Map()["queue_status"] != "held" {
		t.Fatalf("hold did not hold: %s", res.Body)
	}
}

// TestSenderCannotClear: a sender's console has no Clear Queue button, and its forged POST
// (valid session and CSRF token) is refused with 403; nothing is recorded.
func TestSenderCannotClear(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	key, err := srv.Key(ctx, srv.Tenant, auth.RoleSender)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(key)
	p := b.do("GET", "/console/connections", nil, nil)
	if strings.Contains(p.body, "Clear queue") || strings.Contains(p.body, "/clear\"") {
		t.Fatal("a sender's connections page shows a Clear Queue button")
	}
	p = b.do("GET", "/console/connections/shop-1", nil, nil)
	if p.status != http.StatusOK || strings.Contains(p.body, "Clear queue") || strings.Contains(p.body, "hold-btn") {
		t.Fatalf("a sender's connection page: %d, or shows edit actions", p.status)
	}
	p = b.do("POST", "/console/connections/shop-1/clear", url.Values{"csrf": {csrf}, "reason": {"forged"},
		"confirm": {"+491701234567"}, "scope": {"queue"}, "idempotency_key": {"forged-clear-1"}}, nil)
	if p.status != http.StatusForbidden {
		t.Fatalf("a sender's forged clear: %d, want 403", p.status)
	}
	if p = b.do("GET", "/console/connections/shop-1/clear", nil, nil); p.status != http.StatusForbidden {
		t.Fatalf("a sender's clear form: %d, want 403", p.status)
	}
	res, _ := srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if res.Map()["queue_status"] != "open" {
		t.Fatalf("the forged clear changed the queue: %s", res.Body)
	}
}

// TestRevokedKeyEndsSession: revoking the key ends its console sessions at their next request.
func TestRevokedKeyEndsSession(t *testing.T) {
	srv, ctx := startServer(t, nil)
	created, err := srv.Keys.Create(ctx, srv.Tenant, auth.RoleOperator, "console test", "test")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	b.signIn(created.Secret)
	if err := srv.Keys.Revoke(ctx, srv.Tenant, created.ID, "test", "left the company"); err != nil {
		t.Fatal(err)
	}
	p := b.do("GET", "/console/connections", nil, nil)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/console/signin") {
		t.Fatalf("after revocation: %d %q, want a redirect to sign-in", p.status, p.header.Get("Location"))
	}
	if p = b.do("GET", "/console/events", nil, map[string]string{"Accept": "text/event-stream"}); p.status != http.StatusUnauthorized {
		t.Fatalf("live stream after revocation: %d, want 401", p.status)
	}
}

// TestSessionExpiresAndSignOut: a session ends after its lifetime, and at sign-out.
func TestSessionExpiresAndSignOut(t *testing.T) {
	var offset atomic.Int64
	now := func() time.Time { return time.Now().UTC().Add(time.Duration(offset.Load())) }
	srv, _ := startServer(t, now)
	b := newBrowser(t, srv.URL)
	b.signIn(srv.AdminKey)
	offset.Store(int64(8*time.Hour + time.Minute))
	if p := b.do("GET", "/console/connections", nil, nil); p.status != http.StatusSeeOther {
		t.Fatalf("after 8 hours: %d, want a redirect to sign-in", p.status)
	}
	offset.Store(0)
	csrf := b.signIn(srv.AdminKey)
	if p := b.do("POST", "/console/signout", url.Values{"csrf": {csrf}}, nil); p.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", p.status)
	}
	if p := b.do("GET", "/console/connections", nil, nil); p.status != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d, want a redirect to sign-in", p.status)
	}
}

// TestTenantIsolation: another tenant's connection is not found in the console either.
func TestTenantIsolation(t *testing.T) {
	srv, ctx := startServer(t, nil)
	key := bootstrapShopAndOtherTenant(t, ctx, srv)
	b := newBrowser(t, srv.URL)
	b.signIn(key)
	if p := b.do("GET", "/console/connections", nil, nil); strings.Contains(p.body, "shop-1") {
		t.Fatal("another tenant's connection is listed")
	}
	for _, path := range []string{"/console/connections/shop-1", "/console/connections/shop-1/clear"} {
		if p := b.do("GET", path, nil, nil); p.status != http.StatusNotFound {
			t.Errorf("GET %s of another tenant: %d, want 404", path, p.status)
		}
	}
	// The other tenant's own shop-1 (connection ids are scoped to their tenant) is its own.
	res, err := srv.Do(ctx, key, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": "+491709999999"}, nil)
	if err != nil || res.Status != http.StatusCreated {
		t.Fatalf("other tenant's shop-1: %v %s", err, res.Body)
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/console/connections", "/console/connections/shop-1", "/console/connections/shop-1/clear"} {
		p := b.do("GET", path, nil, nil)
		if p.status != http.StatusOK || !strings.Contains(p.body, "491709999999") || strings.Contains(p.body, "491701234567") {
			t.Errorf("GET %s: %d (own phone %v, first tenant phone %v); want the other tenant's own shop-1 and nothing of the first tenant's", path, p.status, strings.Contains(p.body, "491709999999"), strings.Contains(p.body, "491701234567"))
		}
	}
}

// TestActionsOnAnotherTenantsConnection: every console page and form naming another tenant's
// connection answers 404, exactly as for a connection that exists nowhere, and changes nothing
// (G9). Before, hold and resume answered 500 (and logged an error) for both.
func TestActionsOnAnotherTenantsConnection(t *testing.T) {
	srv, ctx := startServer(t, nil)
	key := bootstrapShopAndOtherTenant(t, ctx, srv)
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(key)
	for _, rq := range []struct {
		method, path string
		form         url.Values
	}{
		{"GET", "/console/connections/%s", nil},
		{"GET", "/console/connections/%s/clear", nil},
		{"GET", "/console/connections/%s/pairing", nil},
		{"GET", "/console/connections/%s/clears/6f1c7d1e-4a5b-4c3d-8e9f-0a1b2c3d4e5f", nil},
		{"POST", "/console/connections/%s/hold", url.Values{"csrf": {csrf}, "note": {"forged"}}},
		{"POST", "/console/connections/%s/resume", url.Values{"csrf": {csrf}, "note": {"forged"}}},
		{"POST", "/console/connections/%s/clear", url.Values{"csrf": {csrf}, "reason": {"forged"}, "confirm": {"+491701234567"},
			"scope": {"queue"}, "idempotency_key": {"forged-clear-1"}}},
		{"POST", "/console/connections/%s/pairing/phone", url.Values{"csrf": {csrf}, "phone": {"+491701234567"}}},
	} {
		got := b.do(rq.method, strings.ReplaceAll(rq.path, "%s", "shop-1"), rq.form, nil)
		ghost := b.do(rq.method, strings.ReplaceAll(rq.path, "%s", "ghost-1"), rq.form, nil)
		if got.status != http.StatusNotFound || ghost.status != http.StatusNotFound ||
			got.body != strings.ReplaceAll(ghost.body, "ghost-1", "shop-1") {
			t.Errorf("%s %s: another tenant's connection %d, one that exists nowhere %d; want 404 alike: %.300s",
				rq.method, rq.path, got.status, ghost.status, got.body)
		}
	}
	res, err := srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if err != nil || res.Map()["queue_status"] != "open" || res.Map()["link_status"] != "unpaired" {
		t.Fatalf("the other tenant changed shop-1: %v %s", err, res.Body)
	}
}

// TestClearChecksOnServer: without the page's script the server still refuses a wrong phone
// number or a missing reason (422, the form again with the error, nothing recorded); the right
// number records the clear and leads to its report; the same form sent twice (its idempotency
// key) records one clear.
func TestClearChecksOnServer(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	for i := range 3 {
		res, err := srv.Do(ctx, srv.AdminKey, "POST", "/v1/connections/shop-1/messages", map[string]any{"recipient": "+49170000000" + strconv.Itoa(i), "text": "x"},
			map[string]string{"Idempotency-Key": "m" + strconv.Itoa(i)})
		if err != nil || res.Status != http.StatusAccepted {
			t.Fatalf("enqueue: %v %s", err, res.Body)
		}
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(srv.AdminKey)
	p := b.do("GET", "/console/connections/shop-1/clear", nil, nil)
	key := regexp.MustCompile(`name="idempotency_key" value="([^"]+)"`).FindStringSubmatch(p.body)
	if p.status != http.StatusOK || key == nil || !strings.Contains(p.body, `id="preview-total">3<`) {
		t.Fatalf("clear form: %d, preview or key missing: %.500s", p.status, p.body)
	}
	form := func(confirm, reason string) url.Values {
		return url.Values{"csrf": {csrf}, "idempotency_key": {key[1]}, "scope": {"queue"}, "confirm": {confirm}, "reason": {reason}, "then": {"hold"}}
	}
	bad := form("+49 170 1234567", "why")
	bad.Set("then", "explode")
	if p = b.do("POST", "/console/connections/shop-1/clear", bad, nil); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "after the clear") {
		t.Fatalf("unknown then: %d", p.status)
	}
	p = b.do("POST", "/console/connections/shop-1/clear", form("+491700000000", "why"), nil)
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "does not match") {
		t.Fatalf("wrong number: %d %.300s", p.status, p.body)
	}
	p = b.do("POST", "/console/connections/shop-1/clear", form("+49 170 1234567", ""), nil)
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "Say why") {
		t.Fatalf("no reason: %d", p.status)
	}
	res, _ := srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if res.Map()["queue_status"] != "open" {
		t.Fatalf("a refused clear changed the queue: %s", res.Body)
	}
	p = b.do("POST", "/console/connections/shop-1/clear", form("+49 170 1234567", "test"), nil)
	loc := p.header.Get("Location")
	if p.status != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/connections/shop-1/clears/") {
		t.Fatalf("clear: %d %q", p.status, loc)
	}
	again := b.do("POST", "/console/connections/shop-1/clear", form("+49 170 1234567", "test"), nil)
	if again.status != http.StatusSeeOther || again.header.Get("Location") != loc {
		t.Fatalf("the same form twice: %d %q, want the same clear %q", again.status, again.header.Get("Location"), loc)
	}
	for {
		p = b.do("GET", loc, nil, nil)
		if p.status != http.StatusOK {
			t.Fatalf("report page: %d", p.status)
		}
		if strings.Contains(p.body, `id="clear-report"`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the clear never completed")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.Contains(p.body, `id="report-purged">3<`) || !strings.Contains(p.body, `id="report-after">held`) {
		t.Fatalf("report does not say 3 purged and the queue held after: %.600s", p.body)
	}
	if err := srv.Sync(ctx); err != nil { // the report may come from the stream before the card has it
		t.Fatal(err)
	}
	res, _ = srv.Do(ctx, srv.AdminKey, "GET", "/v1/connections/shop-1", nil, nil)
	if res.Map()["queue_status"] != "held" {
		t.Fatalf("then=hold left the queue %v", res.Map()["queue_status"])
	}
	var cleared int
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	evs, _ := srv.Do(ctx, srv.AdminKey, "GET", "/v1/audit?connection=shop-1&type=ClearQueueRequested", nil, nil)
	var audit struct {
		Entries []any `json:"entries"`
	}
	_ = evs.JSON(&audit)
	cleared = len(audit.Entries)
	if cleared != 1 {
		t.Fatalf("%d clears recorded, want 1", cleared)
	}
}

// TestAuditAndAnalyticsPages: the audit trail filters, exports CSV and verifies; analytics
// shows its table; each page needs its right.
func TestAuditAndAnalyticsPages(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	register(t, ctx, srv, "shop-2", "+491701234568")
	if res, err := srv.Do(ctx, srv.AdminKey, "POST", "/v1/connections/shop-1/queue/hold", map[string]any{"note": "audit me"}, nil); err != nil || res.Status != 200 {
		t.Fatalf("hold: %v", err)
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(srv.AdminKey)
	p := b.do("GET", "/console/audit", nil, nil)
	if p.status != http.StatusOK || !strings.Contains(p.body, "Queue held") || !strings.Contains(p.body, "Connection registered") {
		t.Fatalf("audit page: %d", p.status)
	}
	p = b.do("GET", "/console/audit?type=QueueHeld", nil, nil)
	if !strings.Contains(p.body, "Queue held") || strings.Contains(p.body, "Connection registered") {
		t.Fatal("the type filter does not filter")
	}
	p = b.do("GET", "/console/audit?connection=shop-2", nil, nil)
	if strings.Contains(p.body, "Queue held") || !strings.Contains(p.body, "shop-2") {
		t.Fatal("the connection filter does not filter")
	}
	p = b.do("GET", "/console/audit/export.csv?connection=shop-1", nil, nil)
	if p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "text/csv") ||
		!strings.HasPrefix(p.body, "seq,at,event_type,") || !strings.Contains(p.body, "QueueHeld") || strings.Contains(p.body, "shop-2") {
		t.Fatalf("CSV export: %d %q %.300s", p.status, p.header.Get("Content-Type"), p.body)
	}
	p = b.do("POST", "/console/audit/verify", url.Values{"csrf": {csrf}}, nil)
	if p.status != http.StatusSeeOther {
		t.Fatalf("verify: %d", p.status)
	}
	if p = b.do("GET", "/console/audit", nil, nil); !strings.Contains(p.body, "The hash chain verifies") {
		t.Fatal("verify shows no result")
	}
	// An entry altered in the database: Verify says so, naming the entry.
	if _, err := srv.DB.SQL.ExecContext(ctx, `UPDATE audit_entries SET reason = 'nothing to see' WHERE tenant_id = $1 AND seq = 2`, srv.Tenant); err != nil {
		t.Fatal(err)
	}
	if p = b.do("POST", "/console/audit/verify", url.Values{"csrf": {csrf}}, nil); p.status != http.StatusSeeOther {
		t.Fatalf("verify: %d", p.status)
	}
	if p = b.do("GET", "/console/audit", nil, nil); !strings.Contains(p.body, "does NOT verify: entry 2") {
		t.Fatalf("verify of a tampered chain shows: %.200s", p.body[strings.Index(p.body, "<main"):])
	}
	if _, err := srv.DB.SQL.ExecContext(ctx, `UPDATE audit_entries SET reason = '' WHERE tenant_id = $1 AND seq = 2`, srv.Tenant); err != nil {
		t.Fatal(err)
	}
	// Paging: a page holds 50 entries; more than that shows a next page.
	for i := range 55 {
		register(t, ctx, srv, "bulk-"+strconv.Itoa(i), "+4917012300"+strconv.Itoa(10+i))
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p = b.do("GET", "/console/audit", nil, nil)
	next := regexp.MustCompile(`href="(/console/audit\?cursor=[^"]+)" rel="next"`).FindStringSubmatch(p.body)
	if next == nil {
		t.Fatal("no next page with more than 50 entries")
	}
	if p = b.do("GET", strings.ReplaceAll(next[1], "&amp;", "&"), nil, nil); p.status != http.StatusOK || !strings.Contains(p.body, "First page") {
		t.Fatalf("next page: %d", p.status)
	}
	if p = b.do("GET", "/console/analytics", nil, nil); p.status != http.StatusOK || !strings.Contains(p.body, `id="analytics-table"`) {
		t.Fatalf("analytics: %d", p.status)
	}
	// Rights: an operator has neither page (nor their links); an auditor has the audit only.
	op, _ := srv.Key(ctx, srv.Tenant, auth.RoleOperator)
	ob := newBrowser(t, srv.URL)
	ob.signIn(op)
	if p = ob.do("GET", "/console/connections", nil, nil); strings.Contains(p.body, `href="/console/audit"`) {
		t.Error("an operator sees the Audit link")
	}
	for _, path := range []string{"/console/audit", "/console/audit/export.csv", "/console/analytics"} {
		if p = ob.do("GET", path, nil, nil); p.status != http.StatusForbidden {
			t.Errorf("operator GET %s: %d, want 403", path, p.status)
		}
	}
	au, _ := srv.Key(ctx, srv.Tenant, auth.RoleAuditor)
	ab := newBrowser(t, srv.URL)
	ab.signIn(au)
	if p = ab.do("GET", "/console/audit", nil, nil); p.status != http.StatusOK {
		t.Errorf("auditor audit: %d", p.status)
	}
	if p = ab.do("GET", "/console/analytics", nil, nil); p.status != http.StatusForbidden {
		t.Errorf("auditor analytics: %d, want 403", p.status)
	}
}

// liveStream opens the console's live-update stream (GET /console/events) as b's session. It
// returns the channel of its events ("event: …\ndata: …", closed when the stream ends) and a
// next that waits for one (failing the test when ctx ends first).
func (b *browser) liveStream(ctx context.Context) (<-chan string, func() (string, bool)) {
	t := b.t
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/console/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 64)
	go func() {
		defer close(events)
		buf := make([]byte, 64<<10)
		var pending string
		for {
			n, err := resp.Body.Read(buf)
			pending += string(buf[:n])
			for {
				i := strings.Index(pending, "\n\n")
				if i < 0 {
					break
				}
				events <- pending[:i]
				pending = pending[i+2:]
			}
			if err != nil {
				return
			}
		}
	}()
	next := func() (string, bool) {
		select {
		case e, ok := <-events:
			return e, ok
		case <-ctx.Done():
			t.Fatal("no event from the live stream")
			return "", false
		}
	}
	return events, next
}

// TestRevocationEndsLiveStream: an open live-update stream ends with a "signedout" event once
// its key is revoked (checked again when the stream next has something to push, at most once
// a second, and at every heartbeat).
func TestRevocationEndsLiveStream(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	created, err := srv.Keys.Create(ctx, srv.Tenant, auth.RoleOperator, "streamer", "test")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	b.signIn(created.Secret)
	events, next := b.liveStream(ctx)
	for e, ok := next(); !strings.HasPrefix(e, "event: ready"); e, ok = next() {
		if !ok {
			t.Fatal("the stream ended before it was ready")
		}
		if strings.HasPrefix(e, "event: card") && !strings.Contains(e, `"id":"shop-1"`) {
			t.Fatalf("unexpected card event %q", e)
		}
	}
	if err := srv.Keys.Revoke(ctx, srv.Tenant, created.ID, "test", "revoked while watching"); err != nil {
		t.Fatal(err)
	}
	// Something to push: the stream checks the key again before pushing it.
	hold := true
	for {
		path := map[bool]string{true: "/v1/connections/shop-1/queue/hold", false: "/v1/connections/shop-1/queue/resume"}[hold]
		if _, err := srv.Do(ctx, srv.AdminKey, "POST", path, map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
		hold = !hold
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the stream ended without a signedout event")
			}
			// A card may still come within the second the stream trusts its last check.
			if strings.HasPrefix(e, "event: signedout") {
				if _, ok := <-events; ok {
					t.Fatal("the stream went on after signedout")
				}
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the revoked key's stream never ended")
		}
	}
}

// TestLiveStreamShowsNoOtherTenantsChanges: a change of another tenant's connection pushes
// nothing on a tenant's live stream, also when the tenant has a connection of the same id (ids
// are the tenant's own) and the other tenant is the bootstrap one, whose connection keys are the
// bare ids. Before, such a change re-pushed the tenant's own card of that id: the stream told
// when another tenant's connection of a guessed id existed and changed (G9).
func TestLiveStreamShowsNoOtherTenantsChanges(t *testing.T) {
	srv, ctx := startServer(t, nil)
	key := bootstrapShopAndOtherTenant(t, ctx, srv)
	for id, phone := range map[string]string{"shop-1": "+491709999991", "shop-2": "+491709999992"} {
		if res, err := srv.Do(ctx, key, "POST", "/v1/connections", map[string]any{"id": id, "phone": phone}, nil); err != nil || res.Status != http.StatusCreated {
			t.Fatalf("other tenant's %s: %v %s", id, err, res.Body)
		}
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	b.signIn(key)
	_, next := b.liveStream(ctx)
	for e, ok := next(); !strings.HasPrefix(e, "event: ready"); e, ok = next() {
		if !ok {
			t.Fatal("the stream ended before it was ready")
		}
	}
	do := func(k, path string) {
		t.Helper()
		if res, err := srv.Do(ctx, k, "POST", path, map[string]any{}, nil); err != nil || res.Status != http.StatusOK {
			t.Fatalf("POST %s: %v %s", path, err, res.Body)
		}
	}
	// The bootstrap tenant's shop-1 changes; then the watching tenant's own shop-2, twice. The
	// stream pushes the cards of one wake-up before it takes the next, so once shop-2's second
	// change is shown, whatever the first change made it push has been shown before.
	do(srv.AdminKey, "/v1/connections/shop-1/queue/hold")
	do(key, "/v1/connections/shop-2/queue/hold")
	var seen []string
	wait := func(queue string) {
		t.Helper()
		for {
			e, ok := next()
			if !ok {
				t.Fatalf("the stream ended; events: %q", seen)
			}
			seen = append(seen, e)
			if strings.Contains(e, `"id":"shop-2"`) && strings.Contains(e, `"queue":"`+queue+`"`) {
				return
			}
		}
	}
	wait("held")
	do(key, "/v1/connections/shop-2/queue/resume")
	wait("open")
	for _, e := range seen {
		if strings.Contains(e, `"id":"shop-1"`) {
			t.Errorf("the other tenant's change of its shop-1 pushed this tenant's shop-1: %q", e)
		}
	}
}

// TestMountedBesideTheAPI: the console answers HTML under /console/ only; the API keeps its own
// answers (problem+json) for everything else, so the API's route table stays the API's.
func TestMountedBesideTheAPI(t *testing.T) {
	srv, _ := startServer(t, nil)
	b := newBrowser(t, srv.URL)
	b.signIn(srv.AdminKey)
	p := b.do("GET", "/console/no-such-page", nil, nil)
	if p.status != http.StatusNotFound || !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
		t.Fatalf("console 404: %d %q", p.status, p.header.Get("Content-Type"))
	}
	p = b.do("GET", "/v1/no-such-route", nil, nil)
	if p.status != http.StatusNotFound || !strings.HasPrefix(p.header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("API 404: %d %q", p.status, p.header.Get("Content-Type"))
	}
	// The session cookie is no API credential.
	if p = b.do("GET", "/v1/connections", nil, nil); p.status != http.StatusUnauthorized {
		t.Fatalf("API with only a console session: %d, want 401", p.status)
	}
	if p = b.do("GET", "/console", nil, nil); p.status/100 != 3 || !strings.HasPrefix(p.header.Get("Location"), "/console/") {
		t.Fatalf("/console: %d %q", p.status, p.header.Get("Location"))
	}
}

// TestClearFormReusedForAnotherClear: a form whose clear was recorded, sent again for another
// scope (the back button), records nothing more and offers a fresh form.
func TestClearFormReusedForAnotherClear(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	res, err := srv.Do(ctx, srv.AdminKey, "POST", "/v1/connections/shop-1/broadcasts",
		map[string]any{"recipients": []string{"+4917000000001", "+4917000000002"}, "text": "x"}, map[string]string{"Idempotency-Key": "b1"})
	if err != nil || res.Status != http.StatusAccepted {
		t.Fatalf("broadcast: %v %s", err, res.Body)
	}
	bid, _ := res.Map()["broadcast_id"].(string)
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(srv.AdminKey)
	form := url.Values{"csrf": {csrf}, "idempotency_key": {"console-reused-key-1"}, "confirm": {"+491701234567"}, "reason": {"r"}, "scope": {bid}}
	if p := b.do("POST", "/console/connections/shop-1/clear", form, nil); p.status != http.StatusSeeOther {
		t.Fatalf("first clear: %d %.300s", p.status, p.body)
	}
	form.Set("scope", "queue")
	p := b.do("POST", "/console/connections/shop-1/clear", form, nil)
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "already used") || strings.Contains(p.body, "console-reused-key-1") {
		t.Fatalf("the same form for another clear: %d (want 422 with a fresh key) %.300s", p.status, p.body)
	}
}

// TestClearProgressOfAnotherTenant: a clear in progress of a tenant other than the default one
// (its connection stream is named by its tenant-scoped key) shows its progress, then its report.
func TestClearProgressOfAnotherTenant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	defer cancel()
	srv := apitest.Start(t, apitest.Options{ManualClears: true})
	key, err := srv.Key(ctx, "acme", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := srv.Do(ctx, key, "POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": "+491701234567"}, nil); err != nil || res.Status != http.StatusCreated {
		t.Fatalf("register: %v", err)
	}
	if res, err := srv.Do(ctx, key, "POST", "/v1/connections/shop-1/messages", map[string]any{"recipient": "+4917000000001", "text": "x"},
		map[string]string{"Idempotency-Key": "m1"}); err != nil || res.Status != http.StatusAccepted {
		t.Fatalf("enqueue: %v", err)
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(key)
	p := b.do("POST", "/console/connections/shop-1/clear", url.Values{"csrf": {csrf}, "idempotency_key": {"console-acme-1"},
		"scope": {"queue"}, "confirm": {"+491701234567"}, "reason": {"r"}, "then": {"keep"}}, nil)
	loc := p.header.Get("Location")
	if p.status != http.StatusSeeOther {
		t.Fatalf("clear: %d %.300s", p.status, p.body)
	}
	if p = b.do("GET", loc, nil, nil); p.status != http.StatusOK || !strings.Contains(p.body, `id="clear-progress"`) {
		t.Fatalf("progress page of acme's clear: %d", p.status)
	}
	if _, err := srv.Clears.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		if p = b.do("GET", loc, nil, nil); strings.Contains(p.body, `id="report-purged">1<`) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("acme's report never showed: %d", p.status)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestSuspendedTenant: a suspended tenant's key cannot sign in (403), and a session opened
// before the suspension is refused (403) until the tenant is resumed.
func TestSuspendedTenant(t *testing.T) {
	srv, ctx := startServer(t, nil)
	if _, err := srv.Keys.CreateTenant(ctx, "acme", "Acme", "test"); err != nil {
		t.Fatal(err)
	}
	k, err := srv.Keys.Create(ctx, "acme", auth.RoleAdmin, "acme admin", "test")
	if err != nil {
		t.Fatal(err)
	}
	open := newBrowser(t, srv.URL)
	open.signIn(k.Secret)
	if _, err := srv.Keys.SuspendTenant(ctx, "acme", "unpaid", "test"); err != nil {
		t.Fatal(err)
	}
	if p := open.do("GET", "/console/connections", nil, nil); p.status != http.StatusForbidden || !strings.Contains(p.body, "suspended") {
		t.Fatalf("a session of a suspended tenant: %d %.300s", p.status, p.body)
	}
	b := newBrowser(t, srv.URL)
	p := b.do("GET", "/console/signin", nil, nil)
	p = b.do("POST", "/console/signin", url.Values{"csrf": {csrfOf(t, p)}, "key": {k.Secret}}, nil)
	if p.status != http.StatusForbidden || !strings.Contains(p.body, "suspended") {
		t.Fatalf("sign-in with a suspended tenant's key: %d %.300s", p.status, p.body)
	}
	if _, err := srv.Keys.ResumeTenant(ctx, "acme", "", "test"); err != nil {
		t.Fatal(err)
	}
	if p := open.do("GET", "/console/connections", nil, nil); p.status != http.StatusOK {
		t.Fatalf("the session after the resume: %d", p.status)
	}
}
