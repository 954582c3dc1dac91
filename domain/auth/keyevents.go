package auth

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TenantStreamPrefix starts the name of every tenant stream. A tenant stream records the
// tenant's rights changes (its API keys' lifecycle), so that they are audited like any other
// event (G8): add an audit rule for this prefix and KeyEventTypes.
const TenantStreamPrefix = "tenant-"

// TenantStream returns the name of tenantID's stream: "tenant-<tenantID>".
func TenantStream(tenantID string) string { return TenantStreamPrefix + tenantID }

// TenantFromStream returns the tenant id of a stream named by TenantStream, and false for any
// other stream.
func TenantFromStream(stream string) (string, bool) {
	id, ok := strings.CutPrefix(stream, TenantStreamPrefix)
	return id, ok && id != ""
}

// Stable event type names of the API key lifecycle. Never change one: stored events carry them.
const (
	TypeAPIKeyCreated     = "APIKeyCreated"
	TypeAPIKeyRevoked     = "APIKeyRevoked"
	TypeAPIKeyRoleChanged = "APIKeyRoleChanged"
)

// KeyEventTypes returns the type names of the key events, in a stable order (for subscription
// and audit filters).
func KeyEventTypes() []string {
	return []string{TypeAPIKeyCreated, TypeAPIKeyRevoked, TypeAPIKeyRoleChanged}
}

// KeyEvent is an event of an API key's lifecycle, recorded on its tenant's stream.
type KeyEvent interface {
	// EventType returns the stable type name stored with the event.
	EventType() string
	keyEvent()
}

// APIKeyCreated records a new API key of the tenant. The key itself is never recorded; KeyHash
// is the hex SHA-256 of the key, which lets the authenticator's table be rebuilt from the log.
// A SHA-256 of a key with 256 bits of randomness cannot be inverted or guessed, so recording it
// reveals nothing usable (unlike a hash of a password, which would need a slow, salted KDF).
type APIKeyCreated struct {
	KeyID     string    `json:"key_id"`
	TenantID  string    `json:"tenant_id"`
	Role      Role      `json:"role"`
	Label     string    `json:"label"`
	KeyHash   string    `json:"key_hash"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// APIKeyRevoked records that a key no longer authenticates anyone. Revocation is final.
type APIKeyRevoked struct {
	KeyID     string    `json:"key_id"`
	Reason    string    `json:"reason,omitempty"`
	RevokedBy string    `json:"revoked_by"`
	RevokedAt time.Time `json:"revoked_at"`
}

// APIKeyRoleChanged records a change of a key's role (and so of its rights).
type APIKeyRoleChanged struct {
	KeyID        string    `json:"key_id"`
	Role         Role      `json:"role"`
	PreviousRole Role      `json:"previous_role"`
	ChangedBy    string    `json:"changed_by"`
	ChangedAt    time.Time `json:"changed_at"`
}

// EventType implements KeyEvent.
func (APIKeyCreated) EventType() string { return TypeAPIKeyCreated }

// EventType implements KeyEvent.
func (APIKeyRevoked) EventType() string { return TypeAPIKeyRevoked }

// EventType implements KeyEvent.
func (APIKeyRoleChanged) EventType() string { return TypeAPIKeyRoleChanged }

func (APIKeyCreated) keyEvent()     {}
func (APIKeyRevoked) keyEvent()     {}
func (APIKeyRoleChanged) keyEvent() {}

// ErrUnknownKeyEvent: DecodeKeyEvent met a type that is not a key event.
var ErrUnknownKeyEvent = fmt.Errorf("auth: unknown key event type")

// EncodeKeyEvent returns e's stable type name and JSON body.
func EncodeKeyEvent(e KeyEvent) (string, []byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("auth: encode %s: %w", e.EventType(), err)
	}
	return e.EventType(), b, nil
}

// DecodeKeyEvent decodes a key event from its stored type name and body. An unknown type wraps
// ErrUnknownKeyEvent.
func DecodeKeyEvent(eventType string, data []byte) (KeyEvent, error) {
	var (
		e   KeyEvent
		err error
	)
	switch eventType {
	case TypeAPIKeyCreated:
		var v APIKeyCreated
		err, e = json.Unmarshal(data, &v), &v
	case TypeAPIKeyRevoked:
		var v APIKeyRevoked
		err, e = json.Unmarshal(data, &v), &v
	case TypeAPIKeyRoleChanged:
		var v APIKeyRoleChanged
		err, e = json.Unmarshal(data, &v), &v
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeyEvent, eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: decode %s: %w", eventType, err)
	}
	return derefKeyEvent(e), nil
}

func derefKeyEvent(e KeyEvent) KeyEvent {
	switch v := e.(type) {
	case *APIKeyCreated:
		return *v
	case *APIKeyRevoked:
		return *v
	case *APIKeyRoleChanged:
		return *v
	}
	return e
}
