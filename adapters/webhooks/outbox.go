package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
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
//
// Each row gets its number within its webhook (seq: 1, 2, 3… in event order), the only number
// the delivery log shows (G9: the table's id counts every tenant's deliveries). A batch reserves
// a webhook's numbers by bumping webhooks.last_delivery_seq in its own transaction, which locks
// that row until the commit, and gives back those of rows it did not insert (already there), so
// a webhook's numbers have no gaps; the unique (webhook_id, seq) index refuses a number handed
// out twice. Several nodes' outboxes on one PostgreSQL database are serialized anyway by the
// runner's lock on the projection's checkpoint row.
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

// outboxRow is a delivery to insert, not yet numbered.
type outboxRow struct {
	tenant, eventID, eventType, payload string
	createdUS                           int64
}

// outboxBatch is what one Apply collects: the live webhooks of each tenant seen (read once per
// batch), and the rows to insert per webhook, in event order.
type outboxBatch struct {
	tx    *projections.Tx
	hooks map[string][]hook
	rows  map[string][]outboxRow
}

// Apply implements projections.Projection.
func (o *Outbox) Apply(ctx context.Context, tx *projections.Tx, events []eventstore.RecordedEvent) error {
	b := &outboxBatch{tx: tx, hooks: map[string][]hook{}, rows: map[string][]outboxRow{}}
	for _, e := range events {
		if strings.HasPrefix(e.Stream, connection.StreamPrefix) {
			// A connection event's integration events carry the recorded event's tenant:
			// for a tenant without a live webhook there is nothing to write, so nothing to
			// translate (most tenants; translating every message was half of this
			// projection's CPU in bench api).
			hs, err := b.hooksOf(ctx, e.Metadata.TenantID)
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
			wanted, err := b.wants(ctx, e.Metadata.TenantID, integration.TypeMessageStatusChanged)
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
			if err := b.add(ctx, e, ie); err != nil {
				return err
			}
		}
	}
	wrote, err := b.insert(ctx)
	if wrote {
		o.wrote.Store(true)
	}
	return err
}

// wants reports whether a webhook of tenant subscribes to integration events of type typ.
func (b *outboxBatch) wants(ctx context.Context, tenant, typ string) (bool, error) {
	hs, err := b.hooksOf(ctx, tenant)
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

// add collects the outbox rows of integration event ie (of recorded event e) for the tenant's
// webhooks subscribed to its type.
func (b *outboxBatch) add(ctx context.Context, e eventstore.RecordedEvent, ie integration.Event) error {
	if ie.TenantID == "" {
		return nil
	}
	hs, err := b.hooksOf(ctx, ie.TenantID)
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
		b.rows[h.id] = append(b.rows[h.id], outboxRow{tenant: ie.TenantID, eventID: ie.ID.String(), eventType: ie.Type,
			payload: string(payload), createdUS: e.RecordedAt.UnixMicro()})
	}
	return nil
}

// insert writes the collected rows, webhook by webhook in id order (the order in which
// concurrent transactions lock webhooks rows, so they cannot deadlock), each numbered after its
// webhook's last delivery, and reports whether it inserted any. Numbers reserved for rows that
// were already there are given back before the transaction ends.
func (b *outboxBatch) insert(ctx context.Context) (bool, error) {
	wrote := false
	for _, id := range slices.Sorted(maps.Keys(b.rows)) {
		rows := b.rows[id]
		var last int64
		if err := b.tx.QueryRowContext(ctx, `UPDATE webhooks SET last_delivery_seq = last_delivery_seq + $1 WHERE id = $2 RETURNING last_delivery_seq`,
			len(rows), id).Scan(&last); err != nil {
			return wrote, fmt.Errorf("webhooks: number %d deliveries of %s: %w", len(rows), id, err)
		}
		seq := last - int64(len(rows)) + 1
		for _, r := range rows {
			res, err := b.tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
(webhook_id, seq, tenant_id, event_id, event_type, payload, created_at_us, next_attempt_at_us)
VALUES ($1, $2, $3, $4, $5, $6, $7, 0) ON CONFLICT (webhook_id, event_id) DO NOTHING`,
				id, seq, r.tenant, r.eventID, r.eventType, r.payload, r.createdUS)
			if err != nil {
				return wrote, fmt.Errorf("webhooks: outbox row %s/%d (event %s): %w", id, seq, r.eventID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return wrote, fmt.Errorf("webhooks: outbox row %s/%d (event %s): %w", id, seq, r.eventID, err)
			}
			if n == 1 {
				seq++
				wrote = true
			}
		}
		if unused := last + 1 - seq; unused > 0 {
			if _, err := b.tx.ExecContext(ctx, `UPDATE webhooks SET last_delivery_seq = last_delivery_seq - $1 WHERE id = $2`, unused, id); err != nil {
				return wrote, fmt.Errorf("webhooks: give back %d numbers of %s: %w", unused, id, err)
			}
		}
	}
	return wrote, nil
}

// hooksOf returns the live webhooks of tenant (none for ""), read once per batch.
func (b *outboxBatch) hooksOf(ctx context.Context, tenant string) ([]hook, error) {
	if tenant == "" {
		return nil, nil
	}
	hs, cached := b.hooks[tenant]
	if !cached {
		var err error
		if hs, err = tenantHooks(ctx, b.tx, tenant); err != nil {
			return nil, err
		}
		b.hooks[tenant] = hs
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
