package connection_test

import (
	"errors"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func cancelCmd(seq uint64) connection.CancelMessage {
	return connection.CancelMessage{MessageID: msgID(seq), Seq: seq, Reason: "wrong text", Actor: "op"}
}

func mustLoad(t *testing.T, evs ...connection.Event) *connection.Connection {
	t.Helper()
	c, err := connection.Load(evs...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCancelSkipsTheMessageAndCounts(t *testing.T) {
	c := mustLoad(t, registered(connection.OnBanHold), paired(), queued(1), queued(2), queued(3))
	evs, err := c.Cancel(cancelCmd(2), at(1))
	if err != nil {
		t.Fatal(err)
	}
	want := connection.MessageCancelled{MessageID: msgID(2), Seq: 2, Reason: "wrong text", CancelledBy: "op", CancelledAt: at(1)}
	if len(evs) != 1 || evs[0] != want {
		t.Fatalf("events %#v, want %#v", evs, want)
	}
	if err := c.Apply(evs[0]); err != nil {
		t.Fatal(err)
	}
	if got := c.Pending(); got != 2 {
		t.Fatalf("pending %d, want 2", got)
	}
	if _, err := c.Dispatch(connection.DispatchMessage{MessageID: msgID(2), Seq: 2}, at(2)); !errors.Is(err, connection.ErrMessageCancelled) {
		t.Fatalf("dispatch of the cancelled message: %v, want ErrMessageCancelled", err)
	}
	for _, seq := range []uint64{1, 3} { // the head skips the cancelled message
		if head, _ := c.Head(); head != seq {
			t.Fatalf("head %d, want %d", head, seq)
		}
		evs, err := c.Dispatch(connection.DispatchMessage{MessageID: msgID(seq), Seq: seq}, at(2))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(evs[0]); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := c.Head(); ok {
		t.Fatal("nothing should be pending")
	}
	n := c.Counters()
	if n.Queued != c.Pending()+n.Dispatched+n.Expired+n.Purged+n.Cancelled || n.Cancelled != 1 {
		t.Fatalf("counters do not reconcile: %+v pending %d", n, c.Pending())
	}
}

func TestCancelRefusals(t *testing.T) {
	base := []connection.Event{registered(connection.OnBanHold), paired(), queued(1), queued(2)}
	tests := []struct {
		name          string
		history       []connection.Event
		cmd           connection.CancelMessage
		want          error
		wantCancelled bool
	}{
		{"dispatched", append(base[:4:4], dispatched(msgID(1), 1)), cancelCmd(1), connection.ErrMessageNotPending, false},
		{"cancelled twice", append(base[:4:4], connection.MessageCancelled{MessageID: msgID(2), Seq: 2, Reason: "r", CancelledBy: "op", CancelledAt: t0}),
			cancelCmd(2), connection.ErrMessageNotPending, true},
		{"purged", append(base[:4:4], connection.ClearQueueRequested{ClearID: clearID, Scope: connection.WholeQueue, RequestedBy: "op", Reason: "r",
			UpToSeq: 2, Purge: []connection.SeqRange{{From: 1, To: 2}}, PurgeCount: 2, InFlight: []connection.InFlightMessage{}}),
			cancelCmd(2), connection.ErrMessageNotPending, false},
		{"never queued", base, cancelCmd(3), connection.ErrUnknownMessage, false},
		{"no reason", base, connection.CancelMessage{MessageID: msgID(1), Seq: 1, Actor: "op"}, connection.ErrInvalidCommand, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.history...)
			evs, err := c.Cancel(tt.cmd, at(1))
			if !errors.Is(err, tt.want) || evs != nil {
				t.Fatalf("Cancel = %v, %v; want %v", evs, err, tt.want)
			}
			var np *connection.MessageNotPendingError
			if errors.As(err, &np) && np.Cancelled != tt.wantCancelled {
				t.Fatalf("Cancelled = %v, want %v", np.Cancelled, tt.wantCancelled)
			}
			if tt.name == "no reason" {
				if code, _ := connection.ErrorCode(err); code != connection.CodeMissingReason {
					t.Fatalf("code %q, want missing_reason", code)
				}
			}
		})
	}
}

// TestClearAfterCancelLeavesTheCancelledMessageOut: a clear purges only pending messages, so a
// cancelled message is in neither a whole-queue nor a broadcast clear's purged set.
func TestClearAfterCancelLeavesTheCancelledMessageOut(t *testing.T) {
	h := append([]connection.Event{registered(connection.OnBanHold), paired()}, broadcast(bcastID, 1)...)
	h = append(h, queued(4))
	b1 := connection.BroadcastMessageID(bcastID, 1)
	for _, scope := range []connection.ClearScope{connection.WholeQueue, connection.BroadcastScope(bcastID)} {
		c := mustLoad(t, h...)
		evs, err := c.Cancel(connection.CancelMessage{MessageID: b1, Seq: 2, Reason: "r", Actor: "op"}, at(1))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(evs[0]); err != nil {
			t.Fatal(err)
		}
		evs, err = c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: scope, Reason: "r", Actor: "op"}, at(2))
		if err != nil {
			t.Fatal(err)
		}
		req := evs[0].(connection.ClearQueueRequested)
		if req.Covers(2) {
			t.Fatalf("%s: the clear covers the cancelled message: %v", scope, req.Purge)
		}
		wantCount := uint64(3)
		if !scope.IsWholeQueue() {
			wantCount = 2
		}
		if req.PurgeCount != wantCount {
			t.Fatalf("%s: purge count %d, want %d (%v)", scope, req.PurgeCount, wantCount, req.Purge)
		}
	}
}
