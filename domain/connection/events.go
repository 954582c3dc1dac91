package connection

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Event is a fact recorded in a connection stream. The set is closed (the interface is sealed):
// exactly the event structs of this file, each with a stable type name below that is written to
// the store and never changes, whatever the Go type is called.
type Event interface {
	// EventType returns the stable type name stored with the event.
	EventType() string
	// naturalKey identifies the thing the event is about when it is unique in the stream's
	// history (message, broadcast, clear); "" otherwise. See EventID.
	naturalKey() string
}

// Stable event type names. Never change one: stored events carry them.
const (
	TypeConnectionRegistered  = "ConnectionRegistered"
	TypeOnBanPolicyChanged    = "OnBanPolicyChanged"
	TypeSessionPaired         = "SessionPaired"
	TypeSessionInvalidated    = "SessionInvalidated"
	TypeConnectionBanned      = "ConnectionBanned"
	TypeBanLifted             = "BanLifted"
	TypeMessageQueued         = "MessageQueued"
	TypeBroadcastStarted      = "BroadcastStarted"
	TypeMessageDispatched     = "MessageDispatched"
	TypeMessageSent           = "MessageSent"
	TypeMessageDelivered      = "MessageDelivered"
	TypeMessageRead           = "MessageRead"
	TypeMessageFailed         = "MessageFailed"
	TypeMessageExpired        = "MessageExpired"
	TypeMessageOutcomeUnknown = "MessageOutcomeUnknown"
	TypeQueueHeld             = "QueueHeld"
	TypeQueueResumed          = "QueueResumed"
	TypeClearQueueRequested   = "ClearQueueRequested"
	TypeQueueCleared          = "QueueCleared"
	// TypeMessageSendDeferred names MessageSendDeferred.
	TypeMessageSendDeferred = "MessageSendDeferred"
	// TypeMessageSendRetried names MessageSendRetried.
	TypeMessageSendRetried = "MessageSendRetried"
	// TypeTransportProblemObserved names TransportProblemObserved.
	TypeTransportProblemObserved = "TransportProblemObserved"
	// TypeMessageCancelled names MessageCancelled.
	TypeMessageCancelled = "MessageCancelled"
	// TypeSendingPolicyChanged names SendingPolicyChanged.
	TypeSendingPolicyChanged = "SendingPolicyChanged"
	// TypeConnectionRetired names ConnectionRetired.
	TypeConnectionRetired = "ConnectionRetired"
	// TypeBroadcastQueued names BroadcastQueued.
	TypeBroadcastQueued = "BroadcastQueued"
)

// ConnectionRegistered opens a connection stream: a WhatsApp number of a tenant, not paired yet.
type ConnectionRegistered struct {
	ConnectionID string `json:"connection_id"`
	TenantID     string `json:"tenant_id"`
	// Phone is the connection's own number in E.164 ("+491701234567").
	Phone        string      `json:"phone"`
	OnBan        OnBanPolicy `json:"on_ban"`
	RegisteredBy string      `json:"registered_by"`
	RegisteredAt time.Time   `json:"registered_at"`
}

// OnBanPolicyChanged changes what happens to an automatically held queue when the link recovers.
type OnBanPolicyChanged struct {
	Policy    OnBanPolicy `json:"policy"`
	ChangedBy string      `json:"changed_by"`
	ChangedAt time.Time   `json:"changed_at"`
}

// SendingPolicyChanged records the connection's whole sending policy after a change (or set at
// registration): pacing, daily cap, time zone and quiet hours. The dispatcher applies it from
// its next turn.
type SendingPolicyChanged struct {
	Policy    SendingPolicy `json:"policy"`
	ChangedBy string        `json:"changed_by"`
	ChangedAt time.Time     `json:"changed_at"`
}

// SessionPaired records a WhatsApp session paired with the number (QR code scanned):
// unpaired or session_invalid → active.
type SessionPaired struct {
	// JID is the WhatsApp device JID of the session, if known.
	JID      string    `json:"jid,omitempty"`
	Actor    string    `json:"actor"`
	PairedAt time.Time `json:"paired_at"`
}

// SessionInvalidated records a session logged out (active → session_invalid). The decision
// that records it also holds the queue (QueueHeld with reason session_invalid) unless it is
// already held (G7).
type SessionInvalidated struct {
	// Reason is the transport's reason, e.g. a WhatsApp logout reason code.
	Reason string `json:"reason,omitempty"`
	// Cause is Reason as a stable code (ExplainLogout: logged_out, main_device_gone, …); empty
	// in events recorded before it existed (ExplainLogout(Reason) gives it).
	Cause         string    `json:"cause,omitempty"`
	Actor         string    `json:"actor"`
	InvalidatedAt time.Time `json:"invalidated_at"`
}

// ConnectionBanned records a ban (active|banned → banned). A temporary ban has an ExpiresAt; a
// permanent one has none. The decision that records it also holds the queue (QueueHeld with
// reason banned) unless it is already held (G7).
type ConnectionBanned struct {
	Kind BanKind `json:"kind"`
	// ExpiresAt is when a temporary ban is expected to end; zero for a permanent ban. The ban
	// still ends only with BanLifted.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// ReasonCode is the transport's reason code (e.g. WhatsApp's TempBanReason number).
	ReasonCode string `json:"reason_code"`
	// Cause is ReasonCode as a stable code (ExplainBan: sent_to_too_many_people, …); empty in
	// events recorded before it existed (ExplainBan(Kind, ReasonCode) gives it).
	Cause    string    `json:"cause,omitempty"`
	Actor    string    `json:"actor"`
	BannedAt time.Time `json:"banned_at"`
}

// BanLifted records the end of a ban (banned → active). It does not resume a held queue, unless
// the connection's policy is OnBanResume and the hold was automatic; then the same decision
// records QueueResumed (reason ban_lifted).
type BanLifted struct {
	Reason   string    `json:"reason,omitempty"`
	Actor    string    `json:"actor"`
	LiftedAt time.Time `json:"lifted_at"`
}

// TransportProblemObserved records a connection problem the WhatsApp transport observed that
// is neither a ban nor a session loss: the stream was replaced by another client, the client
// is outdated, the keep-alive timed out, or connecting failed. It is an observation for
// operators (the connection card, the audit trail): it changes neither the link status nor the
// queue status, and the aggregate keeps no state for it.
type TransportProblemObserved struct {
	Kind TransportProblemKind `json:"kind"`
	// Reason is the transport's short reason (e.g. a WhatsApp failure code), if any.
	Reason string `json:"reason,omitempty"`
	// Detail is free text from the transport (e.g. an error message), if any.
	Detail     string    `json:"detail,omitempty"`
	ObservedAt time.Time `json:"observed_at"`
}

// MessageQueued puts one message at the end of the queue.
//
// Seq is the message's position in the connection's queue: 1 for the first message ever
// queued on the connection, then consecutive, in stream order. Projections, the dispatcher and
// clear reports address messages by Seq; ranges of Seq describe purged sets exactly.
type MessageQueued struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// Recipient is the recipient's number in E.164.
	Recipient string `json:"recipient"`
	// Text is the message text; empty for a broadcast message, whose text is its
	// BroadcastStarted's.
	Text string `json:"text,omitempty"`
	// BroadcastID is the broadcast the message belongs to; zero for a 1:1 message.
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
	// BroadcastIndex is the recipient's 0-based index in the broadcast's recipient list.
	BroadcastIndex int `json:"broadcast_index,omitempty"`
	// IdempotencyKey is the key the 1:1 message was enqueued under.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Fingerprint is the 1:1 request's fingerprint (EnqueueFingerprint), which binds the key to
	// it; empty for a broadcast message and for messages queued before fingerprints existed.
	Fingerprint string `json:"fingerprint,omitempty"`
	// ExpiresAt is when the message expires instead of being sent; zero for never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	QueuedBy  string    `json:"queued_by"`
	QueuedAt  time.Time `json:"queued_at"`
}

// BroadcastStarted opens a broadcast. It is appended in the same atomic batch as the
// broadcast's BroadcastQueued chunks (in streams written before those existed: its Count
// MessageQueued events), which carry the Seqs FirstSeq … FirstSeq+Count-1 in
// recipient order. Because the batch is atomic and appended at an expected revision, a
// broadcast racing a ClearQueueRequested either lands wholly before it (and is wholly covered
// by the clear) or is refused (queue clearing): never part purged and part queued.
type BroadcastStarted struct {
	BroadcastID uuid.UUID `json:"broadcast_id"`
	Text        string    `json:"text"`
	FirstSeq    uint64    `json:"first_seq"`
	Count       int       `json:"count"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	StartedBy   string    `json:"started_by"`
	StartedAt   time.Time `json:"started_at"`
	// Fingerprint binds the broadcast's idempotency key to its request (recipients, text,
	// TTL); empty for broadcasts started before fingerprints existed.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// LastSeq returns the Seq of the broadcast's last message.
func (e BroadcastStarted) LastSeq() uint64 { return e.FirstSeq + uint64(e.Count) - 1 }

// BroadcastChunk is the most recipients one BroadcastQueued carries: a broadcast of 100,000
// numbers is BroadcastStarted and 20 BroadcastQueued events (about 90 KB each), not 100,000
// MessageQueued events.
const BroadcastChunk = 5000

// BroadcastQueued queues a chunk of a broadcast's messages, compactly: the recipients at
// indexes FirstIndex … FirstIndex+len(Recipients)-1 of broadcast BroadcastID, at the Seqs
// FirstSeq … FirstSeq+len(Recipients)-1. It means exactly the MessageQueued events Messages
// returns (ids BroadcastMessageID(BroadcastID, index), the broadcast's text), and every reader
// of the log treats it so (Expand). It follows its BroadcastStarted in the same atomic append.
//
// Streams written before it existed carry one MessageQueued per broadcast message instead;
// both forms are read alike.
type BroadcastQueued struct {
	BroadcastID uuid.UUID `json:"broadcast_id"`
	// FirstSeq is the Seq of Recipients[0]; FirstIndex its index in the broadcast's list.
	FirstSeq   uint64 `json:"first_seq"`
	FirstIndex int    `json:"first_index"`
	// Recipients are the numbers in E.164, in the broadcast's order.
	Recipients []string  `json:"recipients"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	QueuedBy   string    `json:"queued_by"`
	QueuedAt   time.Time `json:"queued_at"`
}

// LastSeq returns the Seq of the chunk's last message.
func (e BroadcastQueued) LastSeq() uint64 { return e.FirstSeq + uint64(len(e.Recipients)) - 1 }

// Message returns the MessageQueued the chunk's i-th recipient (0-based, within the chunk)
// stands for.
func (e BroadcastQueued) Message(i int) MessageQueued {
	return MessageQueued{
		MessageID: BroadcastMessageID(e.BroadcastID, e.FirstIndex+i), Seq: e.FirstSeq + uint64(i),
		Recipient: e.Recipients[i], BroadcastID: e.BroadcastID, BroadcastIndex: e.FirstIndex + i,
		ExpiresAt: e.ExpiresAt, QueuedBy: e.QueuedBy, QueuedAt: e.QueuedAt,
	}
}

// Messages returns the MessageQueued events the chunk stands for, in Seq order.
func (e BroadcastQueued) Messages() []MessageQueued {
	out := make([]MessageQueued, len(e.Recipients))
	for i := range e.Recipients {
		out[i] = e.Message(i)
	}
	return out
}

// Expand returns the events e stands for one by one: a BroadcastQueued's MessageQueued
// events, or e itself. Readers that handle messages one at a time call it on every event.
func Expand(e Event) []Event {
	b, ok := e.(BroadcastQueued)
	if !ok {
		return []Event{e}
	}
	out := make([]Event, len(b.Recipients))
	for i := range b.Recipients {
		out[i] = b.Message(i)
	}
	return out
}

// MessageDispatched records that the message is about to be handed to WhatsApp. It is appended
// (durably, at the expected revision) before the transport is called: a message is dispatched
// at most once (G5), and never after a clear that covers it (G1).
type MessageDispatched struct {
	MessageID    uuid.UUID `json:"message_id"`
	Seq          uint64    `json:"seq"`
	DispatchedAt time.Time `json:"dispatched_at"`
	// Epoch is the fencing token of the dispatcher's lease on the connection (see
	// DispatchMessage.Epoch); 0 without leases, and in events written before it existed.
	Epoch uint64 `json:"epoch,omitempty"`
}

// MessageSendDeferred records that the transport refused a dispatched message before taking it
// (not connected, rate limited): provably nothing was handed over. It closes the hand-over
// MessageDispatched (or the last MessageSendRetried) fenced. The message stays in flight but is
// not in WhatsApp's hands: it is handed over again only after a MessageSendRetried, appended at
// the expected revision, fences the retry (G1: whatever was recorded since wins), and a clear
// that covers it meanwhile ends it failed not_sent instead of reporting it in flight (G3).
//
// Streams written before this event existed have none; a message without one was handed over
// at its MessageDispatched.
type MessageSendDeferred struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// Attempt is the number of the hand-over refused: 1 for the one MessageDispatched fenced,
	// then that of the MessageSendRetried.
	Attempt int `json:"attempt"`
	// Reason is the transport's answer (e.g. "not_connected", "rate_limited").
	Reason     string    `json:"reason"`
	DeferredAt time.Time `json:"deferred_at"`
}

// MessageSendRetried fences the retry of a deferred message: it is appended, at the expected
// revision, before the message is handed to the transport again, exactly as MessageDispatched
// is before the first hand-over. The decision refuses while clearing, held, or unless the link
// is active, so a clear, hold, ban or session loss recorded since the deferral wins.
type MessageSendRetried struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// Attempt is the number of this hand-over (2 for the first retry).
	Attempt   int       `json:"attempt"`
	RetriedAt time.Time `json:"retried_at"`
	// Epoch is the lease epoch of the dispatcher that fenced the retry (see
	// DispatchMessage.Epoch); 0 without leases, and in events written before it existed.
	Epoch uint64 `json:"epoch,omitempty"`
}

// MessageSent records WhatsApp's server acknowledgement of a dispatched message.
type MessageSent struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// ServerID is the id WhatsApp assigned, if any.
	ServerID string    `json:"server_id,omitempty"`
	SentAt   time.Time `json:"sent_at"`
}

// MessageDelivered records a delivery receipt.
type MessageDelivered struct {
	MessageID   uuid.UUID `json:"message_id"`
	Seq         uint64    `json:"seq"`
	DeliveredAt time.Time `json:"delivered_at"`
}

// MessageRead records a read receipt.
type MessageRead struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	ReadAt    time.Time `json:"read_at"`
}

// MessageFailed records that WhatsApp refused a dispatched message. It is final: the message is
// not retried automatically.
type MessageFailed struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// Code is a stable failure code (e.g. "not_on_whatsapp", "transport_error").
	Code     string    `json:"code"`
	Detail   string    `json:"detail,omitempty"`
	FailedAt time.Time `json:"failed_at"`
}

// MessageExpired records that a queued message's TTL passed before it was dispatched.
type MessageExpired struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiredAt time.Time `json:"expired_at"`
}

// MessageCancelled records that an operator cancelled one pending message: it is never handed
// over, and the cancel is its terminal state. It is decided at the expected revision, like a
// clear, so a cancel racing the message's dispatch either lands first (the dispatch then skips
// the message) or is refused (the message is no longer pending): exactly one wins.
type MessageCancelled struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	// Reason says why, in the operator's words; required.
	Reason      string    `json:"reason"`
	CancelledBy string    `json:"cancelled_by"`
	CancelledAt time.Time `json:"cancelled_at"`
}

// ConnectionRetired ends a connection for good (link status retired): every later command is
// refused with ErrConnectionRetired except the acknowledgements of messages still in flight and
// the completion of a clear in progress; its history, clears and audit stay readable, and its
// id stays taken (registering it again is refused). It is decided only when nothing is pending
// and nothing in flight (Retire), or by the completion of a clear requested with
// ClearThenRetire (CompleteClear), which purged what was pending and reports what was in flight.
type ConnectionRetired struct {
	// Reason says why, in the operator's words; required.
	Reason string `json:"reason"`
	// ClearID is the clear whose completion retired the connection (then=retire); zero for a
	// retirement of an empty queue.
	ClearID   uuid.UUID `json:"clear_id,omitzero"`
	RetiredBy string    `json:"retired_by"`
	RetiredAt time.Time `json:"retired_at"`
}

// MessageOutcomeUnknown records that a dispatched message was never acknowledged (the process
// died or the transport timed out). It is final: the message is never sent again automatically.
type MessageOutcomeUnknown struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	Cause     string    `json:"cause"`
	At        time.Time `json:"at"`
}

// QueueHeld stops dispatching from the queue (enqueue still works). Reason says who held it:
// an operator, a ban or a session loss.
type QueueHeld struct {
	Reason HoldReason `json:"reason"`
	Note   string     `json:"note,omitempty"`
	Actor  string     `json:"actor"`
	HeldAt time.Time  `json:"held_at"`
}

// QueueResumed lets dispatching from the queue start again (if the link is active).
type QueueResumed struct {
	Reason    ResumeReason `json:"reason"`
	Note      string       `json:"note,omitempty"`
	Actor     string       `json:"actor"`
	ResumedAt time.Time    `json:"resumed_at"`
}

// ClearScope is what a clear covers: the whole queue (the zero ClearScope) or the messages of
// one broadcast (1:1 messages and other broadcasts stay).
type ClearScope struct {
	// BroadcastID is the broadcast cleared; zero for the whole queue.
	BroadcastID uuid.UUID
}

// WholeQueue is the scope of a clear of the whole queue.
var WholeQueue = ClearScope{}

// BroadcastScope returns the scope of a clear of broadcast id.
func BroadcastScope(id uuid.UUID) ClearScope { return ClearScope{BroadcastID: id} }

// IsWholeQueue reports whether s covers the whole queue.
func (s ClearScope) IsWholeQueue() bool { return s.BroadcastID == uuid.Nil }

func (s ClearScope) String() string {
	if s.IsWholeQueue() {
		return "queue"
	}
	return "broadcast " + s.BroadcastID.String()
}

type clearScopeJSON struct {
	Kind        string    `json:"kind"`
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
}

// MarshalJSON encodes s as {"kind":"queue"} or {"kind":"broadcast","broadcast_id":"…"}.
func (s ClearScope) MarshalJSON() ([]byte, error) {
	if s.IsWholeQueue() {
		return json.Marshal(clearScopeJSON{Kind: "queue"})
	}
	return json.Marshal(clearScopeJSON{Kind: "broadcast", BroadcastID: s.BroadcastID})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (s *ClearScope) UnmarshalJSON(b []byte) error {
	var v clearScopeJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch {
	case v.Kind == "queue" && v.BroadcastID == uuid.Nil:
		*s = WholeQueue
	case v.Kind == "broadcast" && v.BroadcastID != uuid.Nil:
		*s = BroadcastScope(v.BroadcastID)
	default:
		return fmt.Errorf("connection: invalid clear scope %s", b)
	}
	return nil
}

// SeqRange is the inclusive range of queue positions From … To (From <= To).
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Len returns the number of positions in r.
func (r SeqRange) Len() uint64 { return r.To - r.From + 1 }

// Contains reports whether seq lies in r.
func (r SeqRange) Contains(seq uint64) bool { return seq >= r.From && seq <= r.To }

// InFlightMessage is a message dispatched and not yet acknowledged (sent, delivered, read,
// failed or unknown).
type InFlightMessage struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
}

// ClearQueueRequested flips the queue to clearing (G2: enqueue and broadcast refused; G1:
// nothing dispatched) and fixes, at the moment of the request, exactly what the clear purges.
//
// The purged set is exact and final when the request is recorded: the messages whose
// MessageQueued carries a Seq in one of the Purge ranges. Every such message was still pending
// (queued, not dispatched, not expired, not purged by an earlier clear) at the request, and no
// pending message of the scope is outside them. In-flight messages (dispatched, not yet
// acknowledged) are not purged — they are already in WhatsApp's hands — and are listed for the
// report. The clearing process marks the purged messages in its read models and appends
// QueueCleared, which repeats the same figures with the completion time.
type ClearQueueRequested struct {
	ClearID     uuid.UUID  `json:"clear_id"`
	Scope       ClearScope `json:"scope"`
	RequestedBy string     `json:"requested_by"`
	Reason      string     `json:"reason"`
	RequestedAt time.Time  `json:"requested_at"`
	// UpToSeq is the Seq of the last message queued before the request: no message of the
	// scope queued at or before it is dispatched after the request (the G1 fence).
	UpToSeq uint64 `json:"up_to_seq"`
	// Purge is the exact purged set, as ranges of Seq in ascending order, disjoint.
	Purge []SeqRange `json:"purge"`
	// PurgeCount is the number of messages in Purge.
	PurgeCount uint64 `json:"purge_count"`
	// InFlight lists the messages of the scope handed to WhatsApp before the request and not yet
	// acknowledged, by Seq.
	InFlight []InFlightMessage `json:"in_flight"`
	// NotSent lists the messages of the scope dispatched before the request whose hand-over the
	// transport had refused (MessageSendDeferred, not retried since): WhatsApp never had them.
	// The same decision records each MessageFailed with code FailureNotSent, right after this
	// event. Absent (empty) in streams written before deferrals existed.
	NotSent []InFlightMessage `json:"not_sent,omitempty"`
	// Fingerprint binds the clear's idempotency key to its request (ClearFingerprint); empty
	// for clears requested before fingerprints existed.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Then is what the queue becomes when the clear completes (keep, hold or resume). Events
	// recorded before it existed carry none, which reads as keep: the behaviour they had.
	Then ClearThen `json:"then,omitzero"`
}

// QueueCleared ends a clear: the queue goes back to what it was (ClearThenKeep: held if it is
// held, open otherwise), or is held or resumed as the request's Then says. It is the clear's
// exact report (G3).
type QueueCleared struct {
	ClearID     uuid.UUID  `json:"clear_id"`
	Scope       ClearScope `json:"scope"`
	RequestedBy string     `json:"requested_by"`
	Reason      string     `json:"reason"`
	RequestedAt time.Time  `json:"requested_at"`
	// Purged is the exact purged set (the request's Purge): the messages whose MessageQueued
	// carries a Seq in one of these ranges, each now purged.
	Purged      []SeqRange `json:"purged"`
	PurgedCount uint64     `json:"purged_count"`
	// InFlight are the messages of the scope that were in flight at the request.
	InFlight      []InFlightMessage `json:"in_flight"`
	InFlightCount int               `json:"in_flight_count"`
	// NotSent are the messages of the scope that were dispatched but never handed over at the
	// request (the request's NotSent), each failed not_sent by the clear.
	NotSent      []InFlightMessage `json:"not_sent,omitempty"`
	NotSentCount int               `json:"not_sent_count"`
	// CompletedBy is the actor that completed the clear (the clearing process).
	CompletedBy string    `json:"completed_by"`
	CompletedAt time.Time `json:"completed_at"`
	// Then is the request's Then (zero in reports recorded before it existed: keep).
	Then ClearThen `json:"then,omitzero"`
	// QueueAfter is the queue status the clear left: held or open (zero in reports recorded
	// before it existed). The QueueHeld or QueueResumed that Then caused, if any, follows
	// QueueCleared in the same batch.
	QueueAfter QueueStatus `json:"queue_after,omitzero"`
}

func (ConnectionRegistered) EventType() string     { return TypeConnectionRegistered }
func (OnBanPolicyChanged) EventType() string       { return TypeOnBanPolicyChanged }
func (SessionPaired) EventType() string            { return TypeSessionPaired }
func (SessionInvalidated) EventType() string       { return TypeSessionInvalidated }
func (ConnectionBanned) EventType() string         { return TypeConnectionBanned }
func (BanLifted) EventType() string                { return TypeBanLifted }
func (MessageQueued) EventType() string            { return TypeMessageQueued }
func (BroadcastStarted) EventType() string         { return TypeBroadcastStarted }
func (MessageDispatched) EventType() string        { return TypeMessageDispatched }
func (MessageSent) EventType() string              { return TypeMessageSent }
func (MessageDelivered) EventType() string         { return TypeMessageDelivered }
func (MessageRead) EventType() string              { return TypeMessageRead }
func (MessageFailed) EventType() string            { return TypeMessageFailed }
func (MessageExpired) EventType() string           { return TypeMessageExpired }
func (MessageOutcomeUnknown) EventType() string    { return TypeMessageOutcomeUnknown }
func (QueueHeld) EventType() string                { return TypeQueueHeld }
func (QueueResumed) EventType() string             { return TypeQueueResumed }
func (ClearQueueRequested) EventType() string      { return TypeClearQueueRequested }
func (QueueCleared) EventType() string             { return TypeQueueCleared }
func (TransportProblemObserved) EventType() string { return TypeTransportProblemObserved }
func (MessageSendDeferred) EventType() string      { return TypeMessageSendDeferred }
func (MessageSendRetried) EventType() string       { return TypeMessageSendRetried }
func (MessageCancelled) EventType() string         { return TypeMessageCancelled }
func (SendingPolicyChanged) EventType() string     { return TypeSendingPolicyChanged }
func (ConnectionRetired) EventType() string        { return TypeConnectionRetired }
func (BroadcastQueued) EventType() string          { return TypeBroadcastQueued }

func (e ConnectionRegistered) naturalKey() string {
	return "connection/" + Key(e.TenantID, e.ConnectionID)
}
func (OnBanPolicyChanged) naturalKey() string      { return "" }
func (SendingPolicyChanged) naturalKey() string    { return "" }
func (SessionPaired) naturalKey() string           { return "" }
func (SessionInvalidated) naturalKey() string      { return "" }
func (ConnectionBanned) naturalKey() string        { return "" }
func (BanLifted) naturalKey() string               { return "" }
func (e MessageQueued) naturalKey() string         { return e.MessageID.String() }
func (e BroadcastStarted) naturalKey() string      { return e.BroadcastID.String() }
func (e MessageDispatched) naturalKey() string     { return e.MessageID.String() }
func (e MessageSent) naturalKey() string           { return e.MessageID.String() }
func (e MessageDelivered) naturalKey() string      { return e.MessageID.String() }
func (e MessageRead) naturalKey() string           { return e.MessageID.String() }
func (e MessageFailed) naturalKey() string         { return e.MessageID.String() }
func (e MessageExpired) naturalKey() string        { return e.MessageID.String() }
func (e MessageOutcomeUnknown) naturalKey() string { return e.MessageID.String() }
func (e MessageCancelled) naturalKey() string      { return e.MessageID.String() }
func (e BroadcastQueued) naturalKey() string {
	return e.BroadcastID.String() + "/" + strconv.Itoa(e.FirstIndex)
}
func (QueueHeld) naturalKey() string                { return "" }
func (QueueResumed) naturalKey() string             { return "" }
func (e ClearQueueRequested) naturalKey() string    { return e.ClearID.String() }
func (e QueueCleared) naturalKey() string           { return e.ClearID.String() }
func (TransportProblemObserved) naturalKey() string { return "" }
func (ConnectionRetired) naturalKey() string        { return "" }
func (e MessageSendDeferred) naturalKey() string {
	return e.MessageID.String() + "/" + strconv.Itoa(e.Attempt)
}
func (e MessageSendRetried) naturalKey() string {
	return e.MessageID.String() + "/" + strconv.Itoa(e.Attempt)
}
