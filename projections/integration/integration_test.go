package integration_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

var at = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func recorded(t *testing.T, stream string, ev connection.Event) eventstore.RecordedEvent {
	t.Helper()
	typ, data, err := connection.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.RecordedEvent{ID: uuid.New(), Stream: stream, Type: typ, Data: data,
		Metadata: eventstore.Metadata{TenantID: "tenant-a"}, Position: eventstore.Position{Commit: 7, Prepare: 7}}
}

func TestTranslate(t *testing.T) {
	msg, clear, bc := uuid.New(), uuid.New(), uuid.New()
	stream := connection.StreamName(connection.Key("tenant-a", "c1")) // consumers see the bare id beside the tenant
	cases := []struct {
		ev      connection.Event
		typ     string
		body    any
		wantKey string // a field the body must carry
	}{
		{connection.MessageQueued{MessageID: msg, Seq: 1, Recipient: "+491701111111", BroadcastID: bc, QueuedAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "queued"},
		{connection.MessageDispatched{MessageID: msg, Seq: 1, DispatchedAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "dispatched"},
		{connection.MessageSent{MessageID: msg, Seq: 1, ServerID: "s", SentAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "sent"},
		{connection.MessageDelivered{MessageID: msg, Seq: 1, DeliveredAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "delivered"},
		{connection.MessageRead{MessageID: msg, Seq: 1, ReadAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "read"},
		{connection.MessageFailed{MessageID: msg, Seq: 1, Code: "not_on_whatsapp", FailedAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "failed"},
		{connection.MessageExpired{MessageID: msg, Seq: 1, ExpiresAt: at, ExpiredAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "expired"},
		{connection.MessageOutcomeUnknown{MessageID: msg, Seq: 1, Cause: "crash", At: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, "unknown"},
		{connection.MessageCancelled{MessageID: msg, Seq: 1, Reason: "typo", CancelledBy: "op", CancelledAt: at}, integration.TypeMessageStatusChanged, &integration.MessageStatusChanged{}, `"reason":"typo"`},
		{connection.SessionPaired{Actor: "system", PairedAt: at}, integration.TypeConnectionLinkStatusChanged, &integration.LinkStatusChanged{}, "active"},
		{connection.SessionInvalidated{Reason: "401", Actor: "system", InvalidatedAt: at}, integration.TypeConnectionLinkStatusChanged, &integration.LinkStatusChanged{}, `"cause":"logged_out"`},
		{connection.ConnectionBanned{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "system", BannedAt: at}, integration.TypeConnectionBanned, &integration.Banned{}, `"cause":"account_banned"`},
		{connection.BanLifted{Actor: "system", LiftedAt: at}, integration.TypeConnectionBanLifted, &integration.BanLifted{}, "system"},
		{connection.ConnectionRetired{Reason: "number sold", RetiredBy: "op", RetiredAt: at}, integration.TypeConnectionLinkStatusChanged, &integration.LinkStatusChanged{}, `"link_status":"retired"`},
		{connection.QueueHeld{Reason: connection.HoldByOperator, Actor: "op", HeldAt: at}, integration.TypeConnectionQueueStatusChanged, &integration.QueueStatusChanged{}, "held"},
		{connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: at}, integration.TypeConnectionQueueStatusChanged, &integration.QueueStatusChanged{}, "open"},
		{connection.ClearQueueRequested{ClearID: clear, RequestedBy: "op", Reason: "ban", RequestedAt: at, UpToSeq: 3,
			Purge: []connection.SeqRange{{From: 2, To: 3}}, PurgeCount: 2, InFlight: []connection.InFlightMessage{{MessageID: msg, Seq: 1}}},
			integration.TypeClearRequested, &integration.ClearRequested{}, `"purge_count":2`},
		{connection.QueueCleared{ClearID: clear, RequestedBy: "op", Reason: "ban", RequestedAt: at, Purged: []connection.SeqRange{{From: 2, To: 3}},
			PurgedCount: 2, InFlight: []connection.InFlightMessage{{MessageID: msg, Seq: 1}}, InFlightCount: 1, CompletedBy: "system", CompletedAt: at.Add(time.Second)},
			integration.TypeClearCompleted, &integration.ClearCompleted{}, `"purged":[{"from":2,"to":3}]`},
	}
	// BroadcastQueued gives one event per message: TestTranslateBroadcastChunk.
	if len(cases)+1 != len(integration.SourceTypes()) {
		t.Fatalf("%d cases for %d source types", len(cases), len(integration.SourceTypes()))
	}
	for _, c := range cases {
		re := recorded(t, stream, c.ev)
		ie, ok, err := integration.Translate(re)
		if err != nil || !ok {
			t.Fatalf("%s: %v, %v", re.Type, ok, err)
		}
		if ie.Type != c.typ || ie.ID != integration.EventID(re.ID, c.typ) || ie.ConnectionID != "c1" || ie.TenantID != "tenant-a" || ie.OccurredAt.IsZero() || ie.Position != "7/7" {
			t.Errorf("%s: envelope %+v", re.Type, ie)
		}
		if !bytes.Contains(ie.Data, []byte(c.wantKey)) {
			t.Errorf("%s: body %s lacks %s", re.Type, ie.Data, c.wantKey)
		}
		dec := json.NewDecoder(bytes.NewReader(ie.Data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c.body); err != nil {
			t.Errorf("%s: body %s does not decode as %T: %v", re.Type, ie.Data, c.body, err)
		}
		again, _, _ := integration.Translate(re)
		a, _ := json.Marshal(ie)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: translation not deterministic:\n%s\n%s", re.Type, a, b)
		}
		if !integration.IsKnownType(ie.Type) {
			t.Errorf("%s: type %s not in Types()", re.Type, ie.Type)
		}
	}
	if _, ok, _ := integration.Translate(recorded(t, stream, connection.ConnectionRegistered{ConnectionID: "c1", TenantID: "tenant-a"})); ok {
		t.Error("ConnectionRegistered has no integration event")
	}
	if _, ok, _ := integration.Translate(recorded(t, "tenant-x", connection.QueueHeld{Reason: connection.HoldByOperator})); ok {
		t.Error("an event of another stream was translated")
	}
	bad := recorded(t, stream, connection.MessageSent{MessageID: msg, Seq: 1})
	bad.Data = []byte(`{"message_id": 5}`)
	if _, _, err := integration.Translate(bad); err == nil {
		t.Error("an undecodable event was translated")
	}
}

// flaky publishes through a real GoChannel but fails its first failures publishes.
type flaky struct {
	message.Publisher
	failures atomic.Int32
}

var errBrokerDown = errors.New("broker down")

func (f *flaky) Publish(topic string, msgs ...*message.Message) error {
	if f.failures.Add(-1) >= 0 {
		return errBrokerDown
	}
	return f.Publisher.Publish(topic, msgs...)
}

// TestPublisherAtLeastOnce: a failed publish fails the batch; the runner delivers it again and
// every integration event arrives, under its deterministic id.
func TestPublisherAtLeastOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	path := filepath.Join(t.TempDir(), "w.db")
	st, err := sqlite.Open(ctx, path, sqlite.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	db := &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := projections.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	gc := commands.NewInProcessPubSub(nil)
	msgs, err := gc.Subscribe(ctx, integration.Topic)
	if err != nil {
		t.Fatal(err)
	}
	fp := &flaky{Publisher: gc}
	fp.failures.Store(2)
	p, err := integration.NewPublisher(fp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := integration.NewPublisher(nil); err == nil {
		t.Error("nil publisher accepted")
	}
	stream := connection.StreamName("c9")
	var want []uuid.UUID
	for i := uint64(1); i <= 3; i++ {
		ev := connection.MessageQueued{MessageID: uuid.New(), Seq: i, Recipient: "+491701111111", QueuedAt: at}
		typ, data, _ := connection.Encode(ev)
		id := uuid.New()
		if _, err := st.Append(ctx, stream, eventstore.Any, eventstore.EventData{ID: id, Type: typ, Data: data, Metadata: eventstore.Metadata{TenantID: "tenant-a"}}); err != nil {
			t.Fatal(err)
		}
		want = append(want, integration.EventID(id, integration.TypeMessageStatusChanged))
	}
	runner, err := projections.NewRunner(projections.RunnerConfig{DB: db, Store: st, Projections: []projections.Projection{p},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(rctx) }()
	defer func() { stop(); <-done }()
	seen := map[string]bool{}
	for len(seen) < len(want) {
		select {
		case m := <-msgs:
			m.Ack()
			seen[m.UUID] = true
		case <-ctx.Done():
			t.Fatalf("got %d of %d events: %v", len(seen), len(want), ctx.Err())
		}
	}
	for _, id := range want {
		if !seen[id.String()] {
			t.Errorf("event %s never published; got %v", id, seen)
		}
	}
	if fp.failures.Load() >= 0 {
		t.Errorf("the failing publishes were not exercised")
	}
}

func TestTranslateAuditCheckpoint(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	k := ed25519.NewKeyFromSeed(seed)
	cp := auditchain.Sign(k, "tenant-a", 12, "abc", at)
	body, _ := json.Marshal(cp)
	re := eventstore.RecordedEvent{ID: uuid.New(), Stream: auditchain.StreamName("tenant-a"), Type: auditchain.TypeCheckpointSigned,
		Data: body, Metadata: eventstore.Metadata{TenantID: "tenant-a"}, Position: eventstore.Position{Commit: 9, Prepare: 9}}
	if !integration.Filter().Match(re) {
		t.Fatal("the integration filter does not select checkpoint events")
	}
	ie, ok, err := integration.Translate(re)
	if err != nil || !ok || ie.Type != integration.TypeAuditCheckpoint || ie.TenantID != "tenant-a" || ie.ConnectionID != "" ||
		!ie.OccurredAt.Equal(cp.At) || ie.ID != integration.EventID(re.ID, integration.TypeAuditCheckpoint) || !integration.IsKnownType(ie.Type) {
		t.Fatalf("Translate = %+v, %v, %v", ie, ok, err)
	}
	whole, _ := json.Marshal(ie)
	got, err := auditchain.ParseCheckpoint(whole)
	if err != nil || got.Verify(k.Public().(ed25519.PublicKey)) != nil {
		t.Fatalf("the event's checkpoint does not verify: %+v, %v", got, err)
	}
	other := re
	other.Stream = "conn-x"
	if _, ok, _ := integration.Translate(other); ok {
		t.Error("a checkpoint type on a connection stream was translated")
	}
}

// TestTranslateBroadcastChunk checks that a BroadcastQueued chunk gives exactly the
// integration events its messages' own MessageQueued events give (same ids, same bodies), so
// a consumer cannot tell which form the log holds.
func TestTranslateBroadcastChunk(t *testing.T) {
	stream := connection.StreamName(connection.Key("tenant-a", "c1"))
	chunk := connection.BroadcastQueued{BroadcastID: uuid.New(), FirstSeq: 7, FirstIndex: 5000,
		Recipients: []string{"+491701111111", "+491702222222", "+491703333333"}, QueuedBy: "op", QueuedAt: at}
	got, err := integration.TranslateAll(recorded(t, stream, chunk))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(chunk.Recipients) {
		t.Fatalf("%d integration events for %d messages", len(got), len(chunk.Recipients))
	}
	if _, ok, err := integration.Translate(recorded(t, stream, chunk)); ok || err != nil {
		t.Fatalf("Translate of a chunk = %v, %v; want nothing (TranslateAll)", ok, err)
	}
	for i, ie := range got {
		mq := chunk.Message(i)
		re := recorded(t, stream, mq)
		re.ID = connection.EventID(stream, 0, mq) // the id the per-message form is stored under
		want, ok, err := integration.Translate(re)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if ie.ID != want.ID || string(ie.Data) != string(want.Data) || ie.Type != want.Type || ie.ConnectionID != "c1" {
			t.Fatalf("message %d: got %+v (%s), want %+v (%s)", i, ie, ie.Data, want, want.Data)
		}
	}
}
