// Package transporttest is the conformance suite every transport adapter runs, plus test helpers
// (a manual clock, an event recorder). It is imported by tests only.
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/internal/testwait"
)

// Harness tells the suite how to build an adapter and what it can do without WhatsApp's servers.
type Harness struct {
	// New returns a fresh transport with no connections; the harness closes it via t.Cleanup.
	New func(t *testing.T) transport.Transport
	// CanPair is true when PairQR completes a pairing by itself (the simulator's auto-scan), so the
	// suite can check sends, disconnects and reconnects on a logged-in connection.
	CanPair bool
	// Simulated is the value every result and event must carry in Simulated.
	Simulated bool
}

// outcomes are the four Send sentinels; every Send error matches exactly one.
var outcomes = []error{transport.ErrRateLimited, transport.ErrNotConnected, transport.ErrRejected, transport.ErrOutcomeUnknown}

// CheckSendError fails the test unless err is a *transport.SendError matching want and no other
// outcome sentinel, and carries the request's ids.
func CheckSendError(t testing.TB, err error, want error, req transport.SendRequest) {
	t.Helper()
	if err == nil {
		t.Fatalf("Send(%v) = nil error, want %v", req.MessageID, want)
	}
	var matched []string
	for _, o := range outcomes {
		if errors.Is(err, o) {
			matched = append(matched, o.Error())
		}
	}
	if len(matched) != 1 || !errors.Is(err, want) {
		t.Fatalf("Send error %q matches %q, want exactly %q", err, matched, want)
	}
	var se *transport.SendError
	if !errors.As(err, &se) {
		t.Fatalf("Send error %q (%T) is not a *transport.SendError", err, err)
	}
	if se.ConnectionID != req.ConnectionID || se.MessageID != req.MessageID {
		t.Fatalf("SendError carries connection %q message %v, want %q %v", se.ConnectionID, se.MessageID, req.ConnectionID, req.MessageID)
	}
}

// ID returns a connection id unique to the test, so tests can share a database.
func ID(t testing.TB, name string) string {
	return fmt.Sprintf("%s-%s-%s", strings.ReplaceAll(t.Name(), "/", "_"), name, uuid.NewString()[:8])
}

// Request returns a valid send request for connID with a fresh message id.
func Request(connID string) transport.SendRequest {
	return transport.SendRequest{ConnectionID: connID, MessageID: uuid.New(), To: "+4915112345678", Text: "hello from the suite"}
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Run("UnknownConnectionIsUnpaired", func(t *testing.T) {
		tr := h.New(t)
		id := ID(t, "c")
		st := tr.Status(id)
		if st.ConnectionID != id || st.State != transport.StateUnpaired || st.JID != "" {
			t.Fatalf("Status(%q) = %+v, want unpaired with no JID", id, st)
		}
		if st.Simulated != h.Simulated {
			t.Fatalf("Status.Simulated = %v, want %v", st.Simulated, h.Simulated)
		}
		if tr.Name() == "" {
			t.Fatal("Name() is empty")
		}
	})
	t.Run("SendOnUnpairedIsNotConnected", func(t *testing.T) {
		tr := h.New(t)
		req := Request(ID(t, "c"))
		_, err := tr.Send(context.Background(), req)
		CheckSendError(t, err, transport.ErrNotConnected, req)
		if !transport.Retryable(err) {
			t.Fatalf("Retryable(%v) = false, want true", err)
		}
	})
	t.Run("InvalidRequestIsRejected", func(t *testing.T) {
		tr := h.New(t)
		id := ID(t, "c")
		for _, mutate := range []func(*transport.SendRequest){
			func(r *transport.SendRequest) { r.To = "015112345678" },
			func(r *transport.SendRequest) { r.To = "+49 151" },
			func(r *transport.SendRequest) { r.Text = "" },
			func(r *transport.SendRequest) { r.MessageID = uuid.Nil },
		} {
			req := Request(id)
			mutate(&req)
			_, err := tr.Send(context.Background(), req)
			CheckSendError(t, err, transport.ErrRejected, req)
			if transport.Retryable(err) {
				t.Fatalf("Retryable(%v) = true for an invalid request", err)
			}
		}
	})
	t.Run("ConnectUnpairedIsNotPaired", func(t *testing.T) {
		tr := h.New(t)
		err := tr.Connect(context.Background(), ID(t, "c"))
		if !errors.Is(err, transport.ErrNotPaired) {
			t.Fatalf("Connect on a never-paired connection = %v, want ErrNotPaired", err)
		}
	})
	t.Run("DisconnectUnknownIsNoop", func(t *testing.T) {
		tr := h.New(t)
		if err := tr.Disconnect(context.Background(), ID(t, "c")); err != nil {
			t.Fatalf("Disconnect on an unknown connection = %v, want nil", err)
		}
	})
	t.Run("CancelledContextSendsNothing", func(t *testing.T) {
		tr := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := Request(ID(t, "c"))
		_, err := tr.Send(ctx, req)
		if err == nil {
			t.Fatal("Send with a cancelled context succeeded")
		}
		// Nothing can have been sent on an unpaired connection, whatever the context says.
		CheckSendError(t, err, transport.ErrNotConnected, req)
	})
	if !h.CanPair {
		return
	}
	t.Run("PairSendDisconnectReconnect", func(t *testing.T) {
		tr := h.New(t)
		rec := NewRecorder()
		tr.SetHandler(rec.Handle)
		id := ID(t, "c")
		ctx := context.Background()
		codes, err := tr.PairQR(ctx, id)
		if err != nil {
			t.Fatalf("PairQR: %v", err)
		}
		var got []string
		for c := range codes {
			got = append(got, c)
		}
		if len(got) == 0 || got[0] == "" {
			t.Fatalf("PairQR yielded codes %q, want at least one", got)
		}
		qr, _ := WaitType[transport.QRCode](t, rec, 0, id)
		if len(qr.Codes) == 0 || qr.Codes[0] != got[0] {
			t.Fatalf("QRCode event %q, channel yielded %q", qr.Codes, got)
		}
		paired, i := WaitType[transport.Paired](t, rec, 0, id)
		if paired.JID == "" || paired.Phone == "" || paired.Simulated != h.Simulated {
			t.Fatalf("Paired = %+v, want JID, phone and Simulated=%v", paired, h.Simulated)
		}
		// The pairing's client may end at the success (several nodes): the node running the
		// connection's session connects it, which is a no-op where the pairing's client stayed.
		if err := tr.Connect(ctx, id); err != nil {
			t.Fatalf("Connect after Paired: %v", err)
		}
		_, i = WaitType[transport.Connected](t, rec, i, id)
		if st := tr.Status(id); st.State != transport.StateConnected || st.JID != paired.JID {
			t.Fatalf("Status after pairing = %+v, want connected as %s", st, paired.JID)
		}
		if _, err := tr.PairQR(ctx, id); !errors.Is(err, transport.ErrAlreadyPaired) {
			t.Fatalf("PairQR on a paired connection = %v, want ErrAlreadyPaired", err)
		}

		req := Request(id)
		res, err := tr.Send(ctx, req)
		if err != nil {
			t.Fatalf("Send on a connected connection: %v", err)
		}
		if res.WAMessageID != transport.WAMessageID(req.MessageID) || res.ServerTimestamp.IsZero() ||
			res.Simulated != h.Simulated || res.Adapter != tr.Name() {
			t.Fatalf("SendResult = %+v, want WA id %s, a timestamp, Simulated=%v, adapter %s",
				res, transport.WAMessageID(req.MessageID), h.Simulated, tr.Name())
		}

		if err := tr.Disconnect(ctx, id); err != nil {
			t.Fatalf("Disconnect: %v", err)
		}
		if st := tr.Status(id); st.State != transport.StateDisconnected {
			t.Fatalf("Status after Disconnect = %s, want disconnected", st.State)
		}
		req2 := Request(id)
		_, err = tr.Send(ctx, req2)
		CheckSendError(t, err, transport.ErrNotConnected, req2)

		if err := tr.Connect(ctx, id); err != nil {
			t.Fatalf("Connect after Disconnect: %v", err)
		}
		WaitType[transport.Connected](t, rec, i+1, id)
		if _, err := tr.Send(ctx, req2); err != nil {
			t.Fatalf("Send after reconnect: %v", err)
		}
		for _, e := range rec.Events() {
			if e.Header().Simulated != h.Simulated || e.Header().At.IsZero() {
				t.Fatalf("event %T %+v: want Simulated=%v and a time", e, e, h.Simulated)
			}
		}
	})
	t.Run("PairPhone", func(t *testing.T) {
		tr := h.New(t)
		rec := NewRecorder()
		tr.SetHandler(rec.Handle)
		id := ID(t, "c")
		if _, err := tr.PairPhone(context.Background(), id, "0151"); err == nil {
			t.Fatal("PairPhone with a non-E.164 number succeeded")
		}
		code, err := tr.PairPhone(context.Background(), id, "+4915112345678")
		if err != nil || code == "" {
			t.Fatalf("PairPhone = %q, %v", code, err)
		}
		pc, _ := WaitType[transport.PairingCode](t, rec, 0, id)
		if pc.Code != code {
			t.Fatalf("PairingCode event %q, PairPhone returned %q", pc.Code, code)
		}
		p, _ := WaitType[transport.Paired](t, rec, 0, id)
		if p.Phone != "+4915112345678" {
			t.Fatalf("Paired.Phone = %q, want the number paired", p.Phone)
		}
	})
	t.Run("ConcurrentConnectionsAreIndependent", func(t *testing.T) {
		tr := h.New(t)
		rec := NewRecorder()
		tr.SetHandler(rec.Handle)
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
		defer cancel()
		a, b := ID(t, "a"), ID(t, "b")
		for _, id := range []string{a, b} {
			codes, err := tr.PairQR(ctx, id)
			if err != nil {
				t.Fatalf("PairQR(%s): %v", id, err)
			}
			for range codes {
			}
			WaitType[transport.Paired](t, rec, 0, id)
			if err := tr.Connect(ctx, id); err != nil {
				t.Fatalf("Connect(%s) after Paired: %v", id, err)
			}
			WaitType[transport.Connected](t, rec, 0, id)
		}
		if err := tr.Disconnect(ctx, a); err != nil {
			t.Fatal(err)
		}
		ra, rb := Request(a), Request(b)
		_, errA := tr.Send(ctx, ra)
		CheckSendError(t, errA, transport.ErrNotConnected, ra)
		if _, err := tr.Send(ctx, rb); err != nil {
			t.Fatalf("Send on %s after disconnecting %s: %v", b, a, err)
		}
	})
}
