package esdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb/esdbtest"
	"github.com/waqueue/waqueue/adapters/eventstore/storetest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// connString returns ESDB_URL when set (a real EventStoreDB/KurrentDB), else starts the
// in-process server.
func connString(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("ESDB_URL"); u != "" {
		return u
	}
	return esdbtest.Start(t)
}

func newStore(t *testing.T, conn string, opts esdb.Options) *esdb.Store {
	t.Helper()
	st, err := esdb.New(context.Background(), conn, opts)
	if err != nil {
		t.Fatalf("esdb.New(%q): %v", conn, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func TestConformance(t *testing.T) {
	conn := connString(t)
	storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
		return newStore(t, conn, esdb.Options{Clock: clock})
	}, storetest.Options{Short: testing.Short()})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	return ctx
}

func events(n int, typ string) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = eventstore.EventData{
			ID:       uuid.New(),
			Type:     typ,
			Data:     json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			Metadata: eventstore.Metadata{TenantID: "t1", Actor: "test"},
		}
	}
	return out
}

// collector gathers what a subscription hands over.
type collector struct {
	mu     sync.Mutex
	got    []eventstore.RecordedEvent
	signal chan struct{}
}

func newCollector() *collector { return &collector{signal: make(chan struct{}, 1)} }

func (c *collector) handle(e eventstore.RecordedEvent) error {
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) waitFor(t *testing.T, n int) []eventstore.RecordedEvent {
	t.Helper()
	deadline := time.After(testwait.Limit)
	for {
		c.mu.Lock()
		got := append([]eventstore.RecordedEvent(nil), c.got...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.signal:
		case <-deadline:
			t.Fatalf("subscription delivered %d events, want %d", len(got), n)
		}
	}
}

func wantSame(t *testing.T, got []eventstore.RecordedEvent, want []eventstore.EventData) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID {
			t.Fatalf("event %d: got id %s, want %s (a gap, a duplicate or a reordering)", i, got[i].ID, want[i].ID)
		}
		if i > 0 && !got[i-1].Position.Less(got[i].Position) {
			t.Fatalf("event %d: position %s not after %s", i, got[i].Position, got[i-1].Position)
		}
	}
}

// runSubscription runs Subscribe in the background and returns a stop function that cancels it
// and returns its error.
func runSubscription(t *testing.T, st eventstore.Store, f eventstore.Filter, c *collector) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Subscribe(ctx, eventstore.Start, f, c.handle) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(testwait.Limit):
				err = errors.New("Subscribe did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestResubscribeAfterDrop: the server ends every subscription several times, including
// while events are being appended; the subscriber goes on from its last position with no
// gap and no duplicate.
func TestResubscribeAfterDrop(t *testing.T) {
	srv := esdbtest.StartServer(t, esdbtest.Options{})
	st := newStore(t, srv.ConnString(), esdb.Options{ResubscribeMinBackoff: time.Millisecond})
	stream := "drop-" + uuid.NewString()
	filter := eventstore.Filter{StreamPrefixes: []string{stream}}
	var all []eventstore.EventData

	c := newCollector()
	stop := runSubscription(t, st, filter, c)
	for round := 0; round < 5; round++ {
		batch := events(20, "Dropped")
		all = append(all, batch...)
		for i := 0; i < len(batch); i += 5 {
			if _, err := st.Append(ctxT(t), stream, eventstore.Any, batch[i:i+5]...); err != nil {
				t.Fatalf("Append: %v", err)
			}
			if i == 10 {
				srv.DropSubscriptions() // mid-flight: some of this round's events are not yet delivered
			}
		}
		c.waitFor(t, len(all))
		if n := srv.DropSubscriptions(); n != 1 {
			t.Fatalf("round %d: server had %d open subscriptions, want 1 (resubscribed)", round, n)
		}
	}
	more := events(3, "AfterDrops")
	all = append(all, more...)
	if _, err := st.Append(ctxT(t), stream, eventstore.Any, more...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got := c.waitFor(t, len(all))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe after cancel: got %v, want context.Canceled", err)
	}
	wantSame(t, got, all)
}

// TestReconnectAfterServerRestart: the server goes away long enough for the client's discovery
// to give up (which closes a v4.2.0 client for good) and comes back on the same address with
// its data; the store recovers and a running subscription continues without gaps.
func TestReconnectAfterServerRestart(t *testing.T) {
	backing := esdbtest.NewSQLiteStore(t, nil)
	srv := esdbtest.StartServer(t, esdbtest.Options{Store: backing})
	addr := srv.Addr()
	conn := "esdb://" + addr + "?tls=false&maxDiscoverAttempts=2&discoveryInterval=20&gossipTimeout=1"
	st := newStore(t, conn, esdb.Options{ResubscribeMinBackoff: 10 * time.Millisecond, ResubscribeMaxBackoff: 100 * time.Millisecond})
	stream := "restart-" + uuid.NewString()
	c := newCollector()
	runSubscription(t, st, eventstore.Filter{StreamPrefixes: []string{stream}}, c)

	first := events(3, "BeforeRestart")
	if _, err := st.Append(ctxT(t), stream, eventstore.NoStream, first...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	c.waitFor(t, 3)
	if err := srv.Close(); err != nil {
		t.Fatalf("server Close: %v", err)
	}
	// Calls fail while the server is down, and the client's discovery gives up. Concurrent
	// calls queue behind a discovery; none may hang (their context has no deadline).
	for round := 0; round < 3; round++ {
		errs := make(chan error, 4)
		for i := 0; i < cap(errs); i++ {
			go func() {
				_, err := st.ReadStream(context.Background(), stream, eventstore.Forwards, 0, 0)
				errs <- err
			}()
		}
		for i := 0; i < cap(errs); i++ {
			select {
			case err := <-errs:
				if err == nil {
					t.Fatal("ReadStream with the server down: got no error")
				}
			case <-time.After(testwait.Limit):
				t.Fatal("ReadStream with the server down did not return")
			}
		}
	}
	srv2, err := esdbtest.NewServer(esdbtest.Options{Store: backing, Addr: addr})
	if err != nil {
		t.Fatalf("restart server on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = srv2.Close() })

	second := events(3, "AfterRestart")
	// The client reconnects when it does: retry until the append goes through (50 tries 20 ms
	// apart gave up while a loaded machine was still reconnecting), bounded by the hang guard. A
	// wrong expected revision ends the retries: an attempt reported failed was written.
	deadline := time.Now().Add(testwait.Limit)
	for {
		_, err := st.Append(ctxT(t), stream, eventstore.Exact(2), second...)
		if err == nil {
			break
		}
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) || time.Now().After(deadline) {
			t.Fatalf("Append after the server came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantSame(t, c.waitFor(t, 6), append(first, second...))
	got, err := st.ReadStream(ctxT(t), stream, eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	wantSame(t, got, append(first, second...))
}

// TestSystemEventsExcluded writes "$"-typed events with the raw client; ReadAll and Subscribe
// must not return them, while ReadStream does.
func TestSystemEventsExcluded(t *testing.T) {
	conn := connString(t)
	st := newStore(t, conn, esdb.Options{})
	stream := "sys-" + uuid.NewString()
	mine := events(2, "Visible")

	cfg, err := client.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = client.NoopLogging()
	raw, err := client.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := st.Append(ctxT(t), stream, eventstore.NoStream, mine[0]); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if _, err := raw.AppendToStream(ctxT(t), stream, client.AppendToStreamOptions{}, client.EventData{
		EventID: uuid.New(), EventType: "$system-thing", ContentType: client.ContentTypeJson, Data: []byte(`{}`),
	}); err != nil {
		t.Fatalf("raw append: %v", err)
	}
	if _, err := st.Append(ctxT(t), stream, eventstore.Exact(1), mine[1]); err != nil {
		t.Fatalf("Append: %v", err)
	}
	filter := eventstore.Filter{StreamPrefixes: []string{stream}}
	got, err := st.ReadAll(ctxT(t), eventstore.Start, 0, filter)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	wantSame(t, got, mine)
	c := newCollector()
	stop := runSubscription(t, st, filter, c)
	wantSame(t, c.waitFor(t, 2), mine)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe: %v", err)
	}
	if got := c.waitFor(t, 2); len(got) != 2 {
		t.Fatalf("subscription delivered %d events, want 2 (the system event must be skipped)", len(got))
	}
	whole, err := st.ReadStream(ctxT(t), stream, eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	if len(whole) != 3 || whole[1].Type != "$system-thing" {
		t.Fatalf("ReadStream: got %d events, want 3 with the system event at revision 1", len(whole))
	}
}

// TestForeignEventsRecordedAt: an event written without the adapter's metadata reads back with
// zero Metadata and EventStoreDB's created time as RecordedAt.
func TestForeignEventsRecordedAt(t *testing.T) {
	created := time.Date(2031, 5, 6, 7, 8, 9, 123456700, time.UTC) // 100ns ticks
	srv := esdbtest.StartServer(t, esdbtest.Options{Clock: func() time.Time { return created }})
	cfg, err := client.ParseConnectionString(srv.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = client.NoopLogging()
	raw, err := client.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	id := uuid.New()
	if _, err := raw.AppendToStream(ctxT(t), "foreign", client.AppendToStreamOptions{}, client.EventData{
		EventID: id, EventType: "Foreign", ContentType: client.ContentTypeJson, Data: []byte(`{"a":1}`), Metadata: []byte("not json"),
	}); err != nil {
		t.Fatalf("raw append: %v", err)
	}
	clock := time.Date(2030, 1, 1, 0, 0, 0, 1000, time.UTC)
	st := newStore(t, srv.ConnString(), esdb.Options{Clock: func() time.Time { return clock }})
	mine := events(1, "Mine")
	if _, err := st.Append(ctxT(t), "foreign", eventstore.Exact(0), mine...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got, err := st.ReadStream(ctxT(t), "foreign", eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d events, want 2", len(got))
	}
	if got[0].ID != id || !got[0].RecordedAt.Equal(created) || got[0].Metadata != (eventstore.Metadata{}) {
		t.Fatalf("foreign event: got id %s recorded %v metadata %+v, want %s, %v, zero", got[0].ID, got[0].RecordedAt, got[0].Metadata, id, created)
	}
	if !got[1].RecordedAt.Equal(clock) || got[1].Metadata != mine[0].Metadata {
		t.Fatalf("adapter event: got recorded %v metadata %+v, want the clock's %v and %+v", got[1].RecordedAt, got[1].Metadata, clock, mine[0].Metadata)
	}
}

// TestConnectionStringSchemes: kurrentdb:// is an alias of esdb://; garbage is rejected.
func TestConnectionStringSchemes(t *testing.T) {
	srv := esdbtest.StartServer(t, esdbtest.Options{})
	st := newStore(t, "kurrentdb://"+srv.Addr()+"?tls=false", esdb.Options{})
	evs := events(1, "Kurrent")
	res, err := st.Append(ctxT(t), "kurrent-1", eventstore.NoStream, evs...)
	if err != nil {
		t.Fatalf("Append through kurrentdb://: %v", err)
	}
	if res.NextExpectedRevision != 0 || res.Position.IsZero() {
		t.Fatalf("Append result %+v, want revision 0 and a position", res)
	}
	if _, err := esdb.New(context.Background(), "http://nope", esdb.Options{}); err == nil {
		t.Fatal("New with an http:// connection string: got no error")
	}
}

// TestCloseEndsSubscriptions: Close makes a running Subscribe return ErrClosed, and later
// calls fail with ErrClosed.
func TestCloseEndsSubscriptions(t *testing.T) {
	srv := esdbtest.StartServer(t, esdbtest.Options{})
	st, err := esdb.New(context.Background(), srv.ConnString(), esdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	done := make(chan error, 1)
	go func() {
		done <- st.Subscribe(context.Background(), eventstore.Start, eventstore.Filter{StreamPrefixes: []string{"close-"}}, c.handle)
	}()
	if _, err := st.Append(ctxT(t), "close-1", eventstore.Any, events(1, "X")...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	c.waitFor(t, 1)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Fatalf("Subscribe after Close: got %v, want ErrClosed", err)
		}
	case <-time.After(testwait.Limit):
		t.Fatal("Subscribe did not return after Close")
	}
	if _, err := st.Append(ctxT(t), "close-1", eventstore.Any, events(1, "X")...); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append after Close: got %v, want ErrClosed", err)
	}
}

// levelRecorder is a slog.Handler that keeps the messages logged at error level.
type levelRecorder struct {
	mu     sync.Mutex
	errors []string
}

func (r *levelRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *levelRecorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelError {
		r.mu.Lock()
		r.errors = append(r.errors, rec.Message)
		r.mu.Unlock()
	}
	return nil
}
func (r *levelRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *levelRecorder) WithGroup(string) slog.Handler      { return r }

// TestCancelledSubscriptionLogsNoError: a subscription ended by its caller (every projection at
// every shutdown) is not logged as an error; the client reports it as "dropped".
func TestCancelledSubscriptionLogsNoError(t *testing.T) {
	srv := esdbtest.StartServer(t, esdbtest.Options{})
	rec := &levelRecorder{}
	st, err := esdb.New(context.Background(), srv.ConnString(), esdb.Options{Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		c := newCollector()
		done := make(chan error, 1)
		go func() {
			done <- st.Subscribe(ctx, eventstore.Start, eventstore.Filter{StreamPrefixes: []string{"cancel-"}}, c.handle)
		}()
		if _, err := st.Append(ctxT(t), "cancel-1", eventstore.Any, events(1, "X")...); err != nil {
			t.Fatalf("Append: %v", err)
		}
		c.waitFor(t, 1)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Subscribe after cancel: %v, want context.Canceled", err)
			}
		case <-time.After(testwait.Limit):
			t.Fatal("Subscribe did not return after cancel")
		}
	}
	// The client logs from its own goroutines; give a late line the chance to arrive.
	time.Sleep(100 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errors) > 0 {
		t.Fatalf("cancelled subscriptions logged %d errors: %q", len(rec.errors), rec.errors)
	}
}

// TestReadFailingAfterDiscoveryFailedReturns: a read already in flight on the old connection
// fails with Unavailable after another call's discovery has failed. The v4.2.0 client then
// reports the failure to a connection state machine that has exited, a send that never
// completes; the read must still return (an error) instead of hanging its caller and the
// store's Close. Deterministic form of the hang TestReconnectAfterServerRestart met on a
// loaded CI machine (a ReadStream blocked in ReadStream.Recv for 37 minutes).
func TestReadFailingAfterDiscoveryFailedReturns(t *testing.T) {
	held, poison := "held-"+uuid.NewString(), "poison-"+uuid.NewString()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := esdbtest.StartServer(t, esdbtest.Options{ReadHook: func(ctx context.Context, stream string) error {
		switch stream {
		case held:
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-ctx.Done():
			}
			return status.Error(codes.Unavailable, "esdbtest: the held read ends")
		case poison:
			return status.Error(codes.Unavailable, "esdbtest: the poisoned read fails")
		}
		return nil
	}})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	conn := "esdb://" + srv.Addr() + "?tls=false&maxDiscoverAttempts=1&discoveryInterval=10&gossipTimeout=1"
	st := newStore(t, conn, esdb.Options{})
	other := "other-" + uuid.NewString()
	if _, err := st.Append(ctxT(t), other, eventstore.NoStream, events(2, "Warm")...); err != nil {
		t.Fatalf("Append: %v", err)
	}

	heldErr := make(chan error, 1)
	go func() {
		_, err := st.ReadStream(context.Background(), held, eventstore.Forwards, 0, 0)
		heldErr <- err
	}()
	select {
	case <-entered:
	case <-time.After(testwait.Limit):
		t.Fatal("the held read never reached the server")
	}

	srv.RefuseDiscovery(true)
	// The poisoned read fails with Unavailable: the client forgets its connection, so the
	// next call starts a discovery, which the server refuses: the client closes itself.
	if _, err := st.ReadStream(ctxT(t), poison, eventstore.Forwards, 0, 0); err == nil {
		t.Fatal("ReadStream of the poisoned stream: got no error")
	}
	if _, err := st.ReadStream(ctxT(t), other, eventstore.Forwards, 0, 0); err == nil {
		t.Fatal("ReadStream while discovery is refused: got no error")
	}
	// The held read now fails on the old connection, reporting to the exited state machine.
	close(release)
	select {
	case err := <-heldErr:
		if err == nil {
			t.Fatal("the held read: got no error after its read failed")
		}
	case <-time.After(testwait.Limit):
		t.Fatal("the held read did not return after its read failed (blocked inside the dead client)")
	}

	// The store recovers once discovery works again: a new client serves the reads.
	srv.RefuseDiscovery(false)
	var got []eventstore.RecordedEvent
	deadline := time.Now().Add(testwait.Limit)
	for {
		evs, err := st.ReadStream(ctxT(t), other, eventstore.Forwards, 0, 0)
		if err == nil {
			got = evs
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ReadStream after discovery works again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 2 {
		t.Fatalf("read %d events of %s after recovery, want 2", len(got), other)
	}
}
