package connection_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

func apply(t *testing.T, c *connection.Connection, evs []connection.Event, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := c.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnpairHoldsTheQueueAndPairsAgain(t *testing.T) {
	c := mustLoad(t, registered(connection.OnBanHold), paired(), queued(1))
	evs, err := c.Unpair(connection.Unpair{Actor: "key:op"}, at(1))
	if err != nil {
		t.Fatal(err)
	}
	si, ok := evs[0].(connection.SessionInvalidated)
	if len(evs) != 2 || !ok || si.Actor != "key:op" || si.Cause != connection.ReasonUnpaired || si.Reason != connection.LogoutUnpaired {
		t.Fatalf("events %#v", evs)
	}
	if h, ok := evs[1].(connection.QueueHeld); !ok || h.Reason != connection.HoldOnSessionInvalid {
		t.Fatalf("second event %#v, want QueueHeld session_invalid", evs[1])
	}
	apply(t, c, evs, nil)
	if _, err := c.Dispatch(connection.DispatchMessage{MessageID: msgID(1), Seq: 1}, at(2)); err == nil {
		t.Fatal("dispatch after unpair accepted")
	}
	// Again: a no-op.
	if evs, err := c.Unpair(connection.Unpair{Actor: "key:op"}, at(2)); err != nil || len(evs) != 0 {
		t.Fatalf("second unpair: %v %v, want no events", evs, err)
	}
	evs, err = c.Pair(connection.PairSession{JID: "49@s.whatsapp.net", Actor: "system"}, at(3))
	apply(t, c, evs, err)
	if c.LinkStatus() != connection.LinkStatusActive {
		t.Fatalf("link %s after pairing again", c.LinkStatus())
	}
}

func TestRetireRefusesPendingAndInFlight(t *testing.T) {
	c := mustLoad(t, registered(connection.OnBanHold), paired(), queued(1), queued(2), dispatched(msgID(1), 1))
	var qe *connection.QueueNotEmptyError
	_, err := c.Retire(connection.Retire{Reason: "number sold", Actor: "op"}, at(1))
	if !errors.As(err, &qe) || qe.Pending != 1 || qe.InFlight != 1 || !errors.Is(err, connection.ErrQueueNotEmpty) {
		t.Fatalf("retire with work left: %v", err)
	}
	if code, _ := connection.ErrorCode(err); code != connection.CodeQueueNotEmpty {
		t.Fatalf("code %s", code)
	}
	if _, err := c.Retire(connection.Retire{Actor: "op"}, at(1)); !errors.Is(err, connection.ErrInvalidCommand) {
		t.Fatalf("retire without reason: %v", err)
	}
}

func TestClearThenRetireRetiresAtCompletion(t *testing.T) {
	c := mustLoad(t, registered(connection.OnBanHold), paired(), queued(1), queued(2), dispatched(msgID(1), 1))
	clearID := uuid.New()
	if _, err := c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: connection.BroadcastScope(uuid.New()),
		Reason: "r", Actor: "op", Then: connection.ClearThenRetire}, at(1)); !errors.Is(err, connection.ErrInvalidCommand) {
		t.Fatalf("scoped clear then retire: %v", err)
	}
	evs, err := c.RequestClear(connection.RequestClear{ClearID: clearID, Reason: "number sold", Actor: "op", Then: connection.ClearThenRetire}, at(1))
	apply(t, c, evs, err)
	if _, err := c.Retire(connection.Retire{Reason: "r", Actor: "op"}, at(1)); !errors.Is(err, connection.ErrQueueNotEmpty) {
		t.Fatalf("retire while clearing: %v", err)
	}
	evs, err = c.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: "system"}, at(2))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := evs[len(evs)-1].(connection.ConnectionRetired)
	if len(evs) != 2 || !ok || r.ClearID != clearID || r.RetiredBy != "op" || r.Reason != "number sold" {
		t.Fatalf("completion %#v", evs)
	}
	apply(t, c, evs, nil)
	if c.LinkStatus() != connection.LinkStatusRetired {
		t.Fatalf("link %s", c.LinkStatus())
	}
	// The message in flight may still be acknowledged.
	evs, err = c.RecordOutcome(connection.Outcome{Kind: connection.MessageStatusSent, MessageID: msgID(1), Seq: 1}, at(3))
	apply(t, c, evs, err)
	// Everything else is refused.
	refused := map[string]error{}
	_, refused["enqueue"] = c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k5", Recipient: "+4915112345678", Text: "x", Actor: "op"}, at(4))
	_, refused["hold"] = c.Hold(connection.HoldQueue{Actor: "op"}, at(4))
	_, refused["clear"] = c.RequestClear(connection.RequestClear{ClearID: uuid.New(), Reason: "r", Actor: "op"}, at(4))
	_, refused["pair"] = c.Pair(connection.PairSession{Actor: "op"}, at(4))
	_, refused["unpair"] = c.Unpair(connection.Unpair{Actor: "op"}, at(4))
	_, refused["retire"] = c.Retire(connection.Retire{Reason: "r", Actor: "op"}, at(4))
	_, refused["on_ban"] = c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: connection.OnBanResume, Actor: "op"}, at(4))
	_, refused["register"] = c.Register(connection.RegisterConnection{ConnectionID: "c1", TenantID: "t1", Phone: "+491701234567", Actor: "op"}, at(4))
	for name, err := range refused {
		if !errors.Is(err, connection.ErrConnectionRetired) {
			t.Errorf("%s after retire: %v, want ErrConnectionRetired", name, err)
		}
	}
	// A snapshot keeps the retirement.
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	back, err := connection.Restore(b)
	if err != nil || back.LinkStatus() != connection.LinkStatusRetired {
		t.Fatalf("restored %v %v", back.LinkStatus(), err)
	}
}
