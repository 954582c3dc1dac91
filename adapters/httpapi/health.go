package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
)

// Component states of the public readiness answer.
const (
	componentOK          = "ok"
	componentUnavailable = "unavailable" // a store does not answer
	componentFailing     = "failing"     // a projection keeps failing its batches
)

// healthCheck is one check of the node's health, with its internal detail. Only the platform
// admin's route shows the detail; /readyz shows the component's state.
type healthCheck struct {
	Name      string `json:"name"`
	Component string `json:"component"`
	OK        bool   `json:"ok"`
	// Detail is the internal error text (SQL, positions, event ids): never public.
	Detail string `json:"detail,omitempty"`
	// Projection fields (checks named "projection:NAME").
	Checkpoint   string     `json:"checkpoint,omitempty"`
	Applied      *uint64    `json:"applied,omitempty"`
	Failures     *int       `json:"failures,omitempty"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
}

// health runs every check: the event store and the read-model database answer, and no
// projection is failing. A store's error is logged here; a projection's failures are logged by
// the runner.
func (s *server) health(ctx context.Context) (checks []healthCheck, components map[string]string, ready bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	components = map[string]string{"event_store": componentOK, "read_models": componentOK, "projections": componentOK}
	ready = true
	probe := func(name string, err error) {
		c := healthCheck{Name: name, Component: name, OK: err == nil}
		if err != nil {
			s.log.WarnContext(ctx, "readiness check failed", "check", name, "error", err)
			c.Detail = err.Error()
			components[name] = componentUnavailable
			ready = false
		}
		checks = append(checks, c)
	}
	_, err := s.d.Store.ReadAll(ctx, eventstore.Start, 1, eventstore.Filter{StreamPrefixes: []string{auth.TenantStreamPrefix}})
	probe("event_store", err)
	probe("read_models", s.d.DB.SQL.PingContext(ctx))
	for _, st := range s.d.Runner.Statuses() {
		applied, failures := st.Applied, st.Failures
		c := healthCheck{Name: "projection:" + st.Name, Component: "projections", OK: st.Failures == 0,
			Checkpoint: st.Checkpoint.String(), Applied: &applied, Failures: &failures}
		if !c.OK {
			since := st.FailingSince
			c.FailingSince = &since
			c.Detail = strconv.Itoa(st.Failures) + " failed batches since " + st.FailingSince.Format(time.RFC3339) + ": " + st.LastError
			components["projections"] = componentFailing
			ready = false
		}
		checks = append(checks, c)
	}
	return checks, components, ready
}

// readyz answers GET /readyz, which is public: 200 when the event store and the read-model
// database answer and no projection is failing, 503 otherwise, with each component's state and
// nothing more. Which projection fails and why (SQL, positions, event ids — possibly another
// tenant's) is in the log and on the platform admin's GET /v1/admin/health.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) error {
	_, components, ready := s.health(r.Context())
	status, code := "ready", http.StatusOK
	if !ready {
		status, code = "not_ready", http.StatusServiceUnavailable
	}
	return writeJSON(w, code, map[string]any{"status": status, "components": components})
}

// adminHealth answers GET /v1/admin/health: the readiness checks with their internal detail, for
// the platform admin only — an admin key of the platform tenant (Deps.PlatformTenant, the
// tenant of the bootstrap key). The route needs the admin right (403 otherwise); an admin of
// another tenant gets 404 not_found, as for any route that does not exist for it. The answer
// is 200 whether or not the node is ready; its status field says which.
func (s *server) adminHealth(w http.ResponseWriter, r *http.Request) error {
	if principal(r).TenantID != s.d.PlatformTenant {
		return &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "no such route"}
	}
	checks, components, ready := s.health(r.Context())
	status := "ready"
	if !ready {
		status = "not_ready"
	}
	return writeJSON(w, http.StatusOK, map[string]any{"status": status, "components": components, "checks": checks})
}
