package connection

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Connection is the aggregate of one connection stream: a WhatsApp number of a tenant, its link
// status and its outgoing queue.
//
// # Decisions
//
// Decisions are methods such as Enqueue(cmd, now) that validate a command against the current
// state and return the events to append, without mutating the Connection; the caller (the
// command handler) appends them at the expected revision Version() and, on success, may Apply
// them. A decision that returns an error returns no events. Decisions are deterministic: the
// same state, command and now give the same events (now is the injected clock; the domain never
// reads the time itself), so a retried decision yields the same event ids (EventID).
//
// # Small state
//
// The Connection never holds the messages: loading a stream of a million events costs O(1)
// memory per message. What it keeps is bounded by the number of messages in flight, of
// broadcasts with pending messages and of the ranges purged by a clear not yet passed over:
//
//   - every MessageQueued gets the next queue position Seq (1, 2, 3, …) from the aggregate;
//   - the queue is worked strictly in order: the dispatch cursor is the highest Seq disposed
//     of (dispatched, expired, or purged by a clear). Dispatch and Expire accept only the head,
//     the first Seq after the cursor that no clear purged; so a message is disposed of exactly
//     once, and no message can be skipped and forgotten;
//   - a clear of the whole queue moves the cursor to the last Seq queued before the request
//     (UpToSeq): everything at or below it was dispatched, expired or is now purged — this is
//     the G1 fence, enforced by the store's optimistic concurrency because Dispatch appends at
//     the revision the state was loaded at;
//   - a clear of one broadcast records the broadcast's pending range (its messages are
//     contiguous in Seq, being appended in one atomic batch); the cursor jumps over it when it
//     reaches it; a cancelled message is recorded the same way, as a range of one position;
//   - the messages in flight (dispatched, not yet acknowledged) are kept by id, so that an
//     acknowledgement is recorded once and a clear reports them; Dispatch keeps them at most
//     MaxInFlight. Each knows its hand-over attempt, whether the transport refused it
//     (MessageSendDeferred: not in WhatsApp's hands) and the revision it was dispatched at;
//   - the revision of the last clear, hold, ban or session loss, so that a retried hand-over is
//     refused when one was recorded since the message was dispatched (G1);
//   - the queue positions handed over and acknowledged as sent (or with an unknown outcome), as
//     sorted disjoint ranges, so that delivered and read receipts are accepted only for them.
//     Messages are dispatched in Seq order, so the ranges are few (a gap per clear, run of
//     expiries or failure); at most MaxReceiptRanges are kept, the oldest forgotten first (a
//     receipt for a forgotten message is refused: never a false fact, at worst a lost one).
//
// The pending queue itself (which message id and recipient is at which Seq) is a projection
// of the MessageQueued events; the dispatcher reads the head there and asks the aggregate.
//
// A Connection is not safe for concurrent use. The zero value is not usable; use New or Restore.
type Connection struct {
	version int64 // revision of the last event applied; -1 for none

	id      string
	tenant  string
	phone   string
	region  string
	onBan   OnBanPolicy
	sending SendingPolicy // zero: DefaultSendingPolicy
	regAt   time.Time
	link    LinkStatus
	linkAt  time.Time
	ban     *BanInfo
	hold    *HoldInfo
	clear   *ClearQueueRequested // clear in progress
	last    *ClearQueueRequested // most recent clear requested (in progress or completed)
	lastSeq uint64
	cursor  uint64
	ahead   []purgedRange // purged by scoped clears, above the cursor, sorted, disjoint
	bcasts  []BroadcastRange
	flight  map[uuid.UUID]flightEntry // in-flight message id → its hand-over state
	// disrupted is the revision of the last ClearQueueRequested, QueueHeld, ConnectionBanned
	// or SessionInvalidated (-1 for none).
	disrupted int64
	handed    []SeqRange // handed over and acknowledged sent/unknown; sorted, disjoint, capped
	count     Counters
	// epoch is the highest lease epoch recorded by MessageDispatched or MessageSendRetried.
	epoch uint64

	// overruled: a hold, ban or session loss was recorded while the clear in progress ran, so
	// its then=resume is not applied (the newer fact wins, G7).
	overruled bool
}

// flightEntry is the hand-over state of a message in flight.
type flightEntry struct {
	Seq uint64 `json:"seq"`
	// Attempt is the number of the last hand-over fenced (1 by MessageDispatched).
	Attempt int `json:"attempt"`
	// Deferred: the transport refused the last hand-over (MessageSendDeferred), no retry since.
	Deferred bool `json:"deferred,omitempty"`
	// DispatchedAt is the stream revision of the message's MessageDispatched.
	DispatchedAt int64 `json:"dispatched_at"`
}

// purgedRange is a range of pending positions disposed of above the cursor: purged by a scoped
// clear (ClearID), or one message cancelled (Cancelled, ClearID zero).
type purgedRange struct {
	SeqRange
	ClearID   uuid.UUID `json:"clear_id"`
	Cancelled bool      `json:"cancelled,omitempty"`
}

// BroadcastRange is the queue positions of a broadcast with pending messages.
type BroadcastRange struct {
	BroadcastID uuid.UUID `json:"broadcast_id"`
	FirstSeq    uint64    `json:"first_seq"`
	LastSeq     uint64    `json:"last_seq"`
}

// BanInfo describes the current ban.
type BanInfo struct {
	Kind       BanKind   `json:"kind"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	ReasonCode string    `json:"reason_code"`
	Since      time.Time `json:"since"`
}

// HoldInfo describes the current hold.
type HoldInfo struct {
	Reason HoldReason `json:"reason"`
	Actor  string     `json:"actor"`
	Since  time.Time  `json:"since"`
}

// Counters count the connection's messages. They reconcile (G3):
//
//	Queued   == Pending + Dispatched + Expired + Purged + Cancelled
//	Dispatched == InFlight + Acknowledged
//
// Purged counts a clear's messages when the clear is requested (the purged set is fixed then).
// Acknowledged counts in-flight messages that got their first acknowledgement (sent, delivered,
// read, failed or outcome unknown); Sent, Delivered, Read, Failed and Unknown count the events.
type Counters struct {
	Queued       uint64 `json:"queued"`
	Dispatched   uint64 `json:"dispatched"`
	Expired      uint64 `json:"expired"`
	Purged       uint64 `json:"purged"`
	Cancelled    uint64 `json:"cancelled,omitempty"`
	Acknowledged uint64 `json:"acknowledged"`
	Sent         uint64 `json:"sent"`
	Delivered    uint64 `json:"delivered"`
	Read         uint64 `json:"read"`
	Failed       uint64 `json:"failed"`
	Unknown      uint64 `json:"unknown"`
	Broadcasts   uint64 `json:"broadcasts"`
	Clears       uint64 `json:"clears"`
}

// New returns the state of a connection stream with no events (not registered).
func New() *Connection {
	return &Connection{version: -1, flight: map[uuid.UUID]flightEntry{}, disrupted: -1}
}

// Load returns the state after applying events (in stream order) to New().
func Load(events ...Event) (*Connection, error) {
	c := New()
	for _, e := range events {
		if err := c.Apply(e); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Version returns the revision of the last event applied (-1 for none): the expected revision
// of the next append.
func (c *Connection) Version() int64 { return c.version }

// Registered reports whether the connection has been registered.
func (c *Connection) Registered() bool { return !c.link.IsZero() }

// ID returns the connection id ("" before registration).
func (c *Connection) ID() string { return c.id }

// TenantID returns the tenant the connection belongs to.
func (c *Connection) TenantID() string { return c.tenant }

// Phone returns the connection's own number in E.164.
func (c *Connection) Phone() string { return c.phone }

// Region returns the ISO 3166-1 region of the connection's own number ("" if unknown): the
// region national recipient numbers are read in.
func (c *Connection) Region() string { return c.region }

// OnBanPolicy returns the connection's policy for automatically held queues.
func (c *Connection) OnBanPolicy() OnBanPolicy { return c.onBan }

// LinkStatus returns the link status (zero before registration).
func (c *Connection) LinkStatus() LinkStatus { return c.link }

// CurrentBan returns the current ban, if the link is banned.
func (c *Connection) CurrentBan() (BanInfo, bool) {
	if c.ban == nil {
		return BanInfo{}, false
	}
	return *c.ban, true
}

// CurrentHold returns the current hold, if the queue is held (also while clearing).
func (c *Connection) CurrentHold() (HoldInfo, bool) {
	if c.hold == nil {
		return HoldInfo{}, false
	}
	return *c.hold, true
}

// QueueStatus returns clearing while a clear is in progress, else held if held, else open.
func (c *Connection) QueueStatus() QueueStatus {
	switch {
	case !c.Registered():
		return QueueStatus{}
	case c.clear != nil:
		return QueueStatusClearing
	case c.hold != nil:
		return QueueStatusHeld
	default:
		return QueueStatusOpen
	}
}

// CurrentClear returns the request of the clear in progress, if any.
func (c *Connection) CurrentClear() (ClearQueueRequested, bool) {
	if c.clear == nil {
		return ClearQueueRequested{}, false
	}
	return cloneClear(*c.clear), true
}

// LastSeq returns the Seq of the last message queued (0 for none).
func (c *Connection) LastSeq() uint64 { return c.lastSeq }

// Cursor returns the dispatch cursor: every message with Seq <= Cursor was dispatched, expired
// or purged.
func (c *Connection) Cursor() uint64 { return c.cursor }

// Head returns the Seq of the next message to dispatch or expire, and false if none is pending.
func (c *Connection) Head() (uint64, bool) {
	if c.cursor >= c.lastSeq {
		return 0, false
	}
	return c.cursor + 1, true
}

// Pending returns the number of messages queued and not yet dispatched, expired or purged.
func (c *Connection) Pending() uint64 {
	n := c.lastSeq - c.cursor
	for _, r := range c.ahead {
		n -= r.Len()
	}
	return n
}

// InFlight returns the messages dispatched and not yet acknowledged, by Seq: those handed to
// the transport and those whose hand-over it refused (SendDeferred).
func (c *Connection) InFlight() []InFlightMessage {
	return c.inFlight(func(flightEntry) bool { return true })
}

// SendDeferred returns the messages in flight whose last hand-over the transport refused
// (MessageSendDeferred) and that were not retried since, by Seq: WhatsApp does not have them.
func (c *Connection) SendDeferred() []InFlightMessage {
	return c.inFlight(func(f flightEntry) bool { return f.Deferred })
}

func (c *Connection) inFlight(keep func(flightEntry) bool) []InFlightMessage {
	out := make([]InFlightMessage, 0, len(c.flight))
	for id, f := range c.flight {
		if keep(f) {
			out = append(out, InFlightMessage{MessageID: id, Seq: f.Seq})
		}
	}
	slices.SortFunc(out, func(a, b InFlightMessage) int { return cmpU64(a.Seq, b.Seq) })
	return out
}

// PendingBroadcasts returns the broadcasts that still have messages above the cursor and were
// not cleared, in Seq order.
func (c *Connection) PendingBroadcasts() []BroadcastRange { return slices.Clone(c.bcasts) }

// Counters returns the message counters.
func (c *Connection) Counters() Counters { return c.count }

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ApplyError reports an event that cannot be applied.
type ApplyError struct {
	ConnectionID string
	Version      int64
	Type         string
	Reason       string
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("connection: apply %s to %q at version %d: %s", e.Type, e.ConnectionID, e.Version, e.Reason)
}

// Apply evolves the state by one event, the next one of the stream (revision Version()+1).
// Events must be applied in stream order, each once. Apply accepts the event values returned
// by Decode and by the decisions; it returns an *ApplyError for a nil or pointer event, for an
// event before ConnectionRegistered and for a second ConnectionRegistered, and leaves the state
// unchanged then. Otherwise it trusts the history: events were decided against the state they
// follow.
func (c *Connection) Apply(e Event) error {
	fail := func(reason string) error {
		t := "<nil>"
		if e != nil {
			t = e.EventType()
		}
		return &ApplyError{ConnectionID: c.id, Version: c.version, Type: t, Reason: reason}
	}
	if e == nil {
		return fail("nil event")
	}
	if reg, ok := e.(ConnectionRegistered); ok {
		if c.Registered() {
			return fail("already registered")
		}
		c.id, c.tenant, c.phone, c.region = reg.ConnectionID, reg.TenantID, reg.Phone, regionOf(reg.Phone)
		c.onBan = reg.OnBan
		if c.onBan.IsZero() {
			c.onBan = OnBanHold
		}
		c.regAt = reg.RegisteredAt
		c.link, c.linkAt = LinkStatusUnpaired, reg.RegisteredAt
		c.version++
		return nil
	}
	if !c.Registered() {
		return fail("connection not registered")
	}
	switch e := e.(type) {
	case OnBanPolicyChanged:
		c.onBan = e.Policy
	case SendingPolicyChanged:
		c.sending = e.Policy
	case SessionPaired:
		c.link, c.linkAt, c.ban = LinkStatusActive, e.PairedAt, nil
	case SessionInvalidated:
		c.link, c.linkAt, c.ban = LinkStatusSessionInvalid, e.InvalidatedAt, nil
		c.disrupted = c.version + 1
		c.overruled = c.overruled || c.clear != nil
	case ConnectionBanned:
		c.link, c.linkAt = LinkStatusBanned, e.BannedAt
		c.disrupted = c.version + 1
		c.overruled = c.overruled || c.clear != nil
		c.ban = &BanInfo{Kind: e.Kind, ExpiresAt: e.ExpiresAt, ReasonCode: e.ReasonCode, Since: e.BannedAt}
	case BanLifted:
		c.link, c.linkAt, c.ban = LinkStatusActive, e.LiftedAt, nil
	case ConnectionRetired:
		c.link, c.linkAt, c.ban = LinkStatusRetired, e.RetiredAt, nil
	case TransportProblemObserved:
		// An observation only: no link or queue state changes (see the event's doc).
	case QueueHeld:
		c.hold = &HoldInfo{Reason: e.Reason, Actor: e.Actor, Since: e.HeldAt}
		c.disrupted = c.version + 1
		c.overruled = c.overruled || c.clear != nil
	case QueueResumed:
		c.hold = nil
	case MessageQueued:
		c.lastSeq = max(c.lastSeq, e.Seq)
		c.count.Queued++
	case BroadcastQueued:
		if len(e.Recipients) == 0 {
			return fail("empty BroadcastQueued")
		}
		c.lastSeq = max(c.lastSeq, e.LastSeq())
		c.count.Queued += uint64(len(e.Recipients))
	case BroadcastStarted:
		c.bcasts = append(c.bcasts, BroadcastRange{BroadcastID: e.BroadcastID, FirstSeq: e.FirstSeq, LastSeq: e.LastSeq()})
		c.count.Broadcasts++
	case MessageDispatched:
		c.cursor = max(c.cursor, e.Seq)
		c.flight[e.MessageID] = flightEntry{Seq: e.Seq, Attempt: 1, DispatchedAt: c.version + 1}
		c.epoch = max(c.epoch, e.Epoch)
		c.count.Dispatched++
		c.normalize()
	case MessageSendDeferred:
		if f, ok := c.flight[e.MessageID]; ok {
			f.Deferred = true
			c.flight[e.MessageID] = f
		}
	case MessageSendRetried:
		c.epoch = max(c.epoch, e.Epoch)
		if f, ok := c.flight[e.MessageID]; ok {
			f.Deferred, f.Attempt = false, e.Attempt
			c.flight[e.MessageID] = f
		}
	case MessageExpired:
		c.cursor = max(c.cursor, e.Seq)
		c.count.Expired++
		c.normalize()
	case MessageCancelled:
		if e.Seq > c.cursor {
			c.ahead = append(c.ahead, purgedRange{SeqRange: SeqRange{From: e.Seq, To: e.Seq}, Cancelled: true})
			slices.SortFunc(c.ahead, func(a, b purgedRange) int { return cmpU64(a.From, b.From) })
		}
		c.count.Cancelled++
		c.normalize()
	case MessageSent:
		c.ackHanded(e.MessageID, e.Seq)
		c.count.Sent++
	case MessageDelivered:
		c.ackHanded(e.MessageID, e.Seq)
		c.count.Delivered++
	case MessageRead:
		c.ackHanded(e.MessageID, e.Seq)
		c.count.Read++
	case MessageFailed:
		c.ack(e.MessageID)
		c.count.Failed++
	case MessageOutcomeUnknown:
		c.ackHanded(e.MessageID, e.Seq)
		c.count.Unknown++
	case ClearQueueRequested:
		c.disrupted = c.version + 1
		req := cloneClear(e)
		c.clear, c.last = &req, &req
		c.overruled = false
		c.count.Purged += e.PurgeCount
		c.count.Clears++
		if e.Scope.IsWholeQueue() {
			c.cursor = max(c.cursor, e.UpToSeq)
			c.ahead = slices.DeleteFunc(c.ahead, func(r purgedRange) bool { return r.To <= e.UpToSeq })
		} else {
			c.bcasts = slices.DeleteFunc(c.bcasts, func(b BroadcastRange) bool { return b.BroadcastID == e.Scope.BroadcastID })
			for _, r := range e.Purge {
				c.ahead = append(c.ahead, purgedRange{SeqRange: r, ClearID: e.ClearID})
			}
			slices.SortFunc(c.ahead, func(a, b purgedRange) int { return cmpU64(a.From, b.From) })
		}
		c.normalize()
	case QueueCleared:
		if c.clear != nil && c.clear.ClearID == e.ClearID {
			c.clear, c.overruled = nil, false
		}
	default:
		return fail(fmt.Sprintf("unsupported event value %T", e))
	}
	c.version++
	return nil
}

// ack removes a message from the in-flight set and counts its first acknowledgement.
func (c *Connection) ack(id uuid.UUID) {
	if _, ok := c.flight[id]; ok {
		delete(c.flight, id)
		c.count.Acknowledged++
	}
}

// ackHanded acknowledges a message that WhatsApp had (sent, outcome unknown, a receipt) and
// remembers its Seq for later receipts.
func (c *Connection) ackHanded(id uuid.UUID, seq uint64) {
	c.ack(id)
	c.handed = addSeq(c.handed, seq)
}

// addSeq adds seq to the sorted disjoint ranges rs, merging neighbours, and drops the lowest
// ranges beyond MaxReceiptRanges.
func addSeq(rs []SeqRange, seq uint64) []SeqRange {
	if n := len(rs); n > 0 { // the common cases: the last position again, or the next one
		switch last := &rs[n-1]; {
		case last.Contains(seq):
			return rs
		case last.To+1 == seq:
			last.To = seq
			return rs
		}
	}
	i, _ := slices.BinarySearchFunc(rs, seq, func(r SeqRange, s uint64) int {
		switch {
		case r.To < s:
			return -1
		case r.From > s:
			return 1
		}
		return 0
	})
	switch {
	case i < len(rs) && rs[i].Contains(seq):
		return rs
	case i > 0 && rs[i-1].To+1 == seq:
		rs[i-1].To = seq
		if i < len(rs) && rs[i].From == seq+1 {
			rs[i-1].To = rs[i].To
			rs = slices.Delete(rs, i, i+1)
		}
	case i < len(rs) && rs[i].From == seq+1:
		rs[i].From = seq
	default:
		rs = slices.Insert(rs, i, SeqRange{From: seq, To: seq})
	}
	if len(rs) > MaxReceiptRanges {
		rs = slices.Delete(rs, 0, len(rs)-MaxReceiptRanges)
	}
	return rs
}

// normalize moves the cursor over purged ranges that start right after it and forgets what
// the cursor has passed.
func (c *Connection) normalize() {
	for len(c.ahead) > 0 && c.ahead[0].From <= c.cursor+1 {
		c.cursor = max(c.cursor, c.ahead[0].To)
		c.ahead = c.ahead[1:]
	}
	if len(c.ahead) == 0 {
		c.ahead = nil
	}
	c.bcasts = slices.DeleteFunc(c.bcasts, func(b BroadcastRange) bool { return b.LastSeq <= c.cursor })
	if len(c.bcasts) == 0 {
		c.bcasts = nil
	}
}

// purgedBy returns the clear that purged seq, if the aggregate still knows it: a scoped purge
// the cursor has not passed, or the most recent clear.
func (c *Connection) purgedBy(seq uint64) (uuid.UUID, bool) {
	for _, r := range c.ahead {
		if r.Contains(seq) && !r.Cancelled {
			return r.ClearID, true
		}
	}
	if c.last != nil {
		for _, r := range c.last.Purge {
			if r.Contains(seq) {
				return c.last.ClearID, true
			}
		}
	}
	return uuid.Nil, false
}

// aheadAt returns the range above the cursor (purged by a scoped clear, or cancelled) that
// holds seq, if any.
func (c *Connection) aheadAt(seq uint64) (purgedRange, bool) {
	for _, r := range c.ahead {
		if r.Contains(seq) {
			return r, true
		}
	}
	return purgedRange{}, false
}

// pendingIn returns the pending positions of from … to (above the cursor, not purged, not
// cancelled) as sorted disjoint ranges.
func (c *Connection) pendingIn(from, to uint64) []SeqRange {
	from = max(from, c.cursor+1)
	var out []SeqRange
	for _, r := range c.ahead {
		if r.To < from {
			continue
		}
		if r.From > to {
			break
		}
		if r.From > from {
			out = append(out, SeqRange{From: from, To: r.From - 1})
		}
		from = r.To + 1
	}
	if from <= to {
		out = append(out, SeqRange{From: from, To: to})
	}
	return out
}

func cloneClear(e ClearQueueRequested) ClearQueueRequested {
	e.Purge = slices.Clone(e.Purge)
	e.InFlight = slices.Clone(e.InFlight)
	e.NotSent = slices.Clone(e.NotSent)
	return e
}
