// Package esdb is the EventStoreDB/KurrentDB adapter of the eventstore port, built on
// EventStore-Client-Go v4 (v4.2.0).
//
// Mapping onto EventStoreDB:
//   - streams, revisions and expected revisions map 1:1 (Any, NoStream, StreamExists,
//     Exact(n) → esdb.Revision(n)); a wrong expected version becomes a
//     *eventstore.WrongExpectedRevisionError carrying the server's current revision;
//   - the event id is always the caller's EventData.ID (the client would invent a random one
//     otherwise, which makes a retried append write twice); EventStoreDB's idempotency on
//     event ids then makes retries safe;
//   - Position{Commit, Prepare} is EventStoreDB's commit/prepare position pair, 1:1;
//   - the port's Metadata travels as JSON in the event's custom metadata, together with
//     "recorded_at" (RFC 3339, nanoseconds) taken from the injected clock when the append is
//     made. RecordedAt is read back from it; for events written by other tools without it,
//     RecordedAt is EventStoreDB's own "created" time. EventStoreDB's created time is the
//     server's clock and cannot be set, which is why the clock's time is carried this way;
//   - system events (types starting with "$") are never returned by ReadAll or Subscribe.
//
// Divergence from the port: EventStoreDB does not index event ids across streams, so an id
// already stored in another stream is accepted by a real server instead of failing with
// *eventstore.DuplicateEventError (the in-process test server does report it, as
// codes.AlreadyExists, which this adapter maps). Deterministic ids still make retries to the
// same stream idempotent.
//
// Client defects guarded against (v4.2.0):
//   - A failed node discovery (server down for longer than the discovery attempts) closes the
//     client for good: every later call fails with ErrorCodeConnectionClosed. The Store then
//     replaces the client with a fresh one, so that reads, appends and resubscriptions work again
//     once the server is back. Calls that were waiting for a connection while discovery failed
//     stay blocked forever inside that client, on a send that no context can interrupt: every
//     call that may wait for a connection therefore runs on its own goroutine, and the caller
//     stops waiting for it when its context ends or when the client is replaced (then it
//     retries or resubscribes on the new client). A read's draining counts: a read that fails
//     with Unavailable reports it to the same channel from ReadStream.Recv, so reads are also
//     drained on that goroutine (see read). The dead client is not closed: closing it would
//     make those blocked sends panic.
//   - Every client call sends on the client's internal channel, which Client.Close closes, so
//     a call racing with Close panics with "send on closed channel". Close therefore cancels
//     every running call and waits for them before closing the client, and every call into the
//     client runs under recover, turning such a panic into an error instead of a crash.
//   - A read that receives a message the client does not know panics ("unreachable code");
//     the same recover covers it.
package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Options configures a Store.
type Options struct {
	// Clock stamps recorded_at on every appended event. Nil means time.Now.
	Clock eventstore.Clock
	// PageSize is how many events ReadAll asks the server for at once. Zero means 512.
	PageSize int
	// ResubscribeMinBackoff is the first wait before resubscribing after a subscription
	// drops; it doubles on every failed attempt up to ResubscribeMaxBackoff and resets after
	// an event arrives. Zero means 50ms.
	ResubscribeMinBackoff time.Duration
	// ResubscribeMaxBackoff caps the wait between resubscription attempts. Zero means 5s.
	ResubscribeMaxBackoff time.Duration
	// Logger receives the client's log lines and the adapter's resubscription notices.
	// Nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.PageSize <= 0 {
		o.PageSize = 512
	}
	if o.ResubscribeMinBackoff <= 0 {
		o.ResubscribeMinBackoff = 50 * time.Millisecond
	}
	if o.ResubscribeMaxBackoff <= 0 {
		o.ResubscribeMaxBackoff = 5 * time.Second
	}
	if o.ResubscribeMaxBackoff < o.ResubscribeMinBackoff {
		o.ResubscribeMaxBackoff = o.ResubscribeMinBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store is the EventStoreDB adapter. It is safe for concurrent use.
type Store struct {
	opts   Options
	config *esdb.Configuration

	// ctx is cancelled by Close; every call runs under a context derived from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	gen    *generation // the client in use
	closed bool
	calls  sync.WaitGroup // running calls; Close waits for them before closing the client
}

var _ eventstore.Store = (*Store)(nil)

// generation is one client; gone is closed when the Store replaces it.
type generation struct {
	client *esdb.Client
	gone   chan struct{}
	// fns counts client calls still running on their own goroutine (see open), including
	// those whose caller has given up on them: Close waits for them (a bounded time) before it
	// closes the client, whose Close races with a call still queueing for its connection.
	fns sync.WaitGroup
}

// closeGrace bounds how long Close waits for abandoned client calls to return.
const closeGrace = 5 * time.Second

// errClientReplaced ends a call still waiting on a client the Store has replaced.
var errClientReplaced = errors.New("esdb: client replaced after its connection closed")

// New returns a Store for connString, an EventStoreDB connection string such as
// "esdb://localhost:2113?tls=false" or "esdb+discover://node1:2113,node2:2113?tls=true".
// The kurrentdb:// and kdb:// schemes (with or without +discover) are accepted as aliases.
// New does not contact the server: the client connects on first use. ctx bounds nothing
// beyond New itself and is accepted for symmetry with the other adapters.
func New(ctx context.Context, connString string, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	config, err := esdb.ParseConnectionString(normalizeScheme(connString))
	if err != nil {
		return nil, fmt.Errorf("esdb: parse connection string: %w", err)
	}
	logger := opts.Logger
	config.Logger = func(level esdb.LogLevel, format string, args ...interface{}) {
		// The v4.2.0 client passes its arguments as one slice; flatten it back.
		if len(args) == 1 {
			if inner, ok := args[0].([]interface{}); ok {
				args = inner
			}
		}
		lvl := slog.LevelInfo
		switch level {
		case esdb.LogDebug:
			lvl = slog.LevelDebug
		case esdb.LogWarn:
			lvl = slog.LevelWarn
		case esdb.LogError:
			lvl = slog.LevelError
		}
		msg := fmt.Sprintf(format, args...)
		if lvl > slog.LevelDebug && strings.Contains(msg, "code = Canceled") {
			// The client reports every subscription it closes as "dropped" at error level,
			// including the adapter's own Close after the caller cancelled: not a problem.
			lvl = slog.LevelDebug
		}
		logger.Log(context.Background(), lvl, "esdb client: "+msg)
	}
	client, err := esdb.NewClient(config)
	if err != nil {
		return nil, fmt.Errorf("esdb: new client: %w", err)
	}
	s := &Store{opts: opts, config: config, gen: &generation{client: client, gone: make(chan struct{})}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// normalizeScheme maps the KurrentDB schemes onto the esdb ones the v4 client parses.
func normalizeScheme(conn string) string {
	for _, alias := range []string{"kurrentdb", "kurrent", "kdb"} {
		if rest, ok := strings.CutPrefix(conn, alias+"+discover://"); ok {
			return "esdb+discover://" + rest
		}
		if rest, ok := strings.CutPrefix(conn, alias+"://"); ok {
			return "esdb://" + rest
		}
	}
	return conn
}

// Close cancels every running call, waits for them to return, then closes the client.
// Subscribe calls return eventstore.ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.calls.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.gen.fns.Wait(); close(done) }()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select { // cancelled above, they normally return at once
	case <-done:
	case <-t.C:
	}
	return s.gen.client.Close()
}

// begin registers a call: it returns the current client and a context cancelled when ctx is
// done or the store closes. end must be called when the call returns.
func (s *Store) begin(ctx context.Context) (*generation, context.Context, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, nil, eventstore.ErrClosed
	}
	s.calls.Add(1)
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return s.gen, cctx, func() {
		stop()
		cancel()
		s.calls.Done()
	}, nil
}

// renew replaces gen's client with a fresh one if err shows that it closed itself while the
// store is open (see the package doc): either the failed discovery itself, reported to the call
// that started it, or ErrorCodeConnectionClosed, reported to every later call. Replacing it at
// the discovery failure releases at once the calls queued behind that discovery. It is a no-op
// if another call already replaced it.
func (s *Store) renew(gen *generation, err error) {
	var ee *esdb.Error
	if !errors.As(err, &ee) {
		return
	}
	discoveryFailed := ee.Err() != nil && strings.Contains(ee.Err().Error(), "maximum discovery attempt count reached")
	if ee.Code() != esdb.ErrorCodeConnectionClosed && !discoveryFailed {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.gen != gen {
		return
	}
	fresh, nerr := esdb.NewClient(s.config)
	if nerr != nil {
		return
	}
	close(gen.gone)
	s.gen = &generation{client: fresh, gone: make(chan struct{})}
	s.opts.Logger.Warn("esdb: client connection closed after failed discovery; using a new client")
}

// guard runs fn, turning a panic inside the client into an error.
func guard(op string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("esdb: %s: client panicked: %v", op, r)
		}
	}()
	return fn()
}

// open runs fn, a client call that may wait for a connection beyond any context (see the
// package doc), on its own goroutine under guard, and waits for it, for ctx or for gen to be
// replaced. What an abandoned fn returns is released by the cancellation of ctx.
func open[T any](ctx context.Context, gen *generation, op string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	gen.fns.Add(1)
	go func() {
		defer gen.fns.Done()
		var r result
		r.err = guard(op, func() (err error) {
			r.v, err = fn()
			return err
		})
		ch <- r
	}()
	var zero T
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-gen.gone:
		return zero, errClientReplaced
	}
}

// closedErr returns eventstore.ErrClosed if the store closed during a call, else err.
func (s *Store) closedErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if s.ctx.Err() != nil {
			return eventstore.ErrClosed
		}
		return ctx.Err()
	}
	return err
}

// meta is what the adapter writes as an event's custom metadata.
type meta struct {
	eventstore.Metadata
	RecordedAt *time.Time `json:"recorded_at,omitempty"`
}

func toExpected(e eventstore.ExpectedRevision) esdb.ExpectedRevision {
	switch {
	case e.IsNoStream():
		return esdb.NoStream{}
	case e.IsStreamExists():
		return esdb.StreamExists{}
	}
	if rev, ok := e.Revision(); ok {
		return esdb.Revision(rev)
	}
	return esdb.Any{}
}

// Append implements eventstore.Store. An empty batch is checked against the stream's last
// revision, read from the server, and writes nothing.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if err := eventstore.Validate(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(events) == 0 {
		actual, err := s.lastRevision(ctx, stream)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if !expected.Check(actual) {
			return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
		}
		return eventstore.AppendResult{NextExpectedRevision: uint64(max(actual, 0))}, nil
	}
	recordedAt := s.opts.Clock().UTC()
	data := make([]esdb.EventData, len(events))
	for i, e := range events {
		md, err := json.Marshal(meta{Metadata: e.Metadata, RecordedAt: &recordedAt})
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("esdb: append to %q: encode metadata: %w", stream, err)
		}
		body := []byte(e.Data)
		if body == nil {
			body = []byte{}
		}
		data[i] = esdb.EventData{EventID: e.ID, EventType: e.Type, ContentType: esdb.ContentTypeJson, Data: body, Metadata: md}
	}

	gen, cctx, end, err := s.begin(ctx)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	defer end()
	res, err := open(cctx, gen, "append", func() (*esdb.WriteResult, error) {
		return gen.client.AppendToStream(cctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: toExpected(expected)}, data...)
	})
	if err == nil {
		return eventstore.AppendResult{
			NextExpectedRevision: res.NextExpectedVersion,
			Position:             eventstore.Position{Commit: res.CommitPosition, Prepare: res.PreparePosition},
		}, nil
	}
	s.renew(gen, err)
	var ee *esdb.Error
	if errors.As(err, &ee) && ee.Code() == esdb.ErrorCodeWrongExpectedVersion {
		actual, ok := parseCurrent(ee)
		if !ok {
			if actual, err = s.lastRevision(ctx, stream); err != nil {
				return eventstore.AppendResult{}, fmt.Errorf("esdb: append to %q: wrong expected revision, and reading the current one failed: %w", stream, err)
			}
		}
		return eventstore.AppendResult{}, &eventstore.WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: actual}
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.AlreadyExists {
		if id, ok := duplicateID(st.Message(), events); ok {
			return eventstore.AppendResult{}, &eventstore.DuplicateEventError{ID: id.ID, Stream: stream}
		}
	}
	return eventstore.AppendResult{}, fmt.Errorf("esdb: append to %q: %w", stream, s.closedErr(cctx, err))
}

// parseCurrent extracts the current revision from the v4.2.0 client's wrong-expected-version
// error, whose only carrier is its text: "wrong expected version: expecting 'X' but got 'Y'".
func parseCurrent(ee *esdb.Error) (int64, bool) {
	if ee.Err() == nil {
		return 0, false
	}
	msg := ee.Err().Error()
	i := strings.LastIndex(msg, "but got '")
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len("but got '"):]
	j := strings.IndexByte(rest, '\'')
	if j < 0 {
		return 0, false
	}
	if rest[:j] == "no_stream" {
		return eventstore.NoRevision, true
	}
	n, err := strconv.ParseInt(rest[:j], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// duplicateID finds which event of the batch a duplicate-id error names.
func duplicateID(msg string, events []eventstore.EventData) (eventstore.EventData, bool) {
	for _, e := range events {
		if strings.Contains(msg, e.ID.String()) {
			return e, true
		}
	}
	return eventstore.EventData{}, false
}

// lastRevision returns the stream's last revision, or NoRevision if it has no events.
func (s *Store) lastRevision(ctx context.Context, stream string) (int64, error) {
	evs, err := s.ReadStream(ctx, stream, eventstore.Backwards, eventstore.End, 1)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return eventstore.NoRevision, nil
	}
	if err != nil {
		return 0, err
	}
	return int64(evs[0].Revision), nil
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, dir eventstore.Direction, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	opts := esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(from)}
	if dir == eventstore.Backwards {
		opts.Direction = esdb.Backwards
	}
	if from == eventstore.End {
		opts.From = esdb.End{}
	}
	count := uint64(math.MaxInt64)
	if limit > 0 {
		count = uint64(limit)
	}
	gen, cctx, end, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	out, err := read(cctx, gen, "read stream", func() (*esdb.ReadStream, error) {
		return gen.client.ReadStream(cctx, stream, opts, count)
	})
	if err != nil {
		s.renew(gen, err)
		var ee *esdb.Error
		if errors.As(err, &ee) && ee.Code() == esdb.ErrorCodeResourceNotFound {
			return nil, fmt.Errorf("esdb: read %q: %w", stream, eventstore.ErrStreamNotFound)
		}
		return nil, fmt.Errorf("esdb: read %q: %w", stream, s.closedErr(cctx, err))
	}
	return out, nil
}

// ReadAll implements eventstore.Store. EventStoreDB reads $all from a position inclusively;
// the event at after is skipped. Filters and the exclusion of system events are applied by
// the adapter while paging through $all.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int, filter eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	gen, cctx, end, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	var out []eventstore.RecordedEvent
	cursor := after
	for limit <= 0 || len(out) < limit {
		var from esdb.AllPosition = esdb.Start{}
		if !cursor.IsZero() {
			from = esdb.Position{Commit: cursor.Commit, Prepare: cursor.Prepare}
		}
		n := 0
		err := s.readAllPage(cctx, gen, from, func(e eventstore.RecordedEvent) {
			n++
			if !cursor.Less(e.Position) {
				return // the inclusive start, or an event already seen
			}
			cursor = e.Position
			if isSystem(e.Type) || !filter.Match(e) {
				return
			}
			if limit <= 0 || len(out) < limit {
				out = append(out, e)
			}
		})
		if err != nil {
			s.renew(gen, err)
			return nil, fmt.Errorf("esdb: read $all after %s: %w", after, s.closedErr(cctx, err))
		}
		if n < s.opts.PageSize+1 {
			break
		}
	}
	return out, nil
}

// readAllPage reads one page of $all forwards from (inclusive) and hands each event to fn.
func (s *Store) readAllPage(ctx context.Context, gen *generation, from esdb.AllPosition, fn func(eventstore.RecordedEvent)) error {
	page, err := read(ctx, gen, "read $all", func() (*esdb.ReadStream, error) {
		return gen.client.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Forwards, From: from}, uint64(s.opts.PageSize)+1)
	})
	if err != nil {
		return err
	}
	for _, e := range page {
		fn(e)
	}
	return nil
}

// read starts a read with start and drains it, both on open's goroutine, and returns its
// events. The draining must not run on the caller's goroutine: when a read fails with
// Unavailable, ReadStream.Recv reports it to the client's connection state machine over an
// unbuffered channel, and a v4.2.0 client whose discovery has failed in the meantime has no
// state machine left to receive it, so Recv never returns. Under open the caller is released by
// its context or by renew replacing the client.
func read(ctx context.Context, gen *generation, op string, start func() (*esdb.ReadStream, error)) ([]eventstore.RecordedEvent, error) {
	return open(ctx, gen, op, func() ([]eventstore.RecordedEvent, error) {
		rs, err := start()
		if err != nil {
			return nil, err
		}
		return drain(op, rs)
	})
}

// drain returns every event of rs until the end of the read, then closes rs.
func drain(op string, rs *esdb.ReadStream) (out []eventstore.RecordedEvent, err error) {
	defer rs.Close()
	err = guard(op, func() error {
		for {
			ev, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if ev.Event != nil {
				out = append(out, toRecorded(ev.Event))
			}
		}
	})
	return out, err
}

func isSystem(eventType string) bool { return strings.HasPrefix(eventType, "$") }

// subscriptionFilter picks the server-side filter: by stream prefix when the port filter has
// prefixes, else by event type, else only the exclusion of system events. The adapter applies
// the whole port filter again on what arrives (the server filters on one field, by prefix).
func subscriptionFilter(f eventstore.Filter) *esdb.SubscriptionFilter {
	switch {
	case len(f.StreamPrefixes) > 0:
		return &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: f.StreamPrefixes}
	case len(f.EventTypes) > 0:
		return &esdb.SubscriptionFilter{Type: esdb.EventFilterType, Prefixes: f.EventTypes}
	default:
		return esdb.ExcludeSystemEventsFilter()
	}
}

// Subscribe implements eventstore.Store with a catch-up subscription to $all, starting
// exclusively after the given position. When the subscription drops (server restart, leader
// change, network failure) it resubscribes from the last position received, with exponential
// backoff, until ctx is done or the store closes; events at or before that position are
// discarded, so the handler sees no gap and no duplicate. Checkpoints sent by the server for
// filtered subscriptions advance the resume position too.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, filter eventstore.Filter, handle func(eventstore.RecordedEvent) error) error {
	last := after
	backoff := s.opts.ResubscribeMinBackoff
	for {
		err := s.subscribeOnce(ctx, &last, filter, handle, &backoff)
		var herr *handlerError
		switch {
		case errors.As(err, &herr):
			return fmt.Errorf("esdb: subscribe: handle %s: %w", herr.pos, herr.err)
		case s.ctx.Err() != nil:
			return eventstore.ErrClosed
		case ctx.Err() != nil:
			return ctx.Err()
		case permanent(err):
			return fmt.Errorf("esdb: subscribe after %s: %w", last, err)
		}
		s.opts.Logger.Warn("esdb: subscription dropped; resubscribing", "after", last.String(), "backoff", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.closedErr(ctx, ctx.Err())
		case <-s.ctx.Done():
			t.Stop()
			return eventstore.ErrClosed
		case <-t.C:
		}
		backoff = min(backoff*2, s.opts.ResubscribeMaxBackoff)
	}
}

type handlerError struct {
	pos eventstore.Position
	err error
}

func (e *handlerError) Error() string { return e.err.Error() }

// permanent reports errors that resubscribing cannot fix.
func permanent(err error) bool {
	var ee *esdb.Error
	if errors.As(err, &ee) {
		switch ee.Code() {
		case esdb.ErrorCodeUnauthenticated, esdb.ErrorCodeAccessDenied, esdb.ErrorCodeUnsupportedFeature:
			return true
		}
	}
	return false
}

// subscribeOnce runs one subscription until it drops, returning why.
func (s *Store) subscribeOnce(ctx context.Context, last *eventstore.Position, filter eventstore.Filter, handle func(eventstore.RecordedEvent) error, backoff *time.Duration) error {
	gen, cctx, end, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	opts := esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: subscriptionFilter(filter)}
	if !last.IsZero() {
		opts.From = esdb.Position{Commit: last.Commit, Prepare: last.Prepare}
	}
	sub, err := open(cctx, gen, "subscribe", func() (*esdb.Subscription, error) {
		return gen.client.SubscribeToAll(cctx, opts)
	})
	if err != nil {
		s.renew(gen, err)
		return err
	}
	// Close before end() cancels the call context: the subscription owns its own cancel.
	defer func() { _ = guard("close subscription", sub.Close) }()
	for {
		var msg *esdb.SubscriptionEvent
		if err := guard("receive", func() error { msg = sub.Recv(); return nil }); err != nil {
			return err
		}
		switch {
		case msg.SubscriptionDropped != nil:
			return msg.SubscriptionDropped.Error
		case msg.CheckPointReached != nil:
			p := eventstore.Position{Commit: msg.CheckPointReached.Commit, Prepare: msg.CheckPointReached.Prepare}
			if last.Less(p) {
				*last = p
			}
		case msg.EventAppeared != nil && msg.EventAppeared.Event != nil:
			e := toRecorded(msg.EventAppeared.Event)
			if !last.Less(e.Position) {
				continue // already delivered before a resubscription
			}
			*last = e.Position
			*backoff = s.opts.ResubscribeMinBackoff
			if isSystem(e.Type) || !filter.Match(e) {
				continue
			}
			if err := handle(e); err != nil {
				return &handlerError{pos: e.Position, err: err}
			}
		}
	}
}

// toRecorded converts a client event. Metadata that is not the adapter's JSON (events written
// by other tools) leaves Metadata zero and RecordedAt at the server's created time.
func toRecorded(ev *esdb.RecordedEvent) eventstore.RecordedEvent {
	r := eventstore.RecordedEvent{
		ID:         ev.EventID,
		Stream:     ev.StreamID,
		Revision:   ev.EventNumber,
		Position:   eventstore.Position{Commit: ev.Position.Commit, Prepare: ev.Position.Prepare},
		Type:       ev.EventType,
		Data:       json.RawMessage(ev.Data),
		RecordedAt: ev.CreatedDate.UTC(),
	}
	if len(r.Data) == 0 {
		r.Data = nil
	}
	var m meta
	if len(ev.UserMetadata) > 0 && json.Unmarshal(ev.UserMetadata, &m) == nil {
		r.Metadata = m.Metadata
		if m.RecordedAt != nil {
			r.RecordedAt = m.RecordedAt.UTC()
		}
	}
	return r
}
