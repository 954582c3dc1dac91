package httpapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/ratelimit"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// The platform operator is the principal of an admin key of Deps.PlatformTenant (the bootstrap
// key's tenant): it alone creates, lists, renames, suspends and resumes tenants, sets their rate
// limits and issues their first keys. Every other principal stays inside its tenant: the
// platform routes answer an admin of another tenant 404 not_found ("no such route", as for
// GET /v1/admin/health), and GET /v1/tenants/{tenant_id} answers a tenant's own admin about its
// own tenant and 404 for any other id, existing or not, so no tenant id leaks.

// tenantRoutes are the routes of tenants.go, added to the route table.
func tenantRoutes(r func(method, pattern string, right auth.Right, h func(*server, http.ResponseWriter, *http.Request) error, statuses ...[]int) Route) []Route {
	platform := func(rt Route) Route {
		rt.platform = true
		rt.Statuses = codes(rt.Statuses, []int{s404})
		return rt
	}
	return []Route{
		platform(r("POST", "/v1/tenants", auth.Admin, (*server).createTenant, []int{s201, s409}, body)),
		platform(r("GET", "/v1/tenants", auth.Admin, (*server).listTenants, []int{s200})),
		r("GET", "/v1/tenants/{tenant_id}", auth.Admin, (*server).getTenant, []int{s200, s404}),
		platform(r("PATCH", "/v1/tenants/{tenant_id}", auth.Admin, (*server).changeTenant, []int{s200, s404}, body)),
		platform(r("POST", "/v1/tenants/{tenant_id}/suspend", auth.Admin, (*server).suspendTenant, []int{s200, s404, s409}, body)),
		platform(r("POST", "/v1/tenants/{tenant_id}/resume", auth.Admin, (*server).resumeTenant, []int{s200, s404}, body)),
		platform(r("POST", "/v1/tenants/{tenant_id}/keys", auth.Admin, (*server).createTenantKey, []int{s201, s404}, body)),
	}
}

// notPlatform is the answer of a platform route to anyone but the platform operator.
var notPlatform = &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "no such route"}

// platformOperator marks p as the platform operator when it is an admin of the platform tenant.
func (s *server) platformOperator(p auth.Principal) auth.Principal {
	if p.TenantID == s.d.PlatformTenant && p.Role == auth.RoleAdmin {
		return auth.PlatformOperator(p)
	}
	return p
}

type tenantView struct {
	apikeys.Tenant
	// RateLimit is the limit in effect (the default when none is set); Default says which.
	EffectiveRateLimit rateLimitView `json:"effective_rate_limit"`
}

type rateLimitView struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
	Default   bool    `json:"default"`
}

func (s *server) viewTenant(t apikeys.Tenant) tenantView {
	v := tenantView{Tenant: t, EffectiveRateLimit: rateLimitView{Default: true}} // 0/s: no limit
	if s.d.Limits.RatePerSecond > 0 {
		v.EffectiveRateLimit.PerSecond, v.EffectiveRateLimit.Burst = s.d.Limits.RatePerSecond, s.d.Limits.RateBurst
	}
	if t.RateLimit != nil {
		v.EffectiveRateLimit = rateLimitView{PerSecond: t.RateLimit.PerSecond, Burst: t.RateLimit.Burst}
	}
	return v
}

type createTenantRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type changeTenantRequest struct {
	Name      *string            `json:"name"`
	RateLimit *apikeys.RateLimit `json:"rate_limit"`
}

type tenantReasonRequest struct {
	Reason string `json:"reason"`
}

func (s *server) jsonBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	return decodeJSON(b, v, allowEmpty)
}

// tenantID returns the path's {tenant_id}, validated (422 invalid_id).
func tenantID(r *http.Request) (string, error) {
	id := r.PathValue("tenant_id")
	return id, connection.ValidateID("tenant_id", id)
}

func (s *server) createTenant(w http.ResponseWriter, r *http.Request) error {
	var req createTenantRequest
	if err := s.jsonBody(w, r, &req, false); err != nil {
		return err
	}
	if req.ID == "" {
		return &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidID), Field: "id", Detail: "is required"}
	}
	t, err := s.d.Keys.CreateTenant(r.Context(), req.ID, req.Name, principal(r).ID)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tenants/"+t.ID)
	return writeJSON(w, http.StatusCreated, s.viewTenant(t))
}

func (s *server) listTenants(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.d.Keys.ListTenants(r.Context())
	if err != nil {
		return err
	}
	out := make([]tenantView, 0, len(ts))
	for _, t := range ts {
		out = append(out, s.viewTenant(t))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tenants": out})
}

// getTenant answers the platform operator about any tenant, and a tenant's admin about its own
// tenant only (404 for any other id, as for one that does not exist).
func (s *server) getTenant(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id := r.PathValue("tenant_id")
	if !p.IsPlatformOperator() && id != p.TenantID {
		return &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "no such resource"}
	}
	if _, err := tenantID(r); err != nil {
		return err
	}
	t, err := s.d.Keys.GetTenant(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.viewTenant(t))
}

// changeTenant renames a tenant and/or sets its rate limit ({"per_second":0,"burst":0} restores
// the default).
func (s *server) changeTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	var req changeTenantRequest
	if err := s.jsonBody(w, r, &req, false); err != nil {
		return err
	}
	if req.Name == nil && req.RateLimit == nil {
		return invalid("", "name or rate_limit is required")
	}
	if req.RateLimit != nil {
		if err := auth.ValidateRateLimit(req.RateLimit.PerSecond, req.RateLimit.Burst); err != nil {
			return invalid("rate_limit", err.Error())
		}
	}
	if req.Name != nil {
		if err := validTenantName(*req.Name); err != nil {
			return err
		}
	}
	t, err := s.d.Keys.ChangeTenant(r.Context(), id, req.Name, req.RateLimit, principal(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.viewTenant(t))
}

func validTenantName(name string) error {
	if len(name) == 0 || len(name) > auth.MaxTenantNameLen {
		return invalid("name", fmt.Sprintf("must be 1 to %d bytes", auth.MaxTenantNameLen))
	}
	return nil
}

// suspendWait bounds how long a suspension waits for the connection cards to show every
// connection registered before it.
const suspendWait = 10 * time.Second

// suspendTenant records TenantSuspended (the tenant's keys get 403 tenant_suspended from then
// on, on every node) and holds each of the tenant's queues (QueueHeld, reason
// tenant_suspended; nothing is purged). It is idempotent: suspending a suspended tenant holds
// any queue not held yet (one registered by a request racing the suspension) and records
// nothing else. The platform tenant cannot be suspended (409 platform_tenant).
func (s *server) suspendTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	var req tenantReasonRequest
	if err := s.jsonBody(w, r, &req, true); err != nil {
		return err
	}
	if id == s.d.PlatformTenant {
		return &Problem{Status: http.StatusConflict, Code: CodePlatformTenant, Detail: "the platform tenant cannot be suspended"}
	}
	p := principal(r)
	t, err := s.d.Keys.SuspendTenant(r.Context(), id, req.Reason, p.ID)
	if err != nil {
		return err
	}
	n, err := s.forEachQueue(r.Context(), p, id, t, func(ctx context.Context, connID string) (commands.Result, error) {
		return s.d.Handlers.HoldForTenant.Handle(ctx, commands.HoldForTenant{ConnectionID: connID, Note: req.Reason})
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tenant": s.viewTenant(t), "queues_held": n})
}

// resumeTenant records TenantResumed and resumes the queues held for the suspension (reason
// tenant_suspended) — not those held for another reason. It is idempotent.
func (s *server) resumeTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	var req tenantReasonRequest
	if err := s.jsonBody(w, r, &req, true); err != nil {
		return err
	}
	p := principal(r)
	t, err := s.d.Keys.ResumeTenant(r.Context(), id, req.Reason, p.ID)
	if err != nil {
		return err
	}
	n, err := s.forEachQueue(r.Context(), p, id, t, func(ctx context.Context, connID string) (commands.Result, error) {
		return s.d.Handlers.ResumeForTenant.Handle(ctx, commands.ResumeForTenant{ConnectionID: connID, Note: req.Reason})
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tenant": s.viewTenant(t), "queues_resumed": n})
}

// forEachQueue runs do for every connection of tenant, as the platform operator acting in it
// (auth.Principal.ActingIn), after the cards have caught up with the tenant event just
// recorded; it returns how many recorded an event.
func (s *server) forEachQueue(ctx context.Context, p auth.Principal, tenant string, t apikeys.Tenant,
	do func(ctx context.Context, connID string) (commands.Result, error)) (int, error) {
	if s.d.Handlers.HoldForTenant == nil || s.d.Handlers.ResumeForTenant == nil {
		return 0, errors.New("httpapi: Handlers.HoldForTenant and ResumeForTenant are required to suspend tenants")
	}
	actor, err := p.ActingIn(tenant)
	if err != nil {
		return 0, err
	}
	if !t.Position.IsZero() {
		wctx, cancel := context.WithTimeout(ctx, suspendWait)
		err := s.d.Runner.WaitReached(wctx, []string{projections.CardsName}, t.Position)
		cancel()
		if err != nil {
			s.log.WarnContext(ctx, "tenant change: the cards did not catch up; repeat the call to cover connections registered just before", "tenant", tenant, "error", err)
		}
	}
	cards, err := s.d.Cards.List(ctx, s.d.DB, tenant)
	if err != nil {
		return 0, err
	}
	actx := commands.WithPrincipal(ctx, actor)
	n := 0
	for _, c := range cards {
		res, err := do(actx, c.ConnectionID)
		if err != nil {
			return n, fmt.Errorf("httpapi: tenant %s, connection %s: %w", tenant, c.ConnectionID, err)
		}
		if !res.Position.IsZero() {
			n++
		}
	}
	return n, nil
}

// createTenantKey issues a key of another tenant (its first admin key, typically): platform
// operator only; the tenant must exist (404 otherwise) and be active.
func (s *server) createTenantKey(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, role, err := decodeCreateKey(b)
	if err != nil {
		return err
	}
	if _, err := s.d.Keys.GetTenant(r.Context(), id); err != nil {
		return err
	}
	created, err := s.d.Keys.Create(r.Context(), id, role, req.Label, principal(r).ID)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, created)
}

// allowRate takes a token of the tenant's bucket under its limit (lim; the zero limit is the
// default), or returns how long until one is there.
func (s *server) allowRate(ctx context.Context, tenant string, lim apikeys.RateLimit) (time.Duration, bool) {
	l := s.defRate
	if !lim.IsZero() {
		l = ratelimit.Limit{PerSecond: lim.PerSecond, Burst: lim.Burst}
	}
	return s.d.RateLimiter.Allow(ctx, tenant, l, s.d.Now())
}

// rateLimited is the 429 answer, with Retry-After in whole seconds (at least 1).
func rateLimited(w http.ResponseWriter, d time.Duration) error {
	secs := int(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return &Problem{Status: http.StatusTooManyRequests, Code: CodeRateLimited,
		Detail: fmt.Sprintf("the tenant's API rate limit is reached; retry after %d s", secs)}
}
