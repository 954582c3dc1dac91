// Package simulator is a WhatsApp stand-in behind the transport port, for `make run`, tests and
// benchmarks. Nothing it does reaches WhatsApp: every result, status and event it produces carries
// Simulated: true and the adapter name "simulator".
//
// Each connection follows a Script: latency, seeded random rate-limit answers, rejections and
// unknown outcomes, a ban after N messages or at a time (temporary with expiry, or permanent), a
// logout after N messages, and delivered/read receipts after delays. Randomness comes from
// math/rand/v2 seeded per connection from Options.Seed and the connection id, and Sends are serialized
// per connection, so a connection's sequence of outcomes is the same on every run. Time comes from an
// injected transport.Clock, so tests drive latency, receipts and ban expiry without sleeping.
//
// Every message handed to the simulated WhatsApp (sent, or sent with an unknown outcome) is recorded;
// Sends and SendCount let tests check at-most-once delivery. Ban, LiftBan and Logout trigger those
// lifecycle events by hand (the API exposes them in simulator mode).
package simulator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/transport"
)

// Name is the adapter name in results, statuses and logs.
const Name = "simulator"

// Ban describes a simulated ban.
type Ban struct {
	// Permanent bans arrive as WhatsApp's logout with reason 406 and delete the session.
	Permanent bool
	// Code is the temporary ban reason (101–106); 0 means 101.
	Code int
	// Expire is how long a temporary ban lasts; 0 means one hour.
	Expire time.Duration
}

// Receipts scripts the recipient's receipts for every message handed over.
type Receipts struct {
	// Delivered sends a delivered receipt DeliveredAfter the send.
	Delivered      bool
	DeliveredAfter time.Duration
	// Read sends a read receipt ReadAfter the send.
	Read      bool
	ReadAfter time.Duration
}

// Script is the simulated behaviour of one connection. The zero Script sends everything at once,
// successfully, with no receipts.
type Script struct {
	// Latency is the time between handing a message over and the server's acknowledgement.
	Latency time.Duration
	// RateLimitRate is the probability in [0,1] that a send is refused as rate limited (nothing sent).
	RateLimitRate float64
	// RateLimitRetryAfter is the backoff hint on rate-limit answers.
	RateLimitRetryAfter time.Duration
	// RejectRate is the probability that a send is rejected for good (nothing sent).
	RejectRate float64
	// UnknownRate is the probability that a send is handed over but its outcome is reported unknown
	// (the message is recorded as sent and gets its receipts: the dispatcher must not resend it).
	UnknownRate float64
	// BanAfter bans the connection right after its BanAfter-th handed-over message (0: never).
	BanAfter int
	// BanAt bans the connection when the clock reaches it (zero: never).
	BanAt time.Time
	// Ban is the ban BanAfter and BanAt apply.
	Ban Ban
	// LogoutAfter logs the connection out (401) right after its LogoutAfter-th handed-over message.
	LogoutAfter int
	// Receipts scripts delivered/read receipts.
	Receipts Receipts
}

// Options configures a Simulator.
type Options struct {
	// Seed makes the random outcomes reproducible.
	Seed uint64
	// Clock is the time source; nil means transport.SystemClock.
	Clock transport.Clock
	// Default is the Script of connections without their own (SetScript).
	Default Script
	// AssumePaired makes Connect pair a never-paired connection silently (Paired, then Connected),
	// so `make run` and benchmarks need no pairing step.
	AssumePaired bool
	// StoredSessions, with AssumePaired, makes Connect treat a connection this simulator never
	// saw as one with a stored session (a node restarted after its connections were paired): it
	// logs it in with Connected only, as a real adapter does for a stored device, where
	// AssumePaired alone reports a pairing (Paired) first. Shared Devices, when set, decide
	// instead.
	StoredSessions bool
	// Devices, when set, is the WhatsApp side shared with the simulators of other nodes in this
	// process: paired devices and the one stream each may have (see Devices). Nil: this
	// simulator is the only node, and a pairing's client stays connected as its session.
	Devices *Devices
}

// SendRecord is one message handed to the simulated WhatsApp.
type SendRecord struct {
	ConnectionID string
	MessageID    uuid.UUID
	WAMessageID  string
	To           string
	Text         string
	// At is the clock time the message was handed over.
	At time.Time
	// OutcomeUnknown is true when Send reported ErrOutcomeUnknown for it.
	OutcomeUnknown bool
	Simulated      bool
	// Fence is the request's Fence: the stream revision the hand-over was fenced at.
	Fence uint64
}

// Errors of the control functions.
var (
	// ErrNotBanned: LiftBan on a connection that is not temporarily banned.
	ErrNotBanned = errors.New("simulator: connection is not temporarily banned")
	// ErrNotLoggedIn: Ban or Logout on a connection with no session.
	ErrNotLoggedIn = errors.New("simulator: connection has no session")
)

// Simulator is the simulated transport. It is safe for concurrent use; Close releases its timers.
type Simulator struct {
	opts   Options
	clock  transport.Clock
	events *transport.EventQueue

	mu    sync.Mutex
	conns map[string]*conn
	// offWhatsApp are the numbers CheckNumbers answers as not on WhatsApp (SetOnWhatsApp).
	offWhatsApp map[string]bool

	recMu   sync.Mutex
	records []SendRecord
	counts  map[uuid.UUID]int
}

var _ transport.Transport = (*Simulator)(nil)

type conn struct {
	id     string
	sendMu sync.Mutex // serializes Send

	mu sync.Mutex
	// script is the connection's own Script (SetScript); nil: Options.Default. The rng is made
	// at the first send. A simulator holds one conn per connection it ever saw (100,000 in
	// bench scale): what most of them never use is not allocated.
	script       *Script
	rng          *rand.Rand
	state        transport.LinkState
	jid, phone   string
	handedOver   int
	banExpiresAt time.Time
	banTimer     transport.Timer
	banAtTimer   transport.Timer
	qrSeq        int
	qrPairings   int         // PairQR calls that started a pairing
	holdQR       bool        // QR pairings stay running until ScanQR (HoldQR)
	qrCh         chan string // the held QR pairing's codes, nil when none runs
}

// New returns a simulator.
func New(opts Options) *Simulator {
	clock := opts.Clock
	if clock == nil {
		clock = transport.SystemClock{}
	}
	return &Simulator{
		opts:   opts,
		clock:  clock,
		events: transport.NewEventQueue(),
		conns:  make(map[string]*conn),
		counts: make(map[uuid.UUID]int),
	}
}

// Name returns "simulator".
func (s *Simulator) Name() string { return Name }

// Close stops the simulator's timers and event delivery.
func (s *Simulator) Close() {
	s.mu.Lock()
	for _, c := range s.conns {
		c.mu.Lock()
		c.stopTimers()
		c.mu.Unlock()
	}
	s.mu.Unlock()
	s.events.Close()
}

// conn returns the connection, creating it (unpaired) when create is set.
func (s *Simulator) conn(id string, create bool) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conns[id]
	if c == nil && create {
		c = &conn{id: id, state: transport.StateUnpaired}
		s.conns[id] = c
	}
	return c
}

// scriptLocked returns c's Script (its own, or Options.Default). Callers hold c.mu.
func (s *Simulator) scriptLocked(c *conn) *Script {
	if c.script != nil {
		return c.script
	}
	return &s.opts.Default
}

// drawLocked returns the next of c's random draws, from a generator seeded by Options.Seed and
// the connection's id (made at the first draw). Callers hold c.mu.
func (s *Simulator) drawLocked(c *conn) float64 {
	if c.rng == nil {
		h := fnv.New64a()
		h.Write([]byte(c.id))
		c.rng = rand.New(rand.NewPCG(s.opts.Seed, h.Sum64()))
	}
	return c.rng.Float64()
}

// SetScript sets connID's script (creating the connection, unpaired, if needed). A BanAt in the
// future is scheduled on the clock; one in the past bans at the next send.
func (s *Simulator) SetScript(connID string, sc Script) {
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.script = &sc
	if c.banAtTimer != nil {
		c.banAtTimer.Stop()
		c.banAtTimer = nil
	}
	if !sc.BanAt.IsZero() {
		c.banAtTimer = s.clock.AfterFunc(sc.BanAt.Sub(s.clock.Now()), func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.state == transport.StateConnected {
				s.banLocked(c, s.scriptLocked(c).Ban)
			}
		})
	}
}

func (c *conn) stopTimers() {
	for _, t := range []transport.Timer{c.banTimer, c.banAtTimer} {
		if t != nil {
			t.Stop()
		}
	}
	c.banTimer, c.banAtTimer = nil, nil
}

func (s *Simulator) header(connID string) transport.EventHeader {
	return transport.EventHeader{ConnectionID: connID, At: s.clock.Now(), Simulated: true}
}

// Send simulates handing req to WhatsApp; see the Script fields for what happens.
func (s *Simulator) Send(ctx context.Context, req transport.SendRequest) (transport.SendResult, error) {
	fail := func(kind error, reason string, retryAfter time.Duration, cause error) (transport.SendResult, error) {
		return transport.SendResult{}, &transport.SendError{Kind: kind, ConnectionID: req.ConnectionID,
			MessageID: req.MessageID, Reason: "simulator: " + reason, RetryAfter: retryAfter, Err: cause}
	}
	if err := req.Validate(); err != nil {
		return fail(transport.ErrRejected, "invalid request", 0, err)
	}
	c := s.conn(req.ConnectionID, false)
	if c == nil {
		return fail(transport.ErrNotConnected, "connection was never paired", 0, nil)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()

	c.mu.Lock()
	if sc := s.scriptLocked(c); !sc.BanAt.IsZero() && c.state == transport.StateConnected && !s.clock.Now().Before(sc.BanAt) {
		s.banLocked(c, sc.Ban)
	}
	if c.state != transport.StateConnected {
		state := c.state
		c.mu.Unlock()
		return fail(transport.ErrNotConnected, "connection is "+state.String(), 0, nil)
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return fail(transport.ErrNotConnected, "context ended before the message was handed over", 0, err)
	}
	sc := *s.scriptLocked(c)
	draw := s.drawLocked(c)
	var kind error
	switch {
	case draw < sc.RateLimitRate:
		kind = transport.ErrRateLimited
	case draw < sc.RateLimitRate+sc.RejectRate:
		kind = transport.ErrRejected
	case draw < sc.RateLimitRate+sc.RejectRate+sc.UnknownRate:
		kind = transport.ErrOutcomeUnknown
	}
	if kind == transport.ErrRateLimited || kind == transport.ErrRejected {
		c.mu.Unlock()
		return fail(kind, "scripted answer", sc.RateLimitRetryAfter, nil)
	}
	// Handed over: from here the message counts as sent, whatever the caller hears.
	now := s.clock.Now()
	waID := transport.WAMessageID(req.MessageID)
	s.record(SendRecord{ConnectionID: req.ConnectionID, MessageID: req.MessageID, WAMessageID: waID,
		To: req.To, Text: req.Text, At: now, OutcomeUnknown: kind != nil, Simulated: true, Fence: req.Fence})
	c.handedOver++
	s.scheduleReceiptsLocked(c, req.MessageID, req.To)
	if sc.BanAfter > 0 && c.handedOver == sc.BanAfter {
		defer s.lockedDo(c, func() { s.banLocked(c, sc.Ban) })
	}
	if sc.LogoutAfter > 0 && c.handedOver == sc.LogoutAfter {
		defer s.lockedDo(c, func() { s.logoutLocked(c, 401) })
	}
	c.mu.Unlock()

	if sc.Latency > 0 {
		acked := make(chan struct{})
		t := s.clock.AfterFunc(sc.Latency, func() { close(acked) })
		select {
		case <-acked:
		case <-ctx.Done():
			t.Stop()
			return fail(transport.ErrOutcomeUnknown, "context ended while waiting for the server's acknowledgement", 0, ctx.Err())
		}
	}
	if kind != nil {
		return fail(kind, "scripted answer: acknowledgement lost", 0, nil)
	}
	return transport.SendResult{WAMessageID: waID, ServerTimestamp: now, Simulated: true, Adapter: Name}, nil
}

func (s *Simulator) lockedDo(c *conn, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == transport.StateConnected {
		f()
	}
}

func (s *Simulator) record(r SendRecord) {
	s.recMu.Lock()
	s.records = append(s.records, r)
	s.counts[r.MessageID]++
	s.recMu.Unlock()
}

func (s *Simulator) scheduleReceiptsLocked(c *conn, msgID uuid.UUID, to string) {
	r := s.scriptLocked(c).Receipts
	emit := func(kind transport.ReceiptKind) func() {
		return func() {
			h := s.header(c.id)
			s.events.Emit(transport.Receipt{EventHeader: h, MessageIDs: []uuid.UUID{msgID}, Kind: kind,
				Timestamp: h.At, From: to[1:] + "@s.whatsapp.net"})
		}
	}
	for _, rc := range []struct {
		on    bool
		after time.Duration
		kind  transport.ReceiptKind
	}{{r.Delivered, r.DeliveredAfter, transport.ReceiptDelivered}, {r.Read, r.ReadAfter, transport.ReceiptRead}} {
		switch {
		case !rc.on:
		case rc.after <= 0:
			emit(rc.kind)()
		default:
			s.clock.AfterFunc(rc.after, emit(rc.kind))
		}
	}
}

// banLocked applies b to c; c.mu is held.
func (s *Simulator) banLocked(c *conn, b Ban) {
	c.stopTimers()
	if b.Permanent {
		c.state, c.jid, c.phone = transport.StateUnpaired, "", ""
		s.forgetLocked(c)
		s.events.Emit(transport.PermanentBan{EventHeader: s.header(c.id), Reason: 406, Description: "simulated permanent ban"})
		return
	}
	code, expire := b.Code, b.Expire
	if code == 0 {
		code = 101
	}
	if expire <= 0 {
		expire = time.Hour
	}
	h := s.header(c.id)
	c.state, c.banExpiresAt = transport.StateTemporarilyBanned, h.At.Add(expire)
	s.events.Emit(transport.TemporaryBan{EventHeader: h, Code: code, Description: "simulated temporary ban",
		Expire: expire, ExpiresAt: c.banExpiresAt})
	s.scheduleBanExpiryLocked(c, expire)
}

// scheduleBanExpiryLocked reconnects c when its ban expires, as the whatsmeow adapter does.
func (s *Simulator) scheduleBanExpiryLocked(c *conn, after time.Duration) {
	c.banTimer = s.clock.AfterFunc(after, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == transport.StateTemporarilyBanned {
			s.liftLocked(c)
		}
	})
}

func (s *Simulator) liftLocked(c *conn) {
	if c.banTimer != nil {
		c.banTimer.Stop()
		c.banTimer = nil
	}
	c.state, c.banExpiresAt = transport.StateConnected, time.Time{}
	s.events.Emit(transport.BanLifted{EventHeader: s.header(c.id)})
}

func (s *Simulator) logoutLocked(c *conn, reason int) {
	c.stopTimers()
	c.state, c.jid, c.phone = transport.StateUnpaired, "", ""
	s.forgetLocked(c)
	desc := "simulated logout from the phone"
	if reason == 403 {
		desc = "simulated main device gone"
	}
	s.events.Emit(transport.SessionInvalidated{EventHeader: s.header(c.id), Reason: reason, Description: desc})
}

// Ban bans a connected (or already temporarily banned) connection by hand.
func (s *Simulator) Ban(connID string, b Ban) error {
	c := s.conn(connID, false)
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNotLoggedIn, connID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == transport.StateUnpaired || c.state == transport.StatePairing {
		return fmt.Errorf("%w: %s is %s", ErrNotLoggedIn, connID, c.state)
	}
	s.banLocked(c, b)
	return nil
}

// LiftBan ends a temporary ban now, as if it had expired: the connection reconnects and BanLifted
// is emitted.
func (s *Simulator) LiftBan(connID string) error {
	c := s.conn(connID, false)
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNotBanned, connID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != transport.StateTemporarilyBanned {
		return fmt.Errorf("%w: %s is %s", ErrNotBanned, connID, c.state)
	}
	s.liftLocked(c)
	return nil
}

// Logout ends the connection's session with WhatsApp's reason 401 (logged out from the phone) or
// 403 (main device gone); SessionInvalidated is emitted and the connection must be paired again.
func (s *Simulator) Logout(connID string, reason int) error {
	if reason != 401 && reason != 403 {
		return fmt.Errorf("simulator: logout reason %d is not 401 or 403", reason)
	}
	c := s.conn(connID, false)
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNotLoggedIn, connID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == transport.StateUnpaired || c.state == transport.StatePairing {
		return fmt.Errorf("%w: %s is %s", ErrNotLoggedIn, connID, c.state)
	}
	s.logoutLocked(c, reason)
	return nil
}

// Sends returns every message handed over, in order.
func (s *Simulator) Sends() []SendRecord {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return append([]SendRecord(nil), s.records...)
}

// SendsFrom returns the records of the hand-overs from the i-th on (0-based), in order: a caller
// that polls keeps its count instead of copying every record each time (Sends).
func (s *Simulator) SendsFrom(i int) []SendRecord {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if i >= len(s.records) {
		return nil
	}
	return append([]SendRecord(nil), s.records[max(i, 0):]...)
}

// SendCount returns how many times the message was handed over (at most once is 0 or 1).
func (s *Simulator) SendCount(msgID uuid.UUID) int {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return s.counts[msgID]
}

// Connect logs a paired connection in (Connected). During an unexpired temporary ban it is refused
// again with TemporaryBan. A never-paired connection returns ErrNotPaired, unless
// Options.AssumePaired, which pairs it first (or, with Options.StoredSessions, logs in one it
// never saw as a stored session).
func (s *Simulator) Connect(ctx context.Context, connID string) error {
	stored := s.opts.StoredSessions && s.opts.AssumePaired && s.opts.Devices == nil && s.conn(connID, false) == nil
	c := s.conn(connID, s.opts.AssumePaired || (s.opts.Devices != nil && s.opts.Devices.Paired(connID)))
	if c == nil {
		return fmt.Errorf("simulator: connect %s: %w", connID, transport.ErrNotPaired)
	}
	var replaced *Simulator // another node's client of the device, whose stream this one replaces
	defer func() {
		if replaced != nil {
			replaced.replacedBy(connID)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	s.syncLocked(c)
	switch c.state {
	case transport.StateConnected, transport.StateTemporarilyBanned:
		return nil // already up, or a reconnect is scheduled at the ban's expiry
	case transport.StateUnpaired, transport.StatePairing:
		if !s.opts.AssumePaired || c.state == transport.StatePairing {
			return fmt.Errorf("simulator: connect %s: %w", connID, transport.ErrNotPaired)
		}
		if stored {
			// A stored session: logged in, no pairing reported.
			c.state = transport.StateConnected
			s.events.Emit(transport.Connected{EventHeader: s.header(c.id)})
			return nil
		}
		s.pairLocked(c, simulatedPhone(connID))
		replaced = s.onlineLocked(c)
		return nil
	}
	replaced = s.onlineLocked(c)
	if !c.banExpiresAt.IsZero() {
		now := s.clock.Now()
		if now.Before(c.banExpiresAt) {
			c.state = transport.StateTemporarilyBanned
			h := s.header(c.id)
			s.events.Emit(transport.TemporaryBan{EventHeader: h, Code: 101, Description: "simulated temporary ban",
				Expire: c.banExpiresAt.Sub(now), ExpiresAt: c.banExpiresAt})
			if c.banTimer == nil {
				s.scheduleBanExpiryLocked(c, c.banExpiresAt.Sub(now))
			}
			return nil
		}
		s.liftLocked(c)
		return nil
	}
	c.state = transport.StateConnected
	s.events.Emit(transport.Connected{EventHeader: s.header(c.id)})
	return nil
}

// Disconnect takes the connection offline; the session stays. A pending ban expiry stays recorded
// (Connect before it is refused again) but does not reconnect by itself.
func (s *Simulator) Disconnect(ctx context.Context, connID string) error {
	c := s.conn(connID, false)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == transport.StateConnected || c.state == transport.StateTemporarilyBanned {
		c.stopTimers()
		c.state = transport.StateDisconnected
		s.offlineLocked(c)
	}
	return nil
}

// onlineLocked records c's client as its device's stream (shared devices only) and returns the
// simulator whose stream it replaces, for the caller to take offline once c.mu is released.
func (s *Simulator) onlineLocked(c *conn) *Simulator {
	if s.opts.Devices == nil {
		return nil
	}
	prev, _ := s.opts.Devices.goOnline(c.id, s)
	return prev
}

// offlineLocked ends c's stream of its device (shared devices only).
func (s *Simulator) offlineLocked(c *conn) {
	if s.opts.Devices != nil {
		s.opts.Devices.goOffline(c.id, s)
	}
}

// forgetLocked deletes c's stored device (shared devices only).
func (s *Simulator) forgetLocked(c *conn) {
	if s.opts.Devices != nil {
		s.opts.Devices.remove(c.id)
	}
}

// storeLocked stores a session for c (in the shared devices too) and reports Paired; c is left
// disconnected.
func (s *Simulator) storeLocked(c *conn, phone string) {
	c.jid, c.phone = phone[1:]+":1@s.whatsapp.net", phone
	c.state, c.handedOver, c.banExpiresAt = transport.StateDisconnected, 0, time.Time{}
	if s.opts.Devices != nil {
		s.opts.Devices.store(c.id, c.jid, c.phone)
	}
	s.events.Emit(transport.Paired{EventHeader: s.header(c.id), JID: c.jid, Phone: c.phone})
}

// pairLocked stores a session for c and logs it in.
func (s *Simulator) pairLocked(c *conn, phone string) {
	s.storeLocked(c, phone)
	c.state = transport.StateConnected
	s.events.Emit(transport.Connected{EventHeader: s.header(c.id)})
}

// pairedByAPILocked completes a pairing started by PairQR or PairPhone. With shared devices the
// pairing's client ends at the success (as the whatsmeow adapter's does): Connect on the node
// running the connection's session logs it in. Without, it stays connected as the session.
func (s *Simulator) pairedByAPILocked(c *conn, phone string) {
	if s.opts.Devices != nil {
		s.storeLocked(c, phone)
		return
	}
	s.pairLocked(c, phone)
}

// simulatedPhone derives a stable fictional number (+1 555 01xx xxxx style) for a connection.
func simulatedPhone(connID string) string {
	h := fnv.New32a()
	h.Write([]byte(connID))
	return fmt.Sprintf("+1555%07d", h.Sum32()%10_000_000)
}

// PairQR yields one simulated QR code, then "scans" it at once: Paired and Connected follow.
// After HoldQR the pairing stays running instead, as WhatsApp's does until the code is scanned:
// RotateQR yields the next code, ScanQR pairs (the channel closes), and ctx ending closes the
// channel unpaired (the pairing timed out).
func (s *Simulator) PairQR(ctx context.Context, connID string) (<-chan string, error) {
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	s.syncLocked(c)
	if c.state != transport.StateUnpaired {
		return nil, fmt.Errorf("simulator: pair %s: %w", connID, transport.ErrAlreadyPaired)
	}
	c.qrPairings++
	if c.holdQR {
		if c.qrCh != nil { // a new pairing replaces the held one, as a new whatsmeow client would
			close(c.qrCh)
		}
		ch := make(chan string, 64)
		c.qrCh = ch
		s.nextQRLocked(c)
		go func() {
			<-ctx.Done()
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.qrCh == ch {
				close(ch)
				c.qrCh = nil
			}
		}()
		return ch, nil
	}
	c.qrSeq++
	code := fmt.Sprintf("SIMULATED-QR,%s,%d", connID, c.qrSeq)
	ch := make(chan string, 1)
	ch <- code
	close(ch)
	s.events.Emit(transport.QRCode{EventHeader: s.header(connID), Codes: []string{code}})
	s.pairedByAPILocked(c, simulatedPhone(connID))
	return ch, nil
}

// nextQRLocked yields the held pairing's next code.
func (s *Simulator) nextQRLocked(c *conn) string {
	c.qrSeq++
	code := fmt.Sprintf("SIMULATED-QR,%s,%d", c.id, c.qrSeq)
	select {
	case c.qrCh <- code:
	default: // nobody follows the codes: drop it, as a rotated code is lost
	}
	s.events.Emit(transport.QRCode{EventHeader: s.header(c.id), Codes: []string{code}})
	return code
}

// HoldQR makes connID's QR pairings stay running until ScanQR (or their context ends), so a
// test can watch a pairing in progress (see PairQR).
func (s *Simulator) HoldQR(connID string) {
	c := s.conn(connID, true)
	c.mu.Lock()
	c.holdQR = true
	c.mu.Unlock()
}

// ErrNoQRPairing is returned by RotateQR and ScanQR when no held QR pairing runs.
var ErrNoQRPairing = errors.New("simulator: no QR pairing runs")

// RotateQR yields the next code of connID's held QR pairing, as WhatsApp rotates it, and
// returns it.
func (s *Simulator) RotateQR(connID string) (string, error) {
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.qrCh == nil {
		return "", fmt.Errorf("simulator: rotate %s: %w", connID, ErrNoQRPairing)
	}
	return s.nextQRLocked(c), nil
}

// ScanQR "scans" connID's held QR pairing: it pairs (Paired), and the pairing's channel closes.
func (s *Simulator) ScanQR(connID string) error {
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.qrCh == nil {
		return fmt.Errorf("simulator: scan %s: %w", connID, ErrNoQRPairing)
	}
	close(c.qrCh)
	c.qrCh = nil
	s.syncLocked(c)
	s.pairedByAPILocked(c, simulatedPhone(connID))
	return nil
}

// QRPairings returns how many QR pairings of connID PairQR started.
func (s *Simulator) QRPairings(connID string) int {
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.qrPairings
}

// PairPhone returns a simulated pairing code, then pairs at once as phone.
func (s *Simulator) PairPhone(ctx context.Context, connID, phone string) (string, error) {
	if _, err := transport.PhoneDigits(phone); err != nil {
		return "", fmt.Errorf("simulator: pair %s: %w", connID, err)
	}
	c := s.conn(connID, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	s.syncLocked(c)
	if c.state != transport.StateUnpaired {
		return "", fmt.Errorf("simulator: pair %s: %w", connID, transport.ErrAlreadyPaired)
	}
	h := fnv.New32a()
	h.Write([]byte(connID + phone))
	code := fmt.Sprintf("SIM%01d-%04d", h.Sum32()%10, (h.Sum32()/10)%10_000)
	s.events.Emit(transport.PairingCode{EventHeader: s.header(connID), Code: code})
	s.pairedByAPILocked(c, phone)
	return code, nil
}

// Status reports the connection's simulated state.
func (s *Simulator) Status(connID string) transport.Status {
	st := transport.Status{ConnectionID: connID, State: transport.StateUnpaired, Simulated: true}
	c := s.conn(connID, false)
	if c == nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s.syncLocked(c)
	st.State, st.JID, st.Phone = c.state, c.jid, c.phone
	if c.state == transport.StateTemporarilyBanned {
		st.BanExpiresAt = c.banExpiresAt
	}
	return st
}

// SetHandler registers the event handler; see transport.Transport.
func (s *Simulator) SetHandler(h transport.Handler) { s.events.SetHandler(h) }

// Unpair logs the connection out as an operator's logout would: the simulated session is
// deleted (PairQR and PairPhone pair it again) and no event is emitted; Remote is true when it
// was connected. See transport.Transport.
func (s *Simulator) Unpair(ctx context.Context, connID string) (transport.Unpaired, error) {
	c := s.conn(connID, false)
	if c == nil {
		if s.opts.Devices != nil {
			s.opts.Devices.remove(connID) // paired through another node: its stored session goes
		}
		return transport.Unpaired{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	remote := c.state == transport.StateConnected || c.state == transport.StateTemporarilyBanned
	if c.state != transport.StatePairing {
		c.stopTimers()
		c.state, c.jid, c.phone, c.banExpiresAt = transport.StateUnpaired, "", "", time.Time{}
		s.forgetLocked(c)
	}
	return transport.Unpaired{Remote: remote}, nil
}

// SetOnWhatsApp scripts CheckNumbers: the phones (E.164) are on WhatsApp when on is true (the
// default for every number), not on it otherwise. It applies to every connection.
func (s *Simulator) SetOnWhatsApp(on bool, phones ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.offWhatsApp == nil {
		s.offWhatsApp = map[string]bool{}
	}
	for _, p := range phones {
		if on {
			delete(s.offWhatsApp, p)
		} else {
			s.offWhatsApp[p] = true
		}
	}
}

// CheckNumbers answers from the numbers scripted by SetOnWhatsApp (every other number is on
// WhatsApp), through a connected connection; see transport.Transport.
func (s *Simulator) CheckNumbers(ctx context.Context, connID string, phones []string) ([]transport.NumberCheck, error) {
	if len(phones) > transport.MaxCheckNumbers {
		return nil, fmt.Errorf("simulator: check %d numbers, at most %d: %w", len(phones), transport.MaxCheckNumbers, transport.ErrRejected)
	}
	for _, p := range phones {
		if _, err := transport.PhoneDigits(p); err != nil {
			return nil, fmt.Errorf("simulator: check numbers: %w: %w", transport.ErrRejected, err)
		}
	}
	c := s.conn(connID, false)
	if c == nil {
		return nil, fmt.Errorf("simulator: check numbers on %s: %w", connID, transport.ErrNotConnected)
	}
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	if state != transport.StateConnected {
		return nil, fmt.Errorf("simulator: check numbers on %s (%s): %w", connID, state, transport.ErrNotConnected)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(phones))
	out := make([]transport.NumberCheck, 0, len(phones))
	for _, p := range phones {
		if seen[p] {
			continue
		}
		seen[p] = true
		nc := transport.NumberCheck{Phone: p, OnWhatsApp: !s.offWhatsApp[p]}
		if nc.OnWhatsApp {
			nc.JID = p[1:] + "@s.whatsapp.net"
		}
		out = append(out, nc)
	}
	return out, nil
}
