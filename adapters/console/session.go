package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
)

const (
	sessionCookie = "waqueue_session"
	signinCookie  = "waqueue_signin"
)

// session is a signed-in browser. The API key stays here, on the server; the browser holds only
// the session id.
type session struct {
	key     string // the API key signed in with
	csrf    string
	expires time.Time
	flash   *flash
}

// flash is a one-time message shown on the next page (the outcome of an action).
type flash struct {
	Tone string // ok or bad
	Text string
}

// sessions is the in-memory session store of one node (a restart signs everyone out; behind
// several nodes, route a browser to the same node).
type sessions struct {
	now func() time.Time
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*session // sha256(session id) -> session
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{now: now, ttl: ttl, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(id string) string {
	s := sha256.Sum256([]byte(id))
	return string(s[:])
}

// open starts a session for key and returns its id.
func (s *sessions) open(key string) (string, *session) {
	id := randomToken()
	ss := &session{key: key, csrf: randomToken(), expires: s.now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m { // sweep the expired ones
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	s.m[hashID(id)] = ss
	return id, ss
}

// get returns the live session of id.
func (s *sessions) get(id string) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[hashID(id)]
	if !ok {
		return nil, false
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, hashID(id))
		return nil, false
	}
	return ss, true
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, hashID(id))
}

func (s *sessions) flash(id string, f flash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.m[hashID(id)]; ok {
		ss.flash = &f
	}
}

func (s *sessions) popFlash(id string) *flash {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[hashID(id)]
	if !ok {
		return nil
	}
	f := ss.flash
	ss.flash = nil
	return f
}

// endKey ends every session of key (its key was found revoked).
func (s *sessions) endKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if v.key == key {
			delete(s.m, k)
		}
	}
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

// authenticate returns the request's user: its session, whose key is authenticated again by
// the API's authenticator. A revoked key ends every session opened with it.
func (c *Console) authenticate(r *http.Request) (*user, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, commands.ErrUnauthenticated
	}
	ss, ok := c.sessions.get(ck.Value)
	if !ok {
		return nil, commands.ErrUnauthenticated
	}
	p, err := c.d.Keys.Authenticate(r.Context(), ss.key)
	if errors.Is(err, apikeys.ErrInvalidKey) {
		c.sessions.endKey(ss.key)
		return nil, commands.ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	return &user{principal: p, sessionID: ck.Value, csrf: ss.csrf, name: c.actor(r.Context(), p.TenantID, p.ID)}, nil
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
	if _, err := c.d.Keys.Authenticate(r.Context(), key); err != nil {
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
	id, _ := c.sessions.open(key)
	c.setCookie(w, r, signinCookie, "", -1)
	c.setCookie(w, r, sessionCookie, id, int(c.d.SessionTTL/time.Second))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) error {
	c.sessions.end(userOf(r.Context()).sessionID)
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
	return nil
}
