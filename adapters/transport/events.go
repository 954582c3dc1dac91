package transport

import (
	"time"

	"github.com/google/uuid"
)

// Event is one thing an adapter observed about a connection. The set is closed: only the types in
// this file implement it, so a type switch over them is exhaustive.
//
//	Paired              pairing succeeded; the session is stored
//	PairingFailed       pairing ended without success (timeout, error, cancelled)
//	QRCode              a new QR code to show (PairQR)
//	PairingCode         the phone pairing code to show (PairPhone)
//	Connected           logged in; sends may succeed
//	SessionInvalidated  logged out (401) or main device gone (403): session deleted, pair again
//	PermanentBan        banned for good (406): session deleted
//	TemporaryBan        refused with a temporary ban (402) until ExpiresAt; reconnect scheduled then
//	BanLifted           first successful login after a temporary ban's expiry reconnect
//	StreamReplaced      another client took over the session; no automatic reconnect
//	ClientOutdated      the client version is refused (405); no automatic reconnect
//	KeepAliveTimeout    keepalive pings fail; the adapter keeps trying
//	ConnectFailure      any other refused login, with its reason code; no automatic reconnect
//	Receipt             recipients' delivered/read receipts for our messages
type Event interface {
	// Header returns the fields every event carries.
	Header() EventHeader
	isEvent()
}

// EventHeader is carried by every event.
type EventHeader struct {
	ConnectionID string
	// At is when the adapter observed the event (its clock).
	At time.Time
	// Simulated is true when the simulator produced the event.
	Simulated bool
}

// Header returns h; it makes every type embedding EventHeader satisfy half of Event.
func (h EventHeader) Header() EventHeader { return h }

// Paired reports a successful pairing.
type Paired struct {
	EventHeader
	// JID is the new device's WhatsApp JID ("4915112345678:12@s.whatsapp.net").
	JID string
	// Phone is the paired number in E.164 form.
	Phone string
}

// PairingFailed reports that pairing ended without success.
type PairingFailed struct {
	EventHeader
	Reason string
}

// QRCode carries the QR code strings to show, newest last.
type QRCode struct {
	EventHeader
	Codes []string
}

// PairingCode carries the phone pairing code to show.
type PairingCode struct {
	EventHeader
	Code string
}

// Connected reports a successful login.
type Connected struct{ EventHeader }

// SessionInvalidated reports that the session is gone (logged out from the phone: 401, or the main
// device is gone / account locked: 403). The stored session was deleted; the connection must be
// paired again. Domain outcome: link status session_invalid, queue held.
type SessionInvalidated struct {
	EventHeader
	// Reason is WhatsApp's reason code, 401 or 403.
	Reason int
	// Description is the reason in words.
	Description string
	// OnConnect is true when the server refused a login, false when a live session was ended.
	OnConnect bool
}

// PermanentBan reports a permanent ban (WhatsApp's logout with reason 406). The stored session was
// deleted. Domain outcome: link status banned (permanent), queue held.
type PermanentBan struct {
	EventHeader
	// Reason is WhatsApp's reason code, 406.
	Reason      int
	Description string
}

// TemporaryBan reports a temporary ban (402). Domain outcome: banned until ExpiresAt, queue held.
type TemporaryBan struct {
	EventHeader
	// Code is WhatsApp's ban reason (101 too many people, 102 blocked by users, 103 too many groups,
	// 104 same message to too many people, 106 broadcast list).
	Code        int
	Description string
	// Expire is how long the ban lasts from At; ExpiresAt is At+Expire.
	Expire    time.Duration
	ExpiresAt time.Time
}

// BanLifted reports the first successful login after a temporary ban expired. It implies Connected
// (no separate Connected event is emitted for that login). Domain outcome: link status active, queue
// stays held until an operator resumes or clears (G7).
type BanLifted struct{ EventHeader }

// StreamReplaced reports that another client opened the same session; the adapter does not reconnect.
type StreamReplaced struct{ EventHeader }

// ClientOutdated reports that WhatsApp refuses this client version (405); the adapter does not
// reconnect until upgraded.
type ClientOutdated struct{ EventHeader }

// KeepAliveTimeout reports failing keepalive pings.
type KeepAliveTimeout struct {
	EventHeader
	ErrorCount  int
	LastSuccess time.Time
}

// ConnectFailure reports a refused login with a reason not covered by a more specific event.
type ConnectFailure struct {
	EventHeader
	Reason  int
	Message string
}

// ReceiptKind is the kind of a receipt: a closed set.
type ReceiptKind struct{ s string }

// The receipt kinds.
var (
	ReceiptDelivered = ReceiptKind{"delivered"}
	ReceiptRead      = ReceiptKind{"read"}
)

// String returns the kind's stable name.
func (k ReceiptKind) String() string { return k.s }

// IsZero reports whether k is the zero kind.
func (k ReceiptKind) IsZero() bool { return k.s == "" }

// Receipt reports that the recipient's device received (delivered) or the recipient read our
// messages. Receipts can repeat (one per recipient device, retries): consumers must be idempotent.
type Receipt struct {
	EventHeader
	// MessageIDs are our message ids; receipts for messages we did not send are not reported.
	MessageIDs []uuid.UUID
	Kind       ReceiptKind
	// Timestamp is the time the recipient's device gave the receipt.
	Timestamp time.Time
	// From is the JID that sent the receipt.
	From string
}

func (Paired) isEvent()             {}
func (PairingFailed) isEvent()      {}
func (QRCode) isEvent()             {}
func (PairingCode) isEvent()        {}
func (Connected) isEvent()          {}
func (SessionInvalidated) isEvent() {}
func (PermanentBan) isEvent()       {}
func (TemporaryBan) isEvent()       {}
func (BanLifted) isEvent()          {}
func (StreamReplaced) isEvent()     {}
func (ClientOutdated) isEvent()     {}
func (KeepAliveTimeout) isEvent()   {}
func (ConnectFailure) isEvent()     {}
func (Receipt) isEvent()            {}

// Handler receives events; see Transport.SetHandler for the contract.
type Handler func(Event)
