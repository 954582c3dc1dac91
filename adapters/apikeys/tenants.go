package apikeys

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Tenant states.
const (
	TenantActive    = "active"
	TenantSuspended = "suspended"
)

// Sentinel errors of the tenant registry. Match with errors.Is.
var (
	// ErrTenantNotFound: no tenant of that id.
	ErrTenantNotFound = errors.New("apikeys: tenant not found")
	// ErrTenantExists: a tenant of that id exists already (ids are unique, also across a race).
	ErrTenantExists = errors.New("apikeys: tenant exists")
	// ErrTenantSuspended: the key is live but its tenant is suspended (*SuspendedError).
	// Authenticate returns it instead of the principal, so every way in (API, console, broker
	// tokens) refuses it.
	ErrTenantSuspended = errors.New("apikeys: tenant suspended")
)

// RateLimit is a tenant's API rate limit: a token bucket refilled at PerSecond requests a
// second holding up to Burst. The zero RateLimit means the node's default.
type RateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// IsZero reports whether l is the zero RateLimit (the default applies).
func (l RateLimit) IsZero() bool { return l.PerSecond == 0 && l.Burst == 0 }

// Tenant is a tenant as listed.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// SuspendedAt and SuspendedReason are set while suspended.
	SuspendedAt     time.Time `json:"suspended_at,omitzero"`
	SuspendedReason string    `json:"suspended_reason,omitempty"`
	// RateLimit is nil when the node's default applies.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Position is the global position of the event a change just recorded (zero when the
	// change was a no-op, and on reads).
	Position eventstore.Position `json:"-"`
}

// Identity is what a key stands for: its principal and its tenant's rate limit.
type Identity struct {
	Principal auth.Principal
	// RateLimit is the tenant's limit; zero means the node's default.
	RateLimit RateLimit
}

func migrateTenants() []string {
	return []string{
		// One row per tenant, kept from the tenant events like api_keys from the key events.
		`CREATE TABLE IF NOT EXISTS tenants (
			tenant_id TEXT PRIMARY KEY,
			name TEXT NOT NULL,
			status TEXT NOT NULL,
			suspended_reason TEXT NOT NULL DEFAULT '',
			suspended_at_us BIGINT NOT NULL DEFAULT 0,
			created_by TEXT NOT NULL,
			created_at_us BIGINT NOT NULL,
			rate_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
			rate_burst BIGINT NOT NULL DEFAULT 0)`,
	}
}

// validateTenantID checks a tenant id as every id is checked (connection.ValidateID: the
// *connection.ValidationError it returns carries the stable code invalid_id).
func validateTenantID(id string) error { return connection.ValidateID("tenant_id", id) }

func validateTenantName(name string) error {
	if strings.TrimSpace(name) == "" || len(name) > auth.MaxTenantNameLen {
		return &ValidationError{Field: "name", Detail: fmt.Sprintf("must be 1 to %d bytes, not blank", auth.MaxTenantNameLen)}
	}
	return nil
}

// CreateTenant records TenantCreated for a new tenant id on behalf of actor. An id in use
// (a tenant stream with any event: a tenant created before, or one holding keys) is
// ErrTenantExists; of concurrent creations of one id exactly one succeeds (the append expects
// no stream).
func (k *Keys) CreateTenant(ctx context.Context, id, name, actor string) (Tenant, error) {
	if err := validateTenantID(id); err != nil {
		return Tenant{}, err
	}
	if name == "" {
		name = id
	}
	if err := validateTenantName(name); err != nil {
		return Tenant{}, err
	}
	ev := auth.TenantCreated{TenantID: id, Name: name, CreatedBy: actor, CreatedAt: k.now().UTC()}
	err := k.appendTenant(ctx, id, actor, uuid.New(), eventstore.NoStream, ev)
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return Tenant{}, fmt.Errorf("%w: %s", ErrTenantExists, id)
	}
	if err != nil {
		return Tenant{}, err
	}
	return k.GetTenant(ctx, id)
}

// EnsureTenant records TenantCreated for id unless the table knows it: the platform tenant of
// a fresh installation, or of one older than tenants (whose stream holds key events only).
// The event id is derived from the tenant, so nodes racing at start record it once.
func (k *Keys) EnsureTenant(ctx context.Context, id, name, actor string) error {
	if err := k.syncTenant(ctx, id); err != nil {
		return err
	}
	if _, err := k.GetTenant(ctx, id); !errors.Is(err, ErrTenantNotFound) {
		return err
	}
	ev := auth.TenantCreated{TenantID: id, Name: name, CreatedBy: actor, CreatedAt: k.now().UTC()}
	err := k.appendTenant(ctx, id, actor, uuid.NewSHA1(connection.Namespace, []byte("tenant-created:"+id)), eventstore.Any, ev)
	if errors.Is(err, eventstore.ErrDuplicateEventID) {
		return k.syncTenant(ctx, id)
	}
	return err
}

// GetTenant returns tenant id; ErrTenantNotFound when unknown.
func (k *Keys) GetTenant(ctx context.Context, id string) (Tenant, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE tenant_id = $1`, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("apikeys: get tenant: %w", err)
	}
	ts, err := scanTenants(rows)
	if err != nil {
		return Tenant{}, err
	}
	if len(ts) == 0 {
		return Tenant{}, fmt.Errorf("%w: %s", ErrTenantNotFound, id)
	}
	return ts[0], nil
}

// ListTenants returns every tenant, by id.
func (k *Keys) ListTenants(ctx context.Context) ([]Tenant, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+tenantColumns+` FROM tenants ORDER BY tenant_id`)
	if err != nil {
		return nil, fmt.Errorf("apikeys: list tenants: %w", err)
	}
	return scanTenants(rows)
}

// ChangeTenant renames tenant id (name non-nil) and sets its rate limit (limit non-nil) in one
// atomic append: both changes are recorded or neither. A change to the current value records
// nothing.
func (k *Keys) ChangeTenant(ctx context.Context, id string, name *string, limit *RateLimit, actor string) (Tenant, error) {
	if name != nil {
		if err := validateTenantName(*name); err != nil {
			return Tenant{}, err
		}
	}
	if limit != nil {
		if err := auth.ValidateRateLimit(limit.PerSecond, limit.Burst); err != nil {
			return Tenant{}, &ValidationError{Field: "rate_limit", Detail: strings.TrimPrefix(err.Error(), auth.ErrInvalidRateLimit.Error()+": ")}
		}
	}
	return k.updateTenant(ctx, id, actor, func(t Tenant) []auth.TenantEvent {
		at := k.now().UTC()
		var evs []auth.TenantEvent
		if name != nil && *name != t.Name {
			evs = append(evs, auth.TenantRenamed{Name: *name, PreviousName: t.Name, RenamedBy: actor, RenamedAt: at})
		}
		if limit != nil && !((t.RateLimit == nil && limit.IsZero()) || (t.RateLimit != nil && *t.RateLimit == *limit)) {
			evs = append(evs, auth.TenantRateLimitSet{PerSecond: limit.PerSecond, Burst: limit.Burst, SetBy: actor, SetAt: at})
		}
		return evs
	})
}

// RenameTenant records TenantRenamed (a no-op when the name is the current one).
func (k *Keys) RenameTenant(ctx context.Context, id, name, actor string) (Tenant, error) {
	return k.ChangeTenant(ctx, id, &name, nil, actor)
}

// SuspendTenant records TenantSuspended unless the tenant is suspended already; from the
// moment it returns, the tenant's keys get ErrTenantSuspended on every instance sharing the
// read-model database. It does not hold the queues: the caller does (commands.HoldForTenant).
func (k *Keys) SuspendTenant(ctx context.Context, id, reason, actor string) (Tenant, error) {
	if len(reason) > connection.MaxNoteLen {
		return Tenant{}, &ValidationError{Field: "reason", Detail: fmt.Sprintf("at most %d bytes", connection.MaxNoteLen)}
	}
	return k.updateTenant(ctx, id, actor, func(t Tenant) []auth.TenantEvent {
		if t.Status == TenantSuspended {
			return nil
		}
		return []auth.TenantEvent{auth.TenantSuspended{Reason: reason, SuspendedBy: actor, SuspendedAt: k.now().UTC()}}
	})
}

// ResumeTenant records TenantResumed unless the tenant is active already. It does not resume
// the queues: the caller does (commands.ResumeForTenant).
func (k *Keys) ResumeTenant(ctx context.Context, id, reason, actor string) (Tenant, error) {
	if len(reason) > connection.MaxNoteLen {
		return Tenant{}, &ValidationError{Field: "reason", Detail: fmt.Sprintf("at most %d bytes", connection.MaxNoteLen)}
	}
	return k.updateTenant(ctx, id, actor, func(t Tenant) []auth.TenantEvent {
		if t.Status == TenantActive {
			return nil
		}
		return []auth.TenantEvent{auth.TenantResumed{Reason: reason, ResumedBy: actor, ResumedAt: k.now().UTC()}}
	})
}

// SetRateLimit records TenantRateLimitSet (the zero RateLimit restores the default; a no-op
// when it is the current limit). Every node reads it with the key at the next request.
func (k *Keys) SetRateLimit(ctx context.Context, id string, l RateLimit, actor string) (Tenant, error) {
	return k.ChangeTenant(ctx, id, nil, &l, actor)
}

// Active returns nil if tenantID is not suspended (an unknown tenant is not), and
// ErrTenantSuspended if it is.
func (k *Keys) Active(ctx context.Context, tenantID string) error {
	var status string
	err := k.db.QueryRowContext(ctx, `SELECT status FROM tenants WHERE tenant_id = $1`, tenantID).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("apikeys: tenant status: %w", err)
	}
	if status == TenantSuspended {
		return &SuspendedError{TenantID: tenantID}
	}
	return nil
}

// SuspendedError is the refusal of a key of a suspended tenant. errors.Is matches it with
// ErrTenantSuspended and with auth.ErrForbidden (so that the command processor acknowledges a
// broker command carrying such a key's token as refused, never retrying it).
type SuspendedError struct {
	TenantID string
}

func (e *SuspendedError) Error() string { return "apikeys: tenant " + e.TenantID + " is suspended" }

// Is makes errors.Is match ErrTenantSuspended and auth.ErrForbidden.
func (e *SuspendedError) Is(target error) bool {
	return target == ErrTenantSuspended || target == auth.ErrForbidden
}

func (k *Keys) appendTenant(ctx context.Context, tenantID, actor string, id uuid.UUID, expected eventstore.ExpectedRevision, ev auth.TenantEvent) error {
	_, err := k.appendTenantAt(ctx, tenantID, actor, id, expected, ev)
	return err
}

// maxTenantRetries bounds updateTenant's retries after a concurrent append to the stream.
const maxTenantRetries = 20

// updateTenant is the tenant's load → decide → append loop: it catches the table up with the
// tenant's stream, lets decide look at the tenant as it is, and appends the events decide
// returns at the stream's revision decide saw; a concurrent append (another change, a key
// event) makes it start over. So of concurrent suspensions exactly one records
// TenantSuspended, and the others see it and record nothing. It returns the tenant after the
// change, with the position of its last event (zero when decide returned none).
func (k *Keys) updateTenant(ctx context.Context, id, actor string, decide func(Tenant) []auth.TenantEvent) (Tenant, error) {
	for attempt := 0; ; attempt++ {
		if err := k.syncTenant(ctx, id); err != nil {
			return Tenant{}, err
		}
		t, err := k.GetTenant(ctx, id)
		if err != nil {
			return Tenant{}, err
		}
		var next int64
		if err := k.db.QueryRowContext(ctx, `SELECT next_rev FROM api_keys_streams WHERE tenant_id = $1`, id).Scan(&next); err != nil {
			return Tenant{}, fmt.Errorf("apikeys: tenant %s revision: %w", id, err)
		}
		evs := decide(t)
		if len(evs) == 0 {
			return t, nil
		}
		if next < 1 {
			return Tenant{}, fmt.Errorf("apikeys: tenant %s: its row exists but its stream has no applied event", id)
		}
		if k.beforeAppend != nil {
			k.beforeAppend()
		}
		pos, err := k.appendTenantAt(ctx, id, actor, uuid.Nil, eventstore.Exact(uint64(next-1)), evs...)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) && attempt < maxTenantRetries {
			continue
		}
		if err != nil {
			return Tenant{}, err
		}
		t, err = k.GetTenant(ctx, id)
		t.Position = pos
		return t, err
	}
}

// appendTenantAt appends evs in one batch (id is the first event's id; uuid.Nil for random ids)
// and returns the last one's position.
func (k *Keys) appendTenantAt(ctx context.Context, tenantID, actor string, id uuid.UUID, expected eventstore.ExpectedRevision, evs ...auth.TenantEvent) (eventstore.Position, error) {
	data := make([]eventstore.EventData, 0, len(evs))
	var types []string
	for i, ev := range evs {
		typ, body, err := auth.EncodeTenantEvent(ev)
		if err != nil {
			return eventstore.Position{}, err
		}
		eid := uuid.New()
		if i == 0 && id != uuid.Nil {
			eid = id
		}
		types = append(types, typ)
		data = append(data, eventstore.EventData{ID: eid, Type: typ, Data: body,
			Metadata: eventstore.Metadata{TenantID: tenantID, Actor: actor, CorrelationID: commands.CorrelationIDFromContext(ctx)}})
	}
	res, err := k.store.Append(ctx, auth.TenantStream(tenantID), expected, data...)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("apikeys: record %s: %w", strings.Join(types, ", "), err)
	}
	return res.Position, k.syncTenant(ctx, tenantID)
}

const tenantColumns = `tenant_id, name, status, suspended_reason, suspended_at_us, created_by, created_at_us, rate_per_second, rate_burst`

func scanTenants(rows *sql.Rows) ([]Tenant, error) {
	defer rows.Close()
	var out []Tenant
	for rows.Next() {
		var (
			t                  Tenant
			suspended, created int64
			perSecond          float64
			burst              int64
		)
		if err := rows.Scan(&t.ID, &t.Name, &t.Status, &t.SuspendedReason, &suspended, &t.CreatedBy, &created, &perSecond, &burst); err != nil {
			return nil, fmt.Errorf("apikeys: scan tenant: %w", err)
		}
		t.CreatedAt = time.UnixMicro(created).UTC()
		if suspended != 0 {
			t.SuspendedAt = time.UnixMicro(suspended).UTC()
		}
		if perSecond != 0 || burst != 0 {
			t.RateLimit = &RateLimit{PerSecond: perSecond, Burst: int(burst)}
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("apikeys: scan tenant: %w", err)
	}
	return out, nil
}

// applyTenantEvent applies a tenant lifecycle event of tenant's stream to the tenants table.
func applyTenantEvent(ctx context.Context, tx *projections.Tx, tenant string, e eventstore.RecordedEvent) error {
	ev, err := auth.DecodeTenantEvent(e.Type, e.Data)
	if err != nil {
		return fmt.Errorf("apikeys: event %s at %s: %w", e.ID, e.Position, err)
	}
	switch v := ev.(type) {
	case auth.TenantCreated:
		_, err = tx.ExecContext(ctx, `INSERT INTO tenants (tenant_id, name, status, created_by, created_at_us)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING`,
			tenant, v.Name, TenantActive, v.CreatedBy, v.CreatedAt.UnixMicro())
	case auth.TenantRenamed:
		_, err = tx.ExecContext(ctx, `UPDATE tenants SET name = $1 WHERE tenant_id = $2`, v.Name, tenant)
	case auth.TenantSuspended:
		_, err = tx.ExecContext(ctx, `UPDATE tenants SET status = $1, suspended_reason = $2, suspended_at_us = $3 WHERE tenant_id = $4`,
			TenantSuspended, v.Reason, max(v.SuspendedAt.UnixMicro(), 1), tenant)
	case auth.TenantResumed:
		_, err = tx.ExecContext(ctx, `UPDATE tenants SET status = $1, suspended_reason = '', suspended_at_us = 0 WHERE tenant_id = $2`,
			TenantActive, tenant)
	case auth.TenantRateLimitSet:
		_, err = tx.ExecContext(ctx, `UPDATE tenants SET rate_per_second = $1, rate_burst = $2 WHERE tenant_id = $3`,
			v.PerSecond, int64(v.Burst), tenant)
	}
	if err != nil {
		return fmt.Errorf("apikeys: apply %s: %w", e.Type, err)
	}
	return nil
}
