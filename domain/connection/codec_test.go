package connection_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// oneOfEach returns one event of every type, with every field set.
func oneOfEach() []connection.Event {
	req := clearRequested(connection.BroadcastScope(bcastID), 4, []connection.SeqRange{{From: 2, To: 4}},
		[]connection.InFlightMessage{{MessageID: msgID(1), Seq: 1}})
	// Fingerprints filled in, so that the round trip and FuzzDecode's seeds cover the field.
	return withFingerprints(history(
		registered(connection.OnBanResume),
		connection.OnBanPolicyChanged{Policy: connection.OnBanHold, ChangedBy: "op", ChangedAt: t0},
		connection.SessionPaired{JID: "jid", Actor: "op", PairedAt: t0},
		connection.SessionInvalidated{Reason: "401", Cause: connection.ReasonLoggedOut, Actor: "system", InvalidatedAt: t0},
		banned(),
		connection.ConnectionBanned{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "system", BannedAt: t0},
		connection.BanLifted{Reason: "appeal", Actor: "op", LiftedAt: t0},
		queuedTTL(1, at(5)),
		broadcast(bcastID, 2),
		connection.BroadcastQueued{BroadcastID: connection.BroadcastIDFor(tenant, connID, "b2"), FirstSeq: 5, FirstIndex: 0,
			Recipients: []string{alice, bob}, ExpiresAt: at(9), QueuedBy: "svc", QueuedAt: t0},
		dispatched(msgID(1), 1),
		connection.MessageSendDeferred{MessageID: msgID(1), Seq: 1, Attempt: 1, Reason: "not_connected", DeferredAt: t0},
		connection.MessageSendRetried{MessageID: msgID(1), Seq: 1, Attempt: 2, RetriedAt: t0},
		connection.MessageSent{MessageID: msgID(1), Seq: 1, ServerID: "3EB0", SentAt: t0},
		connection.MessageDelivered{MessageID: msgID(1), Seq: 1, DeliveredAt: t0},
		connection.MessageRead{MessageID: msgID(1), Seq: 1, ReadAt: t0},
		connection.MessageFailed{MessageID: msgID(1), Seq: 1, Code: "c", Detail: "d", FailedAt: t0},
		connection.MessageExpired{MessageID: msgID(1), Seq: 1, ExpiresAt: t0, ExpiredAt: at(1)},
		connection.MessageOutcomeUnknown{MessageID: msgID(1), Seq: 1, Cause: "timeout", At: t0},
		connection.MessageCancelled{MessageID: msgID(2), Seq: 2, Reason: "wrong text", CancelledBy: "op", CancelledAt: t0},
		connection.ConnectionRetired{Reason: "number sold", ClearID: msgID(99), RetiredBy: "op", RetiredAt: t0},
		connection.QueueResumed{Reason: connection.ResumeOnBanLifted, Note: "n", Actor: "system", ResumedAt: t0},
		req,
		cleared(req),
		clearRequested(connection.WholeQueue, 0, nil, nil),
		connection.TransportProblemObserved{Kind: connection.ProblemStreamReplaced, Reason: "conflict", Detail: "d", ObservedAt: t0},
		connection.SendingPolicyChanged{Policy: connection.SendingPolicy{MinInterval: 5 * time.Second, Jitter: time.Second, DailyCap: 200,
			TimeZone: "Europe/Berlin", QuietHours: &connection.QuietHours{Start: 22 * 60, End: 7*60 + 30}}, ChangedBy: "op", ChangedAt: t0},
	))
}

func TestCodecRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range oneOfEach() {
		typ, data, err := connection.Encode(e)
		if err != nil {
			t.Fatalf("encode %T: %v", e, err)
		}
		if typ != e.EventType() {
			t.Fatalf("Encode type = %q, want %q", typ, e.EventType())
		}
		got, err := connection.Decode(typ, data)
		if err != nil {
			t.Fatalf("decode %s %s: %v", typ, data, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip of %s:\n got %#v\nwant %#v\njson %s", typ, got, e, data)
		}
		seen[typ] = true
	}
	for _, typ := range connection.EventTypes() {
		if !seen[typ] {
			t.Errorf("no round-trip sample for %s", typ)
		}
	}
}

// TestStableTypeNames pins the stored type names: changing one cuts stored events off.
func TestStableTypeNames(t *testing.T) {
	want := []string{"BanLifted", "BroadcastQueued", "BroadcastStarted", "ClearQueueRequested", "ConnectionBanned", "ConnectionRegistered", "ConnectionRetired",
		"MessageCancelled", "MessageDelivered", "MessageDispatched", "MessageExpired", "MessageFailed", "MessageOutcomeUnknown", "MessageQueued",
		"MessageRead", "MessageSendDeferred", "MessageSendRetried", "MessageSent", "OnBanPolicyChanged", "QueueCleared", "QueueHeld", "QueueResumed", "SendingPolicyChanged", "SessionInvalidated",
		"SessionPaired", "TransportProblemObserved"}
	if got := connection.EventTypes(); !slices.Equal(got, want) {
		t.Fatalf("EventTypes() = %v\nwant %v", got, want)
	}
	for _, e := range oneOfEach() {
		if !connection.IsKnownType(e.EventType()) {
			t.Errorf("%T has unregistered type %q", e, e.EventType())
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	_, err := connection.Decode("MessageQueuedV9", []byte(`{}`))
	var unknown *connection.UnknownEventTypeError
	if !errors.Is(err, connection.ErrUnknownEventType) || !errors.As(err, &unknown) || unknown.Type != "MessageQueuedV9" {
		t.Fatalf("unknown type: err = %v", err)
	}
	for _, tc := range []struct{ typ, data string }{
		{connection.TypeMessageQueued, `{"seq":"one"}`},
		{connection.TypeMessageQueued, `not json`},
		{connection.TypeQueueHeld, `{"reason":"bored"}`},
		{connection.TypeClearQueueRequested, `{"scope":{"kind":"broadcast"}}`},
		{connection.TypeConnectionRegistered, `{"on_ban":"maybe"}`},
	} {
		_, err := connection.Decode(tc.typ, []byte(tc.data))
		var de *connection.DecodeError
		if !errors.Is(err, connection.ErrUndecodableEvent) || !errors.As(err, &de) || de.Type != tc.typ {
			t.Errorf("Decode(%s, %s): err = %v, want a DecodeError", tc.typ, tc.data, err)
		}
	}
}

func TestApplyRefusesBadEvents(t *testing.T) {
	c := connection.New()
	if err := c.Apply(queued(1)); err == nil {
		t.Fatal("applied MessageQueued before registration")
	}
	if err := c.Apply(reg); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(reg); err == nil {
		t.Fatal("applied ConnectionRegistered twice")
	}
	q := queued(1).(connection.MessageQueued)
	if err := c.Apply(&q); err == nil {
		t.Fatal("applied a pointer event")
	}
	if err := c.Apply(nil); err == nil {
		t.Fatal("applied nil")
	}
	var ae *connection.ApplyError
	if err := c.Apply(nil); !errors.As(err, &ae) {
		t.Fatalf("error %v is not an ApplyError", err)
	}
	if c.Version() != 0 || c.LastSeq() != 0 {
		t.Fatalf("refused events changed the state: version %d last seq %d", c.Version(), c.LastSeq())
	}
}
