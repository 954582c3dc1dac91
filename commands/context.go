package commands

import (
	"context"
	"time"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

type ctxKey int

const (
	principalKey ctxKey = iota
	correlationKey
	causationKey
)

// WithPrincipal returns a context carrying the caller's principal. Handlers authorize against it;
// a context without one is refused with ErrUnauthenticated.
func WithPrincipal(ctx context.Context, p auth.Principal) context.Context {
	return context.WithValue(ctx, principalKey, p)
}

// PrincipalFromContext returns the principal set by WithPrincipal, if any.
func PrincipalFromContext(ctx context.Context) (auth.Principal, bool) {
	p, ok := ctx.Value(principalKey).(auth.Principal)
	return p, ok
}

// WithCorrelationID returns a context whose appended events carry id as their correlation id.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
}

// CorrelationIDFromContext returns the correlation id set by WithCorrelationID ("" if none).
func CorrelationIDFromContext(ctx context.Context) string {
	s, _ := ctx.Value(correlationKey).(string)
	return s
}

// WithCausationID returns a context whose appended events carry id as their causation id (the id
// of the message or event that caused the command).
func WithCausationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, causationKey, id)
}

// CausationIDFromContext returns the causation id set by WithCausationID ("" if none).
func CausationIDFromContext(ctx context.Context) string {
	s, _ := ctx.Value(causationKey).(string)
	return s
}

// SystemPrincipal returns the principal waqueue's own processes (dispatcher, transport event
// handler, clearing process) act as inside tenantID (auth.SystemPrincipal). It alone holds
// auth.System, which the transport-originated commands require; no API key and no bus message
// can obtain it. Its ID is connection.SystemActor, recorded as the actor.
func SystemPrincipal(tenantID string) auth.Principal {
	return auth.SystemPrincipal(tenantID, connection.SystemActor)
}

// Clock returns the current time. Handlers take one so that tests control the times decided.
type Clock func() time.Time

// SystemClock is the wall clock in UTC.
func SystemClock() time.Time { return time.Now().UTC() }
