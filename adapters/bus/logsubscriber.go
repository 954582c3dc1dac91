// Package bus wires waqueue's messaging onto watermill: a watermill Subscriber that reads the
// event store's global log (the hot event path reads the store directly, never watermill's SQL
// subscriber), and the publishers for integration events.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Metadata keys set on every message produced by LogSubscriber.
const (
	// MetaLastPosition holds the Position of the last event of the batch ("commit/prepare").
	MetaLastPosition = "waqueue_last_position"
	// MetaCount holds the number of events in the batch.
	MetaCount = "waqueue_event_count"
)

// LogSubscriberConfig configures a LogSubscriber. The zero value of optional fields is replaced
// by a default.
type LogSubscriberConfig struct {
	// Store is the event store whose global log is read. Required.
	Store eventstore.Store
	// Checkpoint returns where the consumer of topic left off; the subscription starts strictly
	// after it. Required: a consumer that forgets its checkpoint would replay from Start.
	Checkpoint func(ctx context.Context, topic string) (eventstore.Position, error)
	// Filter returns the events topic wants. Optional: nil means every event.
	Filter func(topic string) eventstore.Filter
	// BatchSize is the most events put in one message when MaxBatchSize is not larger.
	// Default 512.
	BatchSize int
	// MaxBatchSize is the most events put in one message: a message takes every event read
	// and not yet delivered, up to this many, and the events read while the consumer handles a
	// message are collected into the next one. Catching up, batches grow to what the log
	// yields while one is applied; live, they stay as small as what arrives. It is also how
	// many events the subscriber reads ahead (or one page of the store's, when a page is
	// larger); nothing is reserved for them before they are read. Default (or below
	// BatchSize): BatchSize.
	MaxBatchSize int
	// RedeliveryDelay is the first pause before a nacked batch is delivered again; it doubles up
	// to MaxRedeliveryDelay. Defaults 100ms and 30s.
	RedeliveryDelay    time.Duration
	MaxRedeliveryDelay time.Duration
	// Logger defaults to watermill.NopLogger.
	Logger watermill.LoggerAdapter
	// Gate, if set, lets a consumer read the log only while it wants to: before topic's store
	// subscription starts, and again each time the context Gate returned ends, the subscriber
	// calls Gate, which blocks until the consumer wants topic's events (or ctx ends: it then
	// returns ctx's error) and returns a context that ends when it no longer does. Each time the
	// gate opens the subscription starts after Checkpoint(topic), read afresh; while it is
	// closed the topic reads nothing. Optional: without it a topic reads from Subscribe until
	// ctx ends (and Subscribe reads the checkpoint before it returns).
	Gate func(ctx context.Context, topic string) (context.Context, error)
}

func (c *LogSubscriberConfig) setDefaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 512
	}
	if c.MaxBatchSize < c.BatchSize {
		c.MaxBatchSize = c.BatchSize
	}
	if c.RedeliveryDelay <= 0 {
		c.RedeliveryDelay = 100 * time.Millisecond
	}
	if c.MaxRedeliveryDelay <= 0 {
		c.MaxRedeliveryDelay = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
	if c.Filter == nil {
		c.Filter = func(string) eventstore.Filter { return eventstore.Filter{} }
	}
}

// Validate reports every missing required field.
func (c LogSubscriberConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("bus: LogSubscriberConfig.Store is nil"))
	}
	if c.Checkpoint == nil {
		errs = append(errs, errors.New("bus: LogSubscriberConfig.Checkpoint is nil"))
	}
	return errors.Join(errs...)
}

// LogSubscriber is a watermill message.Subscriber over the event store's global log. Each topic
// is one consumer (a projection or process manager). Subscribe starts after the consumer's
// checkpoint and emits batches of events in global order: one message holds up to BatchSize
// events, read with DecodeBatch. The events travel in the message's context, in process (the
// consumer is a handler of the same process's router): encoding every batch as JSON and
// decoding it again cost more CPU than applying it (issue 12's catch-up profile). The payload is
// empty; MetaLastPosition and MetaCount describe the batch for logs and middleware.
//
// Ordering and delivery: a message is emitted only after the previous one was acked, so a
// consumer sees batches strictly in order. A nacked batch is delivered again, unchanged, after a
// growing delay (never skipped: an ordered read model must not lose an event), so a handler that
// keeps failing holds its own topic back and nothing else. Delivery is at least once: the
// consumer stores its checkpoint with its rows and ignores what it has already applied.
type LogSubscriber struct {
	cfg    LogSubscriberConfig
	mu     sync.Mutex
	closed bool
	cancel []context.CancelFunc
	wg     sync.WaitGroup
}

var _ message.Subscriber = (*LogSubscriber)(nil)

// NewLogSubscriber validates cfg and returns a subscriber.
func NewLogSubscriber(cfg LogSubscriberConfig) (*LogSubscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &LogSubscriber{cfg: cfg}, nil
}

// Subscribe implements message.Subscriber. The returned channel is closed when ctx is done or the
// subscriber is closed.
func (s *LogSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("bus: log subscriber closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = append(s.cancel, cancel)
	s.wg.Add(1)
	s.mu.Unlock()

	if s.cfg.Gate != nil {
		out := make(chan *message.Message)
		go func() {
			defer s.wg.Done()
			defer close(out)
			s.runGated(ctx, topic, out)
		}()
		return out, nil
	}
	after, err := s.cfg.Checkpoint(ctx, topic)
	if err != nil {
		cancel()
		s.wg.Done()
		return nil, fmt.Errorf("bus: checkpoint of %q: %w", topic, err)
	}
	out := make(chan *message.Message)
	go func() {
		defer s.wg.Done()
		defer close(out)
		s.run(ctx, topic, after, out)
	}()
	return out, nil
}

// runGated feeds out while topic's gate is open, until ctx is done.
func (s *LogSubscriber) runGated(ctx context.Context, topic string, out chan<- *message.Message) {
	backoff := s.cfg.RedeliveryDelay
	for ctx.Err() == nil {
		open, err := s.cfg.Gate(ctx, topic)
		if err != nil {
			return
		}
		after, err := s.cfg.Checkpoint(open, topic)
		if err != nil {
			if open.Err() == nil {
				s.cfg.Logger.Error("log subscription: checkpoint not read; retrying", err, watermill.LogFields{"topic": topic, "delay": backoff})
				sleep(open, backoff)
				backoff = min(backoff*2, s.cfg.MaxRedeliveryDelay)
			}
			continue
		}
		backoff = s.cfg.RedeliveryDelay
		s.run(open, topic, after, out)
	}
}

// run feeds out until ctx is done; the store subscription restarts from the last acked position
// when it fails (for example while the database is down).
func (s *LogSubscriber) run(ctx context.Context, topic string, after eventstore.Position, out chan<- *message.Message) {
	log := s.cfg.Logger.With(watermill.LogFields{"topic": topic})
	filter := s.cfg.Filter(topic)
	backoff := s.cfg.RedeliveryDelay
	for ctx.Err() == nil {
		subCtx, stop := context.WithCancel(ctx)
		ahead := newReadAhead(s.cfg.MaxBatchSize)
		subErr := make(chan error, 1)
		go func() {
			defer ahead.end()
			subErr <- eventstore.SubscribePages(subCtx, s.cfg.Store, after, filter, func(page []eventstore.RecordedEvent) error {
				return ahead.put(subCtx, page)
			})
		}()
		next, ok := s.deliver(subCtx, topic, ahead, out)
		if ok {
			after = next
			backoff = s.cfg.RedeliveryDelay
		}
		stop()
		err := <-subErr
		if ctx.Err() != nil {
			return
		}
		if !ok && err != nil {
			log.Error("log subscription failed; resubscribing", err, watermill.LogFields{"after": after.String(), "delay": backoff})
		}
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, s.cfg.MaxRedeliveryDelay)
	}
}

// deliver hands the events read ahead over in messages until the store subscription has ended
// and everything it read is delivered, or ctx is done. It returns the position of the last
// acked event and whether any was acked. A message takes every event read and not yet
// delivered, up to MaxBatchSize: the log is read while the consumer applies the previous
// message, and what was read meanwhile makes the next one.
func (s *LogSubscriber) deliver(ctx context.Context, topic string, ahead *readAhead, out chan<- *message.Message) (eventstore.Position, bool) {
	var last eventstore.Position
	acked := false
	for {
		batch, ok := ahead.take(ctx)
		if !ok {
			return last, acked
		}
		if ctx.Err() != nil {
			// Ended (a gate closed by the consumer's last handler, say): deliver nothing more.
			return last, acked
		}
		if !s.sendUntilAcked(ctx, newBatchMessage(batch), out) {
			return last, acked
		}
		last, acked = batch[len(batch)-1].Position, true
	}
}

// sendUntilAcked delivers msg and redelivers copies of it after nacks. It reports whether msg
// was acked before ctx ended.
func (s *LogSubscriber) sendUntilAcked(ctx context.Context, msg *message.Message, out chan<- *message.Message) bool {
	delay := s.cfg.RedeliveryDelay
	for {
		m := msg.Copy()
		m.SetContext(context.WithValue(ctx, batchKey{}, msg.Context().Value(batchKey{})))
		select {
		case out <- m:
		case <-ctx.Done():
			return false
		}
		select {
		case <-m.Acked():
			return true
		case <-m.Nacked():
		case <-ctx.Done():
			return false
		}
		if !sleep(ctx, delay) {
			return false
		}
		delay = min(delay*2, s.cfg.MaxRedeliveryDelay)
	}
}

// readAhead holds the pages a store subscription has read and deliver has not taken yet: at
// most max events, or one page when a page alone is larger. The pages are the store's
// (eventstore.PageSubscriber): a message whose events all come from one page shares its
// array, and one made of several is copied once, at its exact size. Nothing is reserved
// before it is read: a live subscription holds what arrives, a few events.
type readAhead struct {
	mu    sync.Mutex
	pages [][]eventstore.RecordedEvent
	n     int // events in pages
	max   int
	ended bool
	ready chan struct{} // signalled when a page is added or the subscription ends
	room  chan struct{} // signalled when events are taken
}

func newReadAhead(limit int) *readAhead {
	return &readAhead{max: limit, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put adds page once there is room for it (or ctx is done: its error).
func (q *readAhead) put(ctx context.Context, page []eventstore.RecordedEvent) error {
	for {
		q.mu.Lock()
		if q.n == 0 || q.n+len(page) <= q.max {
			q.pages = append(q.pages, page)
			q.n += len(page)
			q.mu.Unlock()
			signal(q.ready)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// end records that the subscription put its last page.
func (q *readAhead) end() {
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	signal(q.ready)
}

// take waits for events and removes up to max of them, in order. It returns false when the
// subscription ended and everything was taken, or ctx is done.
func (q *readAhead) take(ctx context.Context) ([]eventstore.RecordedEvent, bool) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			batch := q.takeLocked()
			q.mu.Unlock()
			signal(q.room)
			return batch, true
		}
		ended := q.ended
		q.mu.Unlock()
		if ended {
			return nil, false
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (q *readAhead) takeLocked() []eventstore.RecordedEvent {
	want := min(q.n, q.max)
	q.n -= want
	if first := q.pages[0]; len(first) >= want {
		// The message is (the start of) one page: handed over without a copy, its capacity
		// cut so that nothing can write into the rest.
		q.dropFront(want)
		return first[:want:want]
	}
	batch := make([]eventstore.RecordedEvent, 0, want)
	for len(batch) < want {
		p := q.pages[0]
		k := min(len(p), want-len(batch))
		batch = append(batch, p[:k]...)
		q.dropFront(k)
	}
	return batch
}

// dropFront removes the first k events of the first page.
func (q *readAhead) dropFront(k int) {
	if k < len(q.pages[0]) {
		q.pages[0] = q.pages[0][k:]
		return
	}
	q.pages[0] = nil
	q.pages = q.pages[1:]
}

// Close stops every subscription and waits for them to end.
func (s *LogSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, c := range s.cancel {
		c()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// batchKey is the context key of the events a LogSubscriber message carries.
type batchKey struct{}

// newBatchMessage builds the message that carries batch in process (see LogSubscriber). Its
// UUID is the last event's id, so a redelivered batch is recognisable in logs.
func newBatchMessage(batch []eventstore.RecordedEvent) *message.Message {
	last := batch[len(batch)-1]
	m := message.NewMessage(last.ID.String(), nil)
	m.Metadata.Set(MetaLastPosition, last.Position.String())
	m.Metadata.Set(MetaCount, strconv.Itoa(len(batch)))
	m.SetContext(context.WithValue(context.Background(), batchKey{}, batch))
	return m
}

// EncodeBatch builds a message that carries batch as its JSON payload (for a consumer in
// another process; LogSubscriber itself hands batches over in process). Its UUID is the last
// event's id.
func EncodeBatch(batch []eventstore.RecordedEvent) (*message.Message, error) {
	if len(batch) == 0 {
		return nil, errors.New("bus: empty batch")
	}
	payload, err := json.Marshal(batch)
	if err != nil {
		return nil, fmt.Errorf("bus: encode batch: %w", err)
	}
	last := batch[len(batch)-1]
	m := message.NewMessage(last.ID.String(), payload)
	m.Metadata.Set(MetaLastPosition, last.Position.String())
	m.Metadata.Set(MetaCount, strconv.Itoa(len(batch)))
	return m, nil
}

// DecodeBatch returns the events carried by a message of LogSubscriber (in its context) or of
// EncodeBatch (its JSON payload). The events are shared with redeliveries of the message: do
// not modify them. A message carrying neither is an error, never an empty batch.
func DecodeBatch(m *message.Message) ([]eventstore.RecordedEvent, error) {
	if batch, ok := m.Context().Value(batchKey{}).([]eventstore.RecordedEvent); ok && len(batch) > 0 {
		return batch, nil
	}
	if len(m.Payload) == 0 {
		return nil, fmt.Errorf("bus: message %s carries no batch", m.UUID)
	}
	var batch []eventstore.RecordedEvent
	if err := json.Unmarshal(m.Payload, &batch); err != nil {
		return nil, fmt.Errorf("bus: decode batch %s: %w", m.UUID, err)
	}
	return batch, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
