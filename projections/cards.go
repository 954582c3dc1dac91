package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// CardsName is the name (and checkpoint key) of the connection-cards projection.
const CardsName = "cards"

// Cards is the read model of the operators' connection cards: one row per connection with its
// link and queue status, counts, ban, hold and clear in progress.
type Cards struct {
	mu     sync.Mutex
	notify []func(connIDs []string)
}

// NewCards returns the connection-cards projection.
func NewCards() *Cards { return &Cards{} }

var (
	_ Projection     = (*Cards)(nil)
	_ AfterCommitter = (*Cards)(nil)
)

// OnCommit adds f to the functions called after every committed batch with the ids of the
// connections whose cards it changed (each once, in no particular order). f runs on the
// projection's goroutine and must return quickly (wake a worker; no I/O): the operator
// console uses it to push changed cards to browsers. Call it before the runner starts.
func (c *Cards) OnCommit(f func(connIDs []string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notify = append(c.notify, f)
}

// AfterCommit implements AfterCommitter.
func (c *Cards) AfterCommit(events []eventstore.RecordedEvent) {
	c.mu.Lock()
	fs := c.notify
	c.mu.Unlock()
	if len(fs) == 0 {
		return
	}
	seen := map[string]bool{}
	var ids []string
	for _, e := range events {
		id, ok := connection.IDFromStream(e.Stream)
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return
	}
	for _, f := range fs {
		f(ids)
	}
}

// Name implements Projection.
func (*Cards) Name() string { return CardsName }

// Filter implements Projection: every connection event, TransportProblemObserved included
// (the filter names no types, so every new connection event type reaches the cards).
func (*Cards) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix}}
}

// Reset implements Projection.
func (*Cards) Reset(ctx context.Context, tx *Tx) error {
	return execAll(ctx, tx, `DELETE FROM card_in_flight`, `DELETE FROM card_connections`)
}

// Apply implements Projection.
func (c *Cards) Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error {
	pending := map[string]int64{}
	inFlight := map[string]int64{}
	touched := map[string]int64{}
	for _, e := range events {
		connID, ev, ok, err := decodeConn(e)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		touched[connID] = us(e.RecordedAt)
		if err := c.apply(ctx, tx, connID, ev, pending, inFlight); err != nil {
			return fmt.Errorf("event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	for connID, at := range touched {
		if _, err := tx.ExecContext(ctx, `UPDATE card_connections SET pending = pending + $2, in_flight = in_flight + $3,
updated_at_us = $4 WHERE conn_id = $1`, connID, pending[connID], inFlight[connID], at); err != nil {
			return fmt.Errorf("update card %q: %w", connID, err)
		}
	}
	return nil
}

func (c *Cards) apply(ctx context.Context, tx *Tx, connID string, ev connection.Event, pending, inFlight map[string]int64) error {
	exec := func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, append([]any{connID}, args...)...)
		return err
	}
	switch ev := ev.(type) {
	case connection.ConnectionRegistered:
		return exec(`INSERT INTO card_connections (conn_id, tenant_id, phone, on_ban, link_status, registered_at_us, updated_at_us)
VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (conn_id) DO NOTHING`,
			ev.TenantID, ev.Phone, policyText(ev.OnBan), connection.LinkStatusUnpaired.String(), us(ev.RegisteredAt))
	case connection.OnBanPolicyChanged:
		return exec(`UPDATE card_connections SET on_ban = $2 WHERE conn_id = $1`, policyText(ev.Policy))
	case connection.SessionPaired:
		// A (re)paired link starts with a clean slate: the problem that broke it is resolved.
		return exec(`UPDATE card_connections SET link_status = $2, last_problem = '', last_problem_at_us = 0, logout_reason = ''
WHERE conn_id = $1`, connection.LinkStatusActive.String())
	case connection.ConnectionRetired:
		return exec(`UPDATE card_connections SET link_status = $2, ban_kind = '', ban_expires_at_us = 0, ban_reason = '',
ban_since_us = 0, logout_reason = '' WHERE conn_id = $1`,
			connection.LinkStatusRetired.String())
	case connection.SessionInvalidated:
		// An operator's logout may end a banned link (connection.Unpair): the ban is over for the card.
		return exec(`UPDATE card_connections SET link_status = $2, last_problem = $3, last_problem_at_us = $4, logout_reason = $5,
ban_kind = '', ban_expires_at_us = 0, ban_reason = '', ban_since_us = 0
WHERE conn_id = $1`, connection.LinkStatusSessionInvalid.String(), "session_invalidated: "+ev.Reason, us(ev.InvalidatedAt), ev.Reason)
	case connection.ConnectionBanned:
		return exec(`UPDATE card_connections SET link_status = $2, ban_kind = $3, ban_expires_at_us = $4, ban_reason = $5,
ban_since_us = CASE WHEN ban_since_us = 0 THEN $6 ELSE ban_since_us END WHERE conn_id = $1`,
			connection.LinkStatusBanned.String(), ev.Kind.String(), us(ev.ExpiresAt), ev.ReasonCode, us(ev.BannedAt))
	case connection.BanLifted:
		// As on pairing, the link is active again: the last problem is cleared.
		return exec(`UPDATE card_connections SET link_status = $2, ban_kind = '', ban_expires_at_us = 0, ban_reason = '',
ban_since_us = 0, last_problem = '', last_problem_at_us = 0 WHERE conn_id = $1`, connection.LinkStatusActive.String())
	case connection.TransportProblemObserved:
		return exec(`UPDATE card_connections SET last_problem = $2, last_problem_at_us = $3 WHERE conn_id = $1`,
			problemText(ev), us(ev.ObservedAt))
	case connection.QueueHeld:
		return exec(`UPDATE card_connections SET held = 1, hold_reason = $2, hold_actor = $3, hold_note = $4, hold_since_us = $5
WHERE conn_id = $1`, ev.Reason.String(), ev.Actor, ev.Note, us(ev.HeldAt))
	case connection.QueueResumed:
		return exec(`UPDATE card_connections SET held = 0, hold_reason = '', hold_actor = '', hold_note = '', hold_since_us = 0
WHERE conn_id = $1`)
	case connection.ClearQueueRequested:
		pending[connID] -= int64(ev.PurgeCount)
		return exec(`UPDATE card_connections SET clear_id = $2, clear_requested_by = $3, clear_requested_at_us = $4, clear_scope = $5,
clear_then = $6 WHERE conn_id = $1`, ev.ClearID.String(), ev.RequestedBy, us(ev.RequestedAt), ev.Scope.String(), ev.Then.String())
	case connection.QueueCleared:
		return exec(`UPDATE card_connections SET clear_id = '', clear_requested_by = '', clear_requested_at_us = 0, clear_scope = '',
clear_then = '' WHERE conn_id = $1 AND clear_id = $2`, ev.ClearID.String())
	case connection.MessageQueued:
		pending[connID]++
	case connection.MessageExpired, connection.MessageCancelled:
		pending[connID]--
	case connection.MessageDispatched:
		pending[connID]--
		inFlight[connID]++
		return exec(`INSERT INTO card_in_flight (conn_id, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, ev.MessageID.String())
	case connection.MessageSent, connection.MessageDelivered, connection.MessageRead,
		connection.MessageFailed, connection.MessageOutcomeUnknown:
		me, _ := connection.MessageEventOf(ev)
		res, err := tx.ExecContext(ctx, `DELETE FROM card_in_flight WHERE conn_id = $1 AND message_id = $2`, connID, me.MessageID.String())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			inFlight[connID]--
		}
		if f, ok := ev.(connection.MessageFailed); ok {
			return exec(`UPDATE card_connections SET last_problem = $2, last_problem_at_us = $3 WHERE conn_id = $1`,
				"message_failed: "+f.Code, us(f.FailedAt))
		}
		if u, ok := ev.(connection.MessageOutcomeUnknown); ok {
			return exec(`UPDATE card_connections SET last_problem = $2, last_problem_at_us = $3 WHERE conn_id = $1`,
				"outcome_unknown: "+u.Cause, us(u.At))
		}
	}
	return nil
}

// problemText is a card's text for a transport problem: "kind: reason", or the kind alone.
func problemText(p connection.TransportProblemObserved) string {
	if p.Reason == "" {
		return p.Kind.String()
	}
	return p.Kind.String() + ": " + p.Reason
}

func policyText(p connection.OnBanPolicy) string {
	if p.IsZero() {
		return connection.OnBanHold.String()
	}
	return p.String()
}

// Card is a connection card.
type Card struct {
	TenantID     string
	ConnectionID string
	Phone        string
	OnBan        string
	LinkStatus   connection.LinkStatus
	QueueStatus  connection.QueueStatus
	Pending      uint64
	InFlight     uint64
	// Ban is set while the connection is banned.
	Ban *CardBan
	// Logout is set while the link is session_invalid.
	Logout *CardLogout
	// Hold is set while the queue is held.
	Hold *CardHold
	// Clear is set while a clear is in progress.
	Clear *CardClear
	// LastProblem is the last problem reported ("session_invalidated: 401",
	// "message_failed: not_on_whatsapp", "stream_replaced", "connect_failure: 500", ...), empty
	// if none. Pairing the session and lifting a ban clear it.
	LastProblem   string
	LastProblemAt time.Time
	RegisteredAt  time.Time
	UpdatedAt     time.Time
}

// CardBan is a card's current ban.
type CardBan struct {
	Kind connection.BanKind
	// ExpiresAt is zero for a permanent ban.
	ExpiresAt time.Time
	// Reason is the transport's reason code ("101"); Explained says it in words.
	Reason    string
	Explained connection.Reason
	Since     time.Time
}

// CardLogout is why a card's session was lost, while its link is session_invalid.
type CardLogout struct {
	// Reason is the transport's reason code ("401"); Explained says it in words.
	Reason    string
	Explained connection.Reason
}

// CardHold is a card's current hold.
type CardHold struct {
	Reason connection.HoldReason
	Actor  string
	Note   string
	Since  time.Time
}

// CardClear is a card's clear in progress.
type CardClear struct {
	ClearID     uuid.UUID
	RequestedBy string
	RequestedAt time.Time
	// Scope is "queue" or "broadcast:<id>" (connection.ClearScope.String).
	Scope string
	// Then is what the queue becomes when the clear completes (keep, hold or resume).
	Then connection.ClearThen
}

const cardColumns = `tenant_id, conn_id, phone, on_ban, link_status, held, pending, in_flight, ban_kind, ban_expires_at_us,
ban_reason, ban_since_us, hold_reason, hold_actor, hold_note, hold_since_us, clear_id, clear_requested_by, clear_requested_at_us,
clear_scope, clear_then, last_problem, last_problem_at_us, registered_at_us, updated_at_us, logout_reason`

func scanCard(row interface{ Scan(...any) error }) (Card, error) {
	var c Card
	var link, banKind, banReason, holdReason, holdActor, holdNote, clearID, clearBy, clearScope, clearThen, logoutReason string
	var held, pending, inFlight, banExp, banSince, holdSince, clearAt, probAt, regAt, updAt int64
	if err := row.Scan(&c.TenantID, &c.ConnectionID, &c.Phone, &c.OnBan, &link, &held, &pending, &inFlight, &banKind, &banExp,
		&banReason, &banSince, &holdReason, &holdActor, &holdNote, &holdSince, &clearID, &clearBy, &clearAt,
		&clearScope, &clearThen, &c.LastProblem, &probAt, &regAt, &updAt, &logoutReason); err != nil {
		return c, err
	}
	_, c.ConnectionID = connection.SplitKey(c.ConnectionID)
	if err := c.LinkStatus.UnmarshalText([]byte(link)); err != nil {
		return c, err
	}
	c.QueueStatus = queueStatus(clearID != "", held != 0)
	c.Pending, c.InFlight = uint64(max(pending, 0)), uint64(max(inFlight, 0))
	c.LastProblemAt, c.RegisteredAt, c.UpdatedAt = fromUS(probAt), fromUS(regAt), fromUS(updAt)
	if banKind != "" {
		c.Ban = &CardBan{ExpiresAt: fromUS(banExp), Reason: banReason, Since: fromUS(banSince)}
		if err := c.Ban.Kind.UnmarshalText([]byte(banKind)); err != nil {
			return c, err
		}
		c.Ban.Explained = connection.ExplainBan(c.Ban.Kind, banReason)
	}
	if c.LinkStatus == connection.LinkStatusSessionInvalid {
		c.Logout = &CardLogout{Reason: logoutReason, Explained: connection.ExplainLogout(logoutReason)}
	}
	if held != 0 {
		c.Hold = &CardHold{Actor: holdActor, Note: holdNote, Since: fromUS(holdSince)}
		if err := c.Hold.Reason.UnmarshalText([]byte(holdReason)); err != nil {
			return c, err
		}
	}
	if clearID != "" {
		id, err := uuid.Parse(clearID)
		if err != nil {
			return c, err
		}
		c.Clear = &CardClear{ClearID: id, RequestedBy: clearBy, RequestedAt: fromUS(clearAt), Scope: clearScope}
		if err := c.Clear.Then.UnmarshalText([]byte(clearThen)); err != nil {
			return c, err
		}
		if c.Clear.Then.IsZero() {
			c.Clear.Then = connection.ClearThenKeep
		}
	}
	return c, nil
}

// Card returns connection connID of tenant; ErrNotFound when unknown or another tenant's.
func (c *Cards) Card(ctx context.Context, db *DB, tenant, connID string) (Card, error) {
	card, err := scanCard(db.QueryRowContext(ctx, `SELECT `+cardColumns+` FROM card_connections WHERE conn_id = $1 AND tenant_id = $2`,
		connection.Key(tenant, connID), tenant))
	if errors.Is(err, sql.ErrNoRows) {
		return card, fmt.Errorf("projections: connection %q: %w", connID, ErrNotFound)
	}
	if err != nil {
		return card, fmt.Errorf("projections: connection %q: %w", connID, err)
	}
	return card, nil
}

// List returns tenant's connection cards ordered by connection id.
func (c *Cards) List(ctx context.Context, db *DB, tenant string) ([]Card, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+cardColumns+` FROM card_connections WHERE tenant_id = $1 ORDER BY conn_id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("projections: connections of %q: %w", tenant, err)
	}
	defer rows.Close()
	var out []Card
	for rows.Next() {
		card, err := scanCard(rows)
		if err != nil {
			return nil, fmt.Errorf("projections: connections of %q: %w", tenant, err)
		}
		out = append(out, card)
	}
	return out, rows.Err()
}
