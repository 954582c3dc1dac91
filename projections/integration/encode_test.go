package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestEncodingMatchesJSON: the hand-written encodings (encode.go) give json.Marshal's bytes —
// the envelope of every kind of integration event, strings json.Marshal escapes, and a
// broadcast chunk's bodies — and a chunk's integration events are exactly those of its
// messages' own MessageQueued (translateOne, the per-message path the chunk replaces).
func TestEncodingMatchesJSON(t *testing.T) {
	for _, s := range []string{"", "plain-id_1.x", "+491701234567", `a"b`, `back\slash`, "<tag>&amp;", "a<b", "a>b", "a&b", "tab\there",
		"nl\n", "\x00\x1f\x7f", "é ü 中文", "\u2028\u2029", "bad \xff utf8", "emoji 🎉", "/slash:colon"} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, json.Marshal: %s", s, got, want)
		}
	}
	for range 100 {
		id := uuid.New()
		want, _ := json.Marshal(id)
		if got := append(append([]byte{'"'}, appendUUID(nil, id)...), '"'); !bytes.Equal(got, want) {
			t.Fatalf("appendUUID(%s) = %s", id, got)
		}
	}

	at := time.Date(2026, 12, 2, 1, 2, 3, 456789000, time.FixedZone("x", 3600))
	stream := connection.StreamName(connection.Key("tenant-<a>", "c1"))
	rec := func(ev connection.Event) eventstore.RecordedEvent {
		typ, data, err := connection.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		return eventstore.RecordedEvent{ID: uuid.New(), Stream: stream, Type: typ, Data: data,
			Metadata: eventstore.Metadata{TenantID: "tenant-<a>"}, Position: eventstore.Position{Commit: 70, Prepare: 71}}
	}
	bid := uuid.New()
	bq := connection.BroadcastQueued{BroadcastID: bid, FirstSeq: 41, FirstIndex: 5000,
		Recipients: []string{"+491701111111", "+491702222222", "+4917033333&3", "+39 06 \"x\""}, QueuedBy: "key-1", QueuedAt: at}
	events := []connection.Event{
		bq,
		connection.MessageQueued{MessageID: uuid.New(), Seq: 1, Recipient: "+491701111111", Text: "hi", QueuedAt: at},
		connection.MessageQueued{MessageID: uuid.New(), Seq: 2, Recipient: "+491701111111", BroadcastID: bid, QueuedAt: at},
		connection.MessageFailed{MessageID: uuid.New(), Seq: 3, Code: "not_on_whatsapp", Detail: "<no> & \"yes\"", FailedAt: at},
		connection.MessageCancelled{MessageID: uuid.New(), Seq: 4, Reason: "typo é", CancelledBy: "op", CancelledAt: at},
		connection.SessionInvalidated{Reason: "401", Actor: "system", InvalidatedAt: at},
		connection.ClearQueueRequested{ClearID: uuid.New(), RequestedBy: "op", Reason: "ban", RequestedAt: at,
			Purge: []connection.SeqRange{{From: 1, To: 9}}, PurgeCount: 9},
	}
	n := 0
	for _, ev := range events {
		e := rec(ev)
		ies, err := TranslateAll(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, ie := range ies {
			n++
			want, err := json.Marshal(ie)
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMessage(ie)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Payload, want) {
				t.Errorf("NewMessage payload of %s:\n got %s\nwant %s", ie.Type, m.Payload, want)
			}
		}
		if b, ok := ev.(connection.BroadcastQueued); ok {
			if len(ies) != len(b.Recipients) {
				t.Fatalf("%d events for a chunk of %d", len(ies), len(b.Recipients))
			}
			for i, mq := range b.Messages() {
				want, _, err := translateOne(e, "c1", mq, connection.EventID(e.Stream, 0, mq))
				if err != nil {
					t.Fatal(err)
				}
				got := ies[i]
				if got.ID != want.ID || got.Type != want.Type || !got.OccurredAt.Equal(want.OccurredAt) ||
					got.OccurredAt.Location() != want.OccurredAt.Location() || got.TenantID != want.TenantID ||
					got.ConnectionID != want.ConnectionID || got.Position != want.Position || !bytes.Equal(got.Data, want.Data) {
					t.Errorf("message %d of the chunk:\n got %+v (%s)\nwant %+v (%s)", i, got, got.Data, want, want.Data)
				}
			}
		}
	}
	if n < len(events)+3 {
		t.Fatalf("only %d integration events compared", n)
	}
}

// BenchmarkTranslateChunk: one BroadcastQueued of connection.BroadcastChunk recipients, translated
// and encoded as the publisher does.
func BenchmarkTranslateChunk(b *testing.B) {
	rs := make([]string, connection.BroadcastChunk)
	for i := range rs {
		rs[i] = fmt.Sprintf("+49151%08d", i)
	}
	typ, data, _ := connection.Encode(connection.BroadcastQueued{BroadcastID: uuid.New(), FirstSeq: 1, Recipients: rs, QueuedAt: time.Now()})
	e := eventstore.RecordedEvent{ID: uuid.New(), Stream: connection.StreamName(connection.Key("t", "c")), Type: typ, Data: data,
		Metadata: eventstore.Metadata{TenantID: "t"}, Position: eventstore.Position{Commit: 1, Prepare: 1}}
	for b.Loop() {
		ies, err := TranslateAll(e)
		if err != nil {
			b.Fatal(err)
		}
		for _, ie := range ies {
			if _, err := NewMessage(ie); err != nil {
				b.Fatal(err)
			}
		}
	}
}
