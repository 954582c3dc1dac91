package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// RateLimit is a tenant's API rate limit: a token bucket per tenant, shared by the nodes of a
// PostgreSQL deployment.
type RateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// Tenant is a tenant as the platform operator sees it.
type Tenant struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	Status          string     `json:"status"`
	CreatedBy       string     `json:"created_by"`
	CreatedAt       time.Time  `json:"created_at"`
	SuspendedAt     time.Time  `json:"suspended_at,omitzero"`
	SuspendedReason string     `json:"suspended_reason,omitempty"`
	RateLimit       *RateLimit `json:"rate_limit,omitempty"`
	// EffectiveRateLimit is the limit in effect; Default says it is the node's default.
	EffectiveRateLimit struct {
		PerSecond float64 `json:"per_second"`
		Burst     int     `json:"burst"`
		Default   bool    `json:"default"`
	} `json:"effective_rate_limit"`
}

// TenantChange is the answer to a suspend or resume: the tenant and how many queues the call
// held or resumed.
type TenantChange struct {
	Tenant        Tenant `json:"tenant"`
	QueuesHeld    int    `json:"queues_held"`
	QueuesResumed int    `json:"queues_resumed"`
}

// CreateTenant creates tenant id named name (POST /v1/tenants; platform operator).
func (c *Client) CreateTenant(ctx context.Context, id, name string) (Tenant, json.RawMessage, error) {
	var t Tenant
	b, err := c.postJSON(ctx, "/v1/tenants", map[string]string{"id": id, "name": name}, nil, &t)
	return t, b, err
}

// Tenants lists every tenant (GET /v1/tenants; platform operator).
func (c *Client) Tenants(ctx context.Context) ([]Tenant, json.RawMessage, error) {
	var out struct {
		Tenants []Tenant `json:"tenants"`
	}
	b, err := c.get(ctx, "/v1/tenants", nil, &out)
	return out.Tenants, b, err
}

// Tenant returns tenant id (GET /v1/tenants/{tenant_id}; the platform operator, or the
// tenant's own admin).
func (c *Client) Tenant(ctx context.Context, id string) (Tenant, json.RawMessage, error) {
	var t Tenant
	b, err := c.get(ctx, "/v1/tenants/"+seg(id), nil, &t)
	return t, b, err
}

// ChangeTenant renames tenant id (name non-nil) and/or sets its rate limit (limit non-nil; the
// zero RateLimit restores the default) (PATCH /v1/tenants/{tenant_id}; platform operator).
func (c *Client) ChangeTenant(ctx context.Context, id string, name *string, limit *RateLimit) (Tenant, json.RawMessage, error) {
	in := map[string]any{}
	if name != nil {
		in["name"] = *name
	}
	if limit != nil {
		in["rate_limit"] = limit
	}
	body, err := jsonBody(in)
	if err != nil {
		return Tenant{}, nil, err
	}
	var t Tenant
	b, err := c.call(ctx, request{method: http.MethodPatch, path: "/v1/tenants/" + seg(id), body: body, contentType: "application/json"}, &t)
	return t, b, err
}

// SuspendTenant suspends tenant id (POST /v1/tenants/{tenant_id}/suspend; platform operator):
// its keys get 403 tenant_suspended and its queues are held.
func (c *Client) SuspendTenant(ctx context.Context, id, reason string) (TenantChange, json.RawMessage, error) {
	var out TenantChange
	b, err := c.postJSON(ctx, "/v1/tenants/"+seg(id)+"/suspend", map[string]string{"reason": reason}, nil, &out)
	return out, b, err
}

// ResumeTenant resumes tenant id and the queues held for its suspension
// (POST /v1/tenants/{tenant_id}/resume; platform operator).
func (c *Client) ResumeTenant(ctx context.Context, id, reason string) (TenantChange, json.RawMessage, error) {
	var out TenantChange
	b, err := c.postJSON(ctx, "/v1/tenants/"+seg(id)+"/resume", map[string]string{"reason": reason}, nil, &out)
	return out, b, err
}

// CreateTenantKey creates a key of tenant id — its first admin key, typically
// (POST /v1/tenants/{tenant_id}/keys; platform operator). The secret is in the answer only.
func (c *Client) CreateTenantKey(ctx context.Context, tenant, role, label string) (CreatedKey, json.RawMessage, error) {
	var k CreatedKey
	b, err := c.postJSON(ctx, "/v1/tenants/"+seg(tenant)+"/keys", map[string]string{"role": role, "label": label}, nil, &k)
	return k, b, err
}
