package connection

import "fmt"

// LinkStatus is the state of a connection's link to WhatsApp. The set is closed; the zero
// value means "not registered" and is never stored.
//
//	unpaired → active (SessionPaired)
//	active → session_invalid (SessionInvalidated); session_invalid → active (SessionPaired)
//	active | banned → banned (ConnectionBanned, temporary with an expiry or permanent)
//	banned → active (BanLifted)
type LinkStatus struct{ s string }

var (
	LinkStatusUnpaired       = LinkStatus{"unpaired"}
	LinkStatusActive         = LinkStatus{"active"}
	LinkStatusSessionInvalid = LinkStatus{"session_invalid"}
	LinkStatusBanned         = LinkStatus{"banned"}
	// LinkStatusRetired: the connection was retired (ConnectionRetired); final.
	LinkStatusRetired = LinkStatus{"retired"}
)

func (s LinkStatus) String() string { return s.s }

// IsZero reports whether s is the zero LinkStatus.
func (s LinkStatus) IsZero() bool { return s.s == "" }

// QueueStatus is the state of a connection's queue, independent of its LinkStatus (a banned
// connection can be clearing; after the clear it is still banned). The set is closed.
//
// It is derived from two independent facts: whether a clear is in progress and whether the
// queue is held. Clearing wins: a held queue being cleared reports clearing, and goes back to
// held when QueueCleared is recorded.
type QueueStatus struct{ s string }

var (
	QueueStatusOpen     = QueueStatus{"open"}
	QueueStatusClearing = QueueStatus{"clearing"}
	QueueStatusHeld     = QueueStatus{"held"}
)

func (s QueueStatus) String() string { return s.s }

// IsZero reports whether s is the zero QueueStatus.
func (s QueueStatus) IsZero() bool { return s.s == "" }

// MessageStatus is the state of one message. The aggregate does not keep per-message state
// (see Connection); projections do, from the events. Transitions:
//
//	queued → dispatched → sent → delivered → read
//	queued → purged (QueueCleared) | expired (MessageExpired) | cancelled (MessageCancelled)
//	dispatched → failed (MessageFailed) | unknown (MessageOutcomeUnknown)
type MessageStatus struct{ s string }

var (
	MessageStatusQueued     = MessageStatus{"queued"}
	MessageStatusDispatched = MessageStatus{"dispatched"}
	MessageStatusSent       = MessageStatus{"sent"}
	MessageStatusDelivered  = MessageStatus{"delivered"}
	MessageStatusRead       = MessageStatus{"read"}
	MessageStatusFailed     = MessageStatus{"failed"}
	MessageStatusPurged     = MessageStatus{"purged"}
	MessageStatusExpired    = MessageStatus{"expired"}
	MessageStatusUnknown    = MessageStatus{"unknown"}
	MessageStatusCancelled  = MessageStatus{"cancelled"}
)

func (s MessageStatus) String() string { return s.s }

// IsZero reports whether s is the zero MessageStatus.
func (s MessageStatus) IsZero() bool { return s.s == "" }

// IsFinal reports whether no further status can follow s (read, failed, purged, expired,
// unknown, cancelled). Sent and delivered are not final: receipts may still move them forward.
func (s MessageStatus) IsFinal() bool {
	switch s {
	case MessageStatusRead, MessageStatusFailed, MessageStatusPurged, MessageStatusExpired, MessageStatusUnknown,
		MessageStatusCancelled:
		return true
	}
	return false
}

// OnBanPolicy says what happens to a queue held because of a ban or a session loss once the
// link is active again. The set is closed; the zero value reads as OnBanHold.
type OnBanPolicy struct{ s string }

var (
	// OnBanHold (the default): the queue stays held until an operator resumes or clears it (G7).
	OnBanHold = OnBanPolicy{"hold"}
	// OnBanResume: when the ban is lifted (or the session paired again), a queue that was held
	// automatically is resumed automatically (QueueResumed with reason ban_lifted / session_paired).
	// A hold placed by an operator is never resumed automatically.
	OnBanResume = OnBanPolicy{"resume"}
)

func (p OnBanPolicy) String() string {
	if p.s == "" {
		return OnBanHold.s
	}
	return p.s
}

// IsZero reports whether p is the zero OnBanPolicy.
func (p OnBanPolicy) IsZero() bool { return p.s == "" }

// BanKind says whether a ban has an expiry.
type BanKind struct{ s string }

var (
	BanTemporary = BanKind{"temporary"}
	BanPermanent = BanKind{"permanent"}
)

func (k BanKind) String() string { return k.s }

// IsZero reports whether k is the zero BanKind.
func (k BanKind) IsZero() bool { return k.s == "" }

// HoldReason says why a queue was held.
type HoldReason struct{ s string }

var (
	HoldByOperator       = HoldReason{"operator"}
	HoldOnBan            = HoldReason{"banned"}
	HoldOnSessionInvalid = HoldReason{"session_invalid"}
	// HoldAfterClear: a clear requested with then=hold held the open queue when it completed.
	HoldAfterClear = HoldReason{"after_clear"}
	// HoldOnTenantSuspended: the platform operator suspended the connection's tenant.
	HoldOnTenantSuspended = HoldReason{"tenant_suspended"}
)

func (r HoldReason) String() string { return r.s }

// IsZero reports whether r is the zero HoldReason.
func (r HoldReason) IsZero() bool { return r.s == "" }

// IsAutomatic reports whether the hold was placed by the system (ban, session loss) rather than
// by an operator.
func (r HoldReason) IsAutomatic() bool { return r == HoldOnBan || r == HoldOnSessionInvalid }

// ResumeReason says why a queue was resumed.
type ResumeReason struct{ s string }

var (
	ResumeByOperator    = ResumeReason{"operator"}
	ResumeOnBanLifted   = ResumeReason{"ban_lifted"}
	ResumeOnSessionPair = ResumeReason{"session_paired"}
	// ResumeAfterClear: a clear requested with then=resume resumed the held queue when it
	// completed.
	ResumeAfterClear = ResumeReason{"after_clear"}
	// ResumeOnTenantResumed: the platform operator resumed the connection's tenant.
	ResumeOnTenantResumed = ResumeReason{"tenant_resumed"}
)

func (r ResumeReason) String() string { return r.s }

// IsZero reports whether r is the zero ResumeReason.
func (r ResumeReason) IsZero() bool { return r.s == "" }

// ClearThen says what a clear leaves the queue as when it completes (QueueCleared). The set is
// closed; the zero value (old ClearQueueRequested events carry none) reads as ClearThenKeep.
type ClearThen struct{ s string }

var (
	// ClearThenKeep (the default): the queue returns to what it was before the clear: held if
	// it is held (by an operator, a ban or a session loss), open otherwise.
	ClearThenKeep = ClearThen{"keep"}
	// ClearThenHold: the queue is held after the clear (QueueHeld, reason after_clear, unless an
	// operator holds it already), so that nothing queued after the clear goes out until someone
	// resumes; not even under the OnBanResume policy when the ban lifts.
	ClearThenHold = ClearThen{"hold"}
	// ClearThenResume: a held queue is resumed after the clear (QueueResumed, reason
	// after_clear). Refused at the request while the link is banned or its session invalid
	// (G7), and not applied at completion if a hold, ban or session loss was recorded while
	// clearing: the newer fact wins.
	ClearThenResume = ClearThen{"resume"}
	// ClearThenRetire: the connection is retired when the clear completes (ConnectionRetired in
	// the same batch as QueueCleared), whatever its link and queue status.
	ClearThenRetire = ClearThen{"retire"}
)

func (t ClearThen) String() string {
	if t.s == "" {
		return ClearThenKeep.s
	}
	return t.s
}

// IsZero reports whether t is the zero ClearThen.
func (t ClearThen) IsZero() bool { return t.s == "" }

// orKeep returns t, or ClearThenKeep for the zero ClearThen.
func (t ClearThen) orKeep() ClearThen {
	if t.IsZero() {
		return ClearThenKeep
	}
	return t
}

// ParseClearThen returns the ClearThen named s ("keep", "hold" or "resume"; "" is the default,
// keep). Any other name is a *ValidationError (code invalid_then, field then).
func ParseClearThen(s string) (ClearThen, error) {
	var t ClearThen
	if err := t.UnmarshalText([]byte(s)); err != nil {
		return ClearThen{}, &ValidationError{Code: CodeInvalidThen, Field: "then", Detail: `must be "keep", "hold", "resume" or "retire"`}
	}
	return t.orKeep(), nil
}

// TransportProblemKind says which connection problem the transport observed
// (TransportProblemObserved). The set is closed.
type TransportProblemKind struct{ s string }

var (
	// ProblemStreamReplaced: another client connected with the same session and replaced this one.
	ProblemStreamReplaced = TransportProblemKind{"stream_replaced"}
	// ProblemClientOutdated: WhatsApp refused the client version.
	ProblemClientOutdated = TransportProblemKind{"client_outdated"}
	// ProblemKeepAliveTimeout: the connection's keep-alive pings went unanswered.
	ProblemKeepAliveTimeout = TransportProblemKind{"keepalive_timeout"}
	// ProblemConnectFailure: WhatsApp refused or failed the connection attempt.
	ProblemConnectFailure = TransportProblemKind{"connect_failure"}
)

var transportProblemKinds = []TransportProblemKind{ProblemStreamReplaced, ProblemClientOutdated, ProblemKeepAliveTimeout, ProblemConnectFailure}

func (k TransportProblemKind) String() string { return k.s }

// IsZero reports whether k is the zero TransportProblemKind.
func (k TransportProblemKind) IsZero() bool { return k.s == "" }

// enumText implements MarshalText/UnmarshalText for the closed enums above, so that events and
// snapshots carry their stable names and decoding refuses names outside the set.
func parseEnum[T ~struct{ s string }](kind string, all []T, b []byte) (T, error) {
	if len(b) == 0 {
		return T{}, nil
	}
	for _, v := range all {
		if struct{ s string }(v).s == string(b) {
			return v, nil
		}
	}
	return T{}, fmt.Errorf("connection: unknown %s %q", kind, b)
}

func (s LinkStatus) MarshalText() ([]byte, error) { return []byte(s.s), nil }
func (s *LinkStatus) UnmarshalText(b []byte) (err error) {
	*s, err = parseEnum("link status", []LinkStatus{LinkStatusUnpaired, LinkStatusActive, LinkStatusSessionInvalid, LinkStatusBanned, LinkStatusRetired}, b)
	return err
}
func (s QueueStatus) MarshalText() ([]byte, error) { return []byte(s.s), nil }
func (s *QueueStatus) UnmarshalText(b []byte) (err error) {
	*s, err = parseEnum("queue status", []QueueStatus{QueueStatusOpen, QueueStatusClearing, QueueStatusHeld}, b)
	return err
}
func (s MessageStatus) MarshalText() ([]byte, error) { return []byte(s.s), nil }
func (s *MessageStatus) UnmarshalText(b []byte) (err error) {
	*s, err = parseEnum("message status", []MessageStatus{MessageStatusQueued, MessageStatusDispatched,
		MessageStatusSent, MessageStatusDelivered, MessageStatusRead, MessageStatusFailed,
		MessageStatusPurged, MessageStatusExpired, MessageStatusUnknown, MessageStatusCancelled}, b)
	return err
}
func (p OnBanPolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }
func (p *OnBanPolicy) UnmarshalText(b []byte) (err error) {
	*p, err = parseEnum("on_ban policy", []OnBanPolicy{OnBanHold, OnBanResume}, b)
	return err
}

// ParseOnBanPolicy returns the policy named s ("hold" or "resume"; "" is the default, hold).
func ParseOnBanPolicy(s string) (OnBanPolicy, error) {
	var p OnBanPolicy
	if err := p.UnmarshalText([]byte(s)); err != nil {
		return OnBanPolicy{}, &ValidationError{Code: CodeInvalidPolicy, Field: "on_ban", Detail: err.Error()}
	}
	if p.IsZero() {
		p = OnBanHold
	}
	return p, nil
}
func (k BanKind) MarshalText() ([]byte, error) { return []byte(k.s), nil }
func (k *BanKind) UnmarshalText(b []byte) (err error) {
	*k, err = parseEnum("ban kind", []BanKind{BanTemporary, BanPermanent}, b)
	return err
}
func (r HoldReason) MarshalText() ([]byte, error) { return []byte(r.s), nil }
func (r *HoldReason) UnmarshalText(b []byte) (err error) {
	*r, err = parseEnum("hold reason", []HoldReason{HoldByOperator, HoldOnBan, HoldOnSessionInvalid, HoldAfterClear, HoldOnTenantSuspended}, b)
	return err
}
func (r ResumeReason) MarshalText() ([]byte, error) { return []byte(r.s), nil }
func (r *ResumeReason) UnmarshalText(b []byte) (err error) {
	*r, err = parseEnum("resume reason", []ResumeReason{ResumeByOperator, ResumeOnBanLifted, ResumeOnSessionPair, ResumeAfterClear, ResumeOnTenantResumed}, b)
	return err
}
func (k TransportProblemKind) MarshalText() ([]byte, error) { return []byte(k.s), nil }
func (k *TransportProblemKind) UnmarshalText(b []byte) (err error) {
	*k, err = parseEnum("transport problem kind", transportProblemKinds, b)
	return err
}
func (t ClearThen) MarshalText() ([]byte, error) { return []byte(t.s), nil }
func (t *ClearThen) UnmarshalText(b []byte) (err error) {
	*t, err = parseEnum("clear then", []ClearThen{ClearThenKeep, ClearThenHold, ClearThenResume, ClearThenRetire}, b)
	return err
}
