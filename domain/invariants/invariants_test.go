package invariants_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
)

func mid(i int) uuid.UUID { return uuid.NewSHA1(uuid.Nil, []byte{byte(i)}) }

// hist builds a history with consecutive revisions.
type hist []invariants.Recorded

func (h hist) add(evs ...connection.Event) hist {
	for _, e := range evs {
		h = append(h, invariants.Recorded{Revision: uint64(len(h)), Event: e})
	}
	return h
}

func q(i int) connection.MessageQueued {
	return connection.MessageQueued{MessageID: mid(i), Seq: uint64(i), Recipient: "+491701234567", Text: "x"}
}
func d(i int) connection.MessageDispatched {
	return connection.MessageDispatched{MessageID: mid(i), Seq: uint64(i)}
}
func sent(i int) connection.MessageSent {
	return connection.MessageSent{MessageID: mid(i), Seq: uint64(i)}
}

var clearID = uuid.MustParse("00000000-0000-0000-0000-0000000000c1")

// active is a registered, paired connection with messages 1..3 queued.
func active() hist {
	return hist{}.add(
		connection.ConnectionRegistered{ConnectionID: "c", TenantID: "t"},
		connection.SessionPaired{},
		q(1), q(2), q(3),
	)
}

// clear requests a clear of the whole queue covering from..to with the given in-flight messages.
func clear(from, to uint64, inFlight ...connection.InFlightMessage) connection.ClearQueueRequested {
	return connection.ClearQueueRequested{ClearID: clearID, UpToSeq: to, Purge: []connection.SeqRange{{From: from, To: to}},
		PurgeCount: to - from + 1, InFlight: inFlight}
}

func cleared(r connection.ClearQueueRequested) connection.QueueCleared {
	return connection.QueueCleared{ClearID: r.ClearID, Purged: r.Purge, PurgedCount: r.PurgeCount, InFlight: r.InFlight, InFlightCount: len(r.InFlight),
		NotSent: r.NotSent, NotSentCount: len(r.NotSent)}
}

func TestValidHistoryPasses(t *testing.T) {
	req := clear(3, 3, connection.InFlightMessage{MessageID: mid(2), Seq: 2})
	h := active().add(d(1), sent(1), d(2), req, cleared(req), connection.MessageFailed{MessageID: mid(2), Seq: 2, Code: "x"}, q(4), d(4))
	r := invariants.Check(h, []invariants.Send{{MessageID: mid(1), Fence: 5}, {MessageID: mid(2), Fence: 7}, {MessageID: mid(4), Fence: 12}})
	if !r.OK() {
		t.Fatalf("violations on a valid history: %v", r.Violations)
	}
	if r.Queued != 4 || r.Purged != 1 || r.Acknowledged != 2 || len(r.InFlight) != 1 || r.InFlight[0] != mid(4) || len(r.Pending) != 0 {
		t.Fatalf("report = %+v, want 4 queued, 1 purged, 2 acknowledged, in flight [%s], none pending", r, mid(4))
	}
}

func deferred(i, attempt int) connection.MessageSendDeferred {
	return connection.MessageSendDeferred{MessageID: mid(i), Seq: uint64(i), Attempt: attempt, Reason: "not_connected"}
}
func retried(i, attempt int) connection.MessageSendRetried {
	return connection.MessageSendRetried{MessageID: mid(i), Seq: uint64(i), Attempt: attempt}
}

func TestCheckerCatchesEachViolation(t *testing.T) {
	req := clear(1, 3)
	notSentClear := clear(2, 3)
	notSentClear.NotSent = []connection.InFlightMessage{{MessageID: mid(1), Seq: 1}}
	tests := []struct {
		name  string
		h     hist
		sends []invariants.Send
		want  invariants.Kind
		g     invariants.Guarantee
	}{
		{"G1 dispatch of a purged message after the request", active().add(req, cleared(req), d(1)), nil, invariants.KindDispatchPurged, invariants.G1},
		{"G1 send of a purged message", active().add(req), []invariants.Send{{MessageID: mid(2)}}, invariants.KindSentPurged, invariants.G1},
		{"G2 enqueue while clearing", active().add(req, q(4)), nil, invariants.KindQueuedWhileClearing, invariants.G2},
		{"G2 broadcast while clearing", active().add(req, connection.BroadcastStarted{BroadcastID: mid(99)}), nil, invariants.KindQueuedWhileClearing, invariants.G2},
		{"G2 dispatch while clearing", active().add(clear(2, 3), d(1)), nil, invariants.KindDispatchClearing, invariants.G2},
		{"G3 purge count overstated", active().add(connection.ClearQueueRequested{ClearID: clearID, Purge: []connection.SeqRange{{From: 1, To: 3}}, PurgeCount: 4}), nil, invariants.KindPurgeCount, invariants.G3},
		{"G3 pending message left out of the purge", active().add(clear(1, 2)), nil, invariants.KindPendingNotPurged, invariants.G3},
		{"G3 purge covers a dispatched message", active().add(d(1), clear(1, 3)), nil, invariants.KindPurgeNotPending, invariants.G3},
		{"G3 in-flight list wrong", active().add(d(1), clear(2, 3)), nil, invariants.KindInFlightMismatch, invariants.G3},
		{"G3 cleared report differs", active().add(req, connection.QueueCleared{ClearID: clearID, Purged: []connection.SeqRange{{From: 1, To: 2}}, PurgedCount: 2}), nil, invariants.KindClearedMismatch, invariants.G3},
		{"G3 cleared without request", active().add(cleared(req)), nil, invariants.KindClearedNoRequest, invariants.G3},
		{"G3 second terminal state", active().add(d(1), sent(1), connection.MessageFailed{MessageID: mid(1), Seq: 1}), nil, invariants.KindAckNotInFlight, invariants.G3},
		{"G3 expired after dispatch", active().add(d(1), connection.MessageExpired{MessageID: mid(1), Seq: 1}), nil, invariants.KindExpiredTwice, invariants.G3},
		{"G3 event about an unknown message", active().add(d(7)), nil, invariants.KindUnknownMessage, invariants.G3},
		{"G5 dispatched twice", active().add(d(1), d(1)), nil, invariants.KindDispatchedTwice, invariants.G5},
		{"G5 sent twice", active().add(d(1)), []invariants.Send{{MessageID: mid(1), Fence: 5}, {MessageID: mid(1), Order: 1, Fence: 5}}, invariants.KindSentTwice, invariants.G5},
		{"G1 hand-over without a fence", active().add(d(1)), []invariants.Send{{MessageID: mid(1)}}, invariants.KindHandOverUnfenced, invariants.G1},
		{"G1 hand-over on another message's fence", active().add(d(1), sent(1), d(2)), []invariants.Send{{MessageID: mid(2), Fence: 5}}, invariants.KindHandOverUnfenced, invariants.G1},
		{"G3 receipt for a failed message", active().add(d(1), connection.MessageFailed{MessageID: mid(1), Seq: 1, Code: "rejected"},
			connection.MessageDelivered{MessageID: mid(1), Seq: 1}), nil, invariants.KindReceiptUndispatched, invariants.G3},
		{"G3 receipt for a deferred message", active().add(d(1), deferred(1, 1), connection.MessageRead{MessageID: mid(1), Seq: 1}), nil, invariants.KindReceiptUndispatched, invariants.G3},
		{"G3 sent for a deferred message", active().add(d(1), deferred(1, 1), sent(1)), nil, invariants.KindAckNotInFlight, invariants.G3},
		{"G5 retry of a message not deferred", active().add(d(1), retried(1, 2)), nil, invariants.KindRetryNotDeferred, invariants.G5},
		{"G1 retry fenced after a hold that came and went", active().add(d(1), deferred(1, 1), connection.QueueHeld{}, connection.QueueResumed{}, retried(1, 2)), nil,
			invariants.KindRetryDisrupted, invariants.G1},
		{"G2 retry while clearing", active().add(d(1), deferred(1, 1), clear(2, 3), retried(1, 2)), nil, invariants.KindDispatchClearing, invariants.G2},
		{"G3 deferred message reported in flight", active().add(d(1), deferred(1, 1), clear(2, 3, connection.InFlightMessage{MessageID: mid(1), Seq: 1})), nil,
			invariants.KindNotSentMismatch, invariants.G3},
		{"G3 deferred message not failed by the clear", active().add(d(1), deferred(1, 1), notSentClear, cleared(notSentClear)), nil,
			invariants.KindNotSentNotFailed, invariants.G3},
		{"G5 sent without dispatch", active(), []invariants.Send{{MessageID: mid(1)}}, invariants.KindSentUndispatched, invariants.G5},
		{"G7 dispatch while banned", active().add(connection.ConnectionBanned{}, d(1)), nil, invariants.KindDispatchUnlinked, invariants.G7},
		{"G7 dispatch while session invalid", active().add(connection.SessionInvalidated{}, d(1)), nil, invariants.KindDispatchUnlinked, invariants.G7},
		{"G7 dispatch while held", active().add(connection.QueueHeld{}, d(1)), nil, invariants.KindDispatchHeld, invariants.G7},
		{"G7 dispatch after lift before resume", active().add(connection.ConnectionBanned{}, connection.BanLifted{}, d(1)), nil, invariants.KindDispatchAfterLift, invariants.G7},
		{"G7 clear then=resume reopens a banned connection", active().add(connection.ConnectionBanned{}, connection.QueueHeld{},
			req, cleared(req), connection.QueueResumed{Reason: connection.ResumeAfterClear}), nil, invariants.KindResumeUnlinked, invariants.G7},
		{"G7 resume while session invalid", active().add(connection.SessionInvalidated{}, connection.QueueHeld{},
			connection.QueueResumed{Reason: connection.ResumeByOperator}), nil, invariants.KindResumeUnlinked, invariants.G7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := invariants.Check(tt.h, tt.sends)
			for _, v := range r.Violations {
				if v.Kind == tt.want && v.Guarantee == tt.g {
					return
				}
			}
			t.Fatalf("want a %s %s violation, got %v", tt.g, tt.want, r.Violations)
		})
	}
}

func TestLiftThenResumeOrClearAllowsDispatch(t *testing.T) {
	req := clear(2, 3, connection.InFlightMessage{MessageID: mid(1), Seq: 1})
	for name, tail := range map[string][]connection.Event{
		"resume": {connection.QueueHeld{}, connection.BanLifted{}, connection.QueueResumed{}, d(2)},
		"clear":  {connection.BanLifted{}, req, cleared(req), q(4), d(4)},
	} {
		h := active().add(d(1), connection.ConnectionBanned{}).add(tail...)
		if r := invariants.Check(h, nil); !r.OK() {
			t.Errorf("%s: violations %v", name, r.Violations)
		}
		// Without the resume or the clear the same dispatch is a G7 violation.
		cut := h[:len(h)-1-len(tail)+1].add(tail[len(tail)-1])
		if r := invariants.Check(cut, nil); r.OK() {
			t.Errorf("%s: dispatch right after the lift passed", name)
		}
	}
}

// A retried hand-over is ordered against the stream (issue 10.1): fenced by its own record it
// passes; on the fence an earlier, refused attempt spent, after a clear (or a hold) recorded
// during the backoff, it is a G1 violation — what the dispatcher did before hand-overs were
// fenced. The first attempt racing a clear appended after its fence is not: the clear saw the
// message in flight.
func TestHandOversOrderedAgainstTheStream(t *testing.T) {
	m1 := connection.InFlightMessage{MessageID: mid(1), Seq: 1}
	// Revisions: 5 dispatched, 6 deferred, 7 retried, 8 sent.
	fenced := active().add(d(1), deferred(1, 1), retried(1, 2), sent(1))
	r := invariants.Check(fenced, []invariants.Send{
		{MessageID: mid(1), Fence: 5, Observed: 5, Refused: true},
		{MessageID: mid(1), Order: 1, Fence: 7, Observed: 7},
	})
	if !r.OK() || r.Acknowledged != 1 {
		t.Fatalf("fenced retry: %v, report %+v", r.Violations, r)
	}

	// The clear (6) lists the message in flight; the race with the first attempt is allowed.
	req := clear(2, 3, m1)
	race := active().add(d(1), req, cleared(req), sent(1))
	if r := invariants.Check(race, []invariants.Send{{MessageID: mid(1), Fence: 5, Observed: 7}}); !r.OK() {
		t.Fatalf("first attempt racing a clear: %v", r.Violations)
	}

	// Before the fix: attempt 1 refused (observed 5), a clear requested and completed during the
	// backoff (6, 7), attempt 2 handed over on the same fence (observed 7).
	stale := []invariants.Send{
		{MessageID: mid(1), Fence: 5, Observed: 5, Refused: true},
		{MessageID: mid(1), Order: 1, Fence: 5, Observed: 7},
	}
	r = invariants.Check(active().add(d(1), req, cleared(req), sent(1)), stale)
	if !r.Has(invariants.KindFenceReused) || !r.Has(invariants.KindHandOverDisrupted) {
		t.Fatalf("retry after a clear on a spent fence: want %s and %s, got %v", invariants.KindFenceReused, invariants.KindHandOverDisrupted, r.Violations)
	}
	// The same with a hold that came and went.
	r = invariants.Check(active().add(d(1), connection.QueueHeld{}, connection.QueueResumed{}, sent(1)), stale)
	if !r.Has(invariants.KindHandOverDisrupted) {
		t.Fatalf("retry after a hold on a spent fence: got %v", r.Violations)
	}
	// With the fence: the clear fails the deferred message not_sent; no hand-over follows.
	ns := clear(2, 3)
	ns.NotSent = []connection.InFlightMessage{m1}
	fixed := active().add(d(1), deferred(1, 1), ns, connection.MessageFailed{MessageID: mid(1), Seq: 1, Code: connection.FailureNotSent}, cleared(ns))
	if r := invariants.Check(fixed, stale[:1]); !r.OK() {
		t.Fatalf("clear of a deferred message: %v", r.Violations)
	}
}

func TestOutOfOrderHistory(t *testing.T) {
	h := active()
	h[3].Revision = 1
	if r := invariants.Check(h, nil); !r.Has(invariants.KindOutOfOrder) {
		t.Fatalf("want %s, got %v", invariants.KindOutOfOrder, r.Violations)
	}
}

func TestViolationString(t *testing.T) {
	v := invariants.Violation{Guarantee: invariants.G5, Kind: invariants.KindSentTwice, Revision: 7, MessageID: mid(1), Seq: 1}
	want := "G5 sent_twice at revision 7 message " + mid(1).String() + " seq 1"
	if got := v.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func cancelled(i int) connection.MessageCancelled {
	return connection.MessageCancelled{MessageID: mid(i), Seq: uint64(i), Reason: "r", CancelledBy: "op"}
}

func TestCancelledMessageIsTerminal(t *testing.T) {
	// Valid: message 2 cancelled, 1 and 3 dispatched and sent.
	h := active().add(cancelled(2), d(1), sent(1), d(3), sent(3))
	r := invariants.Check(h, []invariants.Send{{MessageID: mid(1), Fence: 6}, {MessageID: mid(3), Fence: 8}})
	if !r.OK() || r.Cancelled != 1 || r.Acknowledged != 2 || len(r.Pending) != 0 {
		t.Fatalf("valid history: %+v", r)
	}
	tests := []struct {
		name  string
		h     hist
		sends []invariants.Send
		want  invariants.Kind
	}{
		{"dispatched after cancel", active().add(cancelled(1), d(1)), nil, invariants.KindDispatchCancelled},
		{"cancelled after dispatch", active().add(d(1), cancelled(1)), nil, invariants.KindCancelNotPending},
		{"cancelled twice", active().add(cancelled(1), cancelled(1)), nil, invariants.KindCancelNotPending},
		{"expired after cancel", active().add(cancelled(1), connection.MessageExpired{MessageID: mid(1), Seq: 1}), nil, invariants.KindExpiredTwice},
		{"sent after cancel", active().add(cancelled(1)), []invariants.Send{{MessageID: mid(1), Fence: 5}}, invariants.KindSentCancelled},
		{"purged after cancel", active().add(cancelled(1), clear(1, 3)), nil, invariants.KindPurgeNotPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := invariants.Check(tt.h, tt.sends); !r.Has(tt.want) {
				t.Fatalf("violations %v, want %s", r.Violations, tt.want)
			}
		})
	}
}

// TestBroadcastChunksCheckedPerMessage checks that the checker reads a BroadcastQueued chunk
// as the MessageQueued events it stands for: its messages can be dispatched and purged, a
// chunk recorded while clearing breaks G2, and a chunk reusing a Seq breaks G3.
func TestBroadcastChunksCheckedPerMessage(t *testing.T) {
	bid := uuid.MustParse("00000000-0000-0000-0000-0000000000b1")
	chunk := func(first uint64) connection.BroadcastQueued {
		return connection.BroadcastQueued{BroadcastID: bid, FirstSeq: first, Recipients: []string{"+491701234567", "+491701234568"}}
	}
	first := chunk(4).Message(0)
	ok := active().add(chunk(4), connection.MessageDispatched{MessageID: first.MessageID, Seq: 4})
	req := clear(1, 5, connection.InFlightMessage{MessageID: first.MessageID, Seq: 4})
	req.Purge, req.PurgeCount = []connection.SeqRange{{From: 1, To: 3}, {From: 5, To: 5}}, 4
	ok = ok.add(req, cleared(req))
	if r := invariants.Check(ok, nil); !r.OK() || r.Queued != 5 || r.Purged != 4 || len(r.InFlight) != 1 || r.InFlight[0] != first.MessageID {
		t.Fatalf("report on a valid chunked history = %+v", r)
	}
	clearing := clear(1, 3)
	if r := invariants.Check(active().add(clearing, chunk(4)), nil); !has(r, invariants.G2) {
		t.Fatalf("a chunk queued while clearing passed: %+v", r)
	}
	if r := invariants.Check(active().add(chunk(3)), nil); !has(r, invariants.G3) {
		t.Fatalf("a chunk reusing Seq 3 passed: %+v", r)
	}
}

func has(r invariants.Report, g invariants.Guarantee) bool {
	for _, v := range r.Violations {
		if v.Guarantee == g {
			return true
		}
	}
	return false
}
