package httpapi

import (
	"net/http"
	"slices"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections"
)

// Route is one entry of the API's route table.
type Route struct {
	// Method and Pattern form the ServeMux pattern ("POST", "/v1/connections/{id}").
	Method, Pattern string
	// Right is what the caller's role must grant; ignored for Public routes.
	Right auth.Right
	// Public routes need no API key (health, readiness, the OpenAPI document and the reference
	// page).
	Public bool
	// Statuses are the status codes the route answers, the error statuses included.
	Statuses []int
	// simulator routes exist only when Deps.Simulator is set.
	simulator bool
	// webhook routes exist only when Deps.Webhooks is set.
	webhook bool
	// platform routes answer the platform operator only (404 not_found to anyone else holding
	// Right); see tenants.go.
	platform bool
	// reads are the projections a read route reads; such a route honours Waqueue-Min-Position.
	reads  []string
	handle func(s *server, w http.ResponseWriter, r *http.Request) error
}

// Platform reports whether the route answers the platform operator only.
func (rt Route) Platform() bool { return rt.platform }

// Simulator reports whether the route is served only in simulator mode.
func (rt Route) Simulator() bool { return rt.simulator }

// Webhook reports whether the route is served only when Deps.Webhooks is set.
func (rt Route) Webhook() bool { return rt.webhook }

// ReadsModels reports whether the route reads read models and so honours Waqueue-Min-Position
// (and answers Waqueue-Position-Reached).
func (rt Route) ReadsModels() bool { return len(rt.reads) > 0 }

// Routes returns the API's route table (every route, the simulator and webhook ones included), in a
// stable order. The OpenAPI document is tested against it.
func Routes() []Route { return (*server)(nil).routes() }

const (
	s200 = http.StatusOK
	s201 = http.StatusCreated
	s202 = http.StatusAccepted
	s204 = http.StatusNoContent
	s400 = http.StatusBadRequest
	s401 = http.StatusUnauthorized
	s403 = http.StatusForbidden
	s404 = http.StatusNotFound
	s406 = http.StatusNotAcceptable
	s409 = http.StatusConflict
	s413 = http.StatusRequestEntityTooLarge
	s415 = http.StatusUnsupportedMediaType
	s422 = http.StatusUnprocessableEntity
	s429 = http.StatusTooManyRequests
	s500 = http.StatusInternalServerError
	s502 = http.StatusBadGateway
	s503 = http.StatusServiceUnavailable
)

// authed is the set of statuses every authenticated route may answer besides its own (429:
// the tenant's rate limit, tenants.go).
var authed = []int{s401, s403, s429, s500, s503}

// body is the set of statuses of a route that reads a JSON body.
var body = []int{s400, s413, s415, s422}

func codes(groups ...[]int) []int {
	var out []int
	for _, g := range groups {
		for _, c := range g {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (*server) routes() []Route {
	r := func(method, pattern string, right auth.Right, h func(*server, http.ResponseWriter, *http.Request) error, statuses ...[]int) Route {
		return Route{Method: method, Pattern: pattern, Right: right, handle: h, Statuses: codes(append(statuses, authed)...)}
	}
	sim := func(rt Route) Route { rt.simulator = true; return rt }
	hook := func(rt Route) Route { rt.webhook = true; return rt }
	// read marks a route reading the read models of names (Waqueue-Min-Position, 400 when malformed).
	read := func(rt Route, names ...string) Route {
		rt.reads = names
		rt.Statuses = codes(rt.Statuses, []int{s400})
		return rt
	}
	const cards, queue, msgs, audit, analytics, clears = projections.CardsName, projections.QueueName,
		projections.MessageStatusName, projections.AuditName, projections.AnalyticsName, projections.ClearsName
	rts := []Route{
		{Method: "GET", Pattern: "/healthz", Public: true, handle: (*server).healthz, Statuses: []int{s200}},
		{Method: "GET", Pattern: "/readyz", Public: true, handle: (*server).readyz, Statuses: []int{s200, s503}},
		{Method: "GET", Pattern: "/v1/openapi.yaml", Public: true, handle: (*server).openapi, Statuses: []int{s200}},
		{Method: "GET", Pattern: "/docs", Public: true, handle: (*server).referencePage, Statuses: []int{s200}},
		{Method: "GET", Pattern: "/docs/redoc.standalone.js", Public: true, handle: (*server).redocJS, Statuses: []int{s200}},

		r("POST", "/v1/connections", auth.ConnectionEdit, (*server).createConnection, []int{s201, s409}, body),
		read(r("GET", "/v1/connections", auth.ConnectionView, (*server).listConnections, []int{s200}), cards),
		read(r("GET", "/v1/connections/{id}", auth.ConnectionView, (*server).getConnection, []int{s200, s404}), cards),
		r("PATCH", "/v1/connections/{id}", auth.ConnectionEdit, (*server).changeConnection, []int{s200, s404, s409}, body),
		r("POST", "/v1/connections/{id}/pairing/qr", auth.ConnectionEdit, (*server).startPairQR, []int{s200, s404, s406, s409}),
		r("GET", "/v1/connections/{id}/pairing/qr", auth.ConnectionEdit, (*server).getPairQR, []int{s200, s404, s406}),
		r("POST", "/v1/connections/{id}/pairing/phone", auth.ConnectionEdit, (*server).pairPhone, []int{s200, s404, s409}, body),
		r("POST", "/v1/connections/{id}/logout", auth.ConnectionEdit, (*server).logout, []int{s200, s404, s409, s502}),
		r("POST", "/v1/connections/{id}/retire", auth.ConnectionEdit, (*server).retire, []int{s200, s202, s404, s409}, body),
		r("POST", "/v1/connections/{id}/contacts/check", auth.MessageSend, (*server).checkNumbers, []int{s200, s404, s409, s429, s502}, body),
		r("POST", "/v1/connections/{id}/messages", auth.MessageSend, (*server).enqueue, []int{s202, s404, s409}, body),
		r("DELETE", "/v1/connections/{id}/messages/{message_id}", auth.ConnectionEdit, (*server).cancelMessage, []int{s200, s404, s409}, body),
		read(r("GET", "/v1/messages/{id}", auth.ConnectionView, (*server).getMessage, []int{s200, s404}), msgs),
		r("POST", "/v1/connections/{id}/broadcasts", auth.BroadcastMgmt, (*server).broadcast, []int{s202, s404, s409, s429, s502}, body),
		read(r("GET", "/v1/broadcasts/{id}", auth.ConnectionView, (*server).getBroadcast, []int{s200, s404}), msgs),
		read(r("GET", "/v1/connections/{id}/queue", auth.ConnectionView, (*server).getQueue, []int{s200, s404}), queue),
		read(r("GET", "/v1/connections/{id}/queue/clear-preview", auth.ConnectionView, (*server).clearPreview, []int{s200, s404}), cards, queue),
		r("POST", "/v1/connections/{id}/queue/clear", auth.ConnectionEdit, (*server).clearQueue, []int{s202, s404, s409}, body),
		read(r("GET", "/v1/connections/{id}/clears", auth.ConnectionView, (*server).listClears, []int{s200, s400, s404}), cards, clears),
		read(r("GET", "/v1/connections/{id}/clears/{clear_id}", auth.ConnectionView, (*server).getClear, []int{s200, s404}), cards, clears),
		r("POST", "/v1/connections/{id}/queue/hold", auth.ConnectionEdit, (*server).holdQueue, []int{s200, s404, s409}, body),
		r("POST", "/v1/connections/{id}/queue/resume", auth.ConnectionEdit, (*server).resumeQueue, []int{s200, s404, s409}, body),
		read(r("GET", "/v1/connections/{id}/history", auth.AuditRead, (*server).history, []int{s200, s400, s404}), cards),
		read(r("GET", "/v1/audit", auth.AuditRead, (*server).audit, []int{s200, s400}), audit),
		read(r("GET", "/v1/audit/verify", auth.AuditRead, (*server).auditVerify, []int{s200}), audit),
		r("GET", "/v1/audit/checkpoints", auth.AuditRead, (*server).auditCheckpoints, []int{s200, s400}),
		read(r("GET", "/v1/analytics/daily", auth.AnalyticsRead, (*server).analyticsDaily, []int{s200, s400}), analytics),

		r("POST", "/v1/keys", auth.Admin, (*server).createKey, []int{s201}, body),
		r("GET", "/v1/keys", auth.Admin, (*server).listKeys, []int{s200}),
		r("PATCH", "/v1/keys/{id}", auth.Admin, (*server).changeKey, []int{s200, s404, s409}, body),
		r("DELETE", "/v1/keys/{id}", auth.Admin, (*server).revokeKey, []int{s204, s404, s409}, body),
		r("POST", "/v1/broker/tokens", auth.ConnectionView, (*server).mintBrokerToken, []int{s201, s404, s409}, body),

		r("GET", "/v1/admin/health", auth.Admin, (*server).adminHealth, []int{s200, s404}),

		hook(r("POST", "/v1/webhooks", auth.Admin, (*server).registerWebhook, []int{s201}, body)),
		hook(r("GET", "/v1/webhooks", auth.Admin, (*server).listWebhooks, []int{s200})),
		hook(r("DELETE", "/v1/webhooks/{id}", auth.Admin, (*server).deleteWebhook, []int{s204, s404})),
		hook(r("GET", "/v1/webhooks/{id}/deliveries", auth.Admin, (*server).webhookDeliveries, []int{s200, s400, s404})),

		sim(r("POST", "/v1/connections/{id}/simulator/ban", auth.Admin, (*server).simBan, []int{s200, s404, s409}, body)),
		sim(r("POST", "/v1/connections/{id}/simulator/lift", auth.Admin, (*server).simLift, []int{s200, s404, s409})),
		sim(r("POST", "/v1/connections/{id}/simulator/logout", auth.Admin, (*server).simLogout, []int{s200, s404, s409})),
	}
	return append(rts, tenantRoutes(r)...)
}
