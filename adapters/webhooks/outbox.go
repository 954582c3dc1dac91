package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

// OutboxName is the Outbox projection's name (its checkpoint key).
const OutboxName = "webhooks_outbox"

// Outbox is the projection that fills webhook_deliveries: for each domain event with an
// integration event, one row per live webhook of the event's tenant that subscribes to its type
// and was registered at or before the event was recorded. Rows are written in the runner's
// transaction, with its checkpoint; a redelivered batch inserts nothing twice (unique
// webhook_id, event_id).
type Outbox struct {
	wake func()
	// wrote is set by an Apply that inserted rows and taken by the AfterCommit that follows
	// (both on the runner's goroutine): the worker is woken only when there may be something
	// to deliver. A rolled-back Apply at worst causes one needless wake-up.
	wrote atomic.Bool
}

var (
	_ projections.Projection     = (*Outbox)(nil)
	_ projections.AfterCommitter = (*Outbox)(nil)
)

// NewOutbox returns the projection; wake (optional, typically Worker.Wake) is called after a
// batch that wrote rows has committed.
func NewOutbox(wake func()) *Outbox { return &Outbox{wake: wake} }

// Name implements projections.Projection.
func (o *Outbox) Name() string { return OutboxName }

// Filter implements projections.Projection.
func (o *Outbox) Filter() eventstore.Filter { return integration.Filter() }

type hook struct {
	id      string
	types   map[string]bool
	created int64
}

// Apply implements projections.Projection.
func (o *Outbox) Apply(ctx context.Context, tx *projections.Tx, events []eventstore.RecordedEvent) error {
	hooks := map[string][]hook{}
	for _, e := range events {
		if strings.HasPrefix(e.Stream, connection.StreamPrefix) {
			// A connection event's integration events carry the recorded event's tenant:
			// for a tenant without a live webhook there is nothing to write, so nothing to
			// translate (most tenants; translating every message was half of this
			// projection's CPU in bench api).
			hs, err := o.hooksOf(ctx, tx, hooks, e.Metadata.TenantID)
			if err != nil {
				return err
			}
			if len(hs) == 0 {
				continue
			}
		}
		if e.Type == connection.TypeBroadcastQueued {
			// Up to connection.BroadcastChunk integration events: build them only for a
			// tenant with a webhook that takes them.
			wanted, err := o.wants(ctx, tx, hooks, e.Metadata.TenantID, integration.TypeMessageStatusChanged)
			if err != nil {
				return err
			}
			if !wanted {
				continue
			}
		}
		ies, err := integration.TranslateAll(e)
		if err != nil {
			return err
		}
		for _, ie := range ies {
			if err := o.add(ctx, tx, hooks, e, ie); err != nil {
				return err
			}
		}
	}
	return nil
}

// wants reports whether a webhook of tenant subscribes to integration events of type typ.
func (o *Outbox) wants(ctx context.Context, tx *projections.Tx, hooks map[string][]hook, tenant, typ string) (bool, error) {
	hs, err := o.hooksOf(ctx, tx, hooks, tenant)
	if err != nil {
		return false, err
	}
	for _, h := range hs {
		if h.types[typ] {
			return true, nil
		}
	}
	return false, nil
}

// add writes the outbox rows of integration event ie (of recorded event e) for the tenant's
// webhooks subscribed to its type; hooks caches the webhooks per tenant.
func (o *Outbox) add(ctx context.Context, tx *projections.Tx, hooks map[string][]hook, e eventstore.RecordedEvent, ie integration.Event) error {
	if ie.TenantID == "" {
		return nil
	}
	hs, err := o.hooksOf(ctx, tx, hooks, ie.TenantID)
	if err != nil {
		return err
	}
	var payload []byte
	for _, h := range hs {
		if !h.types[ie.Type] || h.created > e.RecordedAt.UnixMicro() {
			continue
		}
		if payload == nil {
			if payload, err = json.Marshal(ie); err != nil {
				return fmt.Errorf("webhooks: encode %s: %w", ie.ID, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
(webhook_id, tenant_id, event_id, event_type, payload, created_at_us, next_attempt_at_us)
VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (webhook_id, event_id) DO NOTHING`,
			h.id, ie.TenantID, ie.ID.String(), ie.Type, string(payload), e.RecordedAt.UnixMicro()); err != nil {
			return fmt.Errorf("webhooks: outbox row for %s: %w", h.id, err)
		}
		o.wrote.Store(true)
	}
	return nil
}

// hooksOf returns the live webhooks of tenant (none for ""), read once per batch (hooks caches
// them per tenant).
func (o *Outbox) hooksOf(ctx context.Context, tx *projections.Tx, hooks map[string][]hook, tenant string) ([]hook, error) {
	if tenant == "" {
		return nil, nil
	}
	hs, cached := hooks[tenant]
	if !cached {
		var err error
		if hs, err = tenantHooks(ctx, tx, tenant); err != nil {
			return nil, err
		}
		hooks[tenant] = hs
	}
	return hs, nil
}

func tenantHooks(ctx context.Context, tx *projections.Tx, tenant string) ([]hook, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, event_types, created_at_us FROM webhooks WHERE tenant_id = $1 AND deleted_at_us = 0`, tenant)
	if err != nil {
		return nil, fmt.Errorf("webhooks: webhooks of %s: %w", tenant, err)
	}
	defer rows.Close()
	var out []hook
	for rows.Next() {
		var h hook
		var types string
		if err := rows.Scan(&h.id, &types, &h.created); err != nil {
			return nil, fmt.Errorf("webhooks: webhooks of %s: %w", tenant, err)
		}
		h.types = map[string]bool{}
		for _, t := range strings.Split(types, ",") {
			h.types[t] = true
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Reset implements projections.Projection. It deletes nothing: the outbox and its log are the
// record of what was sent. A rebuild re-inserts nothing already there (unique event ids) and,
// because only webhooks registered before an event receive it, sends no old event to a newer
// webhook.
func (o *Outbox) Reset(context.Context, *projections.Tx) error { return nil }

// AfterCommit implements projections.AfterCommitter: it wakes the worker after a batch that
// wrote rows (waking it after every batch made it query its due rows once per batch of every
// tenant's messages).
func (o *Outbox) AfterCommit([]eventstore.RecordedEvent) {
	if o.wrote.Swap(false) && o.wake != nil {
		o.wake()
	}
}
