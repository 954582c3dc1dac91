package simulator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			s := simulator.New(simulator.Options{Seed: 1})
			t.Cleanup(s.Close)
			return s
		},
		CanPair:   true,
		Simulated: true,
	})
	t.Run("SharedDevices", func(t *testing.T) {
		transporttest.Run(t, transporttest.Harness{
			New: func(t *testing.T) transport.Transport {
				s := simulator.New(simulator.Options{Seed: 1, Devices: simulator.NewDevices()})
				t.Cleanup(s.Close)
				return s
			},
			CanPair:   true,
			Simulated: true,
		})
	})
}

// newConnected returns a simulator on a manual clock with one paired, connected connection.
func newConnected(t *testing.T, opts simulator.Options, sc simulator.Script) (*simulator.Simulator, *transporttest.ManualClock, *transporttest.Recorder, string) {
	t.Helper()
	clock := transporttest.NewManualClock(t0)
	opts.Clock = clock
	s := simulator.New(opts)
	t.Cleanup(s.Close)
	rec := transporttest.NewRecorder()
	s.SetHandler(rec.Handle)
	id := transporttest.ID(t, "c")
	s.SetScript(id, sc)
	if _, err := s.PairQR(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitType[transport.Connected](t, rec, 0, id)
	return s, clock, rec, id
}

// outcomes sends n messages and returns the sentinel each produced ("ok" for success).
func outcomes(t *testing.T, s *simulator.Simulator, id string, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		_, err := s.Send(context.Background(), transporttest.Request(id))
		switch {
		case err == nil:
			out[i] = "ok"
		case errors.Is(err, transport.ErrRateLimited):
			out[i] = "rate"
		case errors.Is(err, transport.ErrRejected):
			out[i] = "rejected"
		case errors.Is(err, transport.ErrOutcomeUnknown):
			out[i] = "unknown"
		default:
			t.Fatalf("send %d: unexpected error %v", i, err)
		}
	}
	return out
}

func TestScriptedOutcomesAreSeededAndRecorded(t *testing.T) {
	sc := simulator.Script{RateLimitRate: 0.2, RateLimitRetryAfter: time.Second, RejectRate: 0.1, UnknownRate: 0.1}
	run := func(seed uint64) ([]string, *simulator.Simulator) {
		clock := transporttest.NewManualClock(t0)
		s := simulator.New(simulator.Options{Seed: seed, Clock: clock, Default: sc, AssumePaired: true})
		t.Cleanup(s.Close)
		if err := s.Connect(context.Background(), "conn-1"); err != nil {
			t.Fatal(err)
		}
		return outcomes(t, s, "conn-1", 400), s
	}
	a, s := run(7)
	b, _ := run(7)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same seed gave different outcome sequences:\n%v\n%v", a, b)
	}
	counts := map[string]int{}
	for _, o := range a {
		counts[o]++
	}
	for _, k := range []string{"ok", "rate", "rejected", "unknown"} {
		if counts[k] == 0 {
			t.Fatalf("400 sends produced no %q outcome: %v", k, counts)
		}
	}
	// Only handed-over messages (ok, unknown) are recorded, each exactly once.
	recs := s.Sends()
	if len(recs) != counts["ok"]+counts["unknown"] {
		t.Fatalf("recorded %d sends, want ok %d + unknown %d", len(recs), counts["ok"], counts["unknown"])
	}
	if got := s.SendsFrom(3); fmt.Sprint(got) != fmt.Sprint(recs[3:]) {
		t.Fatalf("SendsFrom(3) = %d records, not the records from the fourth on", len(got))
	}
	if got := s.SendsFrom(len(recs)); got != nil {
		t.Fatalf("SendsFrom(all) = %v, want none", got)
	}
	unknown := 0
	for _, r := range recs {
		if s.SendCount(r.MessageID) != 1 || !r.Simulated || r.WAMessageID != transport.WAMessageID(r.MessageID) || !r.At.Equal(t0) {
			t.Fatalf("record %+v: want count 1, simulated, derived WA id, clock time", r)
		}
		if r.OutcomeUnknown {
			unknown++
		}
	}
	if unknown != counts["unknown"] {
		t.Fatalf("%d records marked unknown, want %d", unknown, counts["unknown"])
	}
}

func TestRateLimitedCarriesRetryAfterAndSendsNothing(t *testing.T) {
	s, _, _, id := newConnected(t, simulator.Options{}, simulator.Script{RateLimitRate: 1, RateLimitRetryAfter: 3 * time.Second})
	req := transporttest.Request(id)
	_, err := s.Send(context.Background(), req)
	transporttest.CheckSendError(t, err, transport.ErrRateLimited, req)
	var se *transport.SendError
	if !errors.As(err, &se) || se.RetryAfter != 3*time.Second {
		t.Fatalf("rate-limit error %v: want RetryAfter 3s", err)
	}
	if n := s.SendCount(req.MessageID); n != 0 {
		t.Fatalf("rate-limited message recorded %d times, want 0", n)
	}
}

func TestTemporaryBanAfterNMessagesLiftsAtExpiry(t *testing.T) {
	ban := simulator.Ban{Code: 102, Expire: 2 * time.Hour}
	s, clock, rec, id := newConnected(t, simulator.Options{}, simulator.Script{BanAfter: 3, Ban: ban})
	if got := outcomes(t, s, id, 3); fmt.Sprint(got) != "[ok ok ok]" {
		t.Fatalf("first three sends = %v, want all ok", got)
	}
	tb, i := transporttest.WaitType[transport.TemporaryBan](t, rec, 0, id)
	if tb.Code != 102 || tb.Expire != 2*time.Hour || !tb.ExpiresAt.Equal(t0.Add(2*time.Hour)) || !tb.Simulated {
		t.Fatalf("TemporaryBan = %+v, want code 102 expiring at %v", tb, t0.Add(2*time.Hour))
	}
	req := transporttest.Request(id)
	_, err := s.Send(context.Background(), req)
	transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
	if st := s.Status(id); st.State != transport.StateTemporarilyBanned || !st.BanExpiresAt.Equal(tb.ExpiresAt) {
		t.Fatalf("Status during ban = %+v", st)
	}
	clock.Advance(time.Hour)
	if st := s.Status(id); st.State != transport.StateTemporarilyBanned {
		t.Fatalf("ban lifted early: %+v", st)
	}
	clock.Advance(time.Hour)
	transporttest.WaitType[transport.BanLifted](t, rec, i, id)
	if st := s.Status(id); st.State != transport.StateConnected {
		t.Fatalf("Status after lift = %s, want connected", st.State)
	}
	if _, err := s.Send(context.Background(), req); err != nil {
		t.Fatalf("send after lift: %v", err)
	}
}

func TestBanAtTimeIsPermanent(t *testing.T) {
	s, clock, rec, id := newConnected(t, simulator.Options{}, simulator.Script{BanAt: t0.Add(time.Minute), Ban: simulator.Ban{Permanent: true}})
	outcomes(t, s, id, 2)
	clock.Advance(time.Minute)
	pb, _ := transporttest.WaitType[transport.PermanentBan](t, rec, 0, id)
	if pb.Reason != 406 {
		t.Fatalf("PermanentBan.Reason = %d, want 406", pb.Reason)
	}
	if err := s.Connect(context.Background(), id); !errors.Is(err, transport.ErrNotPaired) {
		t.Fatalf("Connect after a permanent ban = %v, want ErrNotPaired", err)
	}
	if err := s.LiftBan(id); !errors.Is(err, simulator.ErrNotBanned) {
		t.Fatalf("LiftBan after a permanent ban = %v, want ErrNotBanned", err)
	}
}

func TestManualControls(t *testing.T) {
	s, _, rec, id := newConnected(t, simulator.Options{}, simulator.Script{})
	if err := s.Ban(id, simulator.Ban{Expire: time.Hour}); err != nil {
		t.Fatal(err)
	}
	_, i := transporttest.WaitType[transport.TemporaryBan](t, rec, 0, id)
	if err := s.LiftBan(id); err != nil {
		t.Fatal(err)
	}
	_, i = transporttest.WaitType[transport.BanLifted](t, rec, i, id)
	if err := s.LiftBan(id); !errors.Is(err, simulator.ErrNotBanned) {
		t.Fatalf("second LiftBan = %v, want ErrNotBanned", err)
	}
	if err := s.Logout(id, 402); err == nil {
		t.Fatal("Logout with reason 402 accepted")
	}
	if err := s.Logout(id, 403); err != nil {
		t.Fatal(err)
	}
	si, _ := transporttest.WaitType[transport.SessionInvalidated](t, rec, i, id)
	if si.Reason != 403 {
		t.Fatalf("SessionInvalidated.Reason = %d, want 403", si.Reason)
	}
	if err := s.Ban(id, simulator.Ban{}); !errors.Is(err, simulator.ErrNotLoggedIn) {
		t.Fatalf("Ban after logout = %v, want ErrNotLoggedIn", err)
	}
	// Pairing again works after a logout.
	if _, err := s.PairQR(context.Background(), id); err != nil {
		t.Fatalf("PairQR after logout: %v", err)
	}
}

func TestLogoutAfterN(t *testing.T) {
	s, _, rec, id := newConnected(t, simulator.Options{}, simulator.Script{LogoutAfter: 2})
	outcomes(t, s, id, 2)
	si, _ := transporttest.WaitType[transport.SessionInvalidated](t, rec, 0, id)
	if si.Reason != 401 {
		t.Fatalf("SessionInvalidated.Reason = %d, want 401", si.Reason)
	}
	req := transporttest.Request(id)
	_, err := s.Send(context.Background(), req)
	transporttest.CheckSendError(t, err, transport.ErrNotConnected, req)
}

func TestReceiptsAfterDelays(t *testing.T) {
	sc := simulator.Script{Receipts: simulator.Receipts{Delivered: true, DeliveredAfter: time.Second, Read: true, ReadAfter: time.Minute}}
	s, clock, rec, id := newConnected(t, simulator.Options{}, sc)
	req := transporttest.Request(id)
	if _, err := s.Send(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if !clock.WaitForTimers(2, transporttest.WaitLimit) {
		t.Fatal("receipt timers not scheduled")
	}
	clock.Advance(time.Second)
	d, i := transporttest.WaitType[transport.Receipt](t, rec, 0, id)
	if d.Kind != transport.ReceiptDelivered || len(d.MessageIDs) != 1 || d.MessageIDs[0] != req.MessageID || !d.Timestamp.Equal(t0.Add(time.Second)) {
		t.Fatalf("first receipt = %+v, want delivered for %v at +1s", d, req.MessageID)
	}
	for _, e := range rec.Events()[i+1:] {
		if _, ok := e.(transport.Receipt); ok {
			t.Fatalf("read receipt before its delay: %+v", e)
		}
	}
	clock.Advance(time.Minute)
	r, _ := transporttest.WaitType[transport.Receipt](t, rec, i+1, id)
	if r.Kind != transport.ReceiptRead || r.MessageIDs[0] != req.MessageID {
		t.Fatalf("second receipt = %+v, want read", r)
	}
}

func TestLatencyCancelledIsUnknownButRecorded(t *testing.T) {
	s, clock, _, id := newConnected(t, simulator.Options{}, simulator.Script{Latency: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	req := transporttest.Request(id)
	errc := make(chan error, 1)
	go func() { _, err := s.Send(ctx, req); errc <- err }()
	if !clock.WaitForTimers(1, transporttest.WaitLimit) {
		t.Fatal("send did not start waiting for its acknowledgement")
	}
	cancel()
	transporttest.CheckSendError(t, <-errc, transport.ErrOutcomeUnknown, req)
	if n := s.SendCount(req.MessageID); n != 1 {
		t.Fatalf("message handed over %d times, want 1", n)
	}
	// With the acknowledgement arriving, the send succeeds.
	req2 := transporttest.Request(id)
	go func() { _, err := s.Send(context.Background(), req2); errc <- err }()
	if !clock.WaitForTimers(1, transporttest.WaitLimit) {
		t.Fatal("second send did not start waiting")
	}
	clock.Advance(5 * time.Second)
	if err := <-errc; err != nil {
		t.Fatalf("send with latency: %v", err)
	}
}

func TestSendIsSerializedPerConnection(t *testing.T) {
	s, clock, _, id := newConnected(t, simulator.Options{}, simulator.Script{Latency: time.Second})
	const n = 5
	var done atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Send(context.Background(), transporttest.Request(id)); err != nil {
				t.Error(err)
			}
			done.Add(1)
		}()
	}
	for i := range n {
		// Exactly one send waits for its acknowledgement at a time.
		if !clock.WaitForTimers(1, transporttest.WaitLimit) {
			t.Fatalf("send %d never waited", i)
		}
		if p := clock.Pending(); p != 1 {
			t.Fatalf("%d sends in flight on one connection, want 1", p)
		}
		clock.Advance(time.Second)
		for done.Load() != int32(i+1) {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	if got := len(s.Sends()); got != n {
		t.Fatalf("%d sends recorded, want %d", got, n)
	}
}

func TestManyConnectionsZeroLatency(t *testing.T) {
	conns, per := 1000, 5
	if testing.Short() {
		conns = 100
	}
	s := simulator.New(simulator.Options{Seed: 3, AssumePaired: true})
	t.Cleanup(s.Close)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("bulk-%d", c)
			if err := s.Connect(context.Background(), id); err != nil {
				t.Error(err)
				return
			}
			for range per {
				if _, err := s.Send(context.Background(), transporttest.Request(id)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	seen := map[uuid.UUID]bool{}
	for _, r := range s.Sends() {
		if seen[r.MessageID] {
			t.Fatalf("message %v recorded twice", r.MessageID)
		}
		seen[r.MessageID] = true
	}
	if len(seen) != conns*per {
		t.Fatalf("%d distinct sends recorded, want %d", len(seen), conns*per)
	}
}

func BenchmarkSend1000Connections(b *testing.B) {
	s := simulator.New(simulator.Options{Seed: 1, AssumePaired: true})
	defer s.Close()
	const conns = 1000
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%d", i)
		if err := s.Connect(context.Background(), ids[i]); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := ids[next.Add(1)%conns]
			if _, err := s.Send(context.Background(), transporttest.Request(id)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestUnpairAndCheckNumbers: Unpair deletes the simulated session without an event (the caller
// records the logout), pairing works again, and CheckNumbers answers from SetOnWhatsApp.
func TestUnpairAndCheckNumbers(t *testing.T) {
	ctx := context.Background()
	s := simulator.New(simulator.Options{Seed: 1, Clock: transporttest.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))})
	defer s.Close()
	rec := transporttest.NewRecorder()
	s.SetHandler(rec.Handle)
	if u, err := s.Unpair(ctx, "c1"); err != nil || u.Remote {
		t.Fatalf("Unpair of an unknown connection = %+v, %v", u, err)
	}
	if _, err := s.CheckNumbers(ctx, "c1", []string{"+4915100000001"}); !errors.Is(err, transport.ErrNotConnected) {
		t.Fatalf("CheckNumbers unpaired = %v", err)
	}
	if _, err := s.PairQR(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	// The pairing's events are delivered asynchronously: count from after its last (Connected),
	// or a late one is taken for Unpair's below.
	transporttest.WaitType[transport.Connected](t, rec, 0, "c1")
	s.SetOnWhatsApp(false, "+4915100000002")
	got, err := s.CheckNumbers(ctx, "c1", []string{"+4915100000001", "+4915100000002", "+4915100000001"})
	if err != nil || len(got) != 2 || !got[0].OnWhatsApp || got[1].OnWhatsApp || got[0].JID == "" {
		t.Fatalf("CheckNumbers = %+v, %v", got, err)
	}
	if _, err := s.CheckNumbers(ctx, "c1", []string{"0151"}); !errors.Is(err, transport.ErrRejected) {
		t.Fatalf("CheckNumbers of a bad number = %v", err)
	}
	if _, err := s.CheckNumbers(ctx, "c1", make([]string, transport.MaxCheckNumbers+1)); !errors.Is(err, transport.ErrRejected) {
		t.Fatalf("CheckNumbers of too many = %v", err)
	}
	events := len(rec.Events())
	if u, err := s.Unpair(ctx, "c1"); err != nil || !u.Remote {
		t.Fatalf("Unpair = %+v, %v", u, err)
	}
	if st := s.Status("c1"); st.State != transport.StateUnpaired || st.JID != "" {
		t.Fatalf("Status after Unpair = %+v", st)
	}
	if len(rec.Events()) != events {
		t.Fatalf("Unpair emitted %v", rec.Events()[events:])
	}
	if _, err := s.PairPhone(ctx, "c1", "+4915100000009"); err != nil {
		t.Fatalf("PairPhone after Unpair: %v", err)
	}
}

// TestSharedDevicesModelOneStreamPerDevice: simulators of two nodes sharing Devices behave as the
// whatsmeow adapter on one session store: a pairing's client ends at the success, the other node
// logs the device in, a second client of the device replaces the first stream (StreamReplaced,
// counted), and an unpair through a node without the client deletes the stored session but
// leaves the live client to its node.
func TestSharedDevicesModelOneStreamPerDevice(t *testing.T) {
	ctx := context.Background()
	devs := simulator.NewDevices()
	a := simulator.New(simulator.Options{Seed: 1, Devices: devs})
	b := simulator.New(simulator.Options{Seed: 2, Devices: devs})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	recA, recB := transporttest.NewRecorder(), transporttest.NewRecorder()
	a.SetHandler(recA.Handle)
	b.SetHandler(recB.Handle)
	id := transporttest.ID(t, "c")
	if err := a.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
		t.Fatalf("Connect before pairing = %v", err)
	}
	codes, err := b.PairQR(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for range codes {
	}
	p, _ := transporttest.WaitType[transport.Paired](t, recB, 0, id)
	if st := b.Status(id); st.State != transport.StateDisconnected || st.JID != p.JID {
		t.Fatalf("pairing node after the success: %+v", st)
	}
	if _, err := a.PairQR(ctx, id); !errors.Is(err, transport.ErrAlreadyPaired) {
		t.Fatalf("PairQR on the other node = %v, want ErrAlreadyPaired", err)
	}
	if err := a.Connect(ctx, id); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitType[transport.Connected](t, recA, 0, id)
	if st := a.Status(id); st.State != transport.StateConnected || st.JID != p.JID {
		t.Fatalf("owner after Connect: %+v", st)
	}
	if devs.Replaced() != 0 {
		t.Fatalf("%d streams replaced, want none", devs.Replaced())
	}
	// A second client of the device: WhatsApp keeps the newer stream.
	if err := b.Connect(ctx, id); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitType[transport.StreamReplaced](t, recA, 0, id)
	if devs.Replaced() != 1 || a.Status(id).State != transport.StateDisconnected || b.Status(id).State != transport.StateConnected {
		t.Fatalf("after a second client: replaced %d, a %s, b %s", devs.Replaced(), a.Status(id).State, b.Status(id).State)
	}
	// Unpair through a (no client): the stored session goes, b's live client stays.
	if err := b.Disconnect(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, id); err != nil {
		t.Fatal(err)
	}
	if u, err := b.Unpair(ctx, id); err != nil || u.Remote {
		t.Fatalf("Unpair without the client = %+v, %v", u, err)
	}
	if devs.Paired(id) || a.Status(id).State != transport.StateConnected {
		t.Fatalf("after the unpair elsewhere: paired %v, a %s", devs.Paired(id), a.Status(id).State)
	}
	if u, err := a.Unpair(ctx, id); err != nil || !u.Remote {
		t.Fatalf("Unpair on the client's node = %+v, %v", u, err)
	}
	if err := b.Connect(ctx, id); !errors.Is(err, transport.ErrNotPaired) {
		t.Fatalf("Connect after the unpair = %v", err)
	}
}

// TestStoredSessionsLogInWithoutAPairing: with StoredSessions a connection the simulator never
// saw connects as a stored session does at a restart (Connected, no Paired) and sends; one it
// saw logged out is paired again as AssumePaired does (Paired, then Connected).
func TestStoredSessionsLogInWithoutAPairing(t *testing.T) {
	ctx := context.Background()
	s := simulator.New(simulator.Options{Seed: 1, Clock: transporttest.NewManualClock(t0), AssumePaired: true, StoredSessions: true})
	defer s.Close()
	rec := transporttest.NewRecorder()
	s.SetHandler(rec.Handle)
	if err := s.Connect(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	_, i := rec.Wait(t, 0, "connected", func(e transport.Event) bool { _, ok := e.(transport.Connected); return ok })
	if i != 0 {
		t.Fatalf("events before Connected: %s", transporttest.Describe(rec.Events()[:i]))
	}
	if st := s.Status("c1"); st.State != transport.StateConnected {
		t.Fatalf("Status = %+v, want connected", st)
	}
	if got := outcomes(t, s, "c1", 3); fmt.Sprint(got) != "[ok ok ok]" {
		t.Fatalf("sends of a stored session: %v", got)
	}
	if _, err := s.Unpair(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	_, j := rec.Wait(t, i+1, "paired", func(e transport.Event) bool { _, ok := e.(transport.Paired); return ok })
	rec.Wait(t, j+1, "connected", func(e transport.Event) bool { _, ok := e.(transport.Connected); return ok })
}
