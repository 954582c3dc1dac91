package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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

// OnCommit adds f to the functions called after every committed batch with the keys
// (connection.Key, tenant-qualified: every tenant's) of the connections whose cards it changed
// (each once, in no particular order). f runs on the projection's goroutine and must return
// quickly (wake a worker; no I/O): the operator console uses it to push changed cards to
// browsers. Call it before the runner starts.
func (c *Cards) OnCommit(f func(connKeys []string)) {
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
	days := map[string]*dayTally{}
	fly := &cardFlying{idx: map[[2]string]int{}}
	for _, e := range events {
		connID, ev, ok, err := decodeConn(e)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		touched[connID] = us(e.RecordedAt)
		if err := c.apply(ctx, tx, connID, ev, pending, inFlight, days, fly); err != nil {
			return fmt.Errorf("event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	if err := fly.flush(ctx, tx); err != nil {
		return err
	}
	conns := slices.Sorted(maps.Keys(touched)) // one lock order for every batch
	if tx.Dialect == Postgres && len(conns) > 1 {
		// One statement for the batch's cards (issue 12: one per connection and batch before).
		n := len(conns)
		ps, fs, ats, ds, ns := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for i, connID := range conns {
			var day dayTally
			if d := days[connID]; d != nil {
				day = *d
			}
			ps[i], fs[i], ats[i], ds[i], ns[i] = pending[connID], inFlight[connID], touched[connID], day.start, day.n
		}
		if _, err := tx.ExecContext(ctx, `UPDATE card_connections SET pending = pending + d.p, in_flight = in_flight + d.f,
updated_at_us = d.at, `+dayUpdate("d.ds", "d.n")+`
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS d(conn_id, p, f, at, ds, n)
WHERE card_connections.conn_id = d.conn_id`, conns, ps, fs, ats, ds, ns); err != nil {
			return fmt.Errorf("update %d cards: %w", n, err)
		}
		return nil
	}
	for _, connID := range conns {
		var day dayTally
		if d := days[connID]; d != nil {
			day = *d
		}
		if _, err := tx.ExecContext(ctx, `UPDATE card_connections SET pending = pending + $2, in_flight = in_flight + $3,
updated_at_us = $4, `+dayUpdate("$5", "$6")+` WHERE conn_id = $1`, connID, pending[connID], inFlight[connID], touched[connID], day.start, day.n); err != nil {
			return fmt.Errorf("update card %q: %w", connID, err)
		}
	}
	return nil
}

// cardFlying holds the card_in_flight rows of the messages dispatched in a batch, inserted at
// its end (one statement); a message acknowledged in the same batch never gets one (issue 12:
// an INSERT and a DELETE per message when a dispatch and its outcome share a batch).
type cardFlying struct {
	rows []cardFlyRow
	idx  map[[2]string]int
}

type cardFlyRow struct {
	conn, msg string
	ended     bool
}

func (f *cardFlying) add(connID, msgID string) {
	if _, ok := f.idx[[2]string{connID, msgID}]; ok {
		return
	}
	f.idx[[2]string{connID, msgID}] = len(f.rows)
	f.rows = append(f.rows, cardFlyRow{conn: connID, msg: msgID})
}

// end reports whether the message's row was still to be inserted (it then never is).
func (f *cardFlying) end(connID, msgID string) bool {
	i, ok := f.idx[[2]string{connID, msgID}]
	if !ok {
		return false
	}
	delete(f.idx, [2]string{connID, msgID})
	f.rows[i].ended = true
	return true
}

func (f *cardFlying) flush(ctx context.Context, tx *Tx) error {
	rs := newRowSet("", "")
	for _, r := range f.rows {
		if !r.ended {
			rs.add(r.conn, r.msg)
		}
	}
	if err := insertRowsThen(ctx, tx, `INSERT INTO card_in_flight (conn_id, message_id)`, ` ON CONFLICT DO NOTHING`, rs); err != nil {
		return fmt.Errorf("insert %d cards' messages in flight: %w", rs.n, err)
	}
	return nil
}

// dayTally counts a batch's dispatches of one connection on one local day (start, in µs).
type dayTally struct {
	loc      *time.Location // the connection's zone; nil until looked up
	start, n int64
}

// dayUpdate adds a tally (placeholders d, the day start, and n, the count) to a card's count of
// the day: a later day starts the count again, an earlier one (a dispatch counted under another
// zone) is ignored; n = 0 changes nothing.
func dayUpdate(d, n string) string {
	return `day_count = CASE WHEN day_start_us = ` + d + ` THEN day_count + ` + n + ` WHEN ` + d + ` > day_start_us AND ` + n + ` > 0 THEN ` + n + ` ELSE day_count END,
day_start_us = CASE WHEN ` + d + ` > day_start_us AND ` + n + ` > 0 THEN ` + d + ` ELSE day_start_us END`
}

// countDispatch counts a dispatch at at on the connection's local day (in its policy's zone,
// read once per batch and connection), flushing the tally of an earlier day first.
func (c *Cards) countDispatch(ctx context.Context, tx *Tx, connID string, at time.Time, days map[string]*dayTally) error {
	d := days[connID]
	if d == nil {
		var raw string // no card (none registered): the defaults
		err := tx.QueryRowContext(ctx, `SELECT sending_policy FROM card_connections WHERE conn_id = $1`, connID).Scan(&raw)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sending policy of %q: %w", connID, err)
		}
		d = &dayTally{loc: zoneOf(sendingPolicy(raw).TimeZone)}
		days[connID] = d
	}
	start, _ := connection.Day(at, d.loc)
	s := us(start)
	if d.n > 0 && s != d.start {
		if _, err := tx.ExecContext(ctx, `UPDATE card_connections SET `+dayUpdate("$2", "$3")+` WHERE conn_id = $1`, connID, d.start, d.n); err != nil {
			return err
		}
		d.n = 0
	}
	d.start = s
	d.n++
	return nil
}

// zones caches loaded time zones; a zone that does not load counts in UTC.
var zones sync.Map

func zoneOf(tz string) *time.Location {
	if l, ok := zones.Load(tz); ok {
		return l.(*time.Location)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		loc = time.UTC
	}
	zones.Store(tz, loc)
	return loc
}

// sendingPolicy decodes a card's stored policy; ” (or an unreadable one) is the defaults.
func sendingPolicy(raw string) connection.SendingPolicy {
	var p connection.SendingPolicy
	if raw == "" || json.Unmarshal([]byte(raw), &p) != nil || p.Validate() != nil {
		return connection.DefaultSendingPolicy()
	}
	return p
}

func (c *Cards) apply(ctx context.Context, tx *Tx, connID string, ev connection.Event, pending, inFlight map[string]int64, days map[string]*dayTally, fly *cardFlying) error {
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
	case connection.SendingPolicyChanged:
		b, err := json.Marshal(ev.Policy)
		if err != nil {
			return err
		}
		if d := days[connID]; d != nil {
			d.loc = zoneOf(ev.Policy.TimeZone) // later dispatches of the batch count in the new zone
		}
		return exec(`UPDATE card_connections SET sending_policy = $2 WHERE conn_id = $1`, string(b))
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
	case connection.BroadcastQueued:
		pending[connID] += int64(len(ev.Recipients))
	case connection.MessageExpired, connection.MessageCancelled:
		pending[connID]--
	case connection.MessageDispatched:
		pending[connID]--
		inFlight[connID]++
		if err := c.countDispatch(ctx, tx, connID, ev.DispatchedAt, days); err != nil {
			return err
		}
		fly.add(connID, ev.MessageID.String()) // its card_in_flight row: at the batch's end
		return nil
	case connection.MessageSent, connection.MessageDelivered, connection.MessageRead,
		connection.MessageFailed, connection.MessageOutcomeUnknown:
		me, _ := connection.MessageEventOf(ev)
		if fly.end(connID, me.MessageID.String()) {
			inFlight[connID]--
		} else {
			res, err := tx.ExecContext(ctx, `DELETE FROM card_in_flight WHERE conn_id = $1 AND message_id = $2`, connID, me.MessageID.String())
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				inFlight[connID]--
			}
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
	// SendingPolicy is the connection's sending policy (the defaults until one is recorded).
	SendingPolicy connection.SendingPolicy
	// DayStart and DayCount are the messages dispatched on the connection's latest local day
	// with a dispatch (see SentToday).
	DayStart time.Time
	DayCount int
}

// SentToday returns how many messages were dispatched on the connection's local day of now (in
// its policy's time zone): the figure the daily cap is held against.
func (c Card) SentToday(now time.Time) int {
	start, _ := connection.Day(now, zoneOf(c.SendingPolicy.TimeZone))
	if c.DayStart.IsZero() || !c.DayStart.Equal(start) {
		return 0
	}
	return c.DayCount
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
clear_scope, clear_then, last_problem, last_problem_at_us, registered_at_us, updated_at_us, logout_reason, sending_policy, day_start_us,
day_count`

func scanCard(row interface{ Scan(...any) error }) (Card, error) {
	var c Card
	var link, banKind, banReason, holdReason, holdActor, holdNote, clearID, clearBy, clearScope, clearThen, logoutReason string
	var held, pending, inFlight, banExp, banSince, holdSince, clearAt, probAt, regAt, updAt, dayStart, dayCount int64
	var policy string
	if err := row.Scan(&c.TenantID, &c.ConnectionID, &c.Phone, &c.OnBan, &link, &held, &pending, &inFlight, &banKind, &banExp,
		&banReason, &banSince, &holdReason, &holdActor, &holdNote, &holdSince, &clearID, &clearBy, &clearAt,
		&clearScope, &clearThen, &c.LastProblem, &probAt, &regAt, &updAt, &logoutReason, &policy, &dayStart, &dayCount); err != nil {
		return c, err
	}
	_, c.ConnectionID = connection.SplitKey(c.ConnectionID)
	if err := c.LinkStatus.UnmarshalText([]byte(link)); err != nil {
		return c, err
	}
	c.QueueStatus = queueStatus(clearID != "", held != 0)
	c.SendingPolicy, c.DayCount = sendingPolicy(policy), int(dayCount)
	if dayStart != 0 {
		c.DayStart = fromUS(dayStart).In(zoneOf(c.SendingPolicy.TimeZone))
	}
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
