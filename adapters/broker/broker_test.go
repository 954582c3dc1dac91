package broker_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/adapters/broker"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/integration"
)

const tenant = "tenant-a"

// startNATS runs a real NATS server with JetStream in process, on a random port.
func startNATS(t *testing.T) string { return startNATSUsers(t, nil) }

// startNATSUsers is startNATS with these users (none: no authentication); it stops when t
// ends.
func startNATSUsers(t *testing.T, users []*server.User) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, Users: users,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(testwait.Limit) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// connectJS connects to the NATS server at url with opts, as a client would, and returns the
// connection and its JetStream; the caller closes the connection.
func connectJS(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return nc, js
}

// keys is a real Authenticator over a map of credentials.
type keys map[string]auth.Principal

var errUnknownKey = errors.New("unknown api key")

func (k keys) AuthenticateCommand(_ context.Context, c commands.Credential) (auth.Principal, error) {
	p, ok := k[c.Token]
	if !ok {
		return auth.Principal{}, errUnknownKey
	}
	return p, nil
}

// recLogger is a watermill logger that keeps what the processor reports.
type recLogger struct {
	watermill.NopLogger
	mu    sync.Mutex
	lines []string
}

func (l *recLogger) Error(msg string, err error, f watermill.LogFields) { l.add(msg, err, f) }
func (l *recLogger) Info(msg string, f watermill.LogFields)             { l.add(msg, nil, f) }
func (l *recLogger) With(watermill.LogFields) watermill.LoggerAdapter   { return l }
func (l *recLogger) add(msg string, err error, f watermill.LogFields) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%s %v %v", msg, err, f))
}
func (l *recLogger) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	t.Cleanup(cancel)
	return ctx
}

func openStore(t *testing.T) eventstore.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), sqlite.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func openNATS(t *testing.T, url string) (message.Publisher, message.Subscriber) {
	t.Helper()
	pub, sub, closer, err := broker.OpenConfig(testCtx(t), broker.Config{
		URL: url, AckWait: 5 * time.Second, MaxDeliver: 3, NakDelay: 20 * time.Millisecond, MaxNakDelay: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closer.Close() })
	return pub, sub
}

// waitFor polls cond until it holds or the test's deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamTypes reads the events of the stream of the connection with key connKey (connection.Key).
func streamTypes(t *testing.T, st eventstore.Store, connKey string) []eventstore.RecordedEvent {
	evs, err := st.ReadStream(context.Background(), connection.StreamName(connKey), eventstore.Forwards, 0, 0)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// countType counts the events of type typ in evs; for MessageQueued it counts the messages a
// BroadcastQueued chunk stands for too.
func countType(evs []eventstore.RecordedEvent, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
		if typ == connection.TypeMessageQueued && e.Type == connection.TypeBroadcastQueued {
			if ev, err := connection.Decode(e.Type, e.Data); err == nil {
				n += len(ev.(connection.BroadcastQueued).Recipients)
			}
		}
	}
	return n
}

func TestCommandsOverNATS(t *testing.T) {
	ctx := testCtx(t)
	url := startNATS(t)
	pub, sub := openNATS(t, url)
	st := openStore(t)
	repo, err := commands.NewRepository(st, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	var h commands.Handlers
	if h.RegisterConnection, err = commands.NewRegisterConnectionHandler(repo, now); err != nil {
		t.Fatal(err)
	}
	if h.EnqueueMessage, err = commands.NewEnqueueMessageHandler(repo, now); err != nil {
		t.Fatal(err)
	}
	if h.StartBroadcast, err = commands.NewStartBroadcastHandler(repo, now); err != nil {
		t.Fatal(err)
	}
	if h.RequestClear, err = commands.NewRequestClearHandler(repo, now); err != nil {
		t.Fatal(err)
	}
	log := &recLogger{}
	router, err := commands.NewRouter(nil)
	if err != nil {
		t.Fatal(err)
	}
	authn := keys{
		"ops-key":     {TenantID: tenant, ID: "svc-ops", Role: auth.RoleOperator},
		"service-key": {TenantID: tenant, ID: "svc-send", Role: auth.RoleSender},
	}
	if _, err := commands.RegisterProcessor(commands.ProcessorConfig{
		Router: router, Subscriber: sub, Authenticator: authn, Handlers: h, Logger: log,
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	<-router.Running()

	bus, err := commands.NewCommandBus(pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	const conn = "conn-1"
	send := func(cred string, cmd commands.Command) {
		t.Helper()
		if err := bus.Send(ctx, tenant, cred, cmd); err != nil {
			t.Fatal(err)
		}
	}
	send("ops-key", commands.RegisterConnection{ConnectionID: conn, Phone: "+491701234567"})
	waitFor(t, "registration", func() bool {
		return countType(streamTypes(t, st, connection.Key(tenant, conn)), connection.TypeConnectionRegistered) == 1
	})

	// A backend service enqueues and broadcasts with its key; a forged key and a replay are refused.
	send("service-key", commands.EnqueueMessage{ConnectionID: conn, IdempotencyKey: "k1", Recipient: "+491701111111", Text: "hi"})
	send("forged-key", commands.EnqueueMessage{ConnectionID: conn, IdempotencyKey: "forged", Recipient: "+491702222222", Text: "x"})
	send("service-key", commands.StartBroadcast{ConnectionID: conn, IdempotencyKey: "b1", Recipients: []string{"+491703333333", "+491704444444"}, Text: "promo"})
	waitFor(t, "enqueue and broadcast", func() bool {
		return countType(streamTypes(t, st, connection.Key(tenant, conn)), connection.TypeMessageQueued) >= 3
	})
	// The sender role lacks connection.edit: its clear is refused like HTTP would refuse it.
	send("service-key", commands.RequestClear{ConnectionID: conn, IdempotencyKey: "c-low", Reason: "nope"})
	waitFor(t, "two refusals reported", func() bool { return log.count("refused") >= 2 })
	send("ops-key", commands.RequestClear{ConnectionID: conn, IdempotencyKey: "c1", Reason: "banned mid-broadcast"})
	waitFor(t, "clear", func() bool {
		return countType(streamTypes(t, st, connection.Key(tenant, conn)), connection.TypeClearQueueRequested) == 1
	})
	// While clearing, the same enqueue again (a service's retry) is a replay, not a queue_clearing
	// refusal; the key with another text is refused (HTTP's 422 idempotency_key_reused).
	send("service-key", commands.EnqueueMessage{ConnectionID: conn, IdempotencyKey: "k1", Recipient: "+49 170 1111111", Text: "hi"})
	send("service-key", commands.EnqueueMessage{ConnectionID: conn, IdempotencyKey: "k1", Recipient: "+491701111111", Text: "other"})
	waitFor(t, "reused key refused", func() bool { return log.count("idempotency key already used") >= 1 })

	evs := streamTypes(t, st, connection.Key(tenant, conn))
	if got := countType(evs, connection.TypeMessageQueued); got != 3 {
		t.Errorf("messages queued = %d, want 3 (the forged key's message must not be queued)", got)
	}
	if got := countType(evs, connection.TypeBroadcastStarted); got != 1 {
		t.Errorf("BroadcastStarted = %d, want 1", got)
	}
	for _, e := range evs {
		if e.Type == connection.TypeClearQueueRequested {
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				t.Fatal(err)
			}
			if c := ev.(connection.ClearQueueRequested); c.RequestedBy != "svc-ops" || c.PurgeCount != 3 {
				t.Errorf("clear by %q purging %d; want svc-ops purging 3", c.RequestedBy, c.PurgeCount)
			}
		}
		if e.Metadata.Actor == "svc-send" && e.Type == connection.TypeClearQueueRequested {
			t.Errorf("the low-privilege clear was recorded: %+v", e)
		}
	}
	if n := log.count(errUnknownKey.Error()); n != 1 {
		t.Errorf("unknown-key refusals logged = %d, want 1", n)
	}
	if n := log.count("lacks right"); n != 1 {
		t.Errorf("authorization refusals logged = %d, want 1; log: %v", n, log.lines)
	}

	// Every command was acknowledged, refusals included: the work-queue stream is empty and
	// nothing is pending or redelivered.
	nc, js := connectJS(t, url)
	defer nc.Close()
	waitFor(t, "commands stream drained", func() bool {
		s, err := js.Stream(ctx, broker.CommandsStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 0
	})
	if n := log.count("queue clearing"); n != 0 {
		t.Errorf("%d commands refused as queue clearing, want 0 (the retry is a replay); log: %v", n, log.lines)
	}
	if n := log.count("idempotency key already used"); n != 1 {
		t.Errorf("reused-key refusals logged = %d, want 1; log: %v", n, log.lines)
	}
	if got := countType(streamTypes(t, st, connection.Key(tenant, conn)), connection.TypeMessageQueued); got != 3 {
		t.Errorf("MessageQueued = %d after the retries, want 3", got)
	}
	for name, delivered := range map[string]uint64{"waqueue_waqueue_EnqueueMessage": 4, "waqueue_waqueue_RequestClear": 2} {
		c, err := js.Consumer(ctx, broker.CommandsStream, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.Delivered.Consumer != delivered {
			t.Errorf("%s: ack pending %d, redelivered %d, delivered %d; want 0, 0, %d",
				name, info.NumAckPending, info.NumRedelivered, info.Delivered.Consumer, delivered)
		}
	}
}

// A message nacked on every delivery is delivered MaxDeliver times (3 in openNATS), then
// terminated: the consumer holds nothing pending and its ack floor has passed the message. The
// deliveries are counted until there are 3 (bounded only by the hang guard), the termination is
// read from the consumer, and only the absence of a 4th delivery is judged by a quiet window,
// which a stall can make miss a 4th delivery but never fail a good run. (The test took 1 s
// without a delivery as the end and then required 3: on a loaded machine a redelivery came
// later than that, and the count ended at 2.)
func TestPoisonMessageIsTerminated(t *testing.T) {
	const maxDeliver = 3 // openNATS's Config.MaxDeliver
	ctx := testCtx(t)
	url := startNATS(t)
	pub, sub := openNATS(t, url)
	msgs, err := sub.Subscribe(ctx, "poison")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("poison", message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
		t.Fatal(err)
	}
	for deliveries := 0; deliveries < maxDeliver; deliveries++ {
		select {
		case m := <-msgs:
			m.Nack()
		case <-ctx.Done():
			t.Fatalf("deliveries = %d, want MaxDeliver = %d: %v", deliveries, maxDeliver, ctx.Err())
		}
	}
	nc, js := connectJS(t, url)
	defer nc.Close()
	c, err := js.Consumer(ctx, broker.EventsStream, "waqueue_poison")
	if err != nil {
		t.Fatalf("the poison topic's consumer: %v", err)
	}
	var info *jetstream.ConsumerInfo
	waitFor(t, "the message terminated (nothing pending, the ack floor past it)", func() bool {
		if info, err = c.Info(ctx); err != nil {
			t.Fatal(err)
		}
		return info.NumAckPending == 0 && info.AckFloor.Stream == info.Delivered.Stream
	})
	if info.Delivered.Consumer != maxDeliver || info.NumRedelivered != 0 || info.NumPending != 0 {
		t.Fatalf("consumer after termination: delivered %d, redelivered %d, pending %d; want %d, 0, 0",
			info.Delivered.Consumer, info.NumRedelivered, info.NumPending, maxDeliver)
	}
	select {
	case <-msgs:
		t.Fatalf("a delivery after MaxDeliver = %d", maxDeliver)
	case <-time.After(200 * time.Millisecond): // MaxNakDelay is 50ms: a further delivery would come well within
	}
}

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ topic, tenant, typ, want string }{
		{commands.NameEnqueueMessage, "tenant-a", "", "waqueue.tenant-a.commands.EnqueueMessage"},
		{commands.NameEnqueueMessage, "acme.eu", "", "waqueue.acme~eu.commands.EnqueueMessage"},
		{integration.Topic, "tenant-a", integration.TypeClearCompleted, "waqueue.tenant-a.events.clear.completed.v1"},
		{"orders created", "", "", "waqueue-topics.orders_created"},
		{"a.b*>", "tenant-a", "", "waqueue-topics.a_b__"},
	} {
		if got, err := broker.Subject(c.topic, c.tenant, c.typ); err != nil || got != c.want {
			t.Errorf("Subject(%q, %q, %q) = %q, %v; want %q", c.topic, c.tenant, c.typ, got, err, c.want)
		}
	}
	for _, topic := range []string{commands.NameEnqueueMessage, integration.Topic} {
		if _, err := broker.Subject(topic, "", integration.TypeClearCompleted); !errors.Is(err, broker.ErrNoTenant) {
			t.Errorf("Subject(%q) without a tenant: %v, want ErrNoTenant", topic, err)
		}
	}
	if commands.MetaTenant != integration.MetaTenant {
		t.Errorf("commands and integration events name their tenant differently: %q, %q", commands.MetaTenant, integration.MetaTenant)
	}
}

func TestInProcessWhenURLEmpty(t *testing.T) {
	ctx := testCtx(t)
	pub, sub, closer, err := broker.Open(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	ch, err := sub.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage("id-1", []byte("p"))
	if err := pub.Publish("t", m); err != nil {
		t.Fatal(err)
	}
	got := <-ch
	got.Ack()
	if got.UUID != "id-1" || string(got.Payload) != "p" {
		t.Fatalf("got %s %q", got.UUID, got.Payload)
	}
	if _, _, _, err := broker.Open(ctx, "kafka://x:9092", nil); !errors.Is(err, broker.ErrUnsupportedURL) {
		t.Fatalf("kafka url: %v, want ErrUnsupportedURL", err)
	}
}

// countingPub counts the messages published through it, and tells what subscribed tells.
type countingPub struct {
	message.Publisher
	subscribed integration.Subscribed
	n          int
}

func (c *countingPub) Subscribed(topic string) bool { return c.subscribed.Subscribed(topic) }

func (c *countingPub) Publish(topic string, msgs ...*message.Message) error {
	c.n += len(msgs)
	return c.Publisher.Publish(topic, msgs...)
}

// TestInProcessIntegrationEventsOnlyOnceSubscribed: the in-process pub/sub tells the integration
// publisher whether anyone ever subscribed to integration.Topic; before that the publisher
// builds nothing (what it published would be dropped), after it every event arrives.
func TestInProcessIntegrationEventsOnlyOnceSubscribed(t *testing.T) {
	ctx := testCtx(t)
	pub, sub, closer, err := broker.Open(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	s, ok := pub.(integration.Subscribed)
	if !ok {
		t.Fatalf("the in-process publisher %T does not implement integration.Subscribed", pub)
	}
	ip, err := integration.NewPublisher(pub)
	if err != nil {
		t.Fatal(err)
	}
	queued := func(seq uint64) eventstore.RecordedEvent {
		typ, data, err := connection.Encode(connection.MessageQueued{MessageID: uuid.New(), Seq: seq, Recipient: "+491701111111", QueuedAt: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		return eventstore.RecordedEvent{ID: uuid.New(), Stream: connection.StreamName(connection.Key(tenant, "c1")), Type: typ, Data: data,
			Metadata: eventstore.Metadata{TenantID: tenant}, Position: eventstore.Position{Commit: seq, Prepare: seq}}
	}
	if s.Subscribed(integration.Topic) {
		t.Fatal("subscribed before any subscription")
	}
	// Without a subscriber nothing is built: a publisher that counts sees no message.
	counted := &countingPub{Publisher: pub, subscribed: s}
	cp, err := integration.NewPublisher(counted)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Apply(ctx, nil, []eventstore.RecordedEvent{queued(1)}); err != nil || counted.n != 0 {
		t.Fatalf("before a subscription: %d published, %v", counted.n, err)
	}
	ch, err := sub.Subscribe(ctx, integration.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Subscribed(integration.Topic) || s.Subscribed("other") {
		t.Fatal("Subscribed does not follow the subscriptions")
	}
	if err := cp.Apply(ctx, nil, []eventstore.RecordedEvent{queued(2)}); err != nil || counted.n != 1 {
		t.Fatalf("after a subscription: %d published, %v", counted.n, err)
	}
	if m := <-ch; m != nil {
		m.Ack()
	}
	if err := ip.Apply(ctx, nil, []eventstore.RecordedEvent{queued(3)}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		m.Ack()
		if !strings.Contains(string(m.Payload), `"seq":3`) {
			t.Fatalf("got %s", m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("the integration event published after the subscription did not arrive")
	}
}
