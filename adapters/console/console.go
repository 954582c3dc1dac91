// Package console is waqueue's operator console: server-rendered HTML pages under /console/,
// served by the same binary and port as the API, over the same command handlers and read models
// (no second path to the domain).
//
// Pages are html/template files and a little hand-written CSS and JavaScript, all embedded
// with go:embed; nothing is fetched from elsewhere. Every page works without its script (the
// script adds the confirmation dialog, live card updates by server-sent events and countdowns).
//
// Security model:
//   - Sign-in exchanges an API key for a session: the cookie carries a random session id
//     (HttpOnly, SameSite=Strict, Path=/console/, Secure behind TLS). Sessions are rows of the
//     shared read-model database (Migrate), so any node serves any session and a restart keeps
//     them; a row holds the id's SHA-256, the tenant and the key's id, never the id or the
//     key's secret. Sessions expire (Deps.SessionTTL) and end at sign-out.
//   - Every request looks the session's key up again by id (apikeys.Keys.Get, Keys.Active), so
//     revoking a key ends its sessions at their next request, and a role change or a tenant's
//     suspension takes effect at once, on every node. The live-update stream re-checks before
//     it pushes (at most once a second) and at every heartbeat.
//   - Every state-changing form carries the session's CSRF token (sign-in: a token bound to a
//     short-lived cookie); a POST without it, or from another origin, is refused (403).
//   - Rights are checked on the server for every page and action, exactly as the API checks
//     them: a sender's forged Clear Queue POST is refused with 403.
//   - A strict Content-Security-Policy (scripts, styles and connections from this origin only,
//     no inline script or style, no framing).
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/pairing"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections"
)

// Prefix is the path the console is mounted under.
const Prefix = "/console/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps are what the console stands on: the API's own handlers and read models.
type Deps struct {
	// Store is the event store: a clear the clears read model does not show yet (just
	// requested, just done) is read from the connection's stream. Required.
	Store eventstore.Store
	// DB is the read-model database; it also holds the sessions (Migrate must have run on it).
	// Required.
	DB *projections.DB
	// Handlers are the command handlers (RequestClear, HoldQueue, ResumeQueue are used).
	Handlers commands.Handlers
	// Runner lets an action wait until the read models show it (read your writes). Required.
	Runner *projections.Runner
	// The read models. Required.
	Cards *projections.Cards
	Queue *projections.Queue
	// Messages gives each broadcast's sent and failed counts on the connection page
	// (optional: without it they show as unknown).
	Messages  *projections.MessageStatus
	Audit     *projections.Audit
	Analytics *projections.Analytics
	// Clears is the clears read model (a connection's clears, a clear's report). Required.
	Clears *projections.Clears
	// Keys authenticates the API key at sign-in and looks the session's key up by id on every
	// request. Required.
	Keys *apikeys.Keys
	// Transport pairs connections (QR code, phone code). Optional: without it there is no
	// pairing page.
	Transport transport.Transport
	// Pairing runs and shares the QR pairings (the node's one, shared with the API). Nil: New
	// makes one on DB and Transport.
	Pairing *pairing.Manager
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// SessionTTL is how long a session lasts after sign-in. Default 8 hours.
	SessionTTL time.Duration
	// Heartbeat is how often an idle live-update stream is pinged (and its key re-checked).
	// Default 15 seconds.
	Heartbeat time.Duration
}

// Validate reports every missing required dependency.
func (d Deps) Validate() error {
	var errs []error
	req := func(ok bool, name string) {
		if !ok {
			errs = append(errs, errors.New("console: Deps."+name+" is required"))
		}
	}
	req(d.Store != nil, "Store")
	req(d.DB != nil && d.DB.SQL != nil, "DB")
	req(d.Runner != nil, "Runner")
	req(d.Cards != nil, "Cards")
	req(d.Queue != nil, "Queue")
	req(d.Audit != nil, "Audit")
	req(d.Analytics != nil, "Analytics")
	req(d.Clears != nil, "Clears")
	req(d.Keys != nil, "Keys")
	req(d.Handlers.RequestClear != nil, "Handlers.RequestClear")
	req(d.Handlers.HoldQueue != nil, "Handlers.HoldQueue")
	req(d.Handlers.ResumeQueue != nil, "Handlers.ResumeQueue")
	return errors.Join(errs...)
}

// Console is the console's HTTP handler. It is safe for concurrent use.
type Console struct {
	d        Deps
	log      *slog.Logger
	sessions *sessions
	hub      *hub
	pages    map[string]*template.Template
	cardTpl  *template.Template
	mux      *http.ServeMux
	done     chan struct{}
	closeMu  sync.Once
	namesMu  sync.Mutex
	names    map[string]map[string]string // tenant -> key id -> label
}

// New returns the console, or an error naming every missing dependency. Wire Cards changes to
// it with Cards.OnCommit(c.Notify) so that cards update live.
func New(d Deps) (*Console, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.SessionTTL <= 0 {
		d.SessionTTL = 8 * time.Hour
	}
	if d.Heartbeat <= 0 {
		d.Heartbeat = 15 * time.Second
	}
	if d.Pairing == nil {
		p, err := pairing.New(pairing.Config{DB: d.DB, Transport: d.Transport, Timeout: pairingTimeout, Logger: d.Logger})
		if err != nil {
			return nil, err
		}
		d.Pairing = p
	}
	c := &Console{d: d, log: d.Logger, sessions: newSessions(d.DB, d.Now, d.SessionTTL), hub: newHub(), done: make(chan struct{})}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// Notify tells the console that the cards of the connections with keys connKeys
// (connection.Key, of any tenant) changed (projections.Cards.OnCommit). It never blocks.
func (c *Console) Notify(connKeys []string) { c.hub.publish(connKeys) }

// Close ends every live-update stream (call it when the HTTP server shuts down, so that
// Shutdown need not wait for them). It is idempotent.
func (c *Console) Close() { c.closeMu.Do(func() { close(c.done) }) }

// ServeHTTP implements http.Handler: security headers on every answer, then the page.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	c.mux.ServeHTTP(sw, r)
	if strings.HasPrefix(r.URL.Path, "/console/static/") {
		return
	}
	level := slog.LevelInfo
	if sw.status >= 500 {
		level = slog.LevelError
	}
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", sw.status), slog.Duration("duration", time.Since(start))}
	if u := sw.user; u != nil {
		attrs = append(attrs, slog.String("tenant", u.principal.TenantID), slog.String("principal", u.principal.ID))
	}
	c.log.LogAttrs(r.Context(), level, "console request", attrs...)
}

// statusWriter records the status written and who asked, for the request's log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	user   *user
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the live stream flushes).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix("/console/static/", http.FileServerFS(static))
	m.Handle("GET /console/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		fileServer.ServeHTTP(w, r)
	}))
	m.HandleFunc("GET /console/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/connections", http.StatusSeeOther)
	})
	m.HandleFunc("GET /console/signin", c.signInPage)
	m.HandleFunc("POST /console/signin", c.signIn)
	m.Handle("POST /console/signout", c.post(auth.Right{}, c.signOut))

	m.Handle("GET /console/connections", c.page(auth.ConnectionView, c.connectionsPage))
	m.Handle("GET /console/connections/{id}", c.page(auth.ConnectionView, c.connectionPage))
	m.Handle("GET /console/connections/{id}/clear", c.page(auth.ConnectionEdit, c.clearPage))
	m.Handle("POST /console/connections/{id}/clear", c.post(auth.ConnectionEdit, c.clear))
	m.Handle("GET /console/connections/{id}/clears/{clear_id}", c.page(auth.ConnectionView, c.clearReportPage))
	m.Handle("POST /console/connections/{id}/hold", c.post(auth.ConnectionEdit, c.hold))
	m.Handle("POST /console/connections/{id}/resume", c.post(auth.ConnectionEdit, c.resume))
	m.Handle("GET /console/connections/{id}/pairing", c.page(auth.ConnectionEdit, c.pairingPage))
	m.Handle("POST /console/connections/{id}/pairing/phone", c.post(auth.ConnectionEdit, c.pairPhone))
	m.Handle("GET /console/audit", c.page(auth.AuditRead, c.auditPage))
	m.Handle("GET /console/audit/export.csv", c.page(auth.AuditRead, c.auditExport))
	m.Handle("POST /console/audit/verify", c.post(auth.AuditRead, c.auditVerify))
	m.Handle("GET /console/analytics", c.page(auth.AnalyticsRead, c.analyticsPage))
	m.Handle("GET /console/events", c.page(auth.ConnectionView, c.events))
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, http.StatusNotFound, "Page not found", "There is no such page in the console.")
	})
	c.mux = m
}

// actor names an actor for people: the label of an API key of tenant ("operator Alice"), else
// the actor as recorded ("system", "bootstrap", …). Labels are cached; an unknown key id
// reloads the tenant's list once.
func (c *Console) actor(ctx context.Context, tenant, id string) string {
	c.namesMu.Lock()
	defer c.namesMu.Unlock()
	if c.names == nil {
		c.names = map[string]map[string]string{}
	}
	label, ok := c.names[tenant][id]
	if !ok && strings.HasPrefix(id, "key_") {
		if keys, err := c.d.Keys.List(ctx, tenant); err == nil {
			m := map[string]string{}
			for _, k := range keys {
				m[k.ID] = k.Label
			}
			c.names[tenant] = m
			label, ok = m[id]
		}
	}
	if !ok || label == "" {
		return id
	}
	return label
}

// settle waits briefly for the card and queue read models to include pos (read your writes).
func (c *Console) settle(ctx context.Context, pos eventstore.Position) {
	if pos.IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = c.d.Runner.WaitFor(ctx, []string{projections.CardsName, projections.QueueName}, pos)
}
