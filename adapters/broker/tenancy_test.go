package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/broker"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

func messageOf(m *jetstream.RawStreamMsg) *message.Message { return message.NewMessage("x", m.Data) }

// storedMessages returns every message the stream holds.
func storedMessages(t *testing.T, url, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testCtx(t)
	nc, js := connectJS(t, url)
	defer nc.Close()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

// TestIntegrationEventsOnTenantSubjects (issue 11.3): every tenant's integration events land on
// that tenant's own subjects, "waqueue.<tenant>.events.<type>", and nowhere else, so a consumer
// allowed only its tenant's subjects sees nothing of another tenant (recipients' numbers
// included).
func TestIntegrationEventsOnTenantSubjects(t *testing.T) {
	url := startNATS(t)
	pub, _ := openNATS(t, url)
	for _, tn := range []string{"tenant-a", "tenant-b", "tenant.c"} {
		for _, typ := range []string{integration.TypeMessageStatusChanged, integration.TypeClearCompleted} {
			m, err := integration.NewMessage(integration.Event{ID: uuid.New(), Type: typ, OccurredAt: time.Now().UTC(),
				TenantID: tn, ConnectionID: "c1", Position: "1/1", Data: []byte(`{"recipient":"+491701111111"}`)})
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(integration.Topic, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs := storedMessages(t, url, broker.EventsStream)
	if len(msgs) != 6 {
		t.Fatalf("%d events stored, want 6", len(msgs))
	}
	for _, m := range msgs {
		ie, err := integration.Decode(messageOf(m))
		if err != nil {
			t.Fatal(err)
		}
		want := "waqueue." + strings.ReplaceAll(ie.TenantID, ".", "~") + ".events." + strings.TrimPrefix(ie.Type, "waqueue.")
		if m.Subject != want {
			t.Errorf("event of tenant %s on subject %q, want %q", ie.TenantID, m.Subject, want)
		}
	}
}

// tenancyEnv is a NATS server, a broker, an event store with its read-model database, API keys
// and broker tokens, and two tenants with a connection and an operator key each.
type tenancyEnv struct {
	url            string
	pub            message.Publisher
	sub            message.Subscriber
	store          eventstore.Store
	keys           *apikeys.Keys
	tokens         *apikeys.Tokens
	secret         []byte
	handlers       commands.Handlers
	keyA, keyB     apikeys.Created
	tokenA, tokenB string
	log            *recLogger
}

func newTenancyEnv(t *testing.T) *tenancyEnv {
	t.Helper()
	ctx := testCtx(t)
	e := &tenancyEnv{url: startNATS(t), log: &recLogger{}}
	e.pub, e.sub = openNATS(t, e.url)
	path := filepath.Join(t.TempDir(), "waqueue.db")
	st, err := sqlite.Open(ctx, path, sqlite.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.store = st
	sdb, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	db := &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	if err := apikeys.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if e.keys, err = apikeys.New(st, db, nil); err != nil {
		t.Fatal(err)
	}
	e.secret = bytes.Repeat([]byte{7}, apikeys.TokenSecretLen)
	if e.tokens, err = apikeys.NewTokens(e.keys, e.secret, nil); err != nil {
		t.Fatal(err)
	}
	repo, err := commands.NewRepository(st, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.handlers, err = commands.NewHandlers(repo, commands.SystemClock); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tenant, conn string }{{"tenant-a", "a-1"}, {"tenant-b", "b-1"}} {
		op := commands.WithPrincipal(ctx, auth.Principal{TenantID: c.tenant, ID: "setup", Role: auth.RoleOperator})
		if _, err := e.handlers.RegisterConnection.Handle(op, commands.RegisterConnection{ConnectionID: c.conn, Phone: "+491701234567"}); err != nil {
			t.Fatal(err)
		}
	}
	mint := func(tenant string) (apikeys.Created, string) {
		k, err := e.keys.Create(ctx, tenant, auth.RoleOperator, "service", "setup")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := e.tokens.Mint(ctx, auth.Principal{TenantID: tenant, ID: k.ID, Role: k.Role}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return k, tok.Token
	}
	e.keyA, e.tokenA = mint("tenant-a")
	e.keyB, e.tokenB = mint("tenant-b")
	return e
}

// runProcessor starts the command processor on the broker, authenticating with broker tokens.
func (e *tenancyEnv) runProcessor(t *testing.T) {
	t.Helper()
	router, err := commands.NewRouter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := commands.RegisterProcessor(commands.ProcessorConfig{
		Router: router, Subscriber: e.sub, Authenticator: e.tokens, Handlers: e.handlers, Logger: e.log,
	}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	<-router.Running()
}

// publishRaw publishes a command the way a client library would, with headers of its choosing.
func (e *tenancyEnv) publishRaw(t *testing.T, subject string, cmd commands.Command, headers map[string]string) {
	t.Helper()
	nc, js := connectJS(t, e.url)
	defer nc.Close()
	body, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set("_watermill_message_uuid", uuid.NewString())
	m.Header.Set("name", cmd.CommandName())
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	if _, err := js.PublishMsg(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
}

// TestBrokerCommandsAreTenantScoped (issue 11.3): a command is authenticated by a broker token
// and must come on its tenant's subject: another tenant's token, a header naming another tenant,
// an expired token and a raw API key are refused; only the right token on the right subject
// acts, and only on its own tenant's connections.
func TestBrokerCommandsAreTenantScoped(t *testing.T) {
	ctx := testCtx(t)
	e := newTenancyEnv(t)
	e.runProcessor(t)
	bus, err := commands.NewCommandBus(e.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	enq := func(conn, key string) commands.EnqueueMessage {
		return commands.EnqueueMessage{ConnectionID: conn, IdempotencyKey: key, Recipient: "+491701111111", Text: "hi"}
	}
	past, err := apikeys.NewTokens(e.keys, e.secret, func() time.Time { return time.Now().Add(-2 * apikeys.MaxTokenTTL) })
	if err != nil {
		t.Fatal(err)
	}
	expired, err := past.Mint(ctx, auth.Principal{TenantID: "tenant-a", ID: e.keyA.ID, Role: auth.RoleOperator}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 1. B's token on A's subject.
	if err := bus.Send(ctx, "tenant-a", e.tokenB, enq("a-1", "k1")); err != nil {
		t.Fatal(err)
	}
	// 2. A's token on B's subject, with a header claiming tenant A: the subject decides.
	e.publishRaw(t, broker.CommandsPrefix("tenant-b")+"EnqueueMessage", enq("a-1", "k2"),
		map[string]string{commands.MetaCredential: e.tokenA, commands.MetaTenant: "tenant-a", commands.MetaStoredAt: time.Now().UTC().Format(time.RFC3339Nano)})
	// 3. B's token on B's subject, naming A's connection: not found, like HTTP.
	if err := bus.Send(ctx, "tenant-b", e.tokenB, enq("a-1", "k3")); err != nil {
		t.Fatal(err)
	}
	// 4. An expired token; 5. the raw API key; 6. a token whose signature was tampered with.
	if err := bus.Send(ctx, "tenant-a", expired.Token, enq("a-1", "k4")); err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", e.keyA.Secret, enq("a-1", "k5")); err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", e.tokenA[:len(e.tokenA)-2]+"AA", enq("a-1", "k6")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "six refusals", func() bool { return e.log.count("refused") >= 6 })
	// The right token on the right subject acts.
	if err := bus.Send(ctx, "tenant-a", e.tokenA, enq("a-1", "ok")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tenant A's own command", func() bool {
		return countType(streamTypes(t, e.store, connection.Key("tenant-a", "a-1")), connection.TypeMessageQueued) >= 1
	})
	evs := streamTypes(t, e.store, connection.Key("tenant-a", "a-1"))
	if n := countType(evs, connection.TypeMessageQueued); n != 1 {
		t.Fatalf("%d messages queued on a-1, want only the legitimate one", n)
	}
	if last := evs[len(evs)-1]; last.Metadata.Actor != e.keyA.ID {
		t.Errorf("queued by %q, want key %s", last.Metadata.Actor, e.keyA.ID)
	}
	if n := countType(streamTypes(t, e.store, connection.Key("tenant-b", "b-1")), connection.TypeMessageQueued); n != 0 {
		t.Fatalf("%d messages queued on b-1", n)
	}
	// Transport facts are not on the broker: no consumer takes a LiftBan (or any of them), so an
	// admin's LiftBan stays unconsumed in the stream and nothing is lifted.
	admin, err := e.keys.Create(ctx, "tenant-a", auth.RoleAdmin, "admin", "setup")
	if err != nil {
		t.Fatal(err)
	}
	adminTok, err := e.tokens.Mint(ctx, auth.Principal{TenantID: "tenant-a", ID: admin.ID, Role: auth.RoleAdmin}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", adminTok.Token, commands.LiftBan{ConnectionID: "a-1"}); err != nil {
		t.Fatal(err)
	}
	nc, js := connectJS(t, e.url)
	defer nc.Close()
	stream, err := js.Stream(ctx, broker.CommandsStream)
	if err != nil {
		t.Fatal(err)
	}
	for info := range stream.ListConsumers(ctx).Info() {
		for _, name := range []string{commands.NameLiftBan, commands.NameReportBan, commands.NamePairingSucceeded,
			commands.NameRecordDelivered, commands.NameRecordRead, commands.NameRecordSent, commands.NameCompleteClear} {
			if strings.HasSuffix(info.Config.FilterSubject, "."+strings.TrimPrefix(name, "waqueue.")) {
				t.Errorf("consumer %s takes %s from the broker", info.Name, name)
			}
		}
	}
	waitFor(t, "only the unconsumed LiftBan left in the stream", func() bool {
		msgs := storedMessages(t, e.url, broker.CommandsStream)
		return len(msgs) == 1 && strings.HasSuffix(msgs[0].Subject, ".LiftBan")
	})
	if n := countType(streamTypes(t, e.store, connection.Key("tenant-a", "a-1")), connection.TypeBanLifted); n != 0 {
		t.Fatal("a ban was lifted over the broker")
	}

	// A suspended tenant's tokens are refused (acknowledged, never retried) until it is resumed.
	if err := e.keys.EnsureTenant(ctx, "tenant-a", "tenant-a", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.SuspendTenant(ctx, "tenant-a", "test", "test"); err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", e.tokenA, enq("a-1", "while-suspended")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the suspended tenant's command refused", func() bool { return e.log.count("refused") >= 7 })
	if n := countType(streamTypes(t, e.store, connection.Key("tenant-a", "a-1")), connection.TypeMessageQueued); n != 1 {
		t.Fatalf("%d messages queued on a-1 while suspended, want 1", n)
	}
	if _, err := e.keys.ResumeTenant(ctx, "tenant-a", "", "test"); err != nil {
		t.Fatal(err)
	}

	// A revoked key's tokens stop working at once.
	if err := e.keys.Revoke(ctx, "tenant-a", e.keyA.ID, "setup", "test"); err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", e.tokenA, enq("a-1", "after-revoke")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked key's command refused", func() bool { return e.log.count("refused") >= 8 })
	if n := countType(streamTypes(t, e.store, connection.Key("tenant-a", "a-1")), connection.TypeMessageQueued); n != 1 {
		t.Fatalf("%d messages queued on a-1 after the revocation, want 1", n)
	}
}

// TestNoKeyMaterialInJetStream (issue 11.3): a command published on the broker carries no API
// key (nor a key's hash) in its stored headers or body — only a broker token, which names the
// key's id and expires — and it is still handled once the processor runs.
func TestNoKeyMaterialInJetStream(t *testing.T) {
	ctx := testCtx(t)
	e := newTenancyEnv(t)
	bus, err := commands.NewCommandBus(e.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-a", e.tokenA, commands.EnqueueMessage{ConnectionID: "a-1", IdempotencyKey: "k", Recipient: "+491701111111", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Send(ctx, "tenant-b", e.tokenB, commands.HoldQueue{ConnectionID: "b-1"}); err != nil {
		t.Fatal(err)
	}
	msgs := storedMessages(t, e.url, broker.CommandsStream)
	if len(msgs) != 2 {
		t.Fatalf("%d commands stored, want 2", len(msgs))
	}
	assertNoKeyMaterial(t, msgs, e.keyA.Secret, e.keyB.Secret, apikeys.Hash(e.keyA.Secret), apikeys.Hash(e.keyB.Secret))
	for _, m := range msgs {
		tenant := "tenant-a"
		if strings.Contains(m.Subject, "tenant-b") {
			tenant = "tenant-b"
		}
		if !strings.HasPrefix(m.Subject, broker.CommandsPrefix(tenant)) || !strings.HasPrefix(m.Header.Get(commands.MetaCredential), apikeys.TokenPrefix) {
			t.Errorf("stored command on %q with credential %q", m.Subject, m.Header.Get(commands.MetaCredential))
		}
	}
	e.runProcessor(t)
	waitFor(t, "the stored commands handled", func() bool {
		return countType(streamTypes(t, e.store, connection.Key("tenant-a", "a-1")), connection.TypeMessageQueued) == 1 &&
			countType(streamTypes(t, e.store, connection.Key("tenant-b", "b-1")), connection.TypeQueueHeld) == 1
	})
}

func assertNoKeyMaterial(t *testing.T, msgs []*jetstream.RawStreamMsg, secrets ...string) {
	t.Helper()
	for _, m := range msgs {
		for _, s := range secrets {
			if strings.Contains(string(m.Data), s) {
				t.Errorf("message %d body holds a key", m.Sequence)
			}
			for k, vs := range m.Header {
				for _, v := range vs {
					// A key's secret, or anything shaped like one (its prefix starting the value);
					// "wq_" inside a token's base64url signature is chance, not a key (about one
					// token in 6,000 has it: this test failed once on that).
					if strings.Contains(v, s) || strings.HasPrefix(v, apikeys.Prefix) {
						t.Errorf("message %d header %s holds a key: %q", m.Sequence, k, v)
					}
				}
			}
		}
	}
}
