// Package invariants checks waqueue's guarantees over the full history of one connection: its
// decoded events in stream order plus the sends a recording transport saw. It is pure (no I/O,
// no clock) and independent of the aggregate's own bookkeeping: it recomputes every message's
// fate from the events, so a bug in the aggregate, a command handler or the store shows up as a
// Violation carrying the values involved.
//
// Checked guarantees (see the design brief):
//   - G1: no message covered by a ClearQueueRequested is dispatched (or sent) after it;
//   - G2: no MessageQueued, BroadcastStarted or MessageDispatched between a ClearQueueRequested
//     and its QueueCleared;
//   - G1 for cancels: no message cancelled (MessageCancelled) is dispatched or sent, and a cancel
//     is recorded only for a message still pending;
//   - G3: every message ends in at most one terminal state (purged, expired, cancelled, or
//     dispatched and acknowledged once as sent, failed or unknown), messages still pending or in flight at the
//     end are reported separately, and every ClearQueueRequested/QueueCleared states exactly the
//     messages it purged (count and set) and the messages in flight;
//   - G5: no message is handed to the transport twice, and every send has its MessageDispatched;
//   - G7: no MessageDispatched while the link is banned or session-invalid or the queue is held,
//     and none after BanLifted until QueueResumed or a clear; no QueueResumed (by an operator,
//     a policy or a clear's then=resume) while the link is banned or session-invalid.
//
// Hand-overs are ordered against the stream (G1): every attempt the transport saw carries the
// revision of the record fenced for it (MessageDispatched, or MessageSendRetried for a retry)
// and, when the recorder knows it, the stream's last revision it observed at the attempt. Each
// fence allows one attempt; a retry must have its own fence, decided after the refusal was
// recorded (MessageSendDeferred) and refused by the domain when a clear, hold, ban or session
// loss was recorded since the dispatch; and no hand-over may follow such a disruption recorded
// after its fence was spent by an earlier attempt. A message whose hand-over was refused and
// not retried is not in flight: a clear reports it not sent (NotSent), never in flight.
package invariants

import (
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// Recorded is one event of the connection stream with its revision.
type Recorded struct {
	Revision uint64
	Event    connection.Event
}

// Send is one attempt to hand a message to the transport, in the order the transport saw them.
type Send struct {
	MessageID uuid.UUID
	// Order is the send's rank in the transport's recording (for reports only).
	Order int
	// Fence is the stream revision of the record the dispatcher appended for this attempt
	// (transport.SendRequest.Fence): a MessageDispatched or MessageSendRetried of the message.
	Fence uint64
	// Observed is the stream's last revision the recorder read at the attempt, before the
	// transport took the message: every event at or below it was recorded before the attempt.
	// Zero says nothing (revision 0 is the registration).
	Observed uint64
	// Refused marks an attempt the transport refused before taking the message (not connected,
	// rate limited): nothing was handed over. Recorders that only see hand-overs never set it.
	Refused bool
}

// Guarantee names a guarantee of the design brief.
type Guarantee string

// The guarantees the checker verifies.
const (
	G1 Guarantee = "G1"
	G2 Guarantee = "G2"
	G3 Guarantee = "G3"
	G5 Guarantee = "G5"
	G7 Guarantee = "G7"
)

// Kind is the stable name of a violation.
type Kind string

// Violation kinds.
const (
	KindOutOfOrder          Kind = "history_out_of_order"          // revisions not strictly increasing
	KindQueuedTwice         Kind = "queued_twice"                  // G3: a Seq or message id queued twice
	KindQueuedWhileClearing Kind = "queued_while_clearing"         // G2
	KindDispatchClearing    Kind = "dispatched_while_clearing"     // G2
	KindDispatchPurged      Kind = "dispatched_after_purge"        // G1
	KindSentPurged          Kind = "sent_after_purge"              // G1
	KindUnknownMessage      Kind = "unknown_message"               // G3: an event about a message never queued
	KindDispatchedTwice     Kind = "dispatched_twice"              // G5
	KindDispatchDisposed    Kind = "dispatched_after_expiry"       // G3
	KindExpiredTwice        Kind = "expired_not_pending"           // G3: expiry of a message not pending
	KindAckNotInFlight      Kind = "ack_not_in_flight"             // G3: sent/failed/unknown twice or undispatched
	KindReceiptUndispatched Kind = "receipt_not_dispatched"        // G3
	KindDispatchUnlinked    Kind = "dispatched_while_unlinked"     // G7: banned or session invalid
	KindDispatchHeld        Kind = "dispatched_while_held"         // G7
	KindDispatchAfterLift   Kind = "dispatched_after_lift"         // G7: before QueueResumed or a clear
	KindResumeUnlinked      Kind = "resumed_while_unlinked"        // G7: QueueResumed while banned or session invalid
	KindClearWhileClearing  Kind = "clear_while_clearing"          // G2
	KindPurgeNotPending     Kind = "purge_covers_not_pending"      // G3: a covered Seq not pending in scope
	KindPendingNotPurged    Kind = "pending_not_purged"            // G3: a pending message of the scope left out
	KindPurgeCount          Kind = "purge_count"                   // G3: stated count != covered != actual
	KindInFlightMismatch    Kind = "in_flight_mismatch"            // G3
	KindClearedNoRequest    Kind = "cleared_without_request"       // G3
	KindClearedMismatch     Kind = "cleared_differs_from_request"  // G3
	KindSentTwice           Kind = "sent_twice"                    // G5
	KindSentUndispatched    Kind = "sent_without_dispatch"         // G5
	KindHandOverUnfenced    Kind = "hand_over_unfenced"            // G1: its fence is no record of the message
	KindFenceReused         Kind = "hand_over_fence_reused"        // G1: a retry without a fence of its own
	KindHandOverDisrupted   Kind = "handed_over_after_disruption"  // G1: clear/hold/ban/session loss since the fence was spent
	KindRetryDisrupted      Kind = "retry_fenced_after_disruption" // G1: MessageSendRetried after a disruption since dispatch
	KindRetryNotDeferred    Kind = "retry_not_deferred"            // G5: MessageSendRetried for a message not deferred
	KindDeferNotInFlight    Kind = "deferred_not_in_flight"        // G3: MessageSendDeferred for a message not handed over
	KindNotSentMismatch     Kind = "not_sent_mismatch"             // G3: a clear's not-sent list is wrong
	KindNotSentNotFailed    Kind = "not_sent_not_failed"           // G3: a clear's not-sent message not failed by it
	KindCancelNotPending    Kind = "cancelled_not_pending"         // G3: MessageCancelled for a message not pending
	KindDispatchCancelled   Kind = "dispatched_after_cancel"       // G1
	KindSentCancelled       Kind = "sent_after_cancel"             // G1
)

// Violation is one breach of a guarantee, with the values involved.
type Violation struct {
	Guarantee Guarantee
	Kind      Kind
	// Revision is the stream revision of the offending event (for send violations, of the
	// message's MessageDispatched, if any).
	Revision  uint64
	MessageID uuid.UUID
	Seq       uint64
	ClearID   uuid.UUID
	// Got and Want are the counts compared, for count violations.
	Got, Want uint64
	// Detail says what was seen, for humans.
	Detail string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s %s at revision %d", v.Guarantee, v.Kind, v.Revision)
	if v.MessageID != uuid.Nil || v.Seq != 0 {
		s += fmt.Sprintf(" message %s seq %d", v.MessageID, v.Seq)
	}
	if v.ClearID != uuid.Nil {
		s += fmt.Sprintf(" clear %s", v.ClearID)
	}
	if v.Got != v.Want {
		s += fmt.Sprintf(" got %d want %d", v.Got, v.Want)
	}
	if v.Detail != "" {
		s += ": " + v.Detail
	}
	return s
}

// Report is the checker's result.
type Report struct {
	Violations []Violation
	// Queued is the number of messages queued; Purged, Expired, Cancelled, Acknowledged those
	// that reached that end; Pending (by Seq) and InFlight (dispatched, unacknowledged) those still open.
	Queued       int
	Purged       int
	Expired      int
	Cancelled    int
	Acknowledged int
	Pending      []uint64
	InFlight     []uuid.UUID
	Sends        int
}

// OK reports whether no guarantee was violated.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Has reports whether r holds a violation of kind k.
func (r Report) Has(k Kind) bool {
	return slices.ContainsFunc(r.Violations, func(v Violation) bool { return v.Kind == k })
}

type fate int

const (
	fPending fate = iota
	fDispatched
	fPurged
	fExpired
	fCancelled
)

type message struct {
	id          uuid.UUID
	seq         uint64
	broadcast   uuid.UUID
	fate        fate
	dispatchRev uint64
	acked       bool
	deferred    bool // the last hand-over was refused (MessageSendDeferred), no retry since
	handed      bool // acknowledged sent/unknown/receipt: WhatsApp had it
	purgedBy    uuid.UUID
}

// disruption is a ClearQueueRequested, QueueHeld, ConnectionBanned or SessionInvalidated.
type disruption struct {
	rev  uint64
	what string
}

type checker struct {
	r        Report
	bySeq    map[uint64]*message
	byID     map[uuid.UUID]*message
	order    []*message
	link     connection.LinkStatus
	held     bool
	lifted   bool // BanLifted seen, no QueueResumed or clear since
	clearing *connection.ClearQueueRequested
	rev      uint64
	fences   map[uint64]*message // revision of a MessageDispatched/MessageSendRetried → its message
	disrupts []disruption        // in stream order
}

// Check verifies the guarantees over history (every event of one connection stream, in stream
// order) and sends (every message the transport was handed for it, in the transport's order).
func Check(history []Recorded, sends []Send) Report {
	c := &checker{bySeq: map[uint64]*message{}, byID: map[uuid.UUID]*message{}, fences: map[uint64]*message{}}
	for i, rec := range history {
		if i > 0 && rec.Revision <= history[i-1].Revision {
			c.violate(Violation{Guarantee: G3, Kind: KindOutOfOrder, Revision: rec.Revision,
				Detail: fmt.Sprintf("after revision %d", history[i-1].Revision)})
		}
		c.rev = rec.Revision
		c.apply(rec.Event)
	}
	c.checkSends(sends)
	for _, m := range c.order {
		switch {
		case m.fate == fPending:
			c.r.Pending = append(c.r.Pending, m.seq)
		case m.fate == fDispatched && !m.acked:
			c.r.InFlight = append(c.r.InFlight, m.id)
		case m.fate == fDispatched:
			c.r.Acknowledged++
		case m.fate == fPurged:
			c.r.Purged++
		case m.fate == fExpired:
			c.r.Expired++
		case m.fate == fCancelled:
			c.r.Cancelled++
		}
	}
	c.r.Queued = len(c.order)
	c.r.Sends = len(sends)
	return c.r
}

func (c *checker) violate(v Violation) { c.r.Violations = append(c.r.Violations, v) }

func (c *checker) msg(id uuid.UUID, seq uint64) *message {
	m := c.bySeq[seq]
	if m == nil || m.id != id {
		c.violate(Violation{Guarantee: G3, Kind: KindUnknownMessage, Revision: c.rev, MessageID: id, Seq: seq})
		return nil
	}
	return m
}

func (c *checker) apply(e connection.Event) {
	switch e := e.(type) {
	case connection.ConnectionRegistered:
		c.link = connection.LinkStatusUnpaired
	case connection.SessionPaired:
		c.link = connection.LinkStatusActive
	case connection.SessionInvalidated:
		c.link = connection.LinkStatusSessionInvalid
		c.disrupt("session invalidated")
	case connection.ConnectionBanned:
		c.link = connection.LinkStatusBanned
		c.disrupt("banned")
	case connection.BanLifted:
		c.link = connection.LinkStatusActive
		c.lifted = true
	case connection.ConnectionRetired:
		c.link = connection.LinkStatusRetired
		c.disrupt("retired")
	case connection.QueueHeld:
		c.held = true
		c.disrupt("held")
	case connection.QueueResumed:
		if c.link == connection.LinkStatusBanned || c.link == connection.LinkStatusSessionInvalid {
			c.violate(Violation{Guarantee: G7, Kind: KindResumeUnlinked, Revision: c.rev,
				Detail: "link " + c.link.String() + ", reason " + e.Reason.String()})
		}
		c.held = false
		c.lifted = false
	case connection.BroadcastStarted:
		if c.clearing != nil {
			c.violate(Violation{Guarantee: G2, Kind: KindQueuedWhileClearing, Revision: c.rev, ClearID: c.clearing.ClearID,
				Detail: fmt.Sprintf("broadcast %s", e.BroadcastID)})
		}
	case connection.MessageQueued:
		c.queued(e)
	case connection.BroadcastQueued:
		for _, m := range e.Messages() {
			c.queued(m)
		}
	case connection.MessageDispatched:
		c.dispatched(e)
	case connection.MessageSendDeferred:
		if m := c.msg(e.MessageID, e.Seq); m != nil {
			if m.fate != fDispatched || m.acked || m.deferred {
				c.violate(Violation{Guarantee: G3, Kind: KindDeferNotInFlight, Revision: c.rev, MessageID: m.id, Seq: m.seq})
			}
			m.deferred = true
		}
	case connection.MessageSendRetried:
		c.retried(e)
	case connection.MessageSent:
		c.ack(e.MessageID, e.Seq, true)
	case connection.MessageFailed:
		c.ack(e.MessageID, e.Seq, false)
	case connection.MessageOutcomeUnknown:
		c.ack(e.MessageID, e.Seq, true)
	case connection.MessageDelivered:
		c.receipt(e.MessageID, e.Seq)
	case connection.MessageRead:
		c.receipt(e.MessageID, e.Seq)
	case connection.MessageExpired:
		if m := c.msg(e.MessageID, e.Seq); m != nil {
			if m.fate != fPending {
				c.violate(Violation{Guarantee: G3, Kind: KindExpiredTwice, Revision: c.rev, MessageID: m.id, Seq: m.seq})
			}
			m.fate = fExpired
		}
	case connection.MessageCancelled:
		if m := c.msg(e.MessageID, e.Seq); m != nil {
			if m.fate != fPending {
				c.violate(Violation{Guarantee: G3, Kind: KindCancelNotPending, Revision: c.rev, MessageID: m.id, Seq: m.seq,
					Detail: fmt.Sprintf("fate %d", m.fate)})
				return
			}
			m.fate = fCancelled
		}
	case connection.ClearQueueRequested:
		c.requested(e)
		c.disrupt("clear " + e.ClearID.String())
	case connection.QueueCleared:
		c.cleared(e)
	}
}

func (c *checker) queued(e connection.MessageQueued) {
	if c.clearing != nil {
		c.violate(Violation{Guarantee: G2, Kind: KindQueuedWhileClearing, Revision: c.rev, MessageID: e.MessageID, Seq: e.Seq, ClearID: c.clearing.ClearID})
	}
	if c.bySeq[e.Seq] != nil || c.byID[e.MessageID] != nil {
		c.violate(Violation{Guarantee: G3, Kind: KindQueuedTwice, Revision: c.rev, MessageID: e.MessageID, Seq: e.Seq})
		return
	}
	m := &message{id: e.MessageID, seq: e.Seq, broadcast: e.BroadcastID}
	c.bySeq[e.Seq], c.byID[e.MessageID] = m, m
	c.order = append(c.order, m)
}

func (c *checker) dispatched(e connection.MessageDispatched) {
	v := Violation{Revision: c.rev, MessageID: e.MessageID, Seq: e.Seq}
	if c.clearing != nil {
		v.Guarantee, v.Kind, v.ClearID = G2, KindDispatchClearing, c.clearing.ClearID
		c.violate(v)
	}
	switch {
	case c.link != connection.LinkStatusActive:
		v.Guarantee, v.Kind, v.Detail = G7, KindDispatchUnlinked, "link "+c.link.String()
		c.violate(v)
	case c.held:
		v.Guarantee, v.Kind, v.Detail = G7, KindDispatchHeld, ""
		c.violate(v)
	case c.lifted:
		v.Guarantee, v.Kind, v.Detail = G7, KindDispatchAfterLift, ""
		c.violate(v)
	}
	m := c.msg(e.MessageID, e.Seq)
	if m == nil {
		return
	}
	v.Detail = ""
	switch m.fate {
	case fPurged:
		v.Guarantee, v.Kind, v.ClearID = G1, KindDispatchPurged, m.purgedBy
		c.violate(v)
	case fDispatched:
		v.Guarantee, v.Kind, v.Detail = G5, KindDispatchedTwice, fmt.Sprintf("first at revision %d", m.dispatchRev)
		c.violate(v)
		return
	case fExpired:
		v.Guarantee, v.Kind = G3, KindDispatchDisposed
		c.violate(v)
	case fCancelled:
		v.Guarantee, v.Kind = G1, KindDispatchCancelled
		c.violate(v)
	}
	m.fate, m.dispatchRev = fDispatched, c.rev
	c.fences[c.rev] = m
}

func (c *checker) disrupt(what string) {
	c.disrupts = append(c.disrupts, disruption{rev: c.rev, what: what})
}

// lastDisruption returns the last disruption recorded after revision after, if any.
func (c *checker) lastDisruption(after uint64) (disruption, bool) {
	if n := len(c.disrupts); n > 0 && c.disrupts[n-1].rev > after {
		return c.disrupts[n-1], true
	}
	return disruption{}, false
}

// retried checks a MessageSendRetried as a dispatch of an in-flight, deferred message that no
// clear, hold, ban or session loss has interrupted since its MessageDispatched.
func (c *checker) retried(e connection.MessageSendRetried) {
	v := Violation{Revision: c.rev, MessageID: e.MessageID, Seq: e.Seq}
	if c.clearing != nil {
		v.Guarantee, v.Kind, v.ClearID = G2, KindDispatchClearing, c.clearing.ClearID
		c.violate(v)
		v.ClearID = uuid.Nil
	}
	switch {
	case c.link != connection.LinkStatusActive:
		v.Guarantee, v.Kind, v.Detail = G7, KindDispatchUnlinked, "retry while link "+c.link.String()
		c.violate(v)
	case c.held:
		v.Guarantee, v.Kind, v.Detail = G7, KindDispatchHeld, "retry"
		c.violate(v)
	}
	m := c.msg(e.MessageID, e.Seq)
	if m == nil {
		return
	}
	if m.fate != fDispatched || m.acked || !m.deferred {
		v.Guarantee, v.Kind, v.Detail = G5, KindRetryNotDeferred, fmt.Sprintf("fate %d acked %v deferred %v", m.fate, m.acked, m.deferred)
		c.violate(v)
	}
	if d, ok := c.lastDisruption(m.dispatchRev); ok {
		v.Guarantee, v.Kind, v.Detail = G1, KindRetryDisrupted, fmt.Sprintf("dispatched at revision %d, %s at revision %d", m.dispatchRev, d.what, d.rev)
		c.violate(v)
	}
	m.deferred = false
	c.fences[c.rev] = m
}

// ack records a sent (handed), unknown (handed) or failed acknowledgement.
func (c *checker) ack(id uuid.UUID, seq uint64, handed bool) {
	m := c.msg(id, seq)
	if m == nil {
		return
	}
	if m.fate != fDispatched || m.acked || (handed && m.deferred) {
		c.violate(Violation{Guarantee: G3, Kind: KindAckNotInFlight, Revision: c.rev, MessageID: id, Seq: seq,
			Detail: fmt.Sprintf("acked %v deferred %v", m.acked, m.deferred)})
	}
	m.acked = true
	m.handed = m.handed || handed
}

// receipt accepts a delivered or read receipt only for a message WhatsApp had: in flight and
// not deferred, or acknowledged sent or unknown before.
func (c *checker) receipt(id uuid.UUID, seq uint64) {
	m := c.msg(id, seq)
	if m == nil {
		return
	}
	if m.fate != fDispatched || m.deferred || (m.acked && !m.handed) {
		c.violate(Violation{Guarantee: G3, Kind: KindReceiptUndispatched, Revision: c.rev, MessageID: id, Seq: seq})
		return
	}
	m.acked, m.handed = true, true
}

func inScope(m *message, s connection.ClearScope) bool {
	return s.IsWholeQueue() || m.broadcast == s.BroadcastID
}

func (c *checker) requested(e connection.ClearQueueRequested) {
	if c.clearing != nil {
		c.violate(Violation{Guarantee: G2, Kind: KindClearWhileClearing, Revision: c.rev, ClearID: e.ClearID,
			Detail: fmt.Sprintf("clear %s in progress", c.clearing.ClearID)})
	}
	var covered uint64
	for _, r := range e.Purge {
		covered += r.Len()
		for seq := r.From; seq <= r.To; seq++ {
			m := c.bySeq[seq]
			if m == nil || m.fate != fPending || !inScope(m, e.Scope) {
				v := Violation{Guarantee: G3, Kind: KindPurgeNotPending, Revision: c.rev, Seq: seq, ClearID: e.ClearID}
				if m != nil {
					v.MessageID = m.id
				}
				c.violate(v)
			}
		}
	}
	var pending uint64
	var inFlight, notSent []connection.InFlightMessage
	for _, m := range c.order {
		if !inScope(m, e.Scope) {
			continue
		}
		switch {
		case m.fate == fPending:
			pending++
			if !e.Covers(m.seq) {
				c.violate(Violation{Guarantee: G3, Kind: KindPendingNotPurged, Revision: c.rev, MessageID: m.id, Seq: m.seq, ClearID: e.ClearID})
			}
		case m.fate == fDispatched && !m.acked && m.deferred:
			notSent = append(notSent, connection.InFlightMessage{MessageID: m.id, Seq: m.seq})
		case m.fate == fDispatched && !m.acked:
			inFlight = append(inFlight, connection.InFlightMessage{MessageID: m.id, Seq: m.seq})
		}
	}
	if len(notSent) != len(e.NotSent) || (len(notSent) > 0 && !slices.Equal(notSent, e.NotSent)) {
		c.violate(Violation{Guarantee: G3, Kind: KindNotSentMismatch, Revision: c.rev, ClearID: e.ClearID,
			Got: uint64(len(e.NotSent)), Want: uint64(len(notSent)), Detail: fmt.Sprintf("stated %v, actual %v", e.NotSent, notSent)})
	}
	if e.PurgeCount != covered || covered != pending {
		c.violate(Violation{Guarantee: G3, Kind: KindPurgeCount, Revision: c.rev, ClearID: e.ClearID, Got: e.PurgeCount, Want: pending,
			Detail: fmt.Sprintf("ranges cover %d", covered)})
	}
	if !slices.Equal(inFlight, e.InFlight) {
		c.violate(Violation{Guarantee: G3, Kind: KindInFlightMismatch, Revision: c.rev, ClearID: e.ClearID,
			Got: uint64(len(e.InFlight)), Want: uint64(len(inFlight)), Detail: fmt.Sprintf("stated %v, actual %v", e.InFlight, inFlight)})
	}
	for _, r := range e.Purge {
		for seq := r.From; seq <= r.To; seq++ {
			if m := c.bySeq[seq]; m != nil && m.fate == fPending {
				m.fate, m.purgedBy = fPurged, e.ClearID
			}
		}
	}
	c.clearing = &e
}

func (c *checker) cleared(e connection.QueueCleared) {
	req := c.clearing
	if req == nil || req.ClearID != e.ClearID {
		c.violate(Violation{Guarantee: G3, Kind: KindClearedNoRequest, Revision: c.rev, ClearID: e.ClearID})
		return
	}
	var actual uint64
	for _, m := range c.order {
		if m.purgedBy == e.ClearID {
			actual++
		}
	}
	var covered uint64
	for _, r := range e.Purged {
		covered += r.Len()
	}
	if e.PurgedCount != actual || covered != actual || !slices.Equal(e.Purged, req.Purge) {
		c.violate(Violation{Guarantee: G3, Kind: KindClearedMismatch, Revision: c.rev, ClearID: e.ClearID, Got: e.PurgedCount, Want: actual,
			Detail: fmt.Sprintf("ranges %v cover %d, request ranges %v", e.Purged, covered, req.Purge)})
	}
	if e.InFlightCount != len(e.InFlight) || !slices.Equal(e.InFlight, req.InFlight) {
		c.violate(Violation{Guarantee: G3, Kind: KindInFlightMismatch, Revision: c.rev, ClearID: e.ClearID,
			Got: uint64(e.InFlightCount), Want: uint64(len(req.InFlight))})
	}
	if e.NotSentCount != len(e.NotSent) || len(e.NotSent) != len(req.NotSent) || (len(req.NotSent) > 0 && !slices.Equal(e.NotSent, req.NotSent)) {
		c.violate(Violation{Guarantee: G3, Kind: KindNotSentMismatch, Revision: c.rev, ClearID: e.ClearID,
			Got: uint64(e.NotSentCount), Want: uint64(len(req.NotSent))})
	}
	for _, ns := range req.NotSent {
		if m := c.byID[ns.MessageID]; m == nil || !m.acked || m.handed {
			c.violate(Violation{Guarantee: G3, Kind: KindNotSentNotFailed, Revision: c.rev, ClearID: e.ClearID, MessageID: ns.MessageID, Seq: ns.Seq})
		}
	}
	c.clearing = nil
	c.lifted = false
}

// spent is the first attempt that used a fence.
type spent struct {
	observed uint64 // its Observed
	order    int
}

func (c *checker) checkSends(sends []Send) {
	seen := map[uuid.UUID]int{}
	fenceUsed := map[uint64]spent{}
	for _, s := range sends {
		m := c.byID[s.MessageID]
		c.checkFence(s, m, fenceUsed)
		if s.Refused {
			continue
		}
		seen[s.MessageID]++
		switch {
		case seen[s.MessageID] == 2:
			v := Violation{Guarantee: G5, Kind: KindSentTwice, MessageID: s.MessageID, Detail: fmt.Sprintf("second send is #%d", s.Order)}
			if m != nil {
				v.Seq, v.Revision = m.seq, m.dispatchRev
			}
			c.violate(v)
		case seen[s.MessageID] > 2:
		case m == nil || m.fate != fDispatched:
			v := Violation{Guarantee: G5, Kind: KindSentUndispatched, MessageID: s.MessageID, Detail: fmt.Sprintf("send #%d", s.Order)}
			if m != nil {
				v.Seq = m.seq
				if m.fate == fPurged {
					v.Guarantee, v.Kind, v.ClearID = G1, KindSentPurged, m.purgedBy
				}
				if m.fate == fCancelled {
					v.Guarantee, v.Kind = G1, KindSentCancelled
				}
			}
			c.violate(v)
		}
	}
}

// checkFence orders one attempt against the stream: its fence must be a record of its message,
// used by no earlier attempt; and a hand-over on a fence an earlier attempt spent must not follow
// a disruption recorded after that attempt (it would have been refused, had it been fenced).
func (c *checker) checkFence(s Send, m *message, used map[uint64]spent) {
	if m == nil {
		return // reported as sent without dispatch
	}
	v := Violation{Guarantee: G1, Revision: s.Fence, MessageID: s.MessageID, Seq: m.seq}
	if fm := c.fences[s.Fence]; fm != m {
		v.Kind, v.Detail = KindHandOverUnfenced, fmt.Sprintf("send #%d fenced at revision %d, which is no MessageDispatched or MessageSendRetried of the message", s.Order, s.Fence)
		c.violate(v)
		return
	}
	first, reused := used[s.Fence]
	if !reused {
		used[s.Fence] = spent{s.Observed, s.Order}
		return
	}
	v.Kind, v.Detail = KindFenceReused, fmt.Sprintf("send #%d reuses the fence of send #%d", s.Order, first.order)
	c.violate(v)
	if s.Refused {
		return
	}
	for _, d := range c.disrupts {
		if d.rev > max(first.observed, s.Fence) && d.rev <= s.Observed {
			v.Kind, v.Detail = KindHandOverDisrupted, fmt.Sprintf("send #%d on the fence send #%d spent, after %s at revision %d (observed %d)",
				s.Order, first.order, d.what, d.rev, s.Observed)
			v.Revision = d.rev
			c.violate(v)
			return
		}
	}
}
