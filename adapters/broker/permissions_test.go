package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/adapters/broker"
	"github.com/waqueue/waqueue/projections/integration"
)

// tenantPermissions are the NATS permissions docs/operations.md gives a tenant's services:
// publish its commands, read its events through its own durable consumer, replies only on its
// own inbox prefix.
func tenantPermissions(tenant string) *server.Permissions {
	tok := broker.TenantToken(tenant)
	durable := "tenant-" + tok
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			broker.CommandsPrefix(tenant) + ">",
			"$JS.API.CONSUMER.CREATE." + broker.EventsStream + "." + durable + "." + broker.EventsPrefix(tenant) + ">",
			"$JS.API.CONSUMER.INFO." + broker.EventsStream + "." + durable,
			"$JS.API.CONSUMER.MSG.NEXT." + broker.EventsStream + "." + durable,
			"$JS.ACK." + broker.EventsStream + "." + durable + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_" + tok + ".>"}},
	}
}

// TestTenantNATSPermissions holds the documented per-tenant NATS permissions to what they
// promise: a tenant's user publishes its own commands and reads its own events, and cannot
// publish another tenant's commands, read another tenant's events, or listen on the shared inbox
// where the waqueue nodes' fetches are answered.
func TestTenantNATSPermissions(t *testing.T) {
	ctx := testCtx(t)
	addr := strings.TrimPrefix(startNATSUsers(t, []*server.User{
		{Username: "waqueue", Password: "node-pw"},
		{Username: "acme", Password: "acme-pw", Permissions: tenantPermissions("acme")},
		{Username: "globex", Password: "globex-pw", Permissions: tenantPermissions("globex")},
	}), "nats://")
	pub, _ := openNATS(t, "nats://waqueue:node-pw@"+addr)
	for _, tn := range []string{"acme", "globex"} {
		m, err := integration.NewMessage(integration.Event{ID: uuid.New(), Type: integration.TypeMessageStatusChanged,
			OccurredAt: time.Now().UTC(), TenantID: tn, ConnectionID: "c1", Position: "1/1", Data: []byte(`{"recipient":"+491701111111"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(integration.Topic, m); err != nil {
			t.Fatal(err)
		}
	}

	denied := make(chan error, 16)
	nc, js := connectJS(t, "nats://acme:acme-pw@"+addr, nats.CustomInboxPrefix("_INBOX_acme"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	defer nc.Close()
	// Its own commands: stored.
	if _, err := js.Publish(ctx, broker.CommandsPrefix("acme")+"EnqueueMessage", []byte(`{}`)); err != nil {
		t.Fatalf("acme publishing its command: %v", err)
	}
	// Its own events, through its durable: exactly its own.
	c, err := js.CreateOrUpdateConsumer(ctx, broker.EventsStream, jetstream.ConsumerConfig{
		Durable: "tenant-acme", FilterSubject: broker.EventsPrefix("acme") + ">", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("acme creating its consumer: %v", err)
	}
	batch, err := c.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if !strings.HasPrefix(m.Subject(), broker.EventsPrefix("acme")) {
			t.Errorf("acme read %s", m.Subject())
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if n != 1 {
		t.Fatalf("acme read %d events, want its 1", n)
	}

	// Each forbidden act draws a permissions violation naming its subject.
	expectDenied := func(what, subject string, act func() error) {
		t.Helper()
		if err := act(); err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("%s: %v", what, err)
		}
		for {
			select {
			case err := <-denied:
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%s was not refused", what)
			}
		}
	}
	other := broker.CommandsPrefix("globex") + "EnqueueMessage"
	expectDenied("publishing globex's command", other, func() error { return nc.Publish(other, []byte(`{}`)) })
	create := fmt.Sprintf("$JS.API.CONSUMER.CREATE.%s.tenant-acme.%s>", broker.EventsStream, broker.EventsPrefix("globex"))
	expectDenied("a consumer of globex's events", create, func() error { return nc.PublishRequest(create, nats.NewInbox(), []byte(`{}`)) })
	next := fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.waqueue_waqueue_events", broker.EventsStream)
	expectDenied("pulling waqueue's own consumer", next, func() error { return nc.PublishRequest(next, nats.NewInbox(), []byte(`{}`)) })
	expectDenied("listening on the shared inbox", "_INBOX.>", func() error {
		_, err := nc.SubscribeSync("_INBOX.>")
		return err
	})
}
