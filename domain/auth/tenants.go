package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Stable event type names of a tenant's lifecycle, recorded on the tenant's stream
// (TenantStream) beside its key events. Never change one: stored events carry them.
const (
	TypeTenantCreated      = "TenantCreated"
	TypeTenantRenamed      = "TenantRenamed"
	TypeTenantSuspended    = "TenantSuspended"
	TypeTenantResumed      = "TenantResumed"
	TypeTenantRateLimitSet = "TenantRateLimitSet"
)

// TenantEventTypes returns the type names of the tenant lifecycle events, in a stable order.
func TenantEventTypes() []string {
	return []string{TypeTenantCreated, TypeTenantRenamed, TypeTenantSuspended, TypeTenantResumed, TypeTenantRateLimitSet}
}

// TenantStreamEventTypes returns every event type a tenant stream holds (key and tenant
// lifecycle events), in a stable order: the audit rule and the key table's filter.
func TenantStreamEventTypes() []string {
	return append(KeyEventTypes(), TenantEventTypes()...)
}

// MaxTenantNameLen is the longest tenant display name, in bytes.
const MaxTenantNameLen = 200

// Bounds of a tenant's API rate limit (TenantRateLimitSet).
const (
	MaxRatePerSecond = 100_000
	MaxRateBurst     = 1_000_000
)

// TenantEvent is an event of a tenant's lifecycle, recorded on its stream.
type TenantEvent interface {
	// EventType returns the stable type name stored with the event.
	EventType() string
	tenantEvent()
}

// TenantCreated records a new tenant. Its stream had no event before (ids are unique), except
// for the platform tenant of an installation older than tenants, whose key events came first.
type TenantCreated struct {
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// TenantRenamed records a new display name (the id never changes).
type TenantRenamed struct {
	Name         string    `json:"name"`
	PreviousName string    `json:"previous_name"`
	RenamedBy    string    `json:"renamed_by"`
	RenamedAt    time.Time `json:"renamed_at"`
}

// TenantSuspended records that the tenant's keys stop authenticating (403 tenant_suspended)
// and its queues are held (reason tenant_suspended); nothing is purged.
type TenantSuspended struct {
	Reason      string    `json:"reason,omitempty"`
	SuspendedBy string    `json:"suspended_by"`
	SuspendedAt time.Time `json:"suspended_at"`
}

// TenantResumed records the end of a suspension: keys work again, and the queues held for the
// suspension are resumed (those held for another reason stay held).
type TenantResumed struct {
	Reason    string    `json:"reason,omitempty"`
	ResumedBy string    `json:"resumed_by"`
	ResumedAt time.Time `json:"resumed_at"`
}

// TenantRateLimitSet records the tenant's API rate limit: a token bucket refilled at PerSecond
// requests a second holding up to Burst. Both zero means the node's default.
type TenantRateLimitSet struct {
	PerSecond float64   `json:"per_second"`
	Burst     int       `json:"burst"`
	SetBy     string    `json:"set_by"`
	SetAt     time.Time `json:"set_at"`
}

// ErrInvalidRateLimit: a rate limit out of bounds (ValidateRateLimit).
var ErrInvalidRateLimit = errors.New("auth: invalid rate limit")

// ValidateRateLimit checks a rate limit's bounds: both zero (the default), or PerSecond in
// (0, MaxRatePerSecond] and Burst in [1, MaxRateBurst]. It returns an error wrapping
// ErrInvalidRateLimit.
func ValidateRateLimit(perSecond float64, burst int) error {
	if perSecond == 0 && burst == 0 {
		return nil
	}
	if !(perSecond > 0 && perSecond <= MaxRatePerSecond) {
		return fmt.Errorf("%w: per_second must be greater than 0 and at most %d", ErrInvalidRateLimit, MaxRatePerSecond)
	}
	if burst < 1 || burst > MaxRateBurst {
		return fmt.Errorf("%w: burst must be 1 to %d", ErrInvalidRateLimit, MaxRateBurst)
	}
	return nil
}

// EventType implements TenantEvent.
func (TenantCreated) EventType() string { return TypeTenantCreated }

// EventType implements TenantEvent.
func (TenantRenamed) EventType() string { return TypeTenantRenamed }

// EventType implements TenantEvent.
func (TenantSuspended) EventType() string { return TypeTenantSuspended }

// EventType implements TenantEvent.
func (TenantResumed) EventType() string { return TypeTenantResumed }

// EventType implements TenantEvent.
func (TenantRateLimitSet) EventType() string { return TypeTenantRateLimitSet }

func (TenantCreated) tenantEvent()      {}
func (TenantRenamed) tenantEvent()      {}
func (TenantSuspended) tenantEvent()    {}
func (TenantResumed) tenantEvent()      {}
func (TenantRateLimitSet) tenantEvent() {}

// ErrUnknownTenantEvent: DecodeTenantEvent met a type that is not a tenant event.
var ErrUnknownTenantEvent = errors.New("auth: unknown tenant event type")

// EncodeTenantEvent returns e's stable type name and JSON body.
func EncodeTenantEvent(e TenantEvent) (string, []byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("auth: encode %s: %w", e.EventType(), err)
	}
	return e.EventType(), b, nil
}

// DecodeTenantEvent decodes a tenant event from its stored type name and body. An unknown type
// wraps ErrUnknownTenantEvent.
func DecodeTenantEvent(eventType string, data []byte) (TenantEvent, error) {
	var (
		e   TenantEvent
		err error
	)
	switch eventType {
	case TypeTenantCreated:
		var v TenantCreated
		err = json.Unmarshal(data, &v)
		e = v
	case TypeTenantRenamed:
		var v TenantRenamed
		err = json.Unmarshal(data, &v)
		e = v
	case TypeTenantSuspended:
		var v TenantSuspended
		err = json.Unmarshal(data, &v)
		e = v
	case TypeTenantResumed:
		var v TenantResumed
		err = json.Unmarshal(data, &v)
		e = v
	case TypeTenantRateLimitSet:
		var v TenantRateLimitSet
		err = json.Unmarshal(data, &v)
		e = v
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownTenantEvent, eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: decode %s: %w", eventType, err)
	}
	return e, nil
}
