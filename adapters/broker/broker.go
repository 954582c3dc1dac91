// Package broker opens the message broker that carries waqueue's commands and integration
// events between processes: watermill's in-process GoChannel by default, NATS JetStream (through
// github.com/ThreeDotsLabs/watermill-nats/v2) for a scale-out deployment.
//
// # Subjects and streams (NATS)
//
// Every tenant has its own subjects, "waqueue.<tenant>.…", where <tenant> is TenantToken of the
// tenant id (the id with each '.' written '~', which no tenant id holds). A watermill topic is
// mapped to a NATS subject by Subject, from the message's tenant (metadata commands.MetaTenant,
// the same key as integration.MetaTenant); a command or integration event without a tenant is
// not published:
//
//   - a command topic (commands.Name…, "waqueue.<Command>") → "waqueue.<tenant>.commands.<Command>",
//     in the stream CommandsStream ("WAQUEUE_COMMANDS", work-queue retention: a command is
//     removed once acknowledged; several waqueue instances share one durable consumer per
//     command, filtered on "waqueue.*.commands.<Command>", so each command is handled by one of
//     them);
//   - integration.Topic ("waqueue.events") → "waqueue.<tenant>.events.<type without "waqueue.">",
//     for example "waqueue.tenant-a.events.message.status_changed.v1", in the stream
//     EventsStream ("WAQUEUE", limits retention, MaxAge EventRetention). A tenant's consumer
//     filters on "waqueue.<tenant>.events.>" (or one type's subject);
//   - any other topic → "waqueue-topics.<topic>" (characters NATS forbids replaced by '_'), in
//     EventsStream too.
//
// On delivery the subscriber sets commands.MetaTenant from the subject the message arrived on
// and commands.MetaStoredAt from the time JetStream stored it, overwriting whatever the
// publisher wrote: the NATS server's permissions decide who may publish on a tenant's subjects
// (docs/operations.md), and the command processor refuses a credential of another tenant.
// Commands carry a short-lived broker token (adapters/apikeys.Tokens), never an API key.
//
// Open creates or updates both streams. A stream still holding the layout before per-tenant
// subjects ("waqueue.commands.>", "waqueue.events.>") is purged of those subjects first: their
// commands carried API keys and their events mixed tenants. Consumers are durable, named
// Config.DurablePrefix plus the topic, with explicit acks, an ack wait (Config.AckWait) and a
// bounded number of deliveries (Config.MaxDeliver). A durable created for the first time starts
// with the oldest message its stream holds (for EventsStream: up to EventRetention back). A
// message nacked by its handler (a transient failure) is redelivered after an exponential delay;
// after MaxDeliver deliveries it is terminated and logged, so a poison message never loops
// forever. Refused commands (commands.IsRefusal) are acknowledged by the command processor
// itself, exactly as HTTP answers them once.
//
// Deduplication: the publisher sets the message's UUID as Nats-Msg-Id, so JetStream drops a
// republished message with the same UUID within Config.DuplicateWindow. Integration events have
// deterministic UUIDs (integration.EventID); consumers still dedupe on the id beyond the window.
//
// # In process
//
// With an empty URL Open returns commands.NewInProcessPubSub: a GoChannel without persistence.
// That is enough in one process: a command published there is handled by the processor of the
// same process, and it is at most as durable as the process itself (a bus command is
// asynchronous; callers that need durability before an answer — HTTP — call the handler
// synchronously, G6). Integration events published with no subscriber are dropped, and are not
// even built while nothing in the process ever subscribed to integration.Topic (the publisher
// asks integration.Subscribed); webhooks do not depend on them (adapters/webhooks reads the
// event log itself).
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/projections/integration"
)

// Stream names and subject parts on NATS.
const (
	CommandsStream = "WAQUEUE_COMMANDS"
	EventsStream   = "WAQUEUE"
	// SubjectRoot starts every tenant subject: "waqueue.<tenant>.commands.…" and
	// "waqueue.<tenant>.events.…".
	SubjectRoot = "waqueue"
	// TopicsSubject starts the subjects of other topics; no tenant subject starts with it.
	TopicsSubject = "waqueue-topics"

	commandsPart = "commands"
	eventsPart   = "events"
	// Subjects of the layout before per-tenant subjects, purged by Open.
	legacyCommands = "waqueue.commands.>"
	legacyEvents   = "waqueue.events.>"
	legacyTopics   = "waqueue.topics.>"
)

// TenantToken returns the subject token of tenantID: the id with each '.' written '~' (tenant
// ids hold letters, digits, '-', '_' and '.', so the mapping is one to one).
func TenantToken(tenantID string) string { return strings.ReplaceAll(tenantID, ".", "~") }

// tenantFromToken reverses TenantToken.
func tenantFromToken(tok string) string { return strings.ReplaceAll(tok, "~", ".") }

// CommandsPrefix returns the subject prefix of tenantID's commands,
// "waqueue.<tenant>.commands.": a command named waqueue.<Command> goes to the prefix plus
// <Command>.
func CommandsPrefix(tenantID string) string {
	return SubjectRoot + "." + TenantToken(tenantID) + "." + commandsPart + "."
}

// EventsPrefix returns the subject prefix of tenantID's integration events,
// "waqueue.<tenant>.events.".
func EventsPrefix(tenantID string) string {
	return SubjectRoot + "." + TenantToken(tenantID) + "." + eventsPart + "."
}

// ErrNoTenant: a command or integration event without a tenant cannot be published.
var ErrNoTenant = errors.New("broker: message without a tenant")

// ErrUnsupportedURL is returned by Open for a URL whose scheme is not nats (or empty).
var ErrUnsupportedURL = errors.New("broker: unsupported broker URL")

// Config configures OpenConfig. Zero fields take the defaults of setDefaults.
type Config struct {
	// URL is "" for the in-process GoChannel, or "nats://host:4222" (several servers separated
	// by commas) for NATS JetStream.
	URL string
	// Logger; nil means no logging.
	Logger watermill.LoggerAdapter
	// DurablePrefix names the durable consumers ("<prefix>_<topic>"); every instance of one
	// deployment uses the same prefix so that they share the work. Default "waqueue".
	DurablePrefix string
	// AckWait is how long a delivered message may stay unacknowledged before JetStream
	// redelivers it. Default 30s.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one message; the last nack terminates it. Default 10.
	MaxDeliver int
	// NakDelay is the delay before the first redelivery of a nacked message; it doubles up to
	// MaxNakDelay. Defaults 1s and 1m.
	NakDelay, MaxNakDelay time.Duration
	// DuplicateWindow is how long JetStream remembers message ids to drop duplicates. Default 2m.
	DuplicateWindow time.Duration
	// EventRetention is how long EventsStream keeps messages. Default 7 days.
	EventRetention time.Duration
	// Replicas of both streams (1 on a single server, 3 on a cluster). Default 1.
	Replicas int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
	if c.DurablePrefix == "" {
		c.DurablePrefix = "waqueue"
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if c.NakDelay <= 0 {
		c.NakDelay = time.Second
	}
	if c.MaxNakDelay <= 0 {
		c.MaxNakDelay = time.Minute
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.EventRetention <= 0 {
		c.EventRetention = 7 * 24 * time.Hour
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
}

// Open is OpenConfig with the default settings.
func Open(ctx context.Context, url string, logger watermill.LoggerAdapter) (message.Publisher, message.Subscriber, io.Closer, error) {
	return OpenConfig(ctx, Config{URL: url, Logger: logger})
}

// OpenConfig opens the broker of cfg.URL and returns its publisher and subscriber, and a closer
// that closes both (and their connections). On NATS it connects, and creates or updates the
// streams before returning.
func OpenConfig(ctx context.Context, cfg Config) (message.Publisher, message.Subscriber, io.Closer, error) {
	cfg.setDefaults()
	if cfg.URL == "" {
		gc := newInProcess(commands.NewInProcessPubSub(cfg.Logger))
		return gc, gc, gc, nil
	}
	u, err := url.Parse(strings.Split(cfg.URL, ",")[0])
	if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") {
		return nil, nil, nil, fmt.Errorf("%w: %q (want \"\" or nats://host:port)", ErrUnsupportedURL, cfg.URL)
	}
	return openNATS(ctx, cfg)
}

func openNATS(ctx context.Context, cfg Config) (message.Publisher, message.Subscriber, io.Closer, error) {
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(cfg.URL, nats.Name(name), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("broker: connect to %s: %w", redact(cfg.URL), err)
		}
		return nc, nil
	}
	pubConn, err := connect("waqueue-publisher")
	if err != nil {
		return nil, nil, nil, err
	}
	js, err := jetstream.New(pubConn)
	if err != nil {
		pubConn.Close()
		return nil, nil, nil, fmt.Errorf("broker: jetstream: %w", err)
	}
	if err := ensureStreams(ctx, js, cfg); err != nil {
		pubConn.Close()
		return nil, nil, nil, err
	}
	inner, err := wmjs.NewPublisher(wmjs.PublisherConfig{
		Conn:   pubConn,
		Logger: cfg.Logger,
		// The watermill-nats JetStream publisher publishes on ConfigureStream(topic).Name; the
		// Publisher below already turned the topic into the subject.
		ConfigureStream: func(subject string) jetstream.StreamConfig { return jetstream.StreamConfig{Name: subject} },
	})
	if err != nil {
		pubConn.Close()
		return nil, nil, nil, fmt.Errorf("broker: publisher: %w", err)
	}
	subConn, err := connect("waqueue-subscriber")
	if err != nil {
		pubConn.Close()
		return nil, nil, nil, err
	}
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:                subConn,
		Logger:              cfg.Logger,
		AckWaitTimeout:      cfg.AckWait,
		ResourceInitializer: durableConsumer(cfg),
		NakDelay:            backoff{first: cfg.NakDelay, max: cfg.MaxNakDelay, maxDeliver: cfg.MaxDeliver},
		Unmarshaler:         unmarshaler{},
	})
	if err != nil {
		pubConn.Close()
		subConn.Close()
		return nil, nil, nil, fmt.Errorf("broker: subscriber: %w", err)
	}
	pub := &Publisher{inner: inner}
	return pub, sub, closers{sub, pub}, nil
}

// ensureStreams creates or updates CommandsStream and EventsStream, first purging the subjects
// of the layout before per-tenant subjects from a stream that still has them.
func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	for _, sc := range []jetstream.StreamConfig{
		{
			Name: CommandsStream, Subjects: []string{SubjectRoot + ".*." + commandsPart + ".>"},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
			Duplicates: cfg.DuplicateWindow, Replicas: cfg.Replicas,
			Description: "waqueue commands from backend services, per tenant",
		},
		{
			Name: EventsStream, Subjects: []string{SubjectRoot + ".*." + eventsPart + ".>", TopicsSubject + ".>"},
			Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, MaxAge: cfg.EventRetention,
			Duplicates: cfg.DuplicateWindow, Replicas: cfg.Replicas,
			Description: "waqueue integration events, per tenant",
		},
	} {
		if err := purgeLegacy(ctx, js, sc.Name); err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("broker: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// purgeLegacy removes the messages of the old shared subjects from stream, if it still lists
// them: old commands carry API keys in their metadata, old events mix tenants.
func purgeLegacy(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: stream %s: %w", name, err)
	}
	for _, subj := range s.CachedInfo().Config.Subjects {
		if subj != legacyCommands && subj != legacyEvents && subj != legacyTopics {
			continue
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("broker: purge %s of %s: %w", subj, name, err)
		}
	}
	return nil
}

// Subject returns the NATS subject of a message on topic for tenantID whose integration event
// type (the integration.MetaType metadata) is eventType; eventType matters only for
// integration.Topic, tenantID not for other topics. It returns ErrNoTenant for a command or an
// integration event without a tenant.
func Subject(topic, tenantID, eventType string) (string, error) {
	switch {
	case topic == integration.Topic:
		if tenantID == "" {
			return "", ErrNoTenant
		}
		if eventType == "" {
			return EventsPrefix(tenantID) + "unknown", nil
		}
		return EventsPrefix(tenantID) + token(strings.TrimPrefix(eventType, "waqueue."), true), nil
	case isCommandTopic(topic):
		if tenantID == "" {
			return "", ErrNoTenant
		}
		return CommandsPrefix(tenantID) + token(strings.TrimPrefix(topic, "waqueue."), false), nil
	default:
		return TopicsSubject + "." + token(topic, false), nil
	}
}

func isCommandTopic(topic string) bool {
	return strings.HasPrefix(topic, "waqueue.") && !strings.Contains(strings.TrimPrefix(topic, "waqueue."), ".")
}

// filterSubject is the stream and subject filter of a subscription to topic: every tenant's
// subjects of it.
func filterSubject(topic string) (stream, filter string) {
	switch {
	case topic == integration.Topic:
		return EventsStream, SubjectRoot + ".*." + eventsPart + ".>"
	case isCommandTopic(topic):
		return CommandsStream, SubjectRoot + ".*." + commandsPart + "." + token(strings.TrimPrefix(topic, "waqueue."), false)
	default:
		return EventsStream, TopicsSubject + "." + token(topic, false)
	}
}

// tenantOfSubject returns the tenant of a tenant subject ("waqueue.<tenant>.commands|events.…").
func tenantOfSubject(subject string) (string, bool) {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 4 || parts[0] != SubjectRoot || (parts[2] != commandsPart && parts[2] != eventsPart) || parts[1] == "" {
		return "", false
	}
	return tenantFromToken(parts[1]), true
}

// unmarshaler is watermill-nats' default unmarshaler plus the metadata only the broker may
// set: commands.MetaTenant from the subject the message arrived on (removed for a subject of
// no tenant) and commands.MetaStoredAt from the time JetStream stored it. What a publisher
// wrote under those keys is overwritten.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	m, err := wmjs.DefaultUnmarshaler{}.Unmarshal(msg)
	if err != nil {
		return nil, err
	}
	if tenant, ok := tenantOfSubject(msg.Subject()); ok {
		m.Metadata.Set(commands.MetaTenant, tenant)
	} else {
		delete(m.Metadata, commands.MetaTenant)
	}
	delete(m.Metadata, commands.MetaStoredAt)
	if md, err := msg.Metadata(); err == nil && !md.Timestamp.IsZero() {
		m.Metadata.Set(commands.MetaStoredAt, md.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	return m, nil
}

// token replaces the characters a NATS subject token may not hold; dots are kept (as token
// separators) only when keepDots is set.
func token(s string, keepDots bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '.' && keepDots:
			b.WriteRune(r)
		case r == '*' || r == '>' || r == '.' || r <= ' ' || r == 0x7f:
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// durableName is the consumer name of topic: letters, digits, '-' and '_' only.
func durableName(prefix, topic string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('_')
	for _, r := range topic {
		if r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// durableConsumer creates or updates the durable pull consumer of a topic. It never deletes it
// (the returned closer is nil): a durable outlives the subscription, so a restart resumes where
// the deployment left off.
func durableConsumer(cfg Config) wmjs.ResourceInitializer {
	return func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
		streamName, filter := filterSubject(topic)
		name := durableName(cfg.DurablePrefix, topic)
		c, err := js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable:       name,
			Description:   "waqueue subscriber of " + topic,
			FilterSubject: filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    cfg.MaxDeliver,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("broker: consumer %s on %s (%s): %w", name, streamName, filter, err)
		}
		return c, nil, nil
	}
}

// backoff is the nak delay: first, doubling up to max; the delivery numbered maxDeliver (or
// later) is terminated instead of redelivered.
type backoff struct {
	first, max time.Duration
	maxDeliver int
}

var _ wmjs.Delay = backoff{}

// WaitTime implements wmjs.Delay; delivered is the number of deliveries so far (1 on the first).
func (b backoff) WaitTime(delivered uint64) time.Duration {
	if delivered >= uint64(b.maxDeliver) {
		return wmjs.TermSignal
	}
	d := b.first
	for i := uint64(1); i < delivered && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// Publisher publishes watermill messages on NATS JetStream, on the subject Subject maps their
// topic and tenant (commands.MetaTenant) to, with their UUID as Nats-Msg-Id (JetStream drops
// duplicates within its window). Publish returns once JetStream stored each message.
type Publisher struct {
	inner *wmjs.Publisher
}

var _ message.Publisher = (*Publisher)(nil)

// Publish implements message.Publisher. Messages are published one by one, in order; on an
// error the ones before it are published.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		subject, err := Subject(topic, m.Metadata.Get(commands.MetaTenant), m.Metadata.Get(integration.MetaType))
		if err != nil {
			return fmt.Errorf("broker: publish %s on %s: %w", m.UUID, topic, err)
		}
		m.Metadata.Set(nats.MsgIdHdr, m.UUID)
		if err := p.inner.Publish(subject, m); err != nil {
			return fmt.Errorf("broker: publish %s to %s: %w", m.UUID, subject, err)
		}
	}
	return nil
}

// Close closes the publisher's connection.
func (p *Publisher) Close() error { return p.inner.Close() }

type closers []io.Closer

func (cs closers) Close() error {
	var err error
	for _, c := range cs {
		err = errors.Join(err, c.Close())
	}
	return err
}

// redact hides a password in a URL for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
