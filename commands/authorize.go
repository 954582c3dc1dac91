package commands

import (
	"context"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// principal returns the caller of ctx if it holds right in its own tenant: a missing principal
// is ErrUnauthenticated, a missing right an *auth.DeniedError (auth.ErrForbidden). Nothing is
// loaded before this check.
func principal(ctx context.Context, right auth.Right) (auth.Principal, error) {
	p, ok := PrincipalFromContext(ctx)
	if !ok {
		return auth.Principal{}, ErrUnauthenticated
	}
	if err := p.Authorize(p.TenantID, right); err != nil {
		return auth.Principal{}, err
	}
	return p, nil
}

// visible reports a *NotFoundError unless c is a registered connection of p's tenant, so that
// another tenant's connection looks exactly like a missing one (G9).
func visible(p auth.Principal, connID string, c *connection.Connection) error {
	if !c.Registered() || c.TenantID() != p.TenantID {
		return &NotFoundError{ConnectionID: connID}
	}
	return nil
}

// bareID returns the connection id that ref (an id, or a key of p's tenant, see connection.Key)
// names in p's tenant: the one spelling idempotency ids are derived from, so that a key and
// its bare id cannot open two idempotency spaces for one connection.
func bareID(p auth.Principal, ref string) string {
	_, id := connection.SplitKey(connection.Key(p.TenantID, ref))
	return id
}

// update authorizes the caller for right, then runs decide on the connection through the
// repository, refusing connections the caller cannot see.
func update(ctx context.Context, repo *Repository, connID string, right auth.Right,
	decide func(p auth.Principal, c *connection.Connection) ([]connection.Event, error)) (Appended, error) {
	return claimUpdate(ctx, repo, connID, right, uuid.Nil, decide)
}

// claimUpdate is update with a claim (see Repository.update).
func claimUpdate(ctx context.Context, repo *Repository, connID string, right auth.Right, claim uuid.UUID,
	decide func(p auth.Principal, c *connection.Connection) ([]connection.Event, error)) (Appended, error) {
	p, err := principal(ctx, right)
	if err != nil {
		return Appended{}, err
	}
	return repo.update(ctx, connection.Key(p.TenantID, connID), p.ID, func(c *connection.Connection) ([]connection.Event, error) {
		if err := visible(p, connID, c); err != nil {
			return nil, err
		}
		return decide(p, c)
	}, claim)
}

// Result is what every command returns besides its own figures.
type Result struct {
	// Position is the global position of the last event appended (zero when the command was an
	// idempotent no-op). Callers wait for projections to pass it for read-your-writes.
	Position eventstore.Position
	// Version is the connection stream's last revision after the command.
	Version int64
}

func resultOf(a Appended) Result { return Result{Position: a.Position, Version: a.Version} }
