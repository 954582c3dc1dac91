// Package transport is the port in front of WhatsApp: sending one text message through one
// connection (one paired WhatsApp number), the connection lifecycle (pairing, connecting,
// disconnecting) and the events WhatsApp reports about a connection (bans, logouts, receipts).
//
// Two adapters implement it: adapters/whatsmeow (the real WhatsApp, through go.mau.fi/whatsmeow)
// and adapters/simulator (a scriptable, deterministic stand-in for `make run`, tests and benchmarks).
// Both run the conformance suite in transport/transporttest.
//
// # Send outcomes
//
// The dispatcher must never hand a message to WhatsApp twice (guarantee G5). Every error that Send
// returns therefore says whether the message may have left the process:
//
//   - ErrRateLimited: WhatsApp (or the adapter) refused the message before taking it; nothing was
//     sent. Retry later with backoff; SendError.RetryAfter is a hint when non-zero.
//   - ErrNotConnected: the connection is not logged in or not connected; nothing was sent. Retry
//     after the connection comes back.
//   - ErrRejected: a definite failure; the message was not accepted and will never be. Do not retry.
//   - ErrOutcomeUnknown: the message may or may not have been sent (timeout, socket lost after the
//     frame was written, an error the adapter cannot classify). Never resend automatically.
//
// Exactly one of the four matches any error returned by Send (errors.Is). Adapters classify
// whatever they cannot prove as ErrOutcomeUnknown.
package transport

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Transport is the port the dispatcher and the API use. Implementations manage many connections,
// identified by the connection's tenant-scoped key (connection.Key: "<tenant>:<id>", the bare id
// for the default tenant), so the same id in two tenants is two connections; all methods are
// safe for concurrent use.
//
// Send is serialized per connection: two Sends on the same connection never overlap (the second
// waits for the first), Sends on different connections run in parallel.
type Transport interface {
	// Name names the adapter ("whatsmeow", "simulator") for logs and results.
	Name() string

	// SetHandler registers the one handler that receives every Event of every connection.
	// Events observed before a handler is registered are kept and delivered once it is.
	// The handler is called from one goroutine at a time, in the order the adapter observed
	// the events; it must not block for long (it delays every later event) and may call back
	// into the Transport. Calling SetHandler again replaces the handler.
	SetHandler(h Handler)

	// Send hands one text message to WhatsApp and waits for the server's acknowledgement.
	// The returned error, if any, matches exactly one of ErrRateLimited, ErrNotConnected,
	// ErrRejected and ErrOutcomeUnknown (see the package doc) and is a *SendError.
	Send(ctx context.Context, req SendRequest) (SendResult, error)

	// Connect connects a paired connection and keeps it connected (the adapter reconnects after
	// network failures by itself). It returns once the connection attempt has started; the outcome
	// arrives as an Event (Connected, TemporaryBan, SessionInvalidated, ...). A connection that
	// was never paired, or whose session was invalidated, returns an error matching ErrNotPaired.
	// Connecting an already connected connection is a no-op.
	Connect(ctx context.Context, connID string) error

	// Disconnect closes the connection's socket and stops reconnecting it. The session stays
	// stored: Connect resumes it. Disconnecting an unknown or disconnected connection is a no-op.
	Disconnect(ctx context.Context, connID string) error

	// PairQR starts pairing a new device for connID by QR code. The returned channel yields QR
	// code strings (each to be rendered as a QR code and scanned by the phone, replacing the
	// previous one) and is closed when pairing ends; the end is reported as a Paired or
	// PairingFailed event. Each code is also reported as a QRCode event. A connection that is
	// already paired returns an error matching ErrAlreadyPaired.
	//
	// A pairing's client may end when the pairing succeeds, before Paired is reported (the
	// whatsmeow adapter's does: nodes sharing its session store may run the connection's session
	// elsewhere, and one device may have one connected client only): whoever runs the
	// connection's session then calls Connect. Where it stays connected, Connect is a no-op.
	PairQR(ctx context.Context, connID string) (<-chan string, error)

	// PairPhone starts pairing a new device for connID by phone number (E.164) and returns the
	// pairing code the user types into the phone ("ABCD-EFGH"). The end of pairing is reported as a
	// Paired or PairingFailed event; the pairing's client may end at the success as with PairQR.
	PairPhone(ctx context.Context, connID, phone string) (string, error)

	// Status reports what the adapter knows about the connection right now.
	Status(connID string) Status

	// Unpair ends the connection's WhatsApp session for good (an operator's logout): the linked
	// device is logged out at WhatsApp when the connection is connected (Unpaired.Remote), and
	// the stored session is deleted in any case, so PairQR and PairPhone pair it again. It emits
	// no event: the caller records the logout (with its actor). A connection without a session
	// is a no-op. An error means the session may still be stored; retrying is safe. Called on a
	// node without the connection's client, it deletes the stored session only: the node whose
	// client is connected ends it (the dispatcher there calls Unpair on seeing the logout).
	Unpair(ctx context.Context, connID string) (Unpaired, error)

	// CheckNumbers asks WhatsApp which of phones (E.164, at most MaxCheckNumbers, validated by
	// PhoneDigits) have a WhatsApp account, through the connection's logged-in session. It
	// answers one NumberCheck per distinct phone, in the order given. Errors: ErrNotConnected
	// (no logged-in session), ErrRateLimited (WhatsApp refused the query for now), ErrRejected
	// (bad input, or WhatsApp refused the query); errors.Is matches them.
	CheckNumbers(ctx context.Context, connID string, phones []string) ([]NumberCheck, error)
}

// MaxCheckNumbers bounds the phones of one CheckNumbers call.
const MaxCheckNumbers = 1000

// Unpaired is the outcome of Unpair.
type Unpaired struct {
	// Remote is true when WhatsApp confirmed the logout of the linked device; false when the
	// connection was not connected (only the stored session was deleted: the phone lists the
	// device until WhatsApp drops it) or had no session.
	Remote bool
}

// NumberCheck is whether one phone number has a WhatsApp account.
type NumberCheck struct {
	// Phone is the number asked for, in E.164.
	Phone string
	// OnWhatsApp is true when WhatsApp knows an account for it.
	OnWhatsApp bool
	// JID is the account's WhatsApp JID, when OnWhatsApp.
	JID string
}

// SendRequest is one outgoing text message.
type SendRequest struct {
	// ConnectionID is the connection to send through.
	ConnectionID string
	// MessageID is our message id. The adapter sends it as the WhatsApp message id
	// WAMessageID(MessageID), so receipts and timeouts match our message.
	MessageID uuid.UUID
	// To is the recipient's phone number in E.164 form ("+4915112345678").
	To string
	// Text is the message body.
	Text string
	// Fence is the revision, in the connection's stream, of the record the dispatcher appended
	// at the expected revision for this very hand-over (MessageDispatched for the first try,
	// MessageSendRetried for a retry): every hand-over has its own (G1). Adapters do not use it
	// to send; the simulator records it so tests can order hand-overs against the stream.
	Fence uint64
}

// Validate reports what is wrong with the request, joined, or nil.
func (r SendRequest) Validate() error {
	var errs []error
	if r.ConnectionID == "" {
		errs = append(errs, errors.New("transport: send request without connection id"))
	}
	if r.MessageID == uuid.Nil {
		errs = append(errs, errors.New("transport: send request without message id"))
	}
	if _, err := PhoneDigits(r.To); err != nil {
		errs = append(errs, err)
	}
	if r.Text == "" {
		errs = append(errs, errors.New("transport: send request with empty text"))
	}
	return errors.Join(errs...)
}

// SendResult is WhatsApp's acknowledgement of a sent message.
type SendResult struct {
	// WAMessageID is the WhatsApp message id used, WAMessageID(req.MessageID).
	WAMessageID string
	// ServerTimestamp is the time the server gave the message.
	ServerTimestamp time.Time
	// Simulated is true when the simulator produced the result: nothing reached WhatsApp.
	Simulated bool
	// Adapter names the adapter that sent ("whatsmeow", "simulator").
	Adapter string
}

// waIDPrefix starts every WhatsApp message id we generate; whatsmeow's own ids start the same way.
const waIDPrefix = "3EB0"

// WAMessageID derives the WhatsApp message id for our message id: "3EB0" followed by the 16 bytes of
// the UUID in upper-case hex (36 characters). The mapping is deterministic and reversible
// (ParseWAMessageID), so a receipt or a timeout is matched to our message without a lookup table.
func WAMessageID(id uuid.UUID) string {
	return waIDPrefix + strings.ToUpper(hex.EncodeToString(id[:]))
}

// ParseWAMessageID returns our message id for a WhatsApp message id made by WAMessageID, and false
// for any other id (messages this system did not send).
func ParseWAMessageID(waID string) (uuid.UUID, bool) {
	rest, ok := strings.CutPrefix(waID, waIDPrefix)
	if !ok || len(rest) != 32 || strings.ToUpper(rest) != rest {
		return uuid.Nil, false
	}
	var id uuid.UUID
	if _, err := hex.Decode(id[:], []byte(rest)); err != nil {
		return uuid.Nil, false
	}
	return id, true
}

// PhoneDigits checks an E.164 phone number ("+" then 7 to 15 digits, no leading zero) and returns
// its digits without the "+".
func PhoneDigits(e164 string) (string, error) {
	digits, ok := strings.CutPrefix(e164, "+")
	if !ok || len(digits) < 7 || len(digits) > 15 || digits[0] == '0' {
		return "", fmt.Errorf("transport: %q is not an E.164 phone number", e164)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("transport: %q is not an E.164 phone number", e164)
		}
	}
	return digits, nil
}

// LinkState is the adapter's view of a connection. It is a closed set: the zero value means unknown.
type LinkState struct{ s string }

// The link states.
var (
	// StateUnpaired: no stored session (never paired, logged out, or permanently banned).
	StateUnpaired = LinkState{"unpaired"}
	// StatePairing: a QR or phone pairing is in progress.
	StatePairing = LinkState{"pairing"}
	// StateDisconnected: a stored session, no socket.
	StateDisconnected = LinkState{"disconnected"}
	// StateConnecting: connecting or reconnecting.
	StateConnecting = LinkState{"connecting"}
	// StateConnected: logged in; Send may succeed.
	StateConnected = LinkState{"connected"}
	// StateTemporarilyBanned: refused with a temporary ban; a reconnect is scheduled at its expiry.
	StateTemporarilyBanned = LinkState{"temporarily_banned"}
)

// String returns the state's stable name.
func (s LinkState) String() string {
	if s.s == "" {
		return "unknown"
	}
	return s.s
}

// IsZero reports whether s is the zero (unknown) state.
func (s LinkState) IsZero() bool { return s.s == "" }

// Status is a snapshot of one connection.
type Status struct {
	ConnectionID string
	State        LinkState
	// JID is the paired device's WhatsApp JID, empty when unpaired.
	JID string
	// Phone is the paired number in E.164 form, empty when unpaired.
	Phone string
	// BanExpiresAt is set in StateTemporarilyBanned.
	BanExpiresAt time.Time
	// Simulated is true for the simulator.
	Simulated bool
}

// Clock is the time source and timer factory adapters use, injected so tests do not sleep.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed; Stop cancels it.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a cancellable AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not started and reports whether it did.
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var _ Clock = SystemClock{}
