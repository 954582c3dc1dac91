package connection_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func dispatchEpoch(seq, epoch uint64) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.Dispatch(connection.DispatchMessage{MessageID: msgID(seq), Seq: seq, Epoch: epoch}, at(2))
	}
}

func retryEpoch(seq, epoch uint64) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.RetrySend(connection.RetrySend{MessageID: msgID(seq), Seq: seq, Epoch: epoch}, at(2))
	}
}

// The stream fence of per-connection leases (issue 15.1): the epoch of the dispatcher's lease is
// recorded on every hand-over, and a hand-over with an epoch below the highest recorded is
// refused, so a stale owner whose lease lapsed unseen (a GC pause, a partition) and was taken
// over cannot hand anything over once the new owner recorded a dispatch, even if it still
// believes it holds the lease.
func TestStaleEpochRefused(t *testing.T) {
	ownedBy5 := history(base, queued(1), queued(2), queued(3),
		connection.MessageDispatched{MessageID: msgID(1), Seq: 1, DispatchedAt: t0, Epoch: 5},
		connection.MessageSent{MessageID: msgID(1), Seq: 1, SentAt: t0})
	deferredAt5 := history(base, queued(1), queued(2),
		connection.MessageDispatched{MessageID: msgID(1), Seq: 1, DispatchedAt: t0, Epoch: 5}, deferred(1, 1))
	runDecisions(t, []decision{
		{name: "dispatch records the epoch", given: ownedBy5, when: dispatchEpoch(2, 5),
			then: []connection.Event{connection.MessageDispatched{MessageID: msgID(2), Seq: 2, DispatchedAt: at(2), Epoch: 5}}},
		{name: "a newer owner dispatches", given: ownedBy5, when: dispatchEpoch(2, 6),
			then: []connection.Event{connection.MessageDispatched{MessageID: msgID(2), Seq: 2, DispatchedAt: at(2), Epoch: 6}}},
		{name: "a stale owner is refused", given: ownedBy5, when: dispatchEpoch(2, 4), err: connection.ErrStaleEpoch,
			check: func(t *testing.T, _ *connection.Connection, err error) {
				var se *connection.StaleEpochError
				if !errors.As(err, &se) || se.Epoch != 4 || se.Recorded != 5 {
					t.Fatalf("err = %#v", err)
				}
				if code, ok := connection.ErrorCode(err); !ok || code != connection.CodeStaleEpoch {
					t.Fatalf("code = %q, %v", code, ok)
				}
			}},
		{name: "no lease (epoch 0) after a leased dispatch is refused", given: ownedBy5, when: dispatchEpoch(2, 0), err: connection.ErrStaleEpoch},
		{name: "the stale check comes before the queue state", given: history(ownedBy5, opHeld()), when: dispatchEpoch(2, 4), err: connection.ErrStaleEpoch},
		{name: "retry records the epoch", given: deferredAt5, when: retryEpoch(1, 7),
			then: []connection.Event{connection.MessageSendRetried{MessageID: msgID(1), Seq: 1, Attempt: 2, RetriedAt: at(2), Epoch: 7}}},
		{name: "a stale retry is refused", given: deferredAt5, when: retryEpoch(1, 3), err: connection.ErrStaleEpoch},
		{name: "a retry by a newer owner raises the fence", given: history(base, queued(1), queued(2),
			connection.MessageDispatched{MessageID: msgID(1), Seq: 1, DispatchedAt: t0, Epoch: 5}, deferred(1, 1),
			connection.MessageSendRetried{MessageID: msgID(1), Seq: 1, Attempt: 2, RetriedAt: t0, Epoch: 8},
			connection.MessageSent{MessageID: msgID(1), Seq: 1, SentAt: t0}),
			when: dispatchEpoch(2, 7), err: connection.ErrStaleEpoch},
		{name: "old streams without epochs accept any", given: history(base, queued(1), queued(2), dispatched(msgID(1), 1), sent(msgID(1), 1)),
			when: dispatchEpoch(2, 0), then: []connection.Event{connection.MessageDispatched{MessageID: msgID(2), Seq: 2, DispatchedAt: at(2)}}},
	})
}

// Events written before the epoch existed decode (epoch 0), and a snapshot keeps the fence.
func TestEpochDecodesAndSnapshots(t *testing.T) {
	old := []byte(`{"message_id":"` + msgID(1).String() + `","seq":1,"dispatched_at":"2026-01-01T00:00:00Z"}`)
	ev, err := connection.Decode(connection.TypeMessageDispatched, old)
	if err != nil {
		t.Fatal(err)
	}
	if d := ev.(connection.MessageDispatched); d.Epoch != 0 || d.Seq != 1 {
		t.Fatalf("decoded %+v", d)
	}
	c := load(t, history(base, queued(1), connection.MessageDispatched{MessageID: msgID(1), Seq: 1, DispatchedAt: t0, Epoch: 9}))
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := connection.Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	if r.Epoch() != 9 {
		var m map[string]any
		_ = json.Unmarshal(snap, &m)
		t.Fatalf("restored epoch %d, snapshot %v", r.Epoch(), m)
	}
}
