package commands

import (
	"errors"
	"testing"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestLegacyStreamsAreTheDefaultTenants: a stream written before ids were scoped
// ("connection-<id>", appended here byte for byte as that version did) is the default tenant's
// connection: it loads, takes new events on the same stream, and refuses a second registration;
// another tenant registering the same id gets its own stream. On SQLite and PostgreSQL.
func TestLegacyStreamsAreTheDefaultTenants(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			const legacy = "connection-shop-1"
			reg := connection.ConnectionRegistered{ConnectionID: "shop-1", TenantID: connection.DefaultTenant, Phone: phone,
				OnBan: connection.OnBanHold, RegisteredBy: "api-key:old", RegisteredAt: t0}
			typ, data, err := connection.Encode(reg)
			if err != nil {
				t.Fatal(err)
			}
			// The old version's id of this event: "event", type, "connection/<id>".
			if _, err := store.Append(ctx, legacy, eventstore.NoStream, eventstore.EventData{
				ID: connection.EventID(legacy, 0, reg), Type: typ, Data: data,
				Metadata: eventstore.Metadata{TenantID: connection.DefaultTenant, Actor: "api-key:old"},
			}); err != nil {
				t.Fatal(err)
			}

			h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			def := auth.Principal{TenantID: connection.DefaultTenant, ID: "op-default", Role: auth.RoleOperator}
			acme := auth.Principal{TenantID: "acme", ID: "op-acme", Role: auth.RoleOperator}
			if _, err := h.register.Handle(as(ctx, def), RegisterConnection{ConnectionID: "shop-1", Phone: phone}); !errors.Is(err, connection.ErrAlreadyRegistered) {
				t.Fatalf("registering the legacy id again in tenant default: %v, want ErrAlreadyRegistered", err)
			}
			if _, err := h.hold.Handle(as(ctx, def), HoldQueue{ConnectionID: "shop-1", Note: "after the upgrade"}); err != nil {
				t.Fatal(err)
			}
			if evs, err := store.ReadStream(ctx, legacy, eventstore.Forwards, 0, 0); err != nil || len(evs) != 2 || evs[1].Type != connection.TypeQueueHeld {
				t.Fatalf("legacy stream after a command: %d events, %v", len(evs), err)
			}
			if _, err := h.register.Handle(as(ctx, acme), RegisterConnection{ConnectionID: "shop-1", Phone: phone}); err != nil {
				t.Fatalf("another tenant registering the legacy id: %v", err)
			}
			if evs, err := store.ReadStream(ctx, "connection-acme:shop-1", eventstore.Forwards, 0, 0); err != nil || len(evs) != 1 {
				t.Fatalf("acme's stream: %d events, %v", len(evs), err)
			}
			if _, err := h.resume.Handle(as(ctx, acme), ResumeQueue{ConnectionID: "shop-1"}); !errors.Is(err, connection.ErrNotHeld) {
				t.Fatalf("acme's queue shares the default tenant's hold: %v", err)
			}
		})
	}
}
