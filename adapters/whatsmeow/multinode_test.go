package wmtransport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
)

// twoNodes returns two Managers on one PostgreSQL session store, as two waqueue nodes run them:
// a (the node holding the connection's lease in the tests) and b (the node serving an
// operator's request). Each has its own database handle.
func twoNodes(t *testing.T) (a, b *fixture) {
	t.Helper()
	url := pgtest.URL(t)
	open := func() *sql.DB {
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return newFixtureOn(t, open(), DialectPostgres), newFixtureOn(t, open(), DialectPostgres)
}

// pairSuccessFrame is WhatsApp's pair-success info query for the pairing client: the signed
// device identity as the phone makes it (an account key of its own signs the details and the
// client's identity key) wrapped in the HMAC of the client's ADV secret, and the device's JIDs.
func pairSuccessFrame(t *testing.T, client *whatsmeow.Client, jid, lid types.JID) *waBinary.Node {
	t.Helper()
	details, err := proto.Marshal(&waAdv.ADVDeviceIdentity{RawID: proto.Uint32(1), Timestamp: proto.Uint64(uint64(t0.Unix())), KeyIndex: proto.Uint32(1)})
	if err != nil {
		t.Fatal(err)
	}
	account := keys.NewKeyPair()
	msg := append(append([]byte{6, 0}, details...), client.Store.IdentityKey.Pub[:]...)
	sig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*account.Priv), msg)
	signed, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentity{Details: details, AccountSignatureKey: account.Pub[:], AccountSignature: sig[:]})
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, client.Store.AdvSecretKey)
	mac.Write(signed)
	container, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{Details: signed, HMAC: mac.Sum(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return &waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"id": "pair-1", "type": "set", "from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "pair-success", Content: []waBinary.Node{
			{Tag: "device-identity", Content: container},
			{Tag: "device", Attrs: waBinary.Attrs{"jid": jid, "lid": lid}},
			{Tag: "platform", Attrs: waBinary.Attrs{"name": "android"}},
		}}}}
}

// connectedClients counts the clients of connID connected on the given nodes.
func connectedClients(connID string, nodes ...*fixture) int {
	n := 0
	for _, f := range nodes {
		if c := f.m.lookup(connID); c != nil && c.client.IsConnected() {
			n++
		}
	}
	return n
}

// TestPairingOnANonOwnerNodeLeavesOneClientOnTheOwner (issue 15): node b serves the pairing
// while node a holds the connection's lease. WhatsApp's pair-success frame reaches b's pairing
// client; b stores the device in the shared session store and drops (disconnects) its client
// before it reports Paired, and whatsmeow's reconnect after pairing is off on it. a, which
// connects when it sees the pairing recorded (the dispatcher does that on the lease owner),
// finds the device in the shared store although it loaded its mapping before the pairing: in
// the end exactly one client of the device is connected, a's. Neither node pairs it again.
func TestPairingOnANonOwnerNodeLeavesOneClientOnTheOwner(t *testing.T) {
	ctx := context.Background()
	peer := newWSPeer(t) // first: cleaned up after the managers are closed
	a, b := twoNodes(t)
	id := transporttest.ID(t, "c")
	if err := a.m.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
		t.Fatalf("owner's Connect before pairing = %v, want ErrNotPaired", err)
	}

	codes, err := b.m.PairQR(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	b.waitConnectCall(t)
	pc := b.m.lookup(id).client
	if !pc.DisableLoginAutoReconnect {
		t.Fatal("the pairing client would log in by itself after pairing (stream error 515)")
	}
	peer.plugIn(t, pc)
	in := pc.DangerousInternals()
	in.DispatchEvent(&events.QR{Codes: []string{"2@first,code"}})
	if got := <-codes; got != "2@first,code" {
		t.Fatalf("first code %q", got)
	}
	jid := types.JID{User: "4915177777777", Server: types.DefaultUserServer, Device: 4}
	lid := types.JID{User: "987654321", Server: types.HiddenUserServer, Device: 4}
	in.HandlePairSuccess(ctx, pairSuccessFrame(t, pc, jid, lid))
	p, _ := transporttest.WaitType[transport.Paired](t, b.rec, 0, id)
	if p.JID != jid.String() {
		t.Fatalf("Paired = %+v", p)
	}
	// Reported only once the pairing client is gone.
	if pc.IsConnected() || b.m.lookup(id) != nil {
		t.Fatalf("pairing client still there after Paired: connected %v", pc.IsConnected())
	}
	for range codes { // closed after success
	}
	if st := b.m.Status(id); st.State != transport.StateDisconnected || st.JID != jid.String() {
		t.Fatalf("pairing node's Status = %+v, want paired and disconnected", st)
	}

	// The lease owner connects the stored device.
	if err := a.m.Connect(ctx, id); err != nil {
		t.Fatalf("owner's Connect after the pairing: %v", err)
	}
	a.waitConnectCall(t)
	ac := a.m.lookup(id).client
	if ac.Store.ID == nil || *ac.Store.ID != jid || ac.Store.Account == nil {
		t.Fatalf("owner's client device %v, want the paired %s with its account", ac.Store.ID, jid)
	}
	peer.plugIn(t, ac)
	if n := connectedClients(id, a, b); n != 1 || !ac.IsConnected() {
		t.Fatalf("%d clients of the device connected (owner's: %v), want exactly the owner's", n, ac.IsConnected())
	}
	for name, f := range map[string]*fixture{"owner": a, "pairing node": b} {
		if _, err := f.m.PairQR(ctx, id); !errors.Is(err, transport.ErrAlreadyPaired) {
			t.Fatalf("%s: PairQR of a paired connection = %v, want ErrAlreadyPaired", name, err)
		}
	}
}

// TestUnpairOnANonOwnerNode (issue 15): node b serves the logout while a's client of the device
// is connected. b has no client: it deletes the stored session (not remote), so no node can
// connect it again; a's live client ends with a remote logout when a unpairs (the dispatcher on
// a does, on seeing the logout recorded). A pairing made again through b afterwards is safe from
// a's stale view: a late logout frame for a's old client forgets only that device's mapping,
// and a connects the new device.
func TestUnpairOnANonOwnerNode(t *testing.T) {
	ctx := context.Background()
	peer := newWSPeer(t) // first: cleaned up after the managers are closed
	a, b := twoNodes(t)
	id := transporttest.ID(t, "c")
	ac, jid := a.pair(t, id)
	peer.plugIn(t, ac)
	if st := b.m.Status(id); st.JID != "" {
		t.Fatalf("b's view from before the pairing: %+v", st)
	}

	u, err := b.m.Unpair(ctx, id)
	if err != nil || u.Remote {
		t.Fatalf("non-owner Unpair = %+v, %v; want a local unpair", u, err)
	}
	if device, err := b.m.container.GetDevice(ctx, jid); err != nil || device != nil {
		t.Fatalf("device after the non-owner's unpair: %v %v, want deleted", device, err)
	}
	if err := b.m.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
		t.Fatalf("Connect on another node after the unpair = %v, want ErrNotPaired", err)
	}
	if !ac.IsConnected() {
		t.Fatal("owner's client dropped by the other node (it cannot reach it)")
	}
	// The owner's unpair logs its live client out at WhatsApp.
	done := make(chan transport.Unpaired, 1)
	go func() {
		u, err := a.m.Unpair(ctx, id)
		if err != nil {
			t.Errorf("owner's Unpair: %v", err)
		}
		done <- u
	}()
	peer.answer(t, ac, iqResult())
	if u := <-done; !u.Remote {
		t.Fatalf("owner's Unpair = %+v, want a remote logout", u)
	}
	if n := connectedClients(id, a, b); n != 0 || ac.IsConnected() {
		t.Fatalf("%d clients connected after the logout", n)
	}

	// Another connection: unpaired through b and paired again through b while a's client of the
	// old device still runs; WhatsApp's late device_removed for that client forgets only the old
	// device's mapping, and a connects the new device.
	id2 := transporttest.ID(t, "d")
	old, _ := a.pair(t, id2)
	peer.plugIn(t, old)
	if u, err := b.m.Unpair(ctx, id2); err != nil || u.Remote {
		t.Fatalf("non-owner Unpair = %+v, %v", u, err)
	}
	_, newJID := b.pair(t, id2)
	if err := b.m.Disconnect(ctx, id2); err != nil {
		t.Fatal(err)
	}
	from := len(a.rec.Events())
	old.DangerousInternals().HandleStreamError(ctx, streamError("401", "device_removed"))
	transporttest.WaitType[transport.SessionInvalidated](t, a.rec, from, id2)
	if got, err := b.m.pairedJID(ctx, id2); err != nil || got != newJID.String() {
		t.Fatalf("mapping after the old device's logout = %q, %v; want the new device %s", got, err, newJID)
	}
	if err := a.m.Connect(ctx, id2); err != nil {
		t.Fatalf("a's Connect after the new pairing: %v", err)
	}
	if c := a.m.lookup(id2); c == nil || c.client.Store.ID == nil || *c.client.Store.ID != newJID {
		t.Fatalf("a attached %v, want the new device %s", c, newJID)
	}
}

// TestSecondPairingOnAnotherNodeIsUnlinked: two pairings of one connection run on two nodes (a
// QR code shown by each) and both are scanned. The first success maps the connection; the second
// finds it mapped to the other device, logs its own device out at WhatsApp and reports
// PairingFailed: the connection keeps one device, and no client of the surplus one remains.
func TestSecondPairingOnAnotherNodeIsUnlinked(t *testing.T) {
	ctx := context.Background()
	peer := newWSPeer(t) // first: cleaned up after the managers are closed
	a, b := twoNodes(t)
	id := transporttest.ID(t, "c")
	start := func(f *fixture) *whatsmeow.Client {
		if _, err := f.m.PairQR(ctx, id); err != nil {
			t.Fatal(err)
		}
		f.waitConnectCall(t)
		c := f.m.lookup(id).client
		peer.plugIn(t, c)
		return c
	}
	pa, pb := start(a), start(b)
	frame := func() {
		t.Helper()
		select {
		case <-peer.frames:
		case <-time.After(transporttest.WaitLimit):
			t.Fatal("no frame from the client")
		}
	}
	jidB := types.JID{User: "4915166666666", Server: types.DefaultUserServer, Device: 5}
	pb.DangerousInternals().HandlePairSuccess(ctx, pairSuccessFrame(t, pb, jidB, types.JID{User: "1", Server: types.HiddenUserServer, Device: 5}))
	transporttest.WaitType[transport.Paired](t, b.rec, 0, id)
	frame() // b's pair-device-sign answer

	jidA := types.JID{User: "4915166666666", Server: types.DefaultUserServer, Device: 6}
	pa.DangerousInternals().HandlePairSuccess(ctx, pairSuccessFrame(t, pa, jidA, types.JID{User: "1", Server: types.HiddenUserServer, Device: 6}))
	frame()                        // a's pair-device-sign answer
	peer.answer(t, pa, iqResult()) // WhatsApp confirms the surplus device's logout
	pf, _ := transporttest.WaitType[transport.PairingFailed](t, a.rec, 0, id)
	if !strings.Contains(pf.Reason, jidB.String()) {
		t.Fatalf("PairingFailed.Reason = %q, want it to name the device kept", pf.Reason)
	}
	if got, err := a.m.pairedJID(ctx, id); err != nil || got != jidB.String() {
		t.Fatalf("mapping = %q, %v; want the first pairing's %s", got, err, jidB)
	}
	if device, err := a.m.container.GetDevice(ctx, jidA); err != nil || device != nil {
		t.Fatalf("surplus device still stored: %v %v", device, err)
	}
	if pa.IsConnected() || pb.IsConnected() || a.m.lookup(id) != nil || b.m.lookup(id) != nil {
		t.Fatalf("pairing clients left: a %v, b %v", pa.IsConnected(), pb.IsConnected())
	}
	if evs := a.rec.Events(); slices.ContainsFunc(evs, func(e transport.Event) bool { _, ok := e.(transport.Paired); return ok }) {
		t.Fatal("the surplus pairing was reported Paired")
	}
}
