// Package auth holds waqueue's rights, roles and principals: who may do what inside a tenant.
//
// It is pure (no I/O). Commands and queries authorize with Principal.Authorize before they load
// anything; tenant isolation (G9) is checked against the tenant of the resource being touched.
package auth

import (
	"errors"
	"fmt"
	"slices"
)

// Right is a permission. The set is closed: the only Rights are the exported variables below;
// the zero Right grants nothing.
type Right struct{ s string }

// The rights of waqueue. ConnectionEdit includes Clear Queue, hold and resume.
var (
	ConnectionView = Right{"connection.view"}
	ConnectionEdit = Right{"connection.edit"}
	MessageSend    = Right{"message.send"}
	BroadcastMgmt  = Right{"broadcast.manage"}
	AuditRead      = Right{"audit.read"}
	AnalyticsRead  = Right{"analytics.read"}
	Admin          = Right{"admin"}
)

// System is the right to record facts that only the node itself may assert: what WhatsApp
// reports through the node's own transport (pairing, session loss, bans and their lifting,
// sent/delivered/read/failed/unknown outcomes, transport problems) and the results of the node's
// own processes (dispatch, expiry, the completion of a clear). No Role grants it, so no API key
// holds it, whatever its role; only the principal SystemPrincipal returns does (G9). It is not
// among Rights and ParseRight does not know its name.
var System = Right{"system"}

var allRights = []Right{ConnectionView, ConnectionEdit, MessageSend, BroadcastMgmt, AuditRead, AnalyticsRead, Admin}

// Rights returns every right, in a stable order.
func Rights() []Right { return slices.Clone(allRights) }

// ParseRight returns the Right named s ("connection.edit", ...), or an error wrapping ErrUnknownRight.
func ParseRight(s string) (Right, error) {
	for _, r := range allRights {
		if r.s == s {
			return r, nil
		}
	}
	return Right{}, fmt.Errorf("%w: %q", ErrUnknownRight, s)
}

// String returns the right's stable name.
func (r Right) String() string { return r.s }

// IsZero reports whether r is the zero Right.
func (r Right) IsZero() bool { return r.s == "" }

// Role is a named set of rights. The set is closed: the only Roles are the exported variables below.
type Role struct{ s string }

// The roles of waqueue and the rights they grant:
//   - RoleAdmin: every right;
//   - RoleOperator: connection.view, connection.edit, message.send, broadcast.manage;
//   - RoleSender: connection.view, message.send, broadcast.manage (a backend service's API key);
//   - RoleAuditor: connection.view, audit.read;
//   - RoleAnalyst: connection.view, analytics.read.
var (
	RoleAdmin    = Role{"admin"}
	RoleOperator = Role{"operator"}
	RoleSender   = Role{"sender"}
	RoleAuditor  = Role{"auditor"}
	RoleAnalyst  = Role{"analyst"}
)

var roleRights = map[Role][]Right{
	RoleAdmin:    allRights,
	RoleOperator: {ConnectionView, ConnectionEdit, MessageSend, BroadcastMgmt},
	RoleSender:   {ConnectionView, MessageSend, BroadcastMgmt},
	RoleAuditor:  {ConnectionView, AuditRead},
	RoleAnalyst:  {ConnectionView, AnalyticsRead},
}

var allRoles = []Role{RoleAdmin, RoleOperator, RoleSender, RoleAuditor, RoleAnalyst}

// Roles returns every role, in a stable order.
func Roles() []Role { return slices.Clone(allRoles) }

// ParseRole returns the Role named s ("operator", ...), or an error wrapping ErrUnknownRole.
func ParseRole(s string) (Role, error) {
	for _, r := range allRoles {
		if r.s == s {
			return r, nil
		}
	}
	return Role{}, fmt.Errorf("%w: %q", ErrUnknownRole, s)
}

// String returns the role's stable name.
func (r Role) String() string { return r.s }

// IsZero reports whether r is the zero Role, which grants nothing.
func (r Role) IsZero() bool { return r.s == "" }

// Rights returns the rights r grants (none for the zero Role).
func (r Role) Rights() []Right { return slices.Clone(roleRights[r]) }

// Grants reports whether r grants right. The admin role grants every right.
func (r Role) Grants(right Right) bool {
	if right.IsZero() {
		return false
	}
	return slices.Contains(roleRights[r], right)
}

// MarshalText encodes r as its name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.s), nil }

// UnmarshalText decodes a role name; an unknown name is an error wrapping ErrUnknownRole.
func (r *Role) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*r = Role{}
		return nil
	}
	v, err := ParseRole(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Principal is the caller of a command or query: an employee or a service's API key, acting
// inside exactly one tenant — or the node itself (SystemPrincipal).
type Principal struct {
	// TenantID is the tenant the principal belongs to; it can touch nothing of another tenant.
	TenantID string `json:"tenant_id"`
	// ID identifies the principal (user id or API key id); events record it as the actor.
	ID string `json:"id"`
	// Role determines the principal's rights.
	Role Role `json:"role"`
	// system marks the node's own principal. Unexported: no literal outside this package, no
	// decoder (JSON or otherwise) and no API key or message can set it.
	system bool
	// platform marks the platform operator (PlatformOperator); unexported for the same reason.
	platform bool
}

// SystemPrincipal returns the principal the node's own transport, dispatcher and processes act
// as inside tenantID, recorded as actor id. It alone holds the System right (and every right of
// RoleAdmin). Only code of the node calls it, never with anything taken from a request or a
// message as a reason to: a test of this package lists the packages allowed to call it.
func SystemPrincipal(tenantID, id string) Principal {
	return Principal{TenantID: tenantID, ID: id, Role: RoleAdmin, system: true}
}

// IsSystem reports whether p is the node's own principal (SystemPrincipal).
func (p Principal) IsSystem() bool { return p.system }

// Can reports whether p holds right. A principal without a tenant or id holds no right; the
// System right is held by the system principal only.
func (p Principal) Can(right Right) bool {
	if p.TenantID == "" || p.ID == "" {
		return false
	}
	if right == System {
		return p.system
	}
	return p.Role.Grants(right)
}

// Authorize returns nil if p holds right inside tenantID, and a *DeniedError otherwise
// (errors.Is(err, ErrForbidden) for a missing right, errors.Is(err, ErrWrongTenant) when the
// resource belongs to another tenant). Check the tenant of the resource actually touched, not a
// tenant taken from the request.
func (p Principal) Authorize(tenantID string, right Right) error {
	if tenantID == "" || p.TenantID != tenantID {
		return &DeniedError{Principal: p, Right: right, TenantID: tenantID, wrongTenant: true}
	}
	if !p.Can(right) {
		return &DeniedError{Principal: p, Right: right, TenantID: tenantID}
	}
	return nil
}

// Sentinel errors. Match with errors.Is.
var (
	// ErrForbidden: the principal lacks the right.
	ErrForbidden = errors.New("auth: forbidden")
	// ErrWrongTenant: the resource belongs to another tenant. The HTTP layer answers it as
	// "not found" so that no tenant learns about another's resources.
	ErrWrongTenant  = errors.New("auth: resource of another tenant")
	ErrUnknownRight = errors.New("auth: unknown right")
	ErrUnknownRole  = errors.New("auth: unknown role")
)

// DeniedError is a refused authorization.
type DeniedError struct {
	Principal Principal
	Right     Right
	// TenantID is the tenant of the resource.
	TenantID    string
	wrongTenant bool
}

func (e *DeniedError) Error() string {
	if e.wrongTenant {
		return fmt.Sprintf("auth: principal %q of tenant %q may not touch tenant %q", e.Principal.ID, e.Principal.TenantID, e.TenantID)
	}
	return fmt.Sprintf("auth: principal %q (role %q) lacks right %q", e.Principal.ID, e.Principal.Role, e.Right)
}

// Is makes errors.Is match ErrWrongTenant or ErrForbidden, whichever applies.
func (e *DeniedError) Is(target error) bool {
	if e.wrongTenant {
		return target == ErrWrongTenant
	}
	return target == ErrForbidden
}

// PlatformOperator returns p marked as the platform operator: the principal above tenants who
// creates, renames, suspends and resumes them and issues their first keys. Only the API's
// authenticator calls it, for an admin key of the platform tenant (the bootstrap key's); a
// test of this package lists the packages allowed to call it. p keeps its tenant and role:
// inside tenants it holds exactly the rights of its role in its own tenant.
func PlatformOperator(p Principal) Principal {
	p.platform = true
	return p
}

// IsPlatformOperator reports whether p is the platform operator (PlatformOperator).
func (p Principal) IsPlatformOperator() bool { return p.platform && p.Role == RoleAdmin && !p.system }

// ActingIn returns the principal the platform operator acts as inside tenantID (to hold or
// resume the queues of a tenant it suspends or resumes): an admin of tenantID with p's id, so
// that events record the operator as their actor. Anyone else gets a *DeniedError
// (ErrForbidden).
func (p Principal) ActingIn(tenantID string) (Principal, error) {
	if !p.IsPlatformOperator() || p.ID == "" || tenantID == "" {
		return Principal{}, &DeniedError{Principal: p, Right: Admin, TenantID: tenantID}
	}
	return Principal{TenantID: tenantID, ID: p.ID, Role: RoleAdmin}, nil
}
