package connection

import (
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Actor names used by decisions the system takes on its own.
const (
	// SystemActor is the actor of holds and resumes the domain records as a consequence of a
	// ban, a session loss or a lift.
	SystemActor = "system"
)

func (c *Connection) mustBeRegistered(op string) error {
	if !c.Registered() {
		return &Error{Op: op, ConnectionID: c.id, Err: ErrNotRegistered}
	}
	return nil
}

// live refuses an unregistered connection (ErrNotRegistered) and a retired one
// (ErrConnectionRetired): the guard of every decision but reads, acknowledgements of messages
// in flight and the completion of a clear.
func (c *Connection) live(op string) error {
	if err := c.mustBeRegistered(op); err != nil {
		return err
	}
	if c.link == LinkStatusRetired {
		return &Error{Op: op, ConnectionID: c.id, Err: ErrConnectionRetired}
	}
	return nil
}

func (c *Connection) notClearing(op string) error {
	if c.clear != nil {
		return &ClearingError{ConnectionID: c.id, Op: op, ClearID: c.clear.ClearID, Since: c.clear.RequestedAt}
	}
	return nil
}

// RegisterConnection registers a WhatsApp number of a tenant.
type RegisterConnection struct {
	ConnectionID string
	TenantID     string
	// Phone is the connection's own number, in international format ("+49 170 1234567").
	Phone string
	// OnBan is the policy for queues held by a ban or session loss; zero means OnBanHold.
	OnBan OnBanPolicy
	// SendingPolicy, when it changes something, is applied to DefaultSendingPolicy and recorded
	// as a SendingPolicyChanged after the ConnectionRegistered; nil (or a zero patch) keeps the
	// defaults.
	SendingPolicy *SendingPolicyPatch
	Actor         string
}

// Register decides ConnectionRegistered, followed by SendingPolicyChanged when the command sets
// a sending policy other than the defaults. The phone is normalised to E.164. It fails with
// ErrAlreadyRegistered on a registered connection, and with a *ValidationError for an invalid
// sending policy (nothing is recorded then).
func (c *Connection) Register(cmd RegisterConnection, now time.Time) ([]Event, error) {
	if c.link == LinkStatusRetired {
		// A retired id stays taken: its history stays readable under it.
		return nil, &Error{Op: "register", ConnectionID: c.id, Err: ErrConnectionRetired}
	}
	if c.Registered() {
		return nil, &Error{Op: "register", ConnectionID: c.id, Err: ErrAlreadyRegistered}
	}
	if err := ValidateID("connection_id", cmd.ConnectionID); err != nil {
		return nil, err
	}
	if err := ValidateID("tenant_id", cmd.TenantID); err != nil {
		return nil, err
	}
	phone, err := NormalizePhone("phone", cmd.Phone, "")
	if err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	policy := cmd.OnBan
	if policy.IsZero() {
		policy = OnBanHold
	}
	events := []Event{ConnectionRegistered{
		ConnectionID: cmd.ConnectionID, TenantID: cmd.TenantID, Phone: phone, OnBan: policy,
		RegisteredBy: cmd.Actor, RegisteredAt: now.UTC(),
	}}
	if cmd.SendingPolicy != nil && !cmd.SendingPolicy.IsZero() {
		def := DefaultSendingPolicy()
		sp, err := cmd.SendingPolicy.Apply(def)
		if err != nil {
			return nil, err
		}
		if !sp.Equal(def) {
			events = append(events, SendingPolicyChanged{Policy: sp, ChangedBy: cmd.Actor, ChangedAt: now.UTC()})
		}
	}
	return events, nil
}

// SetOnBanPolicy changes the connection's on_ban policy.
type SetOnBanPolicy struct {
	Policy OnBanPolicy
	Actor  string
}

// ChangeOnBanPolicy decides OnBanPolicyChanged. Setting the current policy again is a no-op:
// no events and no error.
func (c *Connection) ChangeOnBanPolicy(cmd SetOnBanPolicy, now time.Time) ([]Event, error) {
	if err := c.live("set on_ban policy"); err != nil {
		return nil, err
	}
	if cmd.Policy.IsZero() {
		return nil, invalid(CodeInvalidPolicy, "on_ban", "must be hold or resume")
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if cmd.Policy == c.onBan {
		return nil, nil
	}
	return []Event{OnBanPolicyChanged{Policy: cmd.Policy, ChangedBy: cmd.Actor, ChangedAt: now.UTC()}}, nil
}

// PairSession records a WhatsApp session paired with the number.
type PairSession struct {
	JID   string
	Actor string
}

// Pair decides SessionPaired, from unpaired or session_invalid (else *LinkStatusError). When
// the queue is held because of the session loss and the policy is OnBanResume, it also decides
// QueueResumed (reason session_paired).
func (c *Connection) Pair(cmd PairSession, now time.Time) ([]Event, error) {
	if err := c.live("pair"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("jid", cmd.JID, false); err != nil {
		return nil, err
	}
	if c.link != LinkStatusUnpaired && c.link != LinkStatusSessionInvalid {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "pair", Status: c.link}
	}
	at := now.UTC()
	events := []Event{SessionPaired{JID: cmd.JID, Actor: cmd.Actor, PairedAt: at}}
	if c.onBan == OnBanResume && c.hold != nil && c.hold.Reason == HoldOnSessionInvalid {
		events = append(events, QueueResumed{Reason: ResumeOnSessionPair, Actor: SystemActor, ResumedAt: at})
	}
	return events, nil
}

// InvalidateSession records a session logged out.
type InvalidateSession struct {
	Reason string
	Actor  string
}

// InvalidateSession decides SessionInvalidated (with the reason's stable Cause), from active
// (else *LinkStatusError), and
// QueueHeld (reason session_invalid) unless the queue is already held (G7).
func (c *Connection) InvalidateSession(cmd InvalidateSession, now time.Time) ([]Event, error) {
	if err := c.live("invalidate session"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("reason", cmd.Reason, false); err != nil {
		return nil, err
	}
	if c.link != LinkStatusActive {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "invalidate session", Status: c.link}
	}
	at := now.UTC()
	events := []Event{SessionInvalidated{Reason: cmd.Reason, Cause: ExplainLogout(cmd.Reason).Code, Actor: cmd.Actor, InvalidatedAt: at}}
	if c.hold == nil {
		events = append(events, QueueHeld{Reason: HoldOnSessionInvalid, Note: cmd.Reason, Actor: SystemActor, HeldAt: at})
	}
	return events, nil
}

// BanConnection records a ban.
type BanConnection struct {
	Kind BanKind
	// ExpiresAt is required for a temporary ban and must be zero for a permanent one.
	ExpiresAt  time.Time
	ReasonCode string
	Actor      string
}

// Ban decides ConnectionBanned (with the reason's stable Cause), from active or banned (a renewed or escalated ban; else
// *LinkStatusError), and QueueHeld (reason banned) unless the queue is already held (G7).
func (c *Connection) Ban(cmd BanConnection, now time.Time) ([]Event, error) {
	if err := c.live("ban"); err != nil {
		return nil, err
	}
	switch {
	case cmd.Kind == BanTemporary && cmd.ExpiresAt.IsZero():
		return nil, invalid(CodeInvalidBan, "expires_at", "a temporary ban needs an expiry")
	case cmd.Kind == BanPermanent && !cmd.ExpiresAt.IsZero():
		return nil, invalid(CodeInvalidBan, "expires_at", "a permanent ban has no expiry")
	case cmd.Kind.IsZero():
		return nil, invalid(CodeInvalidBan, "kind", "must be temporary or permanent")
	}
	if err := validateNote("reason_code", cmd.ReasonCode, true); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if c.link != LinkStatusActive && c.link != LinkStatusBanned {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "ban", Status: c.link}
	}
	at := now.UTC()
	var expires time.Time
	if !cmd.ExpiresAt.IsZero() {
		expires = cmd.ExpiresAt.UTC()
	}
	events := []Event{ConnectionBanned{Kind: cmd.Kind, ExpiresAt: expires, ReasonCode: cmd.ReasonCode,
		Cause: ExplainBan(cmd.Kind, cmd.ReasonCode).Code, Actor: cmd.Actor, BannedAt: at}}
	if c.hold == nil {
		events = append(events, QueueHeld{Reason: HoldOnBan, Note: cmd.ReasonCode, Actor: SystemActor, HeldAt: at})
	}
	return events, nil
}

// LiftBan records the end of a ban.
type LiftBan struct {
	Reason string
	Actor  string
}

// LiftBan decides BanLifted, from banned (else *LinkStatusError). It does not resume the queue
// (G7), unless the policy is OnBanResume and the queue is held because of the ban: then it
// also decides QueueResumed (reason ban_lifted).
func (c *Connection) LiftBan(cmd LiftBan, now time.Time) ([]Event, error) {
	if err := c.live("lift ban"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("reason", cmd.Reason, false); err != nil {
		return nil, err
	}
	if c.link != LinkStatusBanned {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "lift ban", Status: c.link}
	}
	at := now.UTC()
	events := []Event{BanLifted{Reason: cmd.Reason, Actor: cmd.Actor, LiftedAt: at}}
	if c.onBan == OnBanResume && c.hold != nil && c.hold.Reason == HoldOnBan {
		events = append(events, QueueResumed{Reason: ResumeOnBanLifted, Actor: SystemActor, ResumedAt: at})
	}
	return events, nil
}

// ObserveTransportProblem records a connection problem the transport observed.
type ObserveTransportProblem struct {
	// Kind must be one of the TransportProblemKind values (the zero kind is refused).
	Kind   TransportProblemKind
	Reason string
	Detail string
}

// ObserveTransportProblem decides TransportProblemObserved, in any link and queue status of a
// registered connection (ErrNotRegistered otherwise): the transport may observe a problem while
// unpaired (a failed connect), banned or clearing. It changes no state. A zero Kind, or a
// Reason or Detail longer than MaxNoteLen bytes or not UTF-8, is a *ValidationError.
func (c *Connection) ObserveTransportProblem(cmd ObserveTransportProblem, now time.Time) ([]Event, error) {
	if err := c.live("observe transport problem"); err != nil {
		return nil, err
	}
	if !slices.Contains(transportProblemKinds, cmd.Kind) {
		return nil, invalid(CodeInvalidProblemKind, "kind", "must be one of stream_replaced, client_outdated, keepalive_timeout, connect_failure")
	}
	if err := validateNote("reason", cmd.Reason, false); err != nil {
		return nil, err
	}
	if err := validateNote("detail", cmd.Detail, false); err != nil {
		return nil, err
	}
	return []Event{TransportProblemObserved{Kind: cmd.Kind, Reason: cmd.Reason, Detail: cmd.Detail, ObservedAt: now.UTC()}}, nil
}

// HoldQueue holds the queue by an operator's decision.
type HoldQueue struct {
	Note  string
	Actor string
}

// Hold decides QueueHeld (reason operator). It fails with ErrAlreadyHeld on a held queue. A
// queue can be held while clearing: it is held when the clear completes.
func (c *Connection) Hold(cmd HoldQueue, now time.Time) ([]Event, error) {
	if err := c.live("hold"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("note", cmd.Note, false); err != nil {
		return nil, err
	}
	if c.hold != nil {
		return nil, &Error{Op: "hold", ConnectionID: c.id, Err: ErrAlreadyHeld}
	}
	return []Event{QueueHeld{Reason: HoldByOperator, Note: cmd.Note, Actor: cmd.Actor, HeldAt: now.UTC()}}, nil
}

// ResumeQueue resumes a held queue by an operator's decision.
type ResumeQueue struct {
	Note  string
	Actor string
}

// Resume decides QueueResumed (reason operator). It fails with ErrNotHeld on a queue that is
// not held, and with a *LinkStatusError while the link is banned or its session invalid (G7):
// an operator's resume is a decision about a working link, so it waits for the lift or the new
// pairing; otherwise the whole queue would go out at the moment the ban lifts, unreviewed.
// Clearing remains possible at any time.
func (c *Connection) Resume(cmd ResumeQueue, now time.Time) ([]Event, error) {
	if err := c.live("resume"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("note", cmd.Note, false); err != nil {
		return nil, err
	}
	if c.hold == nil {
		return nil, &Error{Op: "resume", ConnectionID: c.id, Err: ErrNotHeld}
	}
	if c.link == LinkStatusBanned || c.link == LinkStatusSessionInvalid {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "resume", Status: c.link}
	}
	return []Event{QueueResumed{Reason: ResumeByOperator, Note: cmd.Note, Actor: cmd.Actor, ResumedAt: now.UTC()}}, nil
}

// EnqueueMessage queues one 1:1 message.
type EnqueueMessage struct {
	// IdempotencyKey makes the enqueue idempotent: the message id is
	// MessageIDFor(tenant, connection, key), so a retry decides the same MessageQueued id
	// and the store recognises the duplicate (see EventID).
	IdempotencyKey string
	// Recipient is a phone number; without a leading '+' it is read in the region of the
	// connection's own number.
	Recipient string
	Text      string
	// TTL, if positive, makes the message expire instead of being sent after now+TTL.
	TTL   time.Duration
	Actor string
}

// Enqueue decides MessageQueued at the next Seq. It fails with a *ValidationError for a bad
// command and a *ClearingError while clearing (G2). Enqueue is accepted whatever the link
// status and while held: the message waits.
func (c *Connection) Enqueue(cmd EnqueueMessage, now time.Time) ([]Event, error) {
	if err := c.live("enqueue"); err != nil {
		return nil, err
	}
	if cmd.IdempotencyKey == "" || len(cmd.IdempotencyKey) > MaxKeyLen {
		return nil, invalid(CodeMissingIdempotencyKey, "idempotency_key", "must be 1 to %d bytes", MaxKeyLen)
	}
	recipient, err := NormalizePhone("recipient", cmd.Recipient, c.region)
	if err != nil {
		return nil, err
	}
	if err := ValidateText(cmd.Text); err != nil {
		return nil, err
	}
	if err := ValidateTTL(cmd.TTL); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := c.notClearing("enqueue"); err != nil {
		return nil, err
	}
	at := now.UTC()
	return []Event{MessageQueued{
		MessageID:      MessageIDFor(c.tenant, c.id, cmd.IdempotencyKey),
		Seq:            c.lastSeq + 1,
		Recipient:      recipient,
		Text:           cmd.Text,
		IdempotencyKey: cmd.IdempotencyKey,
		Fingerprint:    enqueueFingerprint(recipient, cmd.Text, cmd.TTL),
		ExpiresAt:      expiry(at, cmd.TTL),
		QueuedBy:       cmd.Actor,
		QueuedAt:       at,
	}}, nil
}

func expiry(at time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return at.Add(ttl)
}

// StartBroadcast queues one text to many recipients.
type StartBroadcast struct {
	// BroadcastID identifies the broadcast (e.g. BroadcastIDFor(tenant, connection, key));
	// message ids derive from it (BroadcastMessageID), so a retry decides the same events.
	BroadcastID uuid.UUID
	// Recipients are 1 to MaxRecipients phone numbers, each at most once.
	Recipients []string
	Text       string
	TTL        time.Duration
	Actor      string
}

// StartBroadcast decides BroadcastStarted followed by BroadcastQueued chunks of at most
// BroadcastChunk recipients (each standing for one MessageQueued per recipient), in recipient
// order, at consecutive Seqs. The caller must append them in one atomic batch (see
// BroadcastStarted for why). It fails with a *ValidationError naming the first bad recipient
// (1-based) and a *ClearingError while clearing (G2).
//
// Validating 100,000 numbers takes seconds; a command handler that retries on a wrong expected
// revision should call PrepareBroadcast once and StartPreparedBroadcast in its retry loop.
func (c *Connection) StartBroadcast(cmd StartBroadcast, now time.Time) ([]Event, error) {
	if err := c.live("start broadcast"); err != nil {
		return nil, err
	}
	p, err := PrepareBroadcast(cmd, c.region)
	if err != nil {
		return nil, err
	}
	return c.StartPreparedBroadcast(p, now)
}

// PreparedBroadcast is a validated StartBroadcast with its recipients in E.164. Only
// PrepareBroadcast makes one.
type PreparedBroadcast struct {
	cmd         StartBroadcast
	region      string
	recipients  []string
	fingerprint string
}

// Fingerprint returns the fingerprint of the prepared request (normalised recipients in order,
// text, TTL), recorded in BroadcastStarted.
func (p PreparedBroadcast) Fingerprint() string { return p.fingerprint }

// BroadcastID returns the prepared broadcast's id.
func (p PreparedBroadcast) BroadcastID() uuid.UUID { return p.cmd.BroadcastID }

// Recipients returns the normalised recipients, in order.
func (p PreparedBroadcast) Recipients() []string { return slices.Clone(p.recipients) }

// PrepareBroadcast validates cmd and normalises its recipients to E.164, reading national
// numbers in region (the connection's Region()). It is the expensive, state-independent part of
// StartBroadcast: call it once, outside the load-decide-append retry loop. Errors are
// *ValidationError (Recipient names the first bad recipient, 1-based).
func PrepareBroadcast(cmd StartBroadcast, region string) (PreparedBroadcast, error) {
	if cmd.BroadcastID == uuid.Nil {
		return PreparedBroadcast{}, invalid(CodeInvalidID, "broadcast_id", "must not be empty")
	}
	switch n := len(cmd.Recipients); {
	case n == 0:
		return PreparedBroadcast{}, invalid(CodeNoRecipients, "recipients", "at least one recipient")
	case n > MaxRecipients:
		return PreparedBroadcast{}, invalid(CodeTooManyRecipients, "recipients", "%d recipients, at most %d", n, MaxRecipients)
	}
	if err := ValidateText(cmd.Text); err != nil {
		return PreparedBroadcast{}, err
	}
	if err := ValidateTTL(cmd.TTL); err != nil {
		return PreparedBroadcast{}, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return PreparedBroadcast{}, err
	}
	normalized, bad, err := normalizeRecipients(cmd.Recipients, region)
	if err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.Recipient = bad + 1
		}
		// A duplicate before the first invalid number is the first error a reader meets.
		if dup := duplicateOf(normalized[:bad]); dup != nil {
			return PreparedBroadcast{}, dup
		}
		return PreparedBroadcast{}, err
	}
	if dup := duplicateOf(normalized); dup != nil {
		return PreparedBroadcast{}, dup
	}
	cmd.Recipients = nil // the normalised list replaces them
	return PreparedBroadcast{cmd: cmd, region: region, recipients: normalized,
		fingerprint: broadcastFingerprint(normalized, cmd.Text, cmd.TTL)}, nil
}

// StartPreparedBroadcast decides what StartBroadcast decides, for a broadcast prepared by
// PrepareBroadcast with this connection's Region(). It costs O(recipients) without parsing a
// number. It fails with ErrInvalidCommand for a zero or foreign-region PreparedBroadcast and a
// *ClearingError while clearing (G2).
func (c *Connection) StartPreparedBroadcast(p PreparedBroadcast, now time.Time) ([]Event, error) {
	if err := c.live("start broadcast"); err != nil {
		return nil, err
	}
	if len(p.recipients) == 0 || p.region != c.region {
		return nil, invalid(CodeNoRecipients, "recipients", "broadcast not prepared for this connection")
	}
	if err := c.notClearing("start broadcast"); err != nil {
		return nil, err
	}
	at := now.UTC()
	exp := expiry(at, p.cmd.TTL)
	first := c.lastSeq + 1
	id := p.cmd.BroadcastID
	events := make([]Event, 0, 1+(len(p.recipients)+BroadcastChunk-1)/BroadcastChunk)
	events = append(events, BroadcastStarted{
		BroadcastID: id, Text: p.cmd.Text, FirstSeq: first, Count: len(p.recipients),
		ExpiresAt: exp, StartedBy: p.cmd.Actor, StartedAt: at, Fingerprint: p.fingerprint,
	})
	for i := 0; i < len(p.recipients); i += BroadcastChunk {
		events = append(events, BroadcastQueued{
			BroadcastID: id, FirstSeq: first + uint64(i), FirstIndex: i,
			Recipients: slices.Clone(p.recipients[i:min(i+BroadcastChunk, len(p.recipients))]),
			ExpiresAt:  exp, QueuedBy: p.cmd.Actor, QueuedAt: at,
		})
	}
	return events, nil
}

// DispatchMessage asks to hand the head of the queue to WhatsApp. The dispatcher takes the
// message from the pending-queue projection.
type DispatchMessage struct {
	MessageID uuid.UUID
	Seq       uint64
	// ExpiresAt is the message's expiry from its MessageQueued (zero for none).
	ExpiresAt time.Time
	// Epoch is the fencing token of the caller's lease on the connection (0 without leases).
	// It is recorded on MessageDispatched; an epoch below the highest recorded is refused.
	Epoch uint64
}

// Dispatch decides MessageDispatched. The caller appends it at the expected revision Version()
// and calls the transport only after the append succeeded: a concurrent clear or dispatch makes
// the append fail, and the retry, on the reloaded state, refuses (G1, G5). Refusals, in order:
//   - *StaleEpochError (ErrStaleEpoch) when cmd.Epoch is below the highest lease epoch recorded
//     on the stream: the caller's lease was taken over (a stale owner is refused even if it
//     still believes it holds the lease);
//   - *ClearingError while clearing (G1, G2);
//   - *QueueHeldError while held (G7);
//   - *LinkStatusError unless the link is active (G7);
//   - *MessagePurgedError for a message purged by a clear (G1);
//   - *SequenceError unless cmd.Seq is the head of the queue: ErrAlreadyDisposed for a message
//     already dispatched, expired or purged (G5), ErrNotNext, ErrUnknownMessage;
//   - ErrInFlightLimit when MaxInFlight messages await their outcome;
//   - *ExpiredError (ErrMessageExpired) when now is at or past ExpiresAt: decide Expire instead.
//
// The aggregate does not keep message ids of queued messages; it trusts that cmd.MessageID is
// the one queued at cmd.Seq (both come from the projection of this stream).
func (c *Connection) Dispatch(cmd DispatchMessage, now time.Time) ([]Event, error) {
	const op = "dispatch"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if cmd.MessageID == uuid.Nil || cmd.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	if err := c.DispatchRefused(cmd.Epoch); err != nil {
		return nil, err
	}
	if err := c.checkHead(op, cmd.MessageID, cmd.Seq); err != nil {
		return nil, err
	}
	if len(c.flight) >= MaxInFlight {
		return nil, &Error{Op: op, ConnectionID: c.id, Err: ErrInFlightLimit}
	}
	if !cmd.ExpiresAt.IsZero() && !now.Before(cmd.ExpiresAt) {
		return nil, &ExpiredError{ConnectionID: c.id, MessageID: cmd.MessageID, ExpiresAt: cmd.ExpiresAt, Now: now, Expired: true}
	}
	return []Event{MessageDispatched{MessageID: cmd.MessageID, Seq: cmd.Seq, DispatchedAt: now.UTC(), Epoch: cmd.Epoch}}, nil
}

// DispatchRefused returns the error Dispatch refuses any message with under epoch, whatever the
// message: an unregistered or retired connection, a stale epoch, a clear running, a held
// queue, a link not active (in Dispatch's order); nil when a dispatch could be decided. A
// caller may ask before reading the head message (DispatchNext does: a held queue's loop then
// reads nothing); Dispatch itself asks again, so the answer only saves work.
func (c *Connection) DispatchRefused(epoch uint64) error {
	const op = "dispatch"
	if err := c.live(op); err != nil {
		return err
	}
	if err := c.checkEpoch(op, epoch); err != nil {
		return err
	}
	if err := c.notClearing(op); err != nil {
		return err
	}
	if c.hold != nil {
		return &QueueHeldError{ConnectionID: c.id, Reason: c.hold.Reason, Since: c.hold.Since}
	}
	if c.link != LinkStatusActive {
		return &LinkStatusError{ConnectionID: c.id, Op: op, Status: c.link}
	}
	return nil
}

// checkEpoch refuses a lease epoch below the highest recorded on the stream.
func (c *Connection) checkEpoch(op string, epoch uint64) error {
	if epoch < c.epoch {
		return &StaleEpochError{ConnectionID: c.id, Op: op, Epoch: epoch, Recorded: c.epoch}
	}
	return nil
}

// Epoch returns the highest lease epoch recorded by a dispatch or retry (0 for none).
func (c *Connection) Epoch() uint64 { return c.epoch }

func (c *Connection) checkHead(op string, id uuid.UUID, seq uint64) error {
	if r, ok := c.aheadAt(seq); ok && r.Cancelled {
		return &MessageCancelledError{ConnectionID: c.id, Op: op, MessageID: id, Seq: seq}
	}
	if clearID, purged := c.purgedBy(seq); purged {
		return &MessagePurgedError{ConnectionID: c.id, MessageID: id, Seq: seq, ClearID: clearID}
	}
	head, _ := c.Head()
	if seq != head || head == 0 {
		return &SequenceError{ConnectionID: c.id, Op: op, MessageID: id, Seq: seq, Next: head, Last: c.lastSeq}
	}
	return nil
}

// ExpireMessage records that the head of the queue outlived its TTL.
type ExpireMessage struct {
	MessageID uuid.UUID
	Seq       uint64
	// ExpiresAt is the message's expiry from its MessageQueued.
	ExpiresAt time.Time
}

// Expire decides MessageExpired for the head of the queue whose ExpiresAt is at or before now.
// It is allowed in every queue and link status (an expired message never goes out). Refusals:
// *MessagePurgedError, *SequenceError as for Dispatch; *ExpiredError (ErrNotExpired) when the
// message has no expiry or it is still in the future.
func (c *Connection) Expire(cmd ExpireMessage, now time.Time) ([]Event, error) {
	const op = "expire"
	if err := c.mustBeRegistered(op); err != nil {
		return nil, err
	}
	if cmd.MessageID == uuid.Nil || cmd.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	if err := c.checkHead(op, cmd.MessageID, cmd.Seq); err != nil {
		return nil, err
	}
	if cmd.ExpiresAt.IsZero() || now.Before(cmd.ExpiresAt) {
		return nil, &ExpiredError{ConnectionID: c.id, MessageID: cmd.MessageID, ExpiresAt: cmd.ExpiresAt, Now: now}
	}
	return []Event{MessageExpired{MessageID: cmd.MessageID, Seq: cmd.Seq, ExpiresAt: cmd.ExpiresAt.UTC(), ExpiredAt: now.UTC()}}, nil
}

// Outcome is the transport's report about a dispatched message.
type Outcome struct {
	MessageID uuid.UUID
	Seq       uint64
	// Kind is one of MessageStatusSent, MessageStatusDelivered, MessageStatusRead,
	// MessageStatusFailed, MessageStatusUnknown.
	Kind MessageStatus
	// ServerID is WhatsApp's id of a sent message, if any.
	ServerID string
	// Code and Detail describe a failure (Code required for failed); Detail is the cause of an
	// unknown outcome.
	Code   string
	Detail string
}

// RecordOutcome decides MessageSent, MessageDelivered, MessageRead, MessageFailed or
// MessageOutcomeUnknown. It is allowed in every queue and link status. Anything else is refused
// with a *NotInFlightError:
//
//   - sent and unknown acknowledge a message in flight that was handed to the transport (not
//     deferred: a message the transport refused was provably never sent);
//   - failed acknowledges any message in flight (a deferred one is failed FailureNotSent);
//   - delivered and read receipts are accepted for a message in flight that was handed over (they
//     acknowledge it) or one acknowledged sent or unknown before (its Seq is among the ranges the
//     aggregate remembers, see Connection): never for a message that was never dispatched, was
//     purged by any clear, expired, failed, or was only deferred.
//
// Sent, failed and unknown are recorded at most once and only one of them per message (failed
// and unknown are final); each receipt is recorded at most once per message by its event id
// (EventID).
func (c *Connection) RecordOutcome(o Outcome, now time.Time) ([]Event, error) {
	op := "record " + o.Kind.String()
	if err := c.mustBeRegistered(op); err != nil {
		return nil, err
	}
	if o.MessageID == uuid.Nil || o.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	if err := validateNote("detail", o.Detail, false); err != nil {
		return nil, err
	}
	if err := validateNote("server_id", o.ServerID, false); err != nil {
		return nil, err
	}
	f, inFlight := c.flight[o.MessageID]
	inFlight = inFlight && f.Seq == o.Seq
	handedOver := inFlight && !f.Deferred
	notInFlight := &NotInFlightError{ConnectionID: c.id, Op: op, MessageID: o.MessageID, Seq: o.Seq}
	at := now.UTC()
	switch o.Kind {
	case MessageStatusSent:
		if !handedOver {
			return nil, notInFlight
		}
		return []Event{MessageSent{MessageID: o.MessageID, Seq: o.Seq, ServerID: o.ServerID, SentAt: at}}, nil
	case MessageStatusFailed:
		if err := validateNote("code", o.Code, true); err != nil {
			return nil, err
		}
		if !inFlight {
			return nil, notInFlight
		}
		return []Event{MessageFailed{MessageID: o.MessageID, Seq: o.Seq, Code: o.Code, Detail: o.Detail, FailedAt: at}}, nil
	case MessageStatusUnknown:
		if !handedOver {
			return nil, notInFlight
		}
		return []Event{MessageOutcomeUnknown{MessageID: o.MessageID, Seq: o.Seq, Cause: o.Detail, At: at}}, nil
	case MessageStatusDelivered, MessageStatusRead:
		if !handedOver && (inFlight || !c.wasHandedOver(o.Seq)) {
			return nil, notInFlight
		}
		if o.Kind == MessageStatusDelivered {
			return []Event{MessageDelivered{MessageID: o.MessageID, Seq: o.Seq, DeliveredAt: at}}, nil
		}
		return []Event{MessageRead{MessageID: o.MessageID, Seq: o.Seq, ReadAt: at}}, nil
	default:
		return nil, invalid(CodeMissingMessage, "kind", "outcome %q is not sent, delivered, read, failed or unknown", o.Kind)
	}
}

// wasHandedOver reports whether seq is among the positions acknowledged sent or unknown.
func (c *Connection) wasHandedOver(seq uint64) bool {
	_, ok := slices.BinarySearchFunc(c.handed, seq, func(r SeqRange, s uint64) int {
		switch {
		case r.To < s:
			return -1
		case r.From > s:
			return 1
		}
		return 0
	})
	return ok
}

// SendRefused says the transport refused to take a dispatched message (nothing was sent).
type SendRefused struct {
	MessageID uuid.UUID
	Seq       uint64
	// Reason is the transport's answer, e.g. "not_connected" or "rate_limited"; required.
	Reason string
}

// DeferSend decides MessageSendDeferred: the last hand-over of a message in flight was refused
// by the transport, so WhatsApp does not have it. It is allowed in every queue and link status.
// It is refused with a *NotInFlightError unless the message is in flight and handed over (not
// already deferred). Before handing the message over again, decide RetrySend.
func (c *Connection) DeferSend(cmd SendRefused, now time.Time) ([]Event, error) {
	const op = "defer send"
	if err := c.mustBeRegistered(op); err != nil {
		return nil, err
	}
	if cmd.MessageID == uuid.Nil || cmd.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	if err := validateNote("reason", cmd.Reason, true); err != nil {
		return nil, err
	}
	f, ok := c.flight[cmd.MessageID]
	if !ok || f.Seq != cmd.Seq || f.Deferred {
		return nil, &NotInFlightError{ConnectionID: c.id, Op: op, MessageID: cmd.MessageID, Seq: cmd.Seq}
	}
	return []Event{MessageSendDeferred{MessageID: cmd.MessageID, Seq: cmd.Seq, Attempt: f.Attempt, Reason: cmd.Reason, DeferredAt: now.UTC()}}, nil
}

// RetrySend asks to hand a deferred message to the transport again.
type RetrySend struct {
	MessageID uuid.UUID
	Seq       uint64
	// Epoch is the caller's lease epoch, as for DispatchMessage.Epoch.
	Epoch uint64
}

// RetrySend decides MessageSendRetried, the fence of a retried hand-over: the caller appends it
// at the expected revision Version() and calls the transport only after the append succeeded,
// exactly as after Dispatch. Refusals, in order:
//   - *NotInFlightError unless the message is in flight and deferred (a clear ended it failed
//     not_sent, or it was acknowledged);
//   - *StaleEpochError when cmd.Epoch is below the highest lease epoch recorded (as Dispatch);
//   - *ClearingError while clearing (G1, G2);
//   - *SendInterruptedError when a clear, hold, ban or session loss was recorded since the
//     message was dispatched, even if it is over now (G1: what was recorded since wins);
//   - *QueueHeldError while held, *LinkStatusError unless the link is active (G7).
//
// After a refusal the message was never handed over: record it failed FailureNotSent.
func (c *Connection) RetrySend(cmd RetrySend, now time.Time) ([]Event, error) {
	const op = "retry send"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if cmd.MessageID == uuid.Nil || cmd.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	f, ok := c.flight[cmd.MessageID]
	if !ok || f.Seq != cmd.Seq || !f.Deferred {
		return nil, &NotInFlightError{ConnectionID: c.id, Op: op, MessageID: cmd.MessageID, Seq: cmd.Seq}
	}
	if err := c.checkEpoch(op, cmd.Epoch); err != nil {
		return nil, err
	}
	if err := c.notClearing(op); err != nil {
		return nil, err
	}
	if c.disrupted > f.DispatchedAt {
		return nil, &SendInterruptedError{ConnectionID: c.id, MessageID: cmd.MessageID, Seq: cmd.Seq,
			DispatchedAt: f.DispatchedAt, Revision: c.disrupted}
	}
	if c.hold != nil {
		return nil, &QueueHeldError{ConnectionID: c.id, Reason: c.hold.Reason, Since: c.hold.Since}
	}
	if c.link != LinkStatusActive {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: op, Status: c.link}
	}
	return []Event{MessageSendRetried{MessageID: cmd.MessageID, Seq: cmd.Seq, Attempt: f.Attempt + 1, RetriedAt: now.UTC(), Epoch: cmd.Epoch}}, nil
}

// CancelMessage cancels one pending message.
type CancelMessage struct {
	MessageID uuid.UUID
	// Seq is the message's queue position, from its MessageQueued.
	Seq uint64
	// Reason says why; required.
	Reason string
	Actor  string
}

// Cancel decides MessageCancelled for a message still queued: above the cursor, not purged and
// not cancelled. It is allowed in every queue and link status. The caller appends it at the
// expected revision Version(), so a dispatch, expiry or clear of the message recorded meanwhile
// makes the append fail and the retry refuse (exactly one wins). The dispatch cursor jumps over
// a cancelled message; a later clear does not count it.
//
// Like Dispatch it trusts that cmd.MessageID is the one queued at cmd.Seq (the caller reads the
// message's MessageQueued). Refusals: *ValidationError (missing message or reason);
// *SequenceError (ErrUnknownMessage) for a Seq never queued; *MessageNotPendingError for a
// message dispatched, expired, purged or cancelled (Cancelled set when the aggregate still
// knows it was cancelled).
func (c *Connection) Cancel(cmd CancelMessage, now time.Time) ([]Event, error) {
	const op = "cancel"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if cmd.MessageID == uuid.Nil || cmd.Seq == 0 {
		return nil, invalid(CodeMissingMessage, "message", "message id and seq are required")
	}
	if err := validateNote("reason", cmd.Reason, true); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if cmd.Seq > c.lastSeq {
		head, _ := c.Head()
		return nil, &SequenceError{ConnectionID: c.id, Op: op, MessageID: cmd.MessageID, Seq: cmd.Seq, Next: head, Last: c.lastSeq}
	}
	if r, ok := c.aheadAt(cmd.Seq); ok {
		return nil, &MessageNotPendingError{ConnectionID: c.id, MessageID: cmd.MessageID, Seq: cmd.Seq, Cancelled: r.Cancelled}
	}
	if cmd.Seq <= c.cursor {
		return nil, &MessageNotPendingError{ConnectionID: c.id, MessageID: cmd.MessageID, Seq: cmd.Seq}
	}
	return []Event{MessageCancelled{MessageID: cmd.MessageID, Seq: cmd.Seq, Reason: cmd.Reason,
		CancelledBy: cmd.Actor, CancelledAt: now.UTC()}}, nil
}

// RequestClear asks to clear the queue or one broadcast.
type RequestClear struct {
	// ClearID identifies the clear (e.g. ClearIDFor(tenant, connection, key)).
	ClearID uuid.UUID
	Scope   ClearScope
	Reason  string
	Actor   string
	// Then is what the queue becomes when the clear completes; zero means ClearThenKeep.
	Then ClearThen
}

// RequestClear decides ClearQueueRequested, which flips the queue to clearing and fixes the
// exact purged set (see ClearQueueRequested):
//   - whole queue: every pending message, i.e. Seqs (Cursor, LastSeq] minus those purged by a
//     scoped clear already;
//   - one broadcast: the broadcast's Seqs above the cursor; refused with
//     *BroadcastNotPendingError if the broadcast has no pending message.
//
// Messages in flight whose hand-over the transport refused (SendDeferred) are not in flight for
// the report: WhatsApp never had them. Those of the scope are listed in NotSent and the same
// decision fails each (MessageFailed, code FailureNotSent), after the request, so no retry can
// hand them over.
//
// It is allowed in every link status and while held. What the queue becomes afterwards is
// cmd.Then (recorded in the event, zero normalised to ClearThenKeep): keep leaves a held queue
// held; resume is refused with a *LinkStatusError (Op "clear then resume") while the link is
// banned or its session invalid (G7: sending is never reopened by a clear while WhatsApp
// refuses the number). A second clear while clearing is refused with *ClearingError
// (ErrQueueClearing), except that a request with the ClearID of the clear in progress is an
// idempotent no-op (no events, nil error) if its fingerprint (ClearFingerprint) matches the one
// recorded, and a *KeyReusedError (ErrIdempotencyKeyReused) if not.
func (c *Connection) RequestClear(cmd RequestClear, now time.Time) ([]Event, error) {
	const op = "clear"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if cmd.ClearID == uuid.Nil {
		return nil, invalid(CodeInvalidID, "clear_id", "must not be empty")
	}
	if err := validateNote("reason", cmd.Reason, true); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	fp := ClearFingerprint(cmd)
	if c.clear != nil && c.clear.ClearID == cmd.ClearID {
		return nil, CheckReplay(c.id, "clear", c.clear.Fingerprint, fp)
	}
	if err := c.notClearing(op); err != nil {
		return nil, err
	}
	then := cmd.Then.orKeep()
	if then == ClearThenRetire && !cmd.Scope.IsWholeQueue() {
		return nil, invalid(CodeInvalidThen, "then", "retire needs a clear of the whole queue")
	}
	if then == ClearThenResume && (c.link == LinkStatusBanned || c.link == LinkStatusSessionInvalid) {
		return nil, &LinkStatusError{ConnectionID: c.id, Op: "clear then resume", Status: c.link}
	}
	var purge []SeqRange
	var inFlight, notSent []InFlightMessage
	inScope := func(InFlightMessage) bool { return true }
	if cmd.Scope.IsWholeQueue() {
		purge = c.pendingIn(c.cursor+1, c.lastSeq)
	} else {
		i := slices.IndexFunc(c.bcasts, func(b BroadcastRange) bool { return b.BroadcastID == cmd.Scope.BroadcastID })
		if i < 0 {
			return nil, &BroadcastNotPendingError{ConnectionID: c.id, BroadcastID: cmd.Scope.BroadcastID}
		}
		b := c.bcasts[i]
		purge = c.pendingIn(b.FirstSeq, b.LastSeq) // cancelled messages are not pending
		inScope = func(m InFlightMessage) bool { return m.Seq >= b.FirstSeq && m.Seq <= b.LastSeq }
	}
	for _, m := range c.InFlight() {
		switch {
		case !inScope(m):
		case c.flight[m.MessageID].Deferred:
			notSent = append(notSent, m)
		default:
			inFlight = append(inFlight, m)
		}
	}
	var count uint64
	for _, r := range purge {
		count += r.Len()
	}
	if purge == nil {
		purge = []SeqRange{}
	}
	if inFlight == nil {
		inFlight = []InFlightMessage{}
	}
	at := now.UTC()
	events := []Event{ClearQueueRequested{
		ClearID: cmd.ClearID, Scope: cmd.Scope, RequestedBy: cmd.Actor, Reason: cmd.Reason, RequestedAt: at,
		UpToSeq: c.lastSeq, Purge: purge, PurgeCount: count, InFlight: inFlight, NotSent: notSent, Then: then,
		Fingerprint: fp,
	}}
	for _, m := range notSent {
		events = append(events, MessageFailed{MessageID: m.MessageID, Seq: m.Seq, Code: FailureNotSent,
			Detail: "cleared before it was handed over (clear " + cmd.ClearID.String() + ")", FailedAt: at})
	}
	return events, nil
}

// CompleteClear ends the clear in progress; the clearing process sends it once its read models
// have marked the purged messages.
type CompleteClear struct {
	ClearID uuid.UUID
	Actor   string
}

// CompleteClear decides QueueCleared, the clear's report, repeating the request's exact figures
// with the completion time, and applies the request's Then in the same batch:
//   - keep (also a request recorded before Then existed): nothing more; the queue is held if it
//     is held, open otherwise;
//   - hold: QueueHeld (reason after_clear, actor the clear's requester) unless held by an
//     operator already; a hold by a ban or session loss becomes this explicit one, so that an
//     OnBanResume policy does not resume it when the link recovers;
//   - resume: QueueResumed (reason after_clear, actor the requester) if the queue is held, the
//     link is neither banned nor session_invalid, and no hold, ban or session loss was recorded
//     since the request (that newer fact wins; G7). Otherwise nothing: the queue stays held.
//
// QueueCleared.QueueAfter states the resulting queue status. It fails with
// ErrNoClearInProgress when no clear with cmd.ClearID is in progress (e.g. it was completed
// already).
func (c *Connection) CompleteClear(cmd CompleteClear, now time.Time) ([]Event, error) {
	if err := c.mustBeRegistered("complete clear"); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if c.clear == nil || c.clear.ClearID != cmd.ClearID {
		return nil, &Error{Op: "complete clear " + cmd.ClearID.String(), ConnectionID: c.id, Err: ErrNoClearInProgress}
	}
	r := cloneClear(*c.clear)
	at := now.UTC()
	then := r.Then.orKeep()
	var after Event
	held := c.hold != nil
	switch {
	case then == ClearThenHold && (!held || c.hold.Reason.IsAutomatic()):
		after = QueueHeld{Reason: HoldAfterClear, Note: "clear " + r.ClearID.String(), Actor: r.RequestedBy, HeldAt: at}
		held = true
	case then == ClearThenRetire:
		after = ConnectionRetired{Reason: r.Reason, ClearID: r.ClearID, RetiredBy: r.RequestedBy, RetiredAt: at}
	case then == ClearThenResume && held && !c.overruled &&
		c.link != LinkStatusBanned && c.link != LinkStatusSessionInvalid:
		after = QueueResumed{Reason: ResumeAfterClear, Note: "clear " + r.ClearID.String(), Actor: r.RequestedBy, ResumedAt: at}
		held = false
	}
	queueAfter := QueueStatusOpen
	if held {
		queueAfter = QueueStatusHeld
	}
	events := []Event{QueueCleared{
		ClearID: r.ClearID, Scope: r.Scope, RequestedBy: r.RequestedBy, Reason: r.Reason, RequestedAt: r.RequestedAt,
		Purged: r.Purge, PurgedCount: r.PurgeCount, InFlight: r.InFlight, InFlightCount: len(r.InFlight),
		NotSent: r.NotSent, NotSentCount: len(r.NotSent), CompletedBy: cmd.Actor, CompletedAt: at, Then: then, QueueAfter: queueAfter,
	}}
	if after != nil {
		events = append(events, after)
	}
	return events, nil
}

// Unpair logs the connection's WhatsApp session out on an operator's request.
type Unpair struct {
	Actor string
}

// Unpair decides SessionInvalidated (Reason LogoutUnpaired, Cause unpaired, the operator as
// Actor) from active or banned, and QueueHeld (reason session_invalid) unless the queue is
// already held (G7): nothing is dispatched once it is recorded, so the caller records it before
// it ends the transport session. On a link that has no session (unpaired, session_invalid) it
// is a no-op (no events, nil error), so a retried logout is harmless; a retired connection is
// refused (ErrConnectionRetired). The pairing flow pairs the number again (Pair).
func (c *Connection) Unpair(cmd Unpair, now time.Time) ([]Event, error) {
	const op = "unpair"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if c.link != LinkStatusActive && c.link != LinkStatusBanned {
		return nil, nil
	}
	at := now.UTC()
	events := []Event{SessionInvalidated{Reason: LogoutUnpaired, Cause: ExplainLogout(LogoutUnpaired).Code, Actor: cmd.Actor, InvalidatedAt: at}}
	if c.hold == nil {
		events = append(events, QueueHeld{Reason: HoldOnSessionInvalid, Note: LogoutUnpaired, Actor: SystemActor, HeldAt: at})
	}
	return events, nil
}

// Retire retires a connection for good.
type Retire struct {
	// Reason says why; required.
	Reason string
	Actor  string
}

// Retire decides ConnectionRetired, in any link and queue status, when nothing is pending,
// nothing in flight and no clear in progress; otherwise it refuses with a *QueueNotEmptyError
// (ErrQueueNotEmpty): clear first with ClearThenRetire, which retires when the clear completes.
// A retired connection is refused (ErrConnectionRetired).
func (c *Connection) Retire(cmd Retire, now time.Time) ([]Event, error) {
	const op = "retire"
	if err := c.live(op); err != nil {
		return nil, err
	}
	if err := validateNote("reason", cmd.Reason, true); err != nil {
		return nil, err
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if p, f := c.Pending(), len(c.flight); p > 0 || f > 0 || c.clear != nil {
		return nil, &QueueNotEmptyError{ConnectionID: c.id, Pending: p, InFlight: f, Clearing: c.clear != nil}
	}
	return []Event{ConnectionRetired{Reason: cmd.Reason, RetiredBy: cmd.Actor, RetiredAt: now.UTC()}}, nil
}
