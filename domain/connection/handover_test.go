package connection_test

import (
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func deferred(seq uint64, attempt int) connection.Event {
	return connection.MessageSendDeferred{MessageID: msgID(seq), Seq: seq, Attempt: attempt, Reason: "not_connected", DeferredAt: t0}
}

func retried(seq uint64, attempt int) connection.Event {
	return connection.MessageSendRetried{MessageID: msgID(seq), Seq: seq, Attempt: attempt, RetriedAt: t0}
}

func deferSend(seq uint64) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.DeferSend(connection.SendRefused{MessageID: msgID(seq), Seq: seq, Reason: "not_connected"}, at(2))
	}
}

func out(seq uint64, kind connection.MessageStatus, code string) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.RecordOutcome(connection.Outcome{MessageID: msgID(seq), Seq: seq, Kind: kind, Code: code, Detail: "d"}, at(2))
	}
}

func retrySend(seq uint64) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.RetrySend(connection.RetrySend{MessageID: msgID(seq), Seq: seq}, at(2))
	}
}

// Every hand-over is fenced: a refused one is recorded deferred, and its retry is decided on
// the current state, so a clear, hold, ban or session loss recorded since the dispatch wins
// even when it is over by the time of the retry (issue 10.1).
func TestDeferAndRetrySend(t *testing.T) {
	inFlight := history(base, queued(1), queued(2), dispatched(msgID(1), 1))
	isDeferred := history(inFlight, deferred(1, 1))
	runDecisions(t, []decision{
		{name: "defer a message handed over", given: inFlight, when: deferSend(1),
			then: []connection.Event{connection.MessageSendDeferred{MessageID: msgID(1), Seq: 1, Attempt: 1, Reason: "not_connected", DeferredAt: at(2)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if d := c.SendDeferred(); len(d) != 1 || d[0].MessageID != msgID(1) || len(c.InFlight()) != 1 {
					t.Fatalf("deferred %v, in flight %v", d, c.InFlight())
				}
			}},
		{name: "defer twice", given: isDeferred, when: deferSend(1), err: connection.ErrNotInFlight},
		{name: "defer a message not dispatched", given: inFlight, when: deferSend(2), err: connection.ErrNotInFlight},
		{name: "defer without reason", given: inFlight, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.DeferSend(connection.SendRefused{MessageID: msgID(1), Seq: 1}, at(2))
		}, err: connection.ErrInvalidCommand},
		{name: "defer while banned (a fact)", given: history(inFlight, banned()), when: deferSend(1),
			then: []connection.Event{connection.MessageSendDeferred{MessageID: msgID(1), Seq: 1, Attempt: 1, Reason: "not_connected", DeferredAt: at(2)}}},
		{name: "retry fences the next attempt", given: isDeferred, when: retrySend(1),
			then: []connection.Event{connection.MessageSendRetried{MessageID: msgID(1), Seq: 1, Attempt: 2, RetriedAt: at(2)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if len(c.SendDeferred()) != 0 {
					t.Fatalf("still deferred after the retry: %v", c.SendDeferred())
				}
			}},
		{name: "second deferral numbers the attempt", given: history(isDeferred, retried(1, 2)), when: deferSend(1),
			then: []connection.Event{connection.MessageSendDeferred{MessageID: msgID(1), Seq: 1, Attempt: 2, Reason: "not_connected", DeferredAt: at(2)}}},
		{name: "retry of a message not deferred", given: inFlight, when: retrySend(1), err: connection.ErrNotInFlight},
		{name: "retry after a hold that came and went", given: history(isDeferred, opHeld(),
			connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: t0}),
			when: retrySend(1), err: connection.ErrSendInterrupted},
		{name: "retry after a ban that came and went", given: history(isDeferred, banned(),
			connection.BanLifted{Actor: "system", LiftedAt: t0}, connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: t0}),
			when: retrySend(1), err: connection.ErrSendInterrupted},
		{name: "retry after a session loss and a new pairing", given: history(isDeferred,
			connection.SessionInvalidated{Reason: "401", Actor: "system", InvalidatedAt: t0}, connection.SessionPaired{Actor: "system", PairedAt: t0}),
			when: retrySend(1), err: connection.ErrSendInterrupted},
		{name: "retry while held", given: history(isDeferred, opHeld()), when: retrySend(1), err: connection.ErrSendInterrupted},
		{name: "retry while clearing a broadcast", given: history(base, queued(1), broadcast(bcastID, 2), dispatched(msgID(1), 1), deferred(1, 1),
			clearRequested(connection.BroadcastScope(bcastID), 4, []connection.SeqRange{{From: 2, To: 4}}, nil)),
			when: retrySend(1), err: connection.ErrQueueClearing},
		{name: "a deferral older than the disruption does not matter after a new dispatch",
			given: history(base, queued(1), queued(2), opHeld(), connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: t0},
				dispatched(msgID(1), 1), deferred(1, 1)),
			when: retrySend(1), then: []connection.Event{connection.MessageSendRetried{MessageID: msgID(1), Seq: 1, Attempt: 2, RetriedAt: at(2)}}},
		{name: "a clear fails a deferred message not_sent and reports it apart from those in flight",
			given: history(base, queued(1), queued(2), queued(3), dispatched(msgID(1), 1), dispatched(msgID(2), 2), deferred(2, 1)),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: connection.WholeQueue, Reason: "ban", Actor: "op"}, at(2))
			},
			then: []connection.Event{
				connection.ClearQueueRequested{ClearID: clearID, Scope: connection.WholeQueue, RequestedBy: "op", Reason: "ban", RequestedAt: at(2),
					UpToSeq: 3, Purge: []connection.SeqRange{{From: 3, To: 3}}, PurgeCount: 1,
					InFlight: []connection.InFlightMessage{{MessageID: msgID(1), Seq: 1}},
					NotSent:  []connection.InFlightMessage{{MessageID: msgID(2), Seq: 2}}, Then: connection.ClearThenKeep},
				connection.MessageFailed{MessageID: msgID(2), Seq: 2, Code: connection.FailureNotSent,
					Detail: "cleared before it was handed over (clear " + clearID.String() + ")", FailedAt: at(2)},
			},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if _, err := retrySend(2)(c); err == nil {
					t.Fatal("retry of a message the clear failed not_sent was allowed")
				}
				events, err := c.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: "clearing"}, at(3))
				if err != nil {
					t.Fatal(err)
				}
				qc := events[0].(connection.QueueCleared)
				if qc.InFlightCount != 1 || qc.NotSentCount != 1 || qc.NotSent[0].MessageID != msgID(2) || qc.PurgedCount != 1 {
					t.Fatalf("report %+v", qc)
				}
			}},
		{name: "a broadcast clear leaves a deferred 1:1 message alone",
			given: history(base, queued(1), broadcast(bcastID, 2), dispatched(msgID(1), 1), deferred(1, 1)),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: connection.BroadcastScope(bcastID), Reason: "ban", Actor: "op"}, at(2))
			},
			then: []connection.Event{connection.ClearQueueRequested{ClearID: clearID, Scope: connection.BroadcastScope(bcastID), RequestedBy: "op",
				Reason: "ban", RequestedAt: at(2), UpToSeq: 4, Purge: []connection.SeqRange{{From: 2, To: 4}}, PurgeCount: 3,
				InFlight: []connection.InFlightMessage{}, Then: connection.ClearThenKeep}}},
		{name: "sent refused for a deferred message", given: isDeferred, when: out(1, connection.MessageStatusSent, ""), err: connection.ErrNotInFlight},
		{name: "unknown refused for a deferred message", given: isDeferred, when: out(1, connection.MessageStatusUnknown, ""), err: connection.ErrNotInFlight},
		{name: "delivered refused for a deferred message", given: isDeferred, when: out(1, connection.MessageStatusDelivered, ""), err: connection.ErrNotInFlight},
		{name: "failed not_sent for a deferred message", given: isDeferred, when: out(1, connection.MessageStatusFailed, connection.FailureNotSent),
			then: []connection.Event{connection.MessageFailed{MessageID: msgID(1), Seq: 1, Code: connection.FailureNotSent, Detail: "d", FailedAt: at(2)}}},
		{name: "sent after a retry", given: history(isDeferred, retried(1, 2)), when: out(1, connection.MessageStatusSent, ""),
			then: []connection.Event{connection.MessageSent{MessageID: msgID(1), Seq: 1, SentAt: at(2)}}},
	})
}

// Receipts are refused for messages WhatsApp never had, whatever clear, expiry or failure ended
// them, not only the latest clear (issue 10.4).
func TestReceiptsOnlyForMessagesHandedOver(t *testing.T) {
	clear1 := connection.ClearQueueRequested{ClearID: clearID, Scope: connection.WholeQueue, RequestedBy: "op", Reason: "r", RequestedAt: t0,
		UpToSeq: 3, Purge: []connection.SeqRange{{From: 2, To: 3}}, PurgeCount: 2, InFlight: []connection.InFlightMessage{}}
	clear2 := connection.ClearQueueRequested{ClearID: connection.ClearIDFor(tenant, connID, "clear-2"), Scope: connection.WholeQueue,
		RequestedBy: "op", Reason: "r", RequestedAt: t0, UpToSeq: 5, Purge: []connection.SeqRange{{From: 5, To: 5}}, PurgeCount: 1,
		InFlight: []connection.InFlightMessage{}}
	h := history(base, queued(1), queued(2), queued(3), dispatched(msgID(1), 1), sent(msgID(1), 1),
		clear1, cleared(clear1),
		queuedTTL(4, at(1)), connection.MessageExpired{MessageID: msgID(4), Seq: 4, ExpiresAt: at(1), ExpiredAt: at(1)},
		queued(5), clear2, cleared(clear2),
		queued(6), dispatched(msgID(6), 6), connection.MessageFailed{MessageID: msgID(6), Seq: 6, Code: "rejected", FailedAt: t0},
		queued(7), dispatched(msgID(7), 7), connection.MessageOutcomeUnknown{MessageID: msgID(7), Seq: 7, Cause: "timeout", At: t0},
		queued(8), dispatched(msgID(8), 8), deferred(8, 1), connection.MessageFailed{MessageID: msgID(8), Seq: 8, Code: connection.FailureNotSent, FailedAt: t0},
		queued(9))
	for _, tc := range []struct {
		seq uint64
		ok  bool
		why string
	}{
		{1, true, "sent"},
		{2, false, "purged by an earlier clear"},
		{3, false, "purged by an earlier clear"},
		{4, false, "expired"},
		{5, false, "purged by the latest clear"},
		{6, false, "failed (rejected)"},
		{7, true, "outcome unknown: WhatsApp may have it"},
		{8, false, "deferred then failed not_sent"},
		{9, false, "never dispatched"},
		{10, false, "never queued"},
	} {
		for _, kind := range []connection.MessageStatus{connection.MessageStatusDelivered, connection.MessageStatusRead} {
			c := load(t, h)
			events, err := out(tc.seq, kind, "")(c)
			if got := err == nil; got != tc.ok {
				t.Errorf("%s for seq %d (%s): events %s, err %v; want accepted %v", kind, tc.seq, tc.why, dump(events), err, tc.ok)
			}
		}
		for _, kind := range []connection.MessageStatus{connection.MessageStatusSent, connection.MessageStatusUnknown} {
			if events, err := out(tc.seq, kind, "")(load(t, h)); err == nil {
				t.Errorf("%s for seq %d (%s) accepted: %s", kind, tc.seq, tc.why, dump(events))
			}
		}
	}
	// The state survives a snapshot.
	c := load(t, h)
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := connection.Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out(7, connection.MessageStatusRead, "")(r); err != nil {
		t.Errorf("read of seq 7 after restore: %v", err)
	}
	if _, err := out(6, connection.MessageStatusRead, "")(r); err == nil {
		t.Error("read of seq 6 after restore accepted")
	}
}
