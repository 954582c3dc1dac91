package wmtransport

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is a Manager on a real database whose clients never dial WhatsApp: connect calls are
// recorded (and answered by connectErr) instead.
type fixture struct {
	m     *Manager
	db    *sql.DB
	clock *transporttest.ManualClock
	rec   *transporttest.Recorder

	mu         sync.Mutex
	connects   []*whatsmeow.Client
	connectErr []error // answers of the next connect calls, nil when exhausted
	connected  chan struct{}
}

type backend struct {
	name string
	open func(t *testing.T) (*sql.DB, string)
}

var backends = []backend{
	{"sqlite", func(t *testing.T) (*sql.DB, string) {
		db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "waqueue.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db, DialectSQLite
	}},
	{"postgres", func(t *testing.T) (*sql.DB, string) {
		db, err := sql.Open("pgx", pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db, DialectPostgres
	}},
}

func newFixtureOn(t *testing.T, db *sql.DB, dialect string) *fixture {
	t.Helper()
	f := &fixture{db: db, clock: transporttest.NewManualClock(t0), rec: transporttest.NewRecorder(), connected: make(chan struct{}, 16)}
	m, err := New(context.Background(), Config{DB: db, Dialect: dialect, Clock: f.clock, ReconnectBackoff: 30 * time.Second})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.connect = func(c *whatsmeow.Client) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.connects = append(f.connects, c)
		f.connected <- struct{}{}
		if len(f.connectErr) > 0 {
			err := f.connectErr[0]
			f.connectErr = f.connectErr[1:]
			return err
		}
		return nil
	}
	m.SetHandler(f.rec.Handle)
	t.Cleanup(m.Close)
	f.m = m
	return f
}

func newFixture(t *testing.T, b backend) *fixture {
	db, dialect := b.open(t)
	return newFixtureOn(t, db, dialect)
}

func (f *fixture) connectCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.connects)
}

func (f *fixture) waitConnectCall(t *testing.T) {
	t.Helper()
	select {
	case <-f.connected:
	case <-time.After(transporttest.WaitLimit):
		t.Fatal("no connect call")
	}
}

var phoneSeq struct {
	sync.Mutex
	n int
}

// pair stores a real device session for connID, as a completed pairing would, and connects it
// (through the recording connect function). It returns the connection's client and device JID.
func (f *fixture) pair(t *testing.T, connID string) (*whatsmeow.Client, types.JID) {
	t.Helper()
	ctx := context.Background()
	phoneSeq.Lock()
	phoneSeq.n++
	user := fmt.Sprintf("49151%08d", phoneSeq.n)
	phoneSeq.Unlock()
	jid := types.JID{User: user, Server: types.DefaultUserServer, Device: 7}
	device := f.m.container.NewDevice()
	device.ID = &jid
	device.Account = fakeAccount()
	if err := device.Save(ctx); err != nil {
		t.Fatalf("save device: %v", err)
	}
	if err := f.m.savePaired(ctx, connID, jid); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Connect(ctx, connID); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	f.waitConnectCall(t)
	c := f.m.lookup(connID)
	if c == nil {
		t.Fatal("no client after Connect")
	}
	return c.client, jid
}

// fakeAccount stands in for the signed device identity the phone sends when pairing.
func fakeAccount() *waAdv.ADVSignedDeviceIdentity {
	return &waAdv.ADVSignedDeviceIdentity{
		Details:             []byte("details"),
		AccountSignature:    make([]byte, 64),
		AccountSignatureKey: make([]byte, 32),
		DeviceSignature:     make([]byte, 64),
	}
}

func failure(attrs ...string) *waBinary.Node {
	n := &waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{}}
	for i := 0; i < len(attrs); i += 2 {
		n.Attrs[attrs[i]] = attrs[i+1]
	}
	return n
}

func streamError(code, conflict string) *waBinary.Node {
	n := &waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{}}
	if code != "" {
		n.Attrs["code"] = code
	}
	if conflict != "" {
		n.Content = []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": conflict}}}
	}
	return n
}

func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			transporttest.Run(t, transporttest.Harness{
				New:     func(t *testing.T) transport.Transport { return newFixture(t, b).m },
				CanPair: false,
			})
		})
	}
}

// TestSessionEndingFrames feeds WhatsApp's failure and stream:error frames to a real client on a
// real session store and checks the transport event and the state left behind.
func TestSessionEndingFrames(t *testing.T) {
	cases := []struct {
		name      string
		frame     func(ctx context.Context, in *whatsmeow.DangerousInternalClient)
		check     func(t *testing.T, e transport.Event)
		sessionOK bool // the stored session survives
	}{
		{"failure 401 logged out", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleConnectFailure(ctx, failure("reason", "401"))
		}, func(t *testing.T, e transport.Event) {
			si, ok := e.(transport.SessionInvalidated)
			if !ok || si.Reason != 401 || !si.OnConnect {
				t.Fatalf("got %T %+v, want SessionInvalidated{401, OnConnect}", e, e)
			}
		}, false},
		{"failure 403 main device gone", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleConnectFailure(ctx, failure("reason", "403", "logout_message_header", "locked"))
		}, func(t *testing.T, e transport.Event) {
			si, ok := e.(transport.SessionInvalidated)
			if !ok || si.Reason != 403 {
				t.Fatalf("got %T %+v, want SessionInvalidated{403}", e, e)
			}
		}, false},
		{"failure 406 permanent ban", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleConnectFailure(ctx, failure("reason", "406"))
		}, func(t *testing.T, e transport.Event) {
			pb, ok := e.(transport.PermanentBan)
			if !ok || pb.Reason != 406 {
				t.Fatalf("got %T %+v, want PermanentBan{406}", e, e)
			}
		}, false},
		{"stream error 401 device removed", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleStreamError(ctx, streamError("401", "device_removed"))
		}, func(t *testing.T, e transport.Event) {
			si, ok := e.(transport.SessionInvalidated)
			if !ok || si.Reason != 401 || si.OnConnect {
				t.Fatalf("got %T %+v, want SessionInvalidated{401, not on connect}", e, e)
			}
		}, false},
		{"stream error conflict replaced", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleStreamError(ctx, streamError("", "replaced"))
		}, func(t *testing.T, e transport.Event) {
			if _, ok := e.(transport.StreamReplaced); !ok {
				t.Fatalf("got %T %+v, want StreamReplaced", e, e)
			}
		}, true},
		{"failure 405 client outdated", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleConnectFailure(ctx, failure("reason", "405"))
		}, func(t *testing.T, e transport.Event) {
			if _, ok := e.(transport.ClientOutdated); !ok {
				t.Fatalf("got %T %+v, want ClientOutdated", e, e)
			}
		}, true},
		{"failure 409 bad user agent", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.HandleConnectFailure(ctx, failure("reason", "409", "message", "bad ua"))
		}, func(t *testing.T, e transport.Event) {
			cf, ok := e.(transport.ConnectFailure)
			if !ok || cf.Reason != 409 || cf.Message != "bad ua" {
				t.Fatalf("got %T %+v, want ConnectFailure{409, bad ua}", e, e)
			}
		}, true},
		{"keepalive timeout", func(ctx context.Context, in *whatsmeow.DangerousInternalClient) {
			in.DispatchEvent(&events.KeepAliveTimeout{ErrorCount: 3, LastSuccess: t0})
		}, func(t *testing.T, e transport.Event) {
			ka, ok := e.(transport.KeepAliveTimeout)
			if !ok || ka.ErrorCount != 3 || !ka.LastSuccess.Equal(t0) {
				t.Fatalf("got %T %+v, want KeepAliveTimeout{3}", e, e)
			}
		}, true},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFixture(t, b)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					ctx := context.Background()
					id := transporttest.ID(t, "c")
					client, jid := f.pair(t, id)
					from := len(f.rec.Events())
					tc.frame(ctx, client.DangerousInternals())
					e, _ := f.rec.Wait(t, from, "event for "+id, func(e transport.Event) bool { return e.Header().ConnectionID == id })
					tc.check(t, e)
					if h := e.Header(); h.Simulated || !h.At.Equal(t0) {
						t.Fatalf("event header %+v: want not simulated, clock time", h)
					}
					device, err := f.m.container.GetDevice(ctx, jid)
					if err != nil {
						t.Fatal(err)
					}
					st := f.m.Status(id)
					if tc.sessionOK {
						if device == nil || st.JID != jid.String() {
							t.Fatalf("session lost: device %v, status %+v", device, st)
						}
						return
					}
					// The session is gone: whatsmeow deleted the device, the adapter forgot the
					// connection; the domain must ask for a new pairing.
					if device != nil {
						t.Fatalf("device %s still stored after the logout", jid)
					}
					if st.State != transport.StateUnpaired || st.JID != "" {
						t.Fatalf("Status after logout = %+v, want unpaired", st)
					}
					if err := f.m.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
						t.Fatalf("Connect after logout = %v, want ErrNotPaired", err)
					}
					req := transporttest.Request(id)
					_, err = f.m.Send(ctx, req)
					transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
					// The mapping is gone from the database too: a restarted manager agrees.
					m2, err := New(ctx, Config{DB: f.db, Dialect: f.m.cfg.Dialect})
					if err != nil {
						t.Fatal(err)
					}
					defer m2.Close()
					if st := m2.Status(id); st.State != transport.StateUnpaired {
						t.Fatalf("restarted manager sees %+v, want unpaired", st)
					}
				})
			}
		})
	}
}

// TestTemporaryBanReconnectsAtExpiryAndReportsLift feeds a 402 failure with a code and an expiry,
// checks the ban, the scheduled reconnect on the injected clock, and BanLifted on the next login.
func TestTemporaryBanReconnectsAtExpiryAndReportsLift(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, b)
			id := transporttest.ID(t, "c")
			client, _ := f.pair(t, id)
			in := client.DangerousInternals()

			in.HandleConnectFailure(ctx, failure("reason", "402", "code", "104", "expire", "3600"))
			tb, i := transporttest.WaitType[transport.TemporaryBan](t, f.rec, 0, id)
			if tb.Code != 104 || tb.Expire != time.Hour || !tb.ExpiresAt.Equal(t0.Add(time.Hour)) || tb.Description == "" {
				t.Fatalf("TemporaryBan = %+v, want code 104 for 1h until %v", tb, t0.Add(time.Hour))
			}
			if st := f.m.Status(id); st.State != transport.StateTemporarilyBanned || !st.BanExpiresAt.Equal(tb.ExpiresAt) {
				t.Fatalf("Status during ban = %+v", st)
			}
			req := transporttest.Request(id)
			_, err := f.m.Send(ctx, req)
			transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
			if err := f.m.Connect(ctx, id); err != nil {
				t.Fatalf("Connect during ban: %v", err)
			}
			if !f.clock.WaitForTimers(1, transporttest.WaitLimit) {
				t.Fatal("no reconnect scheduled")
			}
			calls := f.connectCalls()
			f.clock.Advance(59 * time.Minute)
			if got := f.connectCalls(); got != calls {
				t.Fatalf("reconnected %d times before the ban expired", got-calls)
			}
			// The first attempt at expiry cannot start: it is retried after the backoff.
			f.mu.Lock()
			f.connectErr = []error{errors.New("dial failed")}
			f.mu.Unlock()
			f.clock.Advance(time.Minute)
			f.waitConnectCall(t)
			if !f.clock.WaitForTimers(1, transporttest.WaitLimit) {
				t.Fatal("failed reconnect not rescheduled")
			}
			f.clock.Advance(30 * time.Second)
			f.waitConnectCall(t)

			// WhatsApp accepts the login: the first Connected is the lift.
			in.HandleConnectSuccess(ctx, &waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{}})
			_, i = transporttest.WaitType[transport.BanLifted](t, f.rec, i, id)
			for _, e := range f.rec.Events()[:i] {
				if _, ok := e.(transport.Connected); ok && e.Header().ConnectionID == id {
					t.Fatalf("Connected reported besides BanLifted: %s", transporttest.Describe(f.rec.Events()))
				}
			}
			if st := f.m.Status(id); st.State != transport.StateConnected && st.State != transport.StateConnecting {
				t.Fatalf("Status after lift = %s", st.State)
			}
			// A later login is an ordinary Connected.
			in.HandleConnectSuccess(ctx, &waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{}})
			transporttest.WaitType[transport.Connected](t, f.rec, i+1, id)
		})
	}
}

func receipt(from types.JID, typ string, ids ...string) *waBinary.Node {
	n := &waBinary.Node{Tag: "receipt", Attrs: waBinary.Attrs{"from": from, "id": ids[0], "t": strconv.FormatInt(t0.Unix(), 10)}}
	if typ != "" {
		n.Attrs["type"] = typ
	}
	if len(ids) > 1 {
		items := make([]waBinary.Node, len(ids)-1)
		for i, id := range ids[1:] {
			items[i] = waBinary.Node{Tag: "item", Attrs: waBinary.Attrs{"id": id}}
		}
		n.Content = []waBinary.Node{{Tag: "list", Content: items}}
	}
	return n
}

func TestReceiptFrames(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	client, _ := f.pair(t, id)
	in := client.DangerousInternals()
	recipient := types.NewJID("4915199999999", types.DefaultUserServer)
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	foreign := "3EB0C767D26A1B2B0C3F5D0E9E2D7A8B9C0D1E2F"

	cases := []struct {
		name string
		node *waBinary.Node
		kind transport.ReceiptKind // zero: no event
		want []uuid.UUID
	}{
		{"delivered one", receipt(recipient, "", transport.WAMessageID(a)), transport.ReceiptDelivered, []uuid.UUID{a}},
		{"delivered list", receipt(recipient, "", transport.WAMessageID(b), transport.WAMessageID(c)), transport.ReceiptDelivered, []uuid.UUID{b, c}},
		{"read with a foreign id", receipt(recipient, "read", transport.WAMessageID(a), foreign), transport.ReceiptRead, []uuid.UUID{a}},
		{"read-self ignored", receipt(recipient, "read-self", transport.WAMessageID(a)), transport.ReceiptKind{}, nil},
		{"played ignored", receipt(recipient, "played", transport.WAMessageID(a)), transport.ReceiptKind{}, nil},
		{"foreign ids only", receipt(recipient, "", foreign), transport.ReceiptKind{}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := len(f.rec.Events())
			in.HandleReceipt(ctx, tc.node)
			// A marker after the frame: events are delivered in order, so anything the frame
			// produced comes before it.
			in.DispatchEvent(&events.KeepAliveTimeout{ErrorCount: from})
			_, end := f.rec.Wait(t, from, "marker", func(e transport.Event) bool {
				ka, ok := e.(transport.KeepAliveTimeout)
				return ok && ka.ErrorCount == from
			})
			got := f.rec.Events()[from:end]
			if tc.kind.IsZero() {
				if len(got) != 0 {
					t.Fatalf("want no event, got %s", transporttest.Describe(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one receipt, got %s", transporttest.Describe(got))
			}
			r, ok := got[0].(transport.Receipt)
			if !ok || r.Kind != tc.kind || fmt.Sprint(r.MessageIDs) != fmt.Sprint(tc.want) ||
				!r.Timestamp.Equal(t0) || r.From != recipient.String() || r.ConnectionID != id {
				t.Fatalf("got %T %+v, want %s receipt for %v from %s at %v", got[0], got[0], tc.kind, tc.want, recipient, t0)
			}
		})
	}
}

func TestSendWithoutLoggedInClientIsNotConnected(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	f.pair(t, id) // a stored session, but the socket never came up
	req := transporttest.Request(id)
	_, err := f.m.Send(ctx, req)
	transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
	if !strings.Contains(err.Error(), "not connected") || !errors.Is(err, whatsmeow.ErrNotConnected) {
		t.Fatalf("error %q: want a clear 'not connected' message wrapping whatsmeow.ErrNotConnected", err)
	}
	if st := f.m.Status(id); st.State != transport.StateDisconnected || st.Phone == "" {
		t.Fatalf("Status = %+v, want disconnected with the paired phone", st)
	}
}

// TestWhatsmeowNotLoggedInIsNotConnected sends through a real client on a device that was never
// paired: whatsmeow refuses before anything leaves, and that is ErrNotConnected.
func TestWhatsmeowNotLoggedInIsNotConnected(t *testing.T) {
	f := newFixture(t, backends[0])
	client := whatsmeow.NewClient(f.m.container.NewDevice(), nil)
	_, err := client.SendMessage(context.Background(), types.NewJID("4915112345678", types.DefaultUserServer), &waE2E.Message{Conversation: proto.String("hi")})
	if kind, reason := classifySendError(err); kind != transport.ErrNotConnected || !strings.Contains(reason, "logged-in") {
		t.Fatalf("SendMessage on an unpaired client: %v classified %v (%q), want ErrNotConnected", err, kind, reason)
	}
}

func TestSendWhilePairingIsNotConnected(t *testing.T) {
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	if _, err := f.m.PairQR(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	req := transporttest.Request(id)
	_, err := f.m.Send(context.Background(), req)
	transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
}

func TestClassifySendError(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{whatsmeow.ErrNotLoggedIn, transport.ErrNotConnected},
		{fmt.Errorf("%w %d", whatsmeow.ErrServerReturnedError, 429), transport.ErrRateLimited},
		{fmt.Errorf("%w %d", whatsmeow.ErrServerReturnedError, 400), transport.ErrRejected},
		{fmt.Errorf("failed to get device list: %w", &whatsmeow.IQError{Code: 429}), transport.ErrRateLimited},
		{fmt.Errorf("failed to get device list: %w", &whatsmeow.IQError{Code: 401}), transport.ErrRejected},
		{whatsmeow.ErrMessageTimedOut, transport.ErrOutcomeUnknown},
		{context.DeadlineExceeded, transport.ErrOutcomeUnknown},
		{context.Canceled, transport.ErrOutcomeUnknown},
		{&whatsmeow.DisconnectedError{Action: "message send"}, transport.ErrOutcomeUnknown},
		{fmt.Errorf("failed to send message node: %w", whatsmeow.ErrNotConnected), transport.ErrOutcomeUnknown},
		{errors.New("something new"), transport.ErrOutcomeUnknown},
	}
	for _, tc := range cases {
		if got, reason := classifySendError(tc.err); got != tc.want || reason == "" {
			t.Errorf("classifySendError(%v) = %v (%q), want %v", tc.err, got, reason, tc.want)
		}
	}
}

// TestQRPairing drives the QR pairing flow with whatsmeow's own QR and PairSuccess events.
func TestQRPairing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	codes, err := f.m.PairQR(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f.waitConnectCall(t)
	if _, err := f.m.PairQR(ctx, id); !errors.Is(err, transport.ErrPairingInProgress) {
		t.Fatalf("second PairQR = %v, want ErrPairingInProgress", err)
	}
	if st := f.m.Status(id); st.State != transport.StatePairing {
		t.Fatalf("Status while pairing = %s", st.State)
	}
	c := f.m.lookup(id)
	in := c.client.DangerousInternals()
	in.DispatchEvent(&events.QR{Codes: []string{"2@first,code", "2@second,code"}})
	if got := <-codes; got != "2@first,code" {
		t.Fatalf("first code %q", got)
	}
	qr, _ := transporttest.WaitType[transport.QRCode](t, f.rec, 0, id)
	if len(qr.Codes) != 1 || qr.Codes[0] != "2@first,code" {
		t.Fatalf("QRCode = %+v", qr)
	}
	// The phone scans: whatsmeow stores the device id, then reports PairSuccess.
	jid := types.JID{User: "4915188888888", Server: types.DefaultUserServer, Device: 3}
	c.client.Store.ID = &jid
	c.client.Store.Account = fakeAccount()
	if err := c.client.Store.Save(ctx); err != nil {
		t.Fatal(err)
	}
	in.DispatchEvent(&events.PairSuccess{ID: jid})
	p, _ := transporttest.WaitType[transport.Paired](t, f.rec, 0, id)
	if p.JID != jid.String() || p.Phone != "+4915188888888" {
		t.Fatalf("Paired = %+v", p)
	}
	for range codes { // closed after success
	}
	if _, err := f.m.PairQR(ctx, id); !errors.Is(err, transport.ErrAlreadyPaired) {
		t.Fatalf("PairQR after pairing = %v, want ErrAlreadyPaired", err)
	}
	// The pairing survives a restart.
	m2, err := New(ctx, Config{DB: f.db, Dialect: DialectSQLite})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if st := m2.Status(id); st.State != transport.StateDisconnected || st.JID != jid.String() {
		t.Fatalf("restarted manager sees %+v", st)
	}
}

func TestQRPairingTimeout(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	codes, err := f.m.PairQR(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f.m.lookup(id).client.DangerousInternals().DispatchEvent(&events.Disconnected{})
	for range codes {
	}
	pf, _ := transporttest.WaitType[transport.PairingFailed](t, f.rec, 0, id)
	if pf.Reason != "timeout" {
		t.Fatalf("PairingFailed.Reason = %q, want timeout", pf.Reason)
	}
	if st := f.m.Status(id); st.State != transport.StateUnpaired {
		t.Fatalf("Status after failed pairing = %s", st.State)
	}
	// A new attempt may start.
	if _, err := f.m.PairQR(ctx, id); err != nil {
		t.Fatalf("PairQR after a timeout: %v", err)
	}
}

func TestPairPhoneRefusesBadNumberAndHonoursContext(t *testing.T) {
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	if _, err := f.m.PairPhone(context.Background(), id, "015112345678"); err == nil {
		t.Fatal("PairPhone accepted a national number")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.m.PairPhone(ctx, id, "+4915112345678"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PairPhone without a login socket = %v, want the context's deadline", err)
	}
	if f.m.lookup(id) != nil {
		t.Fatal("abandoned pairing left a client behind")
	}
}

func TestConfigValidate(t *testing.T) {
	err := Config{Dialect: "mysql", SendTimeout: -1}.Validate()
	for _, want := range []string{"without DB", "mysql", "negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
