package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/console"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cluster is two console nodes on one read-model database: a and b are their base URLs, srv
// the server under a (its keys, store and database).
type cluster struct {
	srv  *apitest.Server
	a, b string
}

// twoNodes starts the console on two nodes sharing one database. On PostgreSQL they are two
// complete servers (apitest) on the same database, as `waqueue serve` runs behind a load
// balancer; on SQLite (one process owns the file) b is a second Console instance of the same
// process on the same database, which shares no memory with a's.
func twoNodes(t *testing.T, engine string, now func() time.Time) (*cluster, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	t.Cleanup(cancel)
	if engine == "postgres" {
		db := pgtest.URL(t)
		a := apitest.Start(t, apitest.Options{DB: db, Now: now})
		b := apitest.Start(t, apitest.Options{DB: db, Now: now})
		return &cluster{srv: a, a: a.URL, b: b.URL}, ctx
	}
	a := apitest.Start(t, apitest.Options{Now: now})
	return &cluster{srv: a, a: a.URL, b: consoleNode(t, a, now)}, ctx
}

// consoleNode serves a new Console on srv's database and read models and returns its URL.
func consoleNode(t *testing.T, srv *apitest.Server, now func() time.Time) string {
	t.Helper()
	c, err := console.New(console.Deps{Store: srv.Store, DB: srv.DB, Handlers: srv.Handlers, Runner: srv.Runner,
		Cards: srv.Cards, Queue: srv.Queue, Messages: srv.Messages, Audit: srv.Audit, Analytics: srv.Analytics,
		Clears: srv.ClearReports, Keys: srv.Keys, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(c)
	t.Cleanup(hs.Close)
	t.Cleanup(c.Close)
	return hs.URL
}

// on is b's browser (its cookies) pointed at another node. Cookies ignore the port, so both
// nodes on 127.0.0.1 get the same session cookie, as behind a load balancer.
func (b *browser) on(base string) *browser { return &browser{t: b.t, base: base, c: b.c} }

// sessionID is the session cookie b holds.
func (b *browser) sessionID() string {
	b.t.Helper()
	u, _ := url.Parse(b.base + "/console/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "waqueue_session" {
			return c.Value
		}
	}
	b.t.Fatal("no session cookie")
	return ""
}

func signedOut(p page) bool {
	return p.status == http.StatusSeeOther && strings.HasPrefix(p.header.Get("Location"), "/console/signin")
}

func countSessions(t *testing.T, srv *apitest.Server, where string, args ...any) int {
	t.Helper()
	var n int
	if err := srv.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM console_sessions WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func hexSHA256(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var engines = []string{"sqlite", "postgres"}

// TestSessionSharedByNodes: a session opened on one node is served by the other (same user,
// same CSRF token, its one-time message shown once, on whichever node asks first); signing out
// on one node ends it on both; another tenant's session sees nothing of the first tenant's.
func TestSessionSharedByNodes(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			cl, ctx := twoNodes(t, engine, nil)
			register(t, ctx, cl.srv, "shop-1", "+491701234567")
			created, err := cl.srv.Keys.Create(ctx, cl.srv.Tenant, auth.RoleOperator, "Olga", "test")
			if err != nil {
				t.Fatal(err)
			}
			a := newBrowser(t, cl.a)
			csrf := a.signIn(created.Secret)
			b := a.on(cl.b)
			p := b.do("GET", "/console/connections", nil, nil)
			if p.status != http.StatusOK || !strings.Contains(p.body, "Olga") || !strings.Contains(p.body, "shop-1") {
				t.Fatalf("node b with node a's session: %d (Olga %v, shop-1 %v)", p.status, strings.Contains(p.body, "Olga"), strings.Contains(p.body, "shop-1"))
			}
			if got := csrfOf(t, p); got != csrf {
				t.Fatalf("node b's CSRF token %q differs from node a's %q", got, csrf)
			}
			// An action on a leaves its message for the next page, shown by b, once.
			p = a.do("POST", "/console/connections/shop-1/hold", url.Values{"csrf": {csrf}, "note": {"lunch"}}, nil)
			if p.status != http.StatusSeeOther {
				t.Fatalf("hold on node a: %d %.300s", p.status, p.body)
			}
			if p = b.do("GET", "/console/connections/shop-1", nil, nil); !strings.Contains(p.body, "Queue held") {
				t.Fatalf("node b does not show the message of node a's action: %d", p.status)
			}
			if p = a.do("GET", "/console/connections/shop-1", nil, nil); p.status != http.StatusOK || strings.Contains(p.body, "Queue held: nothing") {
				t.Fatalf("the one-time message is shown twice (or the page fails: %d)", p.status)
			}

			// Another tenant's session, on b, sees nothing of this tenant.
			other, err := cl.srv.Key(ctx, "other-tenant", auth.RoleAdmin)
			if err != nil {
				t.Fatal(err)
			}
			o := newBrowser(t, cl.a)
			o.signIn(other)
			o = o.on(cl.b)
			if p := o.do("GET", "/console/connections", nil, nil); p.status != http.StatusOK || strings.Contains(p.body, "shop-1") {
				t.Fatalf("other tenant on node b: %d, lists shop-1 %v", p.status, strings.Contains(p.body, "shop-1"))
			}
			if p := o.do("GET", "/console/connections/shop-1", nil, nil); p.status != http.StatusNotFound {
				t.Fatalf("other tenant on node b, first tenant's connection: %d, want 404", p.status)
			}

			// Sign-out on b ends the session on a.
			if p := b.do("POST", "/console/signout", url.Values{"csrf": {csrf}}, nil); p.status != http.StatusSeeOther {
				t.Fatalf("sign-out on node b: %d", p.status)
			}
			if p := a.do("GET", "/console/connections", nil, nil); !signedOut(p) {
				t.Fatalf("node a after sign-out on node b: %d %q, want a redirect to sign-in", p.status, p.header.Get("Location"))
			}
		})
	}
}

// TestSessionSurvivesRestart: the node is stopped and started again on the same database; the
// browser's session goes on.
func TestSessionSurvivesRestart(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			opts := apitest.Options{Dir: t.TempDir()}
			if engine == "postgres" {
				opts.DB = pgtest.URL(t)
			}
			first := apitest.Start(t, opts)
			b := newBrowser(t, first.URL)
			csrf := b.signIn(first.AdminKey)
			first.Close()

			second := apitest.Start(t, opts)
			b = b.on(second.URL)
			p := b.do("GET", "/console/connections", nil, nil)
			if p.status != http.StatusOK {
				t.Fatalf("after a restart: %d %q, want the page", p.status, p.header.Get("Location"))
			}
			if got := csrfOf(t, p); got != csrf {
				t.Fatalf("CSRF token changed across the restart: %q, was %q", got, csrf)
			}
		})
	}
}

// TestSessionRowHoldsNoSecret: the stored row holds the session id's SHA-256 and the key's id;
// neither the session id, nor the key's secret, nor the CSRF token is stored anywhere in it.
func TestSessionRowHoldsNoSecret(t *testing.T) {
	srv, ctx := startServer(t, nil)
	created, err := srv.Keys.Create(ctx, srv.Tenant, auth.RoleOperator, "Olga", "test")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	csrf := b.signIn(created.Secret)
	id := b.sessionID()
	rows, err := srv.DB.QueryContext(ctx, `SELECT session_hash, tenant_id, key_id, csrf_key, created_at_us, expires_at_us, flash_tone, flash_text FROM console_sessions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		var hash, tenant, keyID, csrfKey, tone, text string
		var createdUS, expiresUS int64
		if err := rows.Scan(&hash, &tenant, &keyID, &csrfKey, &createdUS, &expiresUS, &tone, &text); err != nil {
			t.Fatal(err)
		}
		if hash != hexSHA256(id) || tenant != srv.Tenant || keyID != created.ID {
			t.Errorf("row (%s, %s, %s), want (sha256 of the session id, %s, %s)", hash, tenant, keyID, srv.Tenant, created.ID)
		}
		if d := time.Duration(expiresUS-createdUS) * time.Microsecond; d != 8*time.Hour {
			t.Errorf("session lasts %v, want 8h", d)
		}
		for _, col := range []string{hash, tenant, keyID, csrfKey, tone, text} {
			for name, secret := range map[string]string{"session id": id, "key secret": created.Secret, "CSRF token": csrf} {
				if strings.Contains(col, secret) {
					t.Errorf("the row holds the %s", name)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d session rows, want 1", n)
	}
}

// TestSessionKeyChangesAcrossNodes: what happens to the key takes effect on the other node at
// its next request — a role change, the tenant's suspension, and revocation, which deletes every
// session of the key (also one that made no request since).
func TestSessionKeyChangesAcrossNodes(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { testSessionKeyChangesAcrossNodes(t, engine) })
	}
}

func testSessionKeyChangesAcrossNodes(t *testing.T, engine string) {
	cl, ctx := twoNodes(t, engine, nil)
	register(t, ctx, cl.srv, "shop-1", "+491701234567")
	created, err := cl.srv.Keys.Create(ctx, cl.srv.Tenant, auth.RoleAdmin, "Olga", "test")
	if err != nil {
		t.Fatal(err)
	}
	a := newBrowser(t, cl.a)
	a.signIn(created.Secret)
	idle := newBrowser(t, cl.a) // a second session of the key, idle from now on
	idle.signIn(created.Secret)
	b := a.on(cl.b)
	if p := b.do("GET", "/console/connections/shop-1/clear", nil, nil); p.status != http.StatusOK {
		t.Fatalf("clear page as admin on node b: %d", p.status)
	}
	if _, err := cl.srv.Keys.ChangeRole(ctx, cl.srv.Tenant, created.ID, auth.RoleSender, "test"); err != nil {
		t.Fatal(err)
	}
	if p := b.do("GET", "/console/connections/shop-1/clear", nil, nil); p.status != http.StatusForbidden {
		t.Fatalf("clear page on node b after the role became sender: %d, want 403", p.status)
	}
	if _, err := cl.srv.Keys.SuspendTenant(ctx, cl.srv.Tenant, "unpaid", "test"); err != nil {
		t.Fatal(err)
	}
	if p := b.do("GET", "/console/connections", nil, nil); p.status != http.StatusForbidden || !strings.Contains(p.body, "suspended") {
		t.Fatalf("node b after suspension: %d, want 403 (tenant suspended)", p.status)
	}
	if _, err := cl.srv.Keys.ResumeTenant(ctx, cl.srv.Tenant, "paid", "test"); err != nil {
		t.Fatal(err)
	}
	if p := b.do("GET", "/console/connections", nil, nil); p.status != http.StatusOK {
		t.Fatalf("node b after resumption: %d, want 200", p.status)
	}
	if err := cl.srv.Keys.Revoke(ctx, cl.srv.Tenant, created.ID, "test", "left"); err != nil {
		t.Fatal(err)
	}
	if p := b.do("GET", "/console/connections", nil, nil); !signedOut(p) {
		t.Fatalf("node b after revocation: %d, want a redirect to sign-in", p.status)
	}
	if n := countSessions(t, cl.srv, "key_id = $1", created.ID); n != 0 {
		t.Fatalf("%d sessions of the revoked key remain, want 0", n)
	}
	if p := idle.do("GET", "/console/connections", nil, nil); !signedOut(p) {
		t.Fatalf("the idle session of the revoked key: %d, want a redirect to sign-in", p.status)
	}
}

// TestSessionRowPointedAtAnotherTenant: a row whose tenant does not own its key (a tampered
// row) authenticates nobody: the key is looked up within the row's tenant.
func TestSessionRowPointedAtAnotherTenant(t *testing.T) {
	srv, ctx := startServer(t, nil)
	register(t, ctx, srv, "shop-1", "+491701234567")
	b := newBrowser(t, srv.URL)
	b.signIn(srv.AdminKey)
	if _, err := srv.DB.ExecContext(ctx, `UPDATE console_sessions SET tenant_id = 'other-tenant'`); err != nil {
		t.Fatal(err)
	}
	if p := b.do("GET", "/console/connections", nil, nil); !signedOut(p) {
		t.Fatalf("a row of another tenant: %d, want a redirect to sign-in", p.status)
	}
}

// TestSessionExpiryAcrossNodes: a session expires after 8 hours on every node (its row is
// deleted when read so), and a sign-in sweeps the expired rows nobody reads any more.
func TestSessionExpiryAcrossNodes(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { testSessionExpiryAcrossNodes(t, engine) })
	}
}

func testSessionExpiryAcrossNodes(t *testing.T, engine string) {
	var offset atomic.Int64
	now := func() time.Time { return time.Now().UTC().Add(time.Duration(offset.Load())) }
	cl, _ := twoNodes(t, engine, now)
	read := newBrowser(t, cl.a)
	read.signIn(cl.srv.AdminKey)
	abandoned := newBrowser(t, cl.a)
	abandoned.signIn(cl.srv.AdminKey)
	gone, readHash := hexSHA256(abandoned.sessionID()), hexSHA256(read.sessionID())

	offset.Store(int64(8*time.Hour - time.Minute))
	if p := read.on(cl.b).do("GET", "/console/connections", nil, nil); p.status != http.StatusOK {
		t.Fatalf("node b before 8 hours: %d, want 200", p.status)
	}
	offset.Store(int64(8*time.Hour + time.Minute))
	if p := read.on(cl.b).do("GET", "/console/connections", nil, nil); !signedOut(p) {
		t.Fatalf("node b after 8 hours: %d, want a redirect to sign-in", p.status)
	}
	if n := countSessions(t, cl.srv, "session_hash = $1", readHash); n != 0 {
		t.Fatal("the expired session read is still stored")
	}
	if n := countSessions(t, cl.srv, "session_hash = $1", gone); n != 1 {
		t.Fatal("the abandoned session is gone before any sign-in swept")
	}
	fresh := newBrowser(t, cl.b)
	fresh.signIn(cl.srv.AdminKey)
	if n := countSessions(t, cl.srv, "session_hash = $1", gone); n != 0 {
		t.Fatal("a sign-in did not sweep the expired session")
	}
	if n := countSessions(t, cl.srv, "true"); n != 1 {
		t.Fatalf("%d sessions stored, want the fresh one only", n)
	}
}

// TestFlashShownOnceUnderConcurrentPages: an action's one-time message, read by many pages of
// the session at once on both nodes, is shown by exactly one of them.
func TestFlashShownOnceUnderConcurrentPages(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			cl, ctx := twoNodes(t, engine, nil)
			register(t, ctx, cl.srv, "shop-1", "+491701234567")
			a := newBrowser(t, cl.a)
			csrf := a.signIn(cl.srv.AdminKey)
			if p := a.do("POST", "/console/connections/shop-1/hold", url.Values{"csrf": {csrf}}, nil); p.status != http.StatusSeeOther {
				t.Fatalf("hold: %d", p.status)
			}
			const pages = 8
			id := a.sessionID()
			var shown, ok atomic.Int32
			var wg sync.WaitGroup
			for i := range pages {
				wg.Go(func() {
					node := cl.a
					if i%2 == 1 {
						node = cl.b
					}
					req, _ := http.NewRequestWithContext(ctx, "GET", node+"/console/connections/shop-1", nil)
					req.AddCookie(&http.Cookie{Name: "waqueue_session", Value: id})
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					defer resp.Body.Close()
					body, _ := io.ReadAll(resp.Body)
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
					}
					if strings.Contains(string(body), "Queue held: nothing") {
						shown.Add(1)
					}
				})
			}
			wg.Wait()
			if ok.Load() != pages || shown.Load() != 1 {
				t.Fatalf("%d of %d pages answered 200, %d showed the message; want all, and exactly one", ok.Load(), pages, shown.Load())
			}
		})
	}
}
