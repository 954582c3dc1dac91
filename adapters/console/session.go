package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections"
)

const (
	sessionCookie = "waqueue_session"
	signinCookie  = "waqueue_signin"
)

// session is a signed-in browser, as its row in console_sessions holds it. The browser holds
// only the session id; the row holds its SHA-256, the tenant and the id of the API key signed
// in with (never the key's secret), and the secret the session's CSRF token is derived from.
type session struct {
	tenantID string
	keyID    string
	csrfKey  []byte
	expires  time.Time
	flash    *flash
}

// flash is a one-time message shown on the next page (the outcome of an action).
type flash struct {
	Tone string // ok or bad
	Text string
}

// sweepBatch bounds how many expired sessions one sign-in deletes.
const sweepBatch = 100

// Migrate creates the console's session table if it does not exist, in the read-model
// database (PostgreSQL or SQLite) every node shares: any node serves any session, and a restart
// keeps them. It is safe to run at every start.
func Migrate(ctx context.Context, db *projections.DB) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS console_sessions (
			session_hash TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			key_id TEXT NOT NULL,
			csrf_key TEXT NOT NULL,
			created_at_us BIGINT NOT NULL,
			expires_at_us BIGINT NOT NULL,
			flash_tone TEXT NOT NULL DEFAULT '',
			flash_text TEXT NOT NULL DEFAULT '')`,
		`CREATE INDEX IF NOT EXISTS console_sessions_key ON console_sessions (tenant_id, key_id)`,
		`CREATE INDEX IF NOT EXISTS console_sessions_expires ON console_sessions (expires_at_us)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("console: migrate: %w", err)
		}
	}
	return nil
}

// sessions is the session store: rows of console_sessions in the shared read-model database.
// It holds nothing in memory, so every node sees every session.
type sessions struct {
	db  *projections.DB
	now func() time.Time
	ttl time.Duration
}

func newSessions(db *projections.DB, now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{db: db, now: now, ttl: ttl}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashID is the stored form of a session id: hex SHA-256. A reader of the table cannot
// present it as a cookie.
func hashID(id string) string {
	s := sha256.Sum256([]byte(id))
	return hex.EncodeToString(s[:])
}

// csrfToken is the session's CSRF token: HMAC-SHA256 of the session id under the session's own
// random key. It needs the session id, which is stored nowhere.
func csrfToken(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// open starts a session of key keyID of tenantID and returns its id. It first deletes up to
// sweepBatch expired sessions (of any tenant).
func (s *sessions) open(ctx context.Context, tenantID, keyID string) (string, error) {
	now := s.now()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE session_hash IN
		(SELECT session_hash FROM console_sessions WHERE expires_at_us <= $1 LIMIT `+strconv.Itoa(sweepBatch)+`)`,
		now.UnixMicro()); err != nil {
		return "", fmt.Errorf("console: sweep sessions: %w", err)
	}
	id := randomToken()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO console_sessions
		(session_hash, tenant_id, key_id, csrf_key, created_at_us, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6)`,
		hashID(id), tenantID, keyID, randomToken(), now.UnixMicro(), now.Add(s.ttl).UnixMicro()); err != nil {
		return "", fmt.Errorf("console: open session: %w", err)
	}
	return id, nil
}

// get returns the live session of id; ok is false for an unknown or expired one (an expired
// one is deleted).
func (s *sessions) get(ctx context.Context, id string) (_ *session, ok bool, _ error) {
	var (
		ss        session
		csrfKey   string
		expiresUS int64
		tone      string
		text      string
	)
	err := s.db.QueryRowContext(ctx, `SELECT tenant_id, key_id, csrf_key, expires_at_us, flash_tone, flash_text
		FROM console_sessions WHERE session_hash = $1`, hashID(id)).Scan(&ss.tenantID, &ss.keyID, &csrfKey, &expiresUS, &tone, &text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("console: read session: %w", err)
	}
	ss.expires = time.UnixMicro(expiresUS)
	if !s.now().Before(ss.expires) {
		return nil, false, s.end(ctx, id)
	}
	ss.csrfKey = []byte(csrfKey)
	if text != "" {
		ss.flash = &flash{Tone: tone, Text: text}
	}
	return &ss, true, nil
}

// end deletes the session of id (sign-out, expiry).
func (s *sessions) end(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE session_hash = $1`, hashID(id)); err != nil {
		return fmt.Errorf("console: end session: %w", err)
	}
	return nil
}

// endKey ends every session of key keyID of tenantID (the key was found revoked or gone).
func (s *sessions) endKey(ctx context.Context, tenantID, keyID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE tenant_id = $1 AND key_id = $2`, tenantID, keyID); err != nil {
		return fmt.Errorf("console: end sessions of a key: %w", err)
	}
	return nil
}

// flash sets the session's one-time message (replacing any unshown one).
func (s *sessions) flash(ctx context.Context, id string, f flash) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE console_sessions SET flash_tone = $1, flash_text = $2 WHERE session_hash = $3`,
		f.Tone, f.Text, hashID(id)); err != nil {
		return fmt.Errorf("console: set flash: %w", err)
	}
	return nil
}

// popFlash returns the session's one-time message and clears it, or nil. Of concurrent pages
// of one session, one shows it: the clear is a compare-and-set on the message read.
func (s *sessions) popFlash(ctx context.Context, id string) *flash {
	var tone, text string
	err := s.db.QueryRowContext(ctx, `SELECT flash_tone, flash_text FROM console_sessions WHERE session_hash = $1`, hashID(id)).Scan(&tone, &text)
	if err != nil || text == "" {
		return nil
	}
	res, err := s.db.ExecContext(ctx, `UPDATE console_sessions SET flash_tone = '', flash_text = ''
		WHERE session_hash = $1 AND flash_tone = $2 AND flash_text = $3`, hashID(id), tone, text)
	if err != nil {
		return nil
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return nil
	}
	return &flash{Tone: tone, Text: text}
}

type ctxKey int

const keyUser ctxKey = iota

// user is the signed-in principal of a request.
type user struct {
	principal auth.Principal
	sessionID string
	csrf      string
	name      string
}

// ID is the signed-in key's id (the actor recorded for what the user does).
func (u *user) ID() string { return u.principal.ID }

// Role is the signed-in key's role.
func (u *user) Role() string { return u.principal.Role.String() }

// Name is the signed-in key's label (its id when it has none).
func (u *user) Name() string {
	if u.name != "" {
		return u.name
	}
	return u.principal.ID
}

func userOf(ctx context.Context) *user {
	u, _ := ctx.Value(keyUser).(*user)
	return u
}

func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)})
}

// authenticate returns the request's user: its session, whose API key is looked up again by
// id (apikeys.Keys.Get, Keys.Active) at every request, so that a revoked key, a changed role or
// a suspended tenant takes effect at once, on every node. A revoked (or unknown) key ends every
// session opened with it.
func (c *Console) authenticate(r *http.Request) (*user, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, commands.ErrUnauthenticated
	}
	ctx := r.Context()
	ss, ok, err := c.sessions.get(ctx, ck.Value)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, commands.ErrUnauthenticated
	}
	key, err := c.d.Keys.Get(ctx, ss.tenantID, ss.keyID)
	if errors.Is(err, apikeys.ErrNotFound) || err == nil && !key.RevokedAt.IsZero() {
		if err := c.sessions.endKey(ctx, ss.tenantID, ss.keyID); err != nil {
			c.log.ErrorContext(ctx, "console: end the sessions of a revoked key", "error", err)
		}
		return nil, commands.ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	if err := c.d.Keys.Active(ctx, key.TenantID); err != nil {
		return nil, err
	}
	p := auth.Principal{TenantID: key.TenantID, ID: key.ID, Role: key.Role}
	return &user{principal: p, sessionID: ck.Value, csrf: csrfToken(ss.csrfKey, ck.Value), name: key.Label}, nil
}

// setFlash sets the one-time message of the request's session (logged, not failed, when it
// cannot be stored: the action it reports is done).
func (c *Console) setFlash(r *http.Request, f flash) {
	if err := c.sessions.flash(r.Context(), userOf(r.Context()).sessionID, f); err != nil {
		c.log.ErrorContext(r.Context(), "console: flash", "error", err)
	}
}

// popFlash returns and clears the one-time message of the request's session.
func (c *Console) popFlash(r *http.Request) *flash {
	return c.sessions.popFlash(r.Context(), userOf(r.Context()).sessionID)
}

// page wraps a GET handler: a signed-in user holding right (zero: any signed-in user).
func (c *Console) page(right auth.Right, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return c.guard(right, false, h)
}

// post wraps a state-changing handler: same origin, the session's CSRF token, the right.
func (c *Console) post(right auth.Right, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return c.guard(right, true, h)
}

func (c *Console) guard(right auth.Right, state bool, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		u, err := c.authenticate(r)
		if errors.Is(err, apikeys.ErrTenantSuspended) {
			c.errorPage(w, r, http.StatusForbidden, "Tenant suspended",
				"Your tenant is suspended by the platform operator; its queues are held. Nothing can be done here until it is resumed.")
			return
		}
		if errors.Is(err, commands.ErrUnauthenticated) {
			if state || r.Header.Get("Accept") == "text/event-stream" {
				c.errorPage(w, r, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again.")
				return
			}
			http.Redirect(w, r, "/console/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if sw, ok := w.(*statusWriter); ok {
			sw.user = u // logged with the request, refused or not
		}
		if state {
			if err := r.ParseForm(); err != nil || !sameOrigin(r) ||
				subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(u.csrf)) != 1 {
				c.errorPage(w, r, http.StatusForbidden, "Request refused",
					"The form was not sent from this console page (missing or wrong security token). Reload the page and try again.")
				return
			}
		}
		if !right.IsZero() && !u.principal.Can(right) {
			c.errorPage(w, r, http.StatusForbidden, "Not allowed",
				"Your role ("+u.principal.Role.String()+") does not include "+right.String()+".")
			return
		}
		ctx := context.WithValue(r.Context(), keyUser, u)
		ctx = commands.WithPrincipal(ctx, u.principal)
		if err := h(w, r.WithContext(ctx)); err != nil {
			c.fail(w, r, err)
		}
	})
}

// sameOrigin refuses a request whose Origin (or, lacking it, Referer) names another origin.
// Browsers send Origin on every POST; its absence (a non-browser client) leaves the check to
// the CSRF token.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (c *Console) signInPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if _, err := c.authenticate(r); err == nil { // signed in already
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	tok := randomToken()
	c.setCookie(w, r, signinCookie, tok, 600)
	c.render(w, r, http.StatusOK, "signin", map[string]any{"Title": "Sign in", "CSRF": tok, "Next": safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a redirect target inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.Contains(next, "//") || strings.Contains(next, "\\") {
		return "/console/connections"
	}
	return next
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ck, _ := r.Cookie(signinCookie)
	if err := r.ParseForm(); err != nil || ck == nil || !sameOrigin(r) ||
		subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(ck.Value)) != 1 || ck.Value == "" {
		c.errorPage(w, r, http.StatusForbidden, "Request refused", "The sign-in form expired or was not sent from this page. Reload it and try again.")
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	next := safeNext(r.PostFormValue("next"))
	p, err := c.d.Keys.Authenticate(r.Context(), key)
	if err != nil {
		status, msg := http.StatusUnauthorized, "That API key is not valid (unknown, mistyped or revoked)."
		if errors.Is(err, apikeys.ErrTenantSuspended) {
			status, msg = http.StatusForbidden, "This key's tenant is suspended by the platform operator."
		} else if !errors.Is(err, apikeys.ErrInvalidKey) {
			status, msg = http.StatusServiceUnavailable, "The key could not be checked just now. Try again in a moment."
			c.log.ErrorContext(r.Context(), "console sign-in", "error", err)
		}
		tok := randomToken()
		c.setCookie(w, r, signinCookie, tok, 600)
		c.render(w, r, status, "signin", map[string]any{"Title": "Sign in", "CSRF": tok, "Next": next, "Error": msg})
		return
	}
	id, err := c.sessions.open(r.Context(), p.TenantID, p.ID)
	if err != nil {
		c.log.ErrorContext(r.Context(), "console sign-in", "error", err)
		tok := randomToken()
		c.setCookie(w, r, signinCookie, tok, 600)
		c.render(w, r, http.StatusServiceUnavailable, "signin", map[string]any{"Title": "Sign in", "CSRF": tok, "Next": next,
			"Error": "The session could not be started just now. Try again in a moment."})
		return
	}
	c.setCookie(w, r, signinCookie, "", -1)
	c.setCookie(w, r, sessionCookie, id, int(c.d.SessionTTL/time.Second))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) error {
	if err := c.sessions.end(r.Context(), userOf(r.Context()).sessionID); err != nil {
		return err
	}
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
	return nil
}
