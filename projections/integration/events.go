// Package integration turns waqueue's domain events into integration events: a small, stable,
// versioned JSON schema for backend services, published through any watermill Publisher (an
// in-process GoChannel, or NATS JetStream through adapters/broker) and fanned out to webhooks
// (adapters/webhooks).
//
// Integration events are not domain events: they are a public contract. Each has an explicit
// type name ending in a version ("waqueue.message.status_changed.v1"); a change that is not
// purely additive gets a new version, never a silent change of an existing one.
//
// Delivery is at least once. Every integration event has a deterministic id derived from the
// domain event it comes from (EventID), and the watermill message carrying it uses that id as
// its UUID: a redelivered or republished event has the same id, so consumers dedupe on it.
package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/domain/connection"
)

// Topic is the watermill topic integration events are published on. adapters/broker maps it to
// the NATS subjects "waqueue.events.<type without the waqueue. prefix>".
const Topic = "waqueue.events"

// Metadata keys set on every published message.
const (
	// MetaType holds the event's Type.
	MetaType = "waqueue_event_type"
	// MetaTenant holds the event's TenantID.
	MetaTenant = "waqueue_tenant"
)

// Stable integration event type names. Never change one; add a new version instead.
const (
	// TypeMessageStatusChanged: a message reached a new status (queued, dispatched, sent,
	// delivered, read, failed, expired, unknown, cancelled). Purges are reported by TypeClearCompleted.
	TypeMessageStatusChanged = "waqueue.message.status_changed.v1"
	// TypeConnectionLinkStatusChanged: pairing, session loss (link status changes other than
	// bans, which have their own types).
	TypeConnectionLinkStatusChanged = "waqueue.connection.link_status_changed.v1"
	// TypeConnectionBanned: WhatsApp banned the number (link status banned).
	TypeConnectionBanned = "waqueue.connection.banned.v1"
	// TypeConnectionBanLifted: the ban ended (link status active).
	TypeConnectionBanLifted = "waqueue.connection.ban_lifted.v1"
	// TypeConnectionQueueStatusChanged: the queue was held or resumed.
	TypeConnectionQueueStatusChanged = "waqueue.connection.queue_status_changed.v1"
	// TypeClearRequested: a Clear Queue was requested (queue status clearing), with the exact
	// set it purges.
	TypeClearRequested = "waqueue.clear.requested.v1"
	// TypeClearCompleted: a Clear Queue completed, with its exact report.
	TypeClearCompleted = "waqueue.clear.completed.v1"
	// TypeAuditCheckpoint: the tenant's audit chain head was signed (G8). Its Data is the
	// auditchain.Checkpoint; keep it outside the machine to detect a later rewrite or cut of
	// the audit trail (`waqueue audit verify --since`). ConnectionID is empty.
	TypeAuditCheckpoint = "waqueue.audit.checkpoint.v1"
)

// Types returns every integration event type, in a fixed order.
func Types() []string {
	return []string{TypeMessageStatusChanged, TypeConnectionLinkStatusChanged, TypeConnectionBanned,
		TypeConnectionBanLifted, TypeConnectionQueueStatusChanged, TypeClearRequested, TypeClearCompleted, TypeAuditCheckpoint}
}

// IsKnownType reports whether t is one of Types.
func IsKnownType(t string) bool {
	for _, k := range Types() {
		if k == t {
			return true
		}
	}
	return false
}

// Namespace is the UUID namespace of integration event ids.
var Namespace = uuid.MustParse("7b0f4f3e-6a53-4c8e-9a51-1d8f2b0c6e11")

// EventID is the id of the integration event of type typ made from the domain event with id
// domainEventID: the same inputs always give the same id.
func EventID(domainEventID uuid.UUID, typ string) uuid.UUID {
	return uuid.NewSHA1(Namespace, []byte(domainEventID.String()+"/"+typ))
}

// Event is one integration event: the envelope every type shares, with the type-specific body
// in Data. Its JSON form is the public schema (see adapters/broker/EVENTS.md).
type Event struct {
	// ID is deterministic (EventID): consumers dedupe on it.
	ID uuid.UUID `json:"id"`
	// Type is one of the Type… constants.
	Type string `json:"type"`
	// OccurredAt is when the fact happened (the domain event's own time, UTC).
	OccurredAt time.Time `json:"occurred_at"`
	// TenantID and ConnectionID say whose connection it is about.
	TenantID     string `json:"tenant_id"`
	ConnectionID string `json:"connection_id"`
	// Position is the domain event's position in the global log ("commit/prepare"); within one
	// connection it orders events.
	Position string `json:"position"`
	// Data is the type's body: MessageStatusChanged, LinkStatusChanged, Banned, BanLifted,
	// QueueStatusChanged, ClearRequested, ClearCompleted or auditchain.Checkpoint.
	Data json.RawMessage `json:"data"`
}

// MessageStatusChanged is the body of TypeMessageStatusChanged.
type MessageStatusChanged struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
	Status    string    `json:"status"`
	// BroadcastID is set for a broadcast's message when it is queued.
	BroadcastID uuid.UUID `json:"broadcast_id,omitzero"`
	// Recipient is set when the message is queued (E.164).
	Recipient string `json:"recipient,omitempty"`
	// FailureCode and FailureDetail are set for status failed; Cause for status unknown.
	FailureCode   string `json:"failure_code,omitempty"`
	FailureDetail string `json:"failure_detail,omitempty"`
	Cause         string `json:"cause,omitempty"`
	// Reason and Actor are set for status cancelled: why, and who cancelled it.
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
	// ServerID is WhatsApp's id of a sent message, if known.
	ServerID string `json:"server_id,omitempty"`
}

// LinkStatusChanged is the body of TypeConnectionLinkStatusChanged.
type LinkStatusChanged struct {
	LinkStatus string `json:"link_status"`
	Reason     string `json:"reason,omitempty"`
	// Cause and Description explain a session loss's Reason (connection.ExplainLogout).
	Cause       string `json:"cause,omitempty"`
	Description string `json:"description,omitempty"`
	Actor       string `json:"actor"`
}

// Banned is the body of TypeConnectionBanned.
type Banned struct {
	// Kind is "temporary" or "permanent".
	Kind       string    `json:"kind"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	ReasonCode string    `json:"reason_code"`
	// Cause is the reason's stable code (connection.ExplainBan), Description it in words.
	Cause       string `json:"cause"`
	Description string `json:"description"`
	Actor       string `json:"actor"`
}

// BanLifted is the body of TypeConnectionBanLifted.
type BanLifted struct {
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor"`
}

// QueueStatusChanged is the body of TypeConnectionQueueStatusChanged.
type QueueStatusChanged struct {
	// QueueStatus is "held" or "open".
	QueueStatus string `json:"queue_status"`
	Reason      string `json:"reason"`
	Note        string `json:"note,omitempty"`
	Actor       string `json:"actor"`
}

// SeqRange is an inclusive range of queue positions.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// InFlight is a message dispatched before a clear and not yet acknowledged.
type InFlight struct {
	MessageID uuid.UUID `json:"message_id"`
	Seq       uint64    `json:"seq"`
}

// ClearRequested is the body of TypeClearRequested.
type ClearRequested struct {
	ClearID uuid.UUID `json:"clear_id"`
	// Scope is "queue" or "broadcast"; BroadcastID is set for "broadcast".
	Scope       string     `json:"scope"`
	BroadcastID uuid.UUID  `json:"broadcast_id,omitzero"`
	RequestedBy string     `json:"requested_by"`
	Reason      string     `json:"reason"`
	Purge       []SeqRange `json:"purge"`
	PurgeCount  uint64     `json:"purge_count"`
	InFlight    []InFlight `json:"in_flight"`
	// NotSent are the messages dispatched but refused by the transport and not retried, which
	// the clear fails not_sent (WhatsApp never had them); omitted when none.
	NotSent []InFlight `json:"not_sent,omitempty"`
	// Then is what the queue becomes after the clear: keep, hold or resume.
	Then string `json:"then"`
}

// ClearCompleted is the body of TypeClearCompleted: the exact report of the clear.
type ClearCompleted struct {
	ClearID       uuid.UUID  `json:"clear_id"`
	Scope         string     `json:"scope"`
	BroadcastID   uuid.UUID  `json:"broadcast_id,omitzero"`
	RequestedBy   string     `json:"requested_by"`
	Reason        string     `json:"reason"`
	RequestedAt   time.Time  `json:"requested_at"`
	Purged        []SeqRange `json:"purged"`
	PurgedCount   uint64     `json:"purged_count"`
	InFlight      []InFlight `json:"in_flight"`
	InFlightCount int        `json:"in_flight_count"`
	NotSent       []InFlight `json:"not_sent,omitempty"`
	NotSentCount  int        `json:"not_sent_count"`
	CompletedBy   string     `json:"completed_by"`
	// Then is the request's then (keep, hold or resume); QueueAfter the queue status the clear
	// left, open or held ("" for clears recorded before it existed).
	Then       string `json:"then"`
	QueueAfter string `json:"queue_after,omitempty"`
}

// SourceTypes are the domain event types Translate turns into integration events (the filter of
// every projection built on it).
func SourceTypes() []string {
	return []string{
		connection.TypeMessageQueued, connection.TypeBroadcastQueued, connection.TypeMessageDispatched, connection.TypeMessageSent,
		connection.TypeMessageDelivered, connection.TypeMessageRead, connection.TypeMessageFailed,
		connection.TypeMessageExpired, connection.TypeMessageOutcomeUnknown, connection.TypeMessageCancelled,
		connection.TypeSessionPaired, connection.TypeSessionInvalidated,
		connection.TypeConnectionBanned, connection.TypeBanLifted,
		connection.TypeQueueHeld, connection.TypeQueueResumed,
		connection.TypeClearQueueRequested, connection.TypeQueueCleared, connection.TypeConnectionRetired,
	}
}

// Filter selects SourceTypes of connection streams and the audit checkpoints of the
// auditcheckpoint streams.
func Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix, auditchain.StreamPrefix},
		EventTypes: append(SourceTypes(), auditchain.TypeCheckpointSigned)}
}

// TranslateAll returns the integration events of a recorded domain event: Translate's one, or
// for a BroadcastQueued one message.status_changed (queued) per message, in Seq order, each with
// the id the message's own MessageQueued would have given it (so consumers see the same ids
// whichever form the log holds). It is a pure function of e.
func TranslateAll(e eventstore.RecordedEvent) ([]Event, error) {
	if e.Type != connection.TypeBroadcastQueued {
		ie, ok, err := Translate(e)
		if err != nil || !ok {
			return nil, err
		}
		return []Event{ie}, nil
	}
	key, isConn := connection.IDFromStream(e.Stream)
	if !isConn {
		return nil, nil
	}
	_, connID := connection.SplitKey(key)
	ev, err := connection.Decode(e.Type, e.Data)
	if err != nil {
		return nil, fmt.Errorf("integration: event %s (%s at %s): %w", e.ID, e.Type, e.Position, err)
	}
	return translateChunk(e, connID, ev.(connection.BroadcastQueued)), nil
}

// Translate returns the integration event of a recorded domain event, and false for an event
// that has none (another stream, or a type outside SourceTypes) or more than one (a
// BroadcastQueued: see TranslateAll). It is a pure function of e: the
// same recorded event always gives the same integration event, byte for byte.
func Translate(e eventstore.RecordedEvent) (Event, bool, error) {
	if e.Type == auditchain.TypeCheckpointSigned && strings.HasPrefix(e.Stream, auditchain.StreamPrefix) {
		return translateCheckpoint(e)
	}
	key, isConn := connection.IDFromStream(e.Stream)
	_, connID := connection.SplitKey(key) // consumers see the id as their tenant knows it
	if !isConn || !connection.IsKnownType(e.Type) {
		return Event{}, false, nil
	}
	if e.Type == connection.TypeBroadcastQueued {
		return Event{}, false, nil
	}
	ev, err := connection.Decode(e.Type, e.Data)
	if err != nil {
		return Event{}, false, fmt.Errorf("integration: event %s (%s at %s): %w", e.ID, e.Type, e.Position, err)
	}
	return translateOne(e, connID, ev, e.ID)
}

// translateOne is the integration event of ev, recorded as e, for the domain event id domainID.
func translateOne(e eventstore.RecordedEvent, connID string, ev connection.Event, domainID uuid.UUID) (Event, bool, error) {
	typ, at, body, ok := translate(ev)
	if !ok {
		return Event{}, false, nil
	}
	data, err := json.Marshal(body)
	if err != nil {
		return Event{}, false, fmt.Errorf("integration: encode %s of event %s: %w", typ, e.ID, err)
	}
	return Event{
		ID: EventID(domainID, typ), Type: typ, OccurredAt: at.UTC(),
		TenantID: e.Metadata.TenantID, ConnectionID: connID, Position: e.Position.String(), Data: data,
	}, true, nil
}

// translateCheckpoint: the body is the checkpoint's JSON, passed on compacted, unchanged.
func translateCheckpoint(e eventstore.RecordedEvent) (Event, bool, error) {
	var cp auditchain.Checkpoint
	if err := json.Unmarshal(e.Data, &cp); err != nil {
		return Event{}, false, fmt.Errorf("integration: event %s (%s at %s): %w", e.ID, e.Type, e.Position, err)
	}
	data, err := json.Marshal(cp)
	if err != nil {
		return Event{}, false, fmt.Errorf("integration: encode checkpoint of event %s: %w", e.ID, err)
	}
	return Event{
		ID: EventID(e.ID, TypeAuditCheckpoint), Type: TypeAuditCheckpoint, OccurredAt: cp.At.UTC(),
		TenantID: cp.TenantID, Position: e.Position.String(), Data: data,
	}, true, nil
}

func msgStatus(me connection.MessageEvent) MessageStatusChanged {
	return MessageStatusChanged{MessageID: me.MessageID, Seq: me.Seq, Status: me.Status.String()}
}

func ranges(rs []connection.SeqRange) []SeqRange {
	out := make([]SeqRange, 0, len(rs))
	for _, r := range rs {
		out = append(out, SeqRange{From: r.From, To: r.To})
	}
	return out
}

func inFlight(ms []connection.InFlightMessage) []InFlight {
	out := make([]InFlight, 0, len(ms))
	for _, m := range ms {
		out = append(out, InFlight{MessageID: m.MessageID, Seq: m.Seq})
	}
	return out
}

// notSent is inFlight, nil for none (so the field is omitted).
func notSent(ms []connection.InFlightMessage) []InFlight {
	if len(ms) == 0 {
		return nil
	}
	return inFlight(ms)
}

func scope(s connection.ClearScope) (string, uuid.UUID) {
	if s.IsWholeQueue() {
		return "queue", uuid.Nil
	}
	return "broadcast", s.BroadcastID
}

// translate maps a domain event to (type, time, body).
func translate(ev connection.Event) (string, time.Time, any, bool) {
	if me, ok := connection.MessageEventOf(ev); ok {
		b := msgStatus(me)
		var at time.Time
		switch e := ev.(type) {
		case connection.MessageQueued:
			at, b.BroadcastID, b.Recipient = e.QueuedAt, e.BroadcastID, e.Recipient
		case connection.MessageDispatched:
			at = e.DispatchedAt
		case connection.MessageSent:
			at, b.ServerID = e.SentAt, e.ServerID
		case connection.MessageDelivered:
			at = e.DeliveredAt
		case connection.MessageRead:
			at = e.ReadAt
		case connection.MessageFailed:
			at, b.FailureCode, b.FailureDetail = e.FailedAt, e.Code, e.Detail
		case connection.MessageExpired:
			at = e.ExpiredAt
		case connection.MessageOutcomeUnknown:
			at, b.Cause = e.At, e.Cause
		case connection.MessageCancelled:
			at, b.Reason, b.Actor = e.CancelledAt, e.Reason, e.CancelledBy
		}
		return TypeMessageStatusChanged, at, b, true
	}
	switch e := ev.(type) {
	case connection.SessionPaired:
		return TypeConnectionLinkStatusChanged, e.PairedAt,
			LinkStatusChanged{LinkStatus: connection.LinkStatusActive.String(), Actor: e.Actor}, true
	case connection.SessionInvalidated:
		r := connection.ExplainLogout(e.Reason)
		return TypeConnectionLinkStatusChanged, e.InvalidatedAt,
			LinkStatusChanged{LinkStatus: connection.LinkStatusSessionInvalid.String(), Reason: e.Reason, Cause: r.Code,
				Description: r.Description, Actor: e.Actor}, true
	case connection.ConnectionRetired:
		return TypeConnectionLinkStatusChanged, e.RetiredAt,
			LinkStatusChanged{LinkStatus: connection.LinkStatusRetired.String(), Reason: e.Reason, Actor: e.RetiredBy}, true
	case connection.ConnectionBanned:
		r := connection.ExplainBan(e.Kind, e.ReasonCode)
		return TypeConnectionBanned, e.BannedAt,
			Banned{Kind: e.Kind.String(), ExpiresAt: e.ExpiresAt, ReasonCode: e.ReasonCode, Cause: r.Code, Description: r.Description, Actor: e.Actor}, true
	case connection.BanLifted:
		return TypeConnectionBanLifted, e.LiftedAt, BanLifted{Reason: e.Reason, Actor: e.Actor}, true
	case connection.QueueHeld:
		return TypeConnectionQueueStatusChanged, e.HeldAt, QueueStatusChanged{
			QueueStatus: connection.QueueStatusHeld.String(), Reason: e.Reason.String(), Note: e.Note, Actor: e.Actor}, true
	case connection.QueueResumed:
		return TypeConnectionQueueStatusChanged, e.ResumedAt, QueueStatusChanged{
			QueueStatus: connection.QueueStatusOpen.String(), Reason: e.Reason.String(), Note: e.Note, Actor: e.Actor}, true
	case connection.ClearQueueRequested:
		s, b := scope(e.Scope)
		return TypeClearRequested, e.RequestedAt, ClearRequested{
			ClearID: e.ClearID, Scope: s, BroadcastID: b, RequestedBy: e.RequestedBy, Reason: e.Reason,
			Purge: ranges(e.Purge), PurgeCount: e.PurgeCount, InFlight: inFlight(e.InFlight), NotSent: notSent(e.NotSent), Then: e.Then.String()}, true
	case connection.QueueCleared:
		s, b := scope(e.Scope)
		return TypeClearCompleted, e.CompletedAt, ClearCompleted{
			ClearID: e.ClearID, Scope: s, BroadcastID: b, RequestedBy: e.RequestedBy, Reason: e.Reason,
			RequestedAt: e.RequestedAt, Purged: ranges(e.Purged), PurgedCount: e.PurgedCount,
			InFlight: inFlight(e.InFlight), InFlightCount: e.InFlightCount, NotSent: notSent(e.NotSent), NotSentCount: e.NotSentCount,
			CompletedBy: e.CompletedBy, Then: e.Then.String(), QueueAfter: e.QueueAfter.String()}, true
	}
	return "", time.Time{}, nil, false
}
