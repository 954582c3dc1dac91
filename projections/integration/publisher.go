package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/projections"
)

// PublisherName is the projection name (and checkpoint key) of the Publisher.
const PublisherName = "integration_publisher"

// Publisher is a process manager (a projections.Projection without rows) that publishes the
// integration event of every domain event it is given on Topic.
//
// At least once: Apply publishes each event before the runner commits the batch's checkpoint,
// and a failed publish fails the batch, which the runner delivers again. A crash after a
// publish and before the commit republishes the same events with the same ids (the message
// UUID is the integration event id), so consumers must dedupe on the id; NATS JetStream does so
// itself within its duplicate window (adapters/broker sets Nats-Msg-Id from the UUID).
//
// Publishing inside Apply holds the read-model transaction for the publish's duration; on the
// embedded SQLite database keep the publisher fast (the in-process GoChannel is, and a JetStream
// publish is one round trip).
type Publisher struct {
	pub message.Publisher
}

var _ projections.Projection = (*Publisher)(nil)

// NewPublisher returns the projection publishing on pub.
func NewPublisher(pub message.Publisher) (*Publisher, error) {
	if pub == nil {
		return nil, errors.New("integration: NewPublisher: nil publisher")
	}
	return &Publisher{pub: pub}, nil
}

// Name implements projections.Projection.
func (p *Publisher) Name() string { return PublisherName }

// Filter implements projections.Projection.
func (p *Publisher) Filter() eventstore.Filter { return Filter() }

// Subscribed is an optional interface of the publisher: a publisher that drops what is
// published on a topic nobody subscribed to (the in-process GoChannel without persistence)
// reports whether topic was ever subscribed to, and while it was not, Apply builds and
// publishes nothing (what it would publish would be dropped unseen).
type Subscribed interface {
	Subscribed(topic string) bool
}

// Apply publishes the integration events of events, in order, one message each; the messages
// of one domain event (a broadcast chunk's thousands) in one Publish call. On a publisher that
// tells nobody subscribed to Topic (Subscribed) it does nothing.
func (p *Publisher) Apply(ctx context.Context, _ *projections.Tx, events []eventstore.RecordedEvent) error {
	if s, ok := p.pub.(Subscribed); ok && !s.Subscribed(Topic) {
		return nil
	}
	var msgs []*message.Message
	for _, e := range events {
		ies, err := TranslateAll(e)
		if err != nil {
			return err
		}
		msgs = msgs[:0]
		for _, ie := range ies {
			m, err := NewMessage(ie)
			if err != nil {
				return err
			}
			m.SetContext(ctx)
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			continue
		}
		if err := p.pub.Publish(Topic, msgs...); err != nil {
			return fmt.Errorf("integration: publish %d %s events of event %s: %w", len(msgs), ies[0].Type, e.ID, err)
		}
	}
	return nil
}

// Reset implements projections.Projection: the publisher owns no rows. A rebuild republishes
// every integration event with its original id.
func (p *Publisher) Reset(context.Context, *projections.Tx) error { return nil }

// NewMessage returns the watermill message carrying ie: its UUID is ie.ID, its payload ie's JSON,
// and its metadata MetaType and MetaTenant.
func NewMessage(ie Event) (*message.Message, error) {
	body, err := appendEvent(make([]byte, 0, 256+len(ie.Data)), ie) // json.Marshal's bytes (encode.go)
	if err != nil {
		return nil, fmt.Errorf("integration: encode %s: %w", ie.ID, err)
	}
	m := message.NewMessage(ie.ID.String(), body)
	m.Metadata.Set(MetaType, ie.Type)
	m.Metadata.Set(MetaTenant, ie.TenantID)
	return m, nil
}

// Decode reads an integration event from a message published by Publisher.
func Decode(m *message.Message) (Event, error) {
	var ie Event
	if err := json.Unmarshal(m.Payload, &ie); err != nil {
		return Event{}, fmt.Errorf("integration: decode message %s: %w", m.UUID, err)
	}
	return ie, nil
}
