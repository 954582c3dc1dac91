package wmtransport

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
)

// wsPeer is the far end of a client's websocket, standing in for WhatsApp's server below the
// noise layer: it completes the websocket handshake, reports every binary message the client
// writes (an encrypted frame: the test answers it through DangerousInternals) and answers a
// close with a close. It never dials anything.
type wsPeer struct {
	srv    *httptest.Server
	frames chan struct{}
	mu     sync.Mutex
	conns  []net.Conn
}

func newWSPeer(t *testing.T) *wsPeer {
	p := &wsPeer{frames: make(chan struct{}, 64)}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, conn)
		p.mu.Unlock()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n")
		_ = rw.Flush()
		go p.read(conn, rw.Reader)
	}))
	t.Cleanup(func() {
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.srv.Close()
	})
	return p
}

// read parses the client's (masked) websocket frames.
func (p *wsPeer) read(conn net.Conn, r *bufio.Reader) {
	defer conn.Close()
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if hdr[1]&0x80 != 0 {
			n += 4 // the mask key
		}
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return
		}
		switch hdr[0] & 0x0f {
		case 0x2:
			p.frames <- struct{}{}
		case 0x8:
			// Answer the close; the client closes the connection (closing it from here first
			// would race whatsmeow's own disconnect: its read pump closes the socket again).
			_, _ = conn.Write([]byte{0x88, 0x00})
		}
	}
}

// plugIn gives client a connected socket to the peer, as a completed login would (the noise
// keys are throwaway: the peer never decrypts).
func (p *wsPeer) plugIn(t *testing.T, client *whatsmeow.Client) {
	t.Helper()
	fs := socket.NewFrameSocket(waLog.Noop, http.DefaultClient)
	fs.URL = "ws" + strings.TrimPrefix(p.srv.URL, "http")
	if err := fs.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	nh := socket.NewNoiseHandshake()
	nh.Start(socket.NoiseStartPattern, fs.Header)
	ns, err := nh.Finish(context.Background(), fs, func(context.Context, []byte) {}, func(context.Context, *socket.NoiseSocket, bool) {})
	if err != nil {
		t.Fatal(err)
	}
	// whatsmeow sets its socket only after a real handshake with WhatsApp; set it directly.
	f := reflect.ValueOf(client).Elem().FieldByName("socket")
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(ns))
	client.EnableAutoReconnect = false
	if !client.IsConnected() {
		t.Fatal("client not connected after plugging in the socket")
	}
}

// answer waits for the client's next frame (an info query) and answers it with res, as
// WhatsApp's response frame would be handed to the query's waiter.
func (p *wsPeer) answer(t *testing.T, client *whatsmeow.Client, res *waBinary.Node) {
	t.Helper()
	select {
	case <-p.frames:
	case <-time.After(transporttest.WaitLimit):
		t.Fatal("the client sent no query")
	}
	client.DangerousInternals().ClearResponseWaiters(res)
}

func iqResult(content ...waBinary.Node) *waBinary.Node {
	n := &waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"type": "result", "from": types.ServerJID}}
	if len(content) > 0 {
		n.Content = content
	}
	return n
}

// TestUnpairLogsOutAtWhatsApp: a connected session is logged out with whatsmeow's
// remove-companion-device query; once WhatsApp answers, the device is gone from the store, the
// connection is unpaired, and a new pairing can start.
func TestUnpairLogsOutAtWhatsApp(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			peer := newWSPeer(t) // first: cleaned up after the manager is closed
			f := newFixture(t, b)
			id := transporttest.ID(t, "c")
			client, jid := f.pair(t, id)
			peer.plugIn(t, client)

			type result struct {
				u   transport.Unpaired
				err error
			}
			done := make(chan result, 1)
			go func() {
				u, err := f.m.Unpair(ctx, id)
				done <- result{u, err}
			}()
			peer.answer(t, client, iqResult())
			res := <-done
			if res.err != nil || !res.u.Remote {
				t.Fatalf("Unpair = %+v, %v; want a remote logout", res.u, res.err)
			}
			if device, err := f.m.container.GetDevice(ctx, jid); err != nil || device != nil {
				t.Fatalf("device after the logout: %v %v, want deleted", device, err)
			}
			if st := f.m.Status(id); st.State != transport.StateUnpaired || st.JID != "" {
				t.Fatalf("Status after unpair = %+v", st)
			}
			if err := f.m.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
				t.Fatalf("Connect after unpair = %v, want ErrNotPaired", err)
			}
			// Pairing again starts (its QR flow is TestQRPairing's).
			if _, err := f.m.PairQR(ctx, id); err != nil {
				t.Fatalf("PairQR after unpair: %v", err)
			}
			// A second unpair while pairing is refused; none leaves the new pairing half done.
			if _, err := f.m.Unpair(ctx, id); !errors.Is(err, transport.ErrPairingInProgress) {
				t.Fatalf("Unpair while pairing = %v", err)
			}
		})
	}
}

// TestUnpairRefusedByWhatsAppKeepsTheSession: an error answer leaves the session stored (the
// caller may retry).
func TestUnpairRefusedByWhatsAppKeepsTheSession(t *testing.T) {
	ctx := context.Background()
	peer := newWSPeer(t) // first: cleaned up after the manager is closed
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	client, jid := f.pair(t, id)
	peer.plugIn(t, client)
	done := make(chan error, 1)
	go func() { _, err := f.m.Unpair(ctx, id); done <- err }()
	peer.answer(t, client, &waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"type": "error"},
		Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": "500", "text": "internal-server-error"}}}})
	if err := <-done; err == nil {
		t.Fatal("Unpair succeeded on an error answer")
	}
	if device, err := f.m.container.GetDevice(ctx, jid); err != nil || device == nil {
		t.Fatalf("device after a refused logout: %v %v, want kept", device, err)
	}
	if st := f.m.Status(id); st.JID != jid.String() {
		t.Fatalf("Status after a refused logout = %+v", st)
	}
}

// TestUnpairWhileDisconnectedDeletesTheSession: without a socket only the stored session goes.
func TestUnpairWhileDisconnectedDeletesTheSession(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	_, jid := f.pair(t, id) // a stored session; the socket never came up
	u, err := f.m.Unpair(ctx, id)
	if err != nil || u.Remote {
		t.Fatalf("Unpair = %+v, %v; want a local unpair", u, err)
	}
	if device, err := f.m.container.GetDevice(ctx, jid); err != nil || device != nil {
		t.Fatalf("device after unpair: %v %v", device, err)
	}
	m2, err := New(ctx, Config{DB: f.db, Dialect: DialectSQLite})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if st := m2.Status(id); st.State != transport.StateUnpaired {
		t.Fatalf("restarted manager sees %+v", st)
	}
	if u, err := f.m.Unpair(ctx, id); err != nil || u.Remote {
		t.Fatalf("second Unpair = %+v, %v; want a no-op", u, err)
	}
}

// TestCheckNumbersUsync: the numbers go to WhatsApp in one usync query; its answer says which
// are on WhatsApp, in the order asked, duplicates once.
func TestCheckNumbersUsync(t *testing.T) {
	ctx := context.Background()
	peer := newWSPeer(t) // first: cleaned up after the manager is closed
	f := newFixture(t, backends[0])
	id := transporttest.ID(t, "c")
	if _, err := f.m.CheckNumbers(ctx, id, []string{"+4915112345678"}); !errors.Is(err, transport.ErrNotConnected) {
		t.Fatalf("CheckNumbers without a client = %v, want ErrNotConnected", err)
	}
	client, _ := f.pair(t, id)
	if _, err := f.m.CheckNumbers(ctx, id, []string{"+4915112345678"}); !errors.Is(err, transport.ErrNotConnected) {
		t.Fatalf("CheckNumbers without a socket = %v, want ErrNotConnected", err)
	}
	if _, err := f.m.CheckNumbers(ctx, id, []string{"015112345678"}); !errors.Is(err, transport.ErrRejected) {
		t.Fatalf("CheckNumbers of a national number = %v, want ErrRejected", err)
	}
	peer.plugIn(t, client)
	user := func(phone string, in bool) waBinary.Node {
		typ := "out"
		if in {
			typ = "in"
		}
		return waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": types.NewJID(phone[1:], types.DefaultUserServer)},
			Content: []waBinary.Node{{Tag: "contact", Attrs: waBinary.Attrs{"type": typ}, Content: []byte(phone + "@c.us")}}}
	}
	type result struct {
		got []transport.NumberCheck
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := f.m.CheckNumbers(ctx, id, []string{"+4915100000001", "+4915100000002", "+4915100000001", "+4915100000003"})
		done <- result{got, err}
	}()
	peer.answer(t, client, iqResult(waBinary.Node{Tag: "usync", Content: []waBinary.Node{{Tag: "list", Content: []waBinary.Node{
		user("+4915100000002", false), user("+4915100000001", true), // any order; 0003 unanswered
	}}}}))
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	want := []transport.NumberCheck{
		{Phone: "+4915100000001", OnWhatsApp: true, JID: "4915100000001@s.whatsapp.net"},
		{Phone: "+4915100000002"}, {Phone: "+4915100000003"},
	}
	if !reflect.DeepEqual(res.got, want) {
		t.Fatalf("CheckNumbers = %+v\nwant %+v", res.got, want)
	}
	// WhatsApp's 429 is ErrRateLimited.
	go func() {
		got, err := f.m.CheckNumbers(ctx, id, []string{"+4915100000001"})
		done <- result{got, err}
	}()
	peer.answer(t, client, &waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"type": "error"},
		Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": "429", "text": "rate-overlimit"}}}})
	if res := <-done; !errors.Is(res.err, transport.ErrRateLimited) {
		t.Fatalf("CheckNumbers on a 429 = %v, want ErrRateLimited", res.err)
	}
}
