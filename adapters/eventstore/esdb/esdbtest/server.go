// Package esdbtest runs an in-process server that speaks the EventStoreDB client gRPC protocol
// (the Streams service and the server-features probe the client makes on connect) over a real
// gRPC listener on 127.0.0.1, without TLS. It exists because EventStoreDB itself cannot run
// where the tests run; it lets the esdb adapter be exercised through the real
// EventStore-Client-Go v4 client and real gRPC, end to end.
//
// The server is backed by one of the project's own eventstore.Store implementations: the
// SQLite adapter on a temporary file by default, or any store given in Options. Each EventStoreDB event is kept in
// the backing store under its own stream name, type and id, with its body, custom metadata and
// content type wrapped in a JSON envelope as the backing event's data, so binary bodies and
// arbitrary metadata round-trip byte for byte. Positions are the backing store's, 1:1.
//
// Implemented, following EventStoreDB's documented behaviour:
//   - Append (client streaming) with the expected-revision options any, no_stream,
//     stream_exists and exact; wrong-expected-version answers carrying the current revision;
//     idempotent re-appends of the same ids; success answers with revision and position.
//   - Read of a stream forwards and backwards from start, end or a revision, with a count;
//     stream_not_found for a stream without events.
//   - Read of $all forwards from start or a position (inclusive, like EventStoreDB).
//   - Subscription to $all from start, end or a position (exclusive), with stream-name or
//     event-type filters by prefix or regular expression (Go RE2 syntax rather than .NET's):
//     first the confirmation, then the history, then caught_up, then live events, with a
//     checkpoint at catch-up when filtered.
//   - ServerFeatures.GetSupportedMethods (no batch append, so the client uses Append).
//
// Not implemented (the client gets codes.Unimplemented): stream subscriptions, reading $all
// backwards, delete, tombstone, batch append, persistent subscriptions, projections, gossip
// (connect with a single host, never with discover or gossip seeds), authentication, link
// resolution and stream metadata semantics ($max-age and the like).
//
// One deliberate extension: the backing store enforces globally unique event ids, and the
// server reports an id stored in another stream as codes.AlreadyExists. A real EventStoreDB
// accepts such an append; see the adapter's README.
package esdbtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
)

// ServerVersion is the EventStoreDB version the server announces through server features.
const ServerVersion = "24.10.0"

// pageSize is how many events the server asks its backing store for at once.
const pageSize = 512

// Options configures a Server.
type Options struct {
	// Store backs the server; the server never closes it. NewServer requires it; StartServer
	// uses a fresh SQLite store in t.TempDir() when it is nil.
	Store eventstore.Store
	// Clock stamps the events of the SQLite store StartServer creates (their EventStoreDB
	// "created" time). Nil means time.Now.
	Clock eventstore.Clock
	// Addr is the TCP address to listen on. Empty means 127.0.0.1 on a free port.
	Addr string
	// ReadHook, if set, runs before the server serves a read of one stream (not $all), with
	// the call's context and the stream's name; a non-nil error ends the read with it (a gRPC
	// status error keeps its code). Tests use it to hold a read in flight or to fail it.
	ReadHook func(ctx context.Context, stream string) error
}

// Server is an in-process EventStoreDB gRPC endpoint. Methods are safe for concurrent use.
type Server struct {
	store eventstore.Store
	lis   net.Listener
	grpc  *grpc.Server

	readHook func(ctx context.Context, stream string) error

	mu             sync.Mutex
	refuseFeatures bool          // see RefuseDiscovery
	wake           chan struct{} // closed and replaced after every successful append
	subs           map[*struct{}]context.CancelFunc
	closed         bool
}

// Start starts a server backed by a fresh SQLite store, stops it when t ends, and returns its
// connection string (esdb://127.0.0.1:PORT?tls=false).
func Start(t testing.TB) string {
	t.Helper()
	return StartServer(t, Options{}).ConnString()
}

// StartServer starts a server with opts and stops it when t ends.
func StartServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Store == nil {
		opts.Store = NewSQLiteStore(t, opts.Clock)
	}
	s, err := NewServer(opts)
	if err != nil {
		t.Fatalf("esdbtest: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// NewSQLiteStore opens a SQLite event store in t.TempDir(), stamping events with clock (nil
// means time.Now), and closes it when t ends. Give the same store to several servers in turn
// to simulate a node restart that keeps its data.
func NewSQLiteStore(t testing.TB, clock eventstore.Clock) eventstore.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "esdb.sqlite"), sqlite.Options{Clock: clock})
	if err != nil {
		t.Fatalf("esdbtest: open sqlite store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// NewServer starts serving opts.Store on opts.Addr. The caller must Close it.
func NewServer(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("esdbtest: NewServer: nil Store")
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("esdbtest: listen on %s: %w", addr, err)
	}
	s := &Server{
		store: opts.Store,
		lis:   lis,
		grpc: grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// The client pings every KeepAliveInterval (10s by default) even without an open
			// call, and EventStoreDB accepts that. gRPC-Go's default policy (at most one ping per
			// 5 minutes) would answer GOAWAY "too_many_pings" after a few of them and drop every
			// subscription of a long-running client.
			MinTime:             time.Second,
			PermitWithoutStream: true,
		})),
		readHook: opts.ReadHook,
		wake:     make(chan struct{}),
		subs:     make(map[*struct{}]context.CancelFunc),
	}
	api.RegisterStreamsServer(s.grpc, &streamsService{s: s})
	serverfeatures.RegisterServerFeaturesServer(s.grpc, featuresService{s: s})
	go func() { _ = s.grpc.Serve(lis) }()
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// ConnString is the connection string for the esdb adapter or the EventStoreDB client.
func (s *Server) ConnString() string { return "esdb://" + s.Addr() + "?tls=false" }

// DropSubscriptions ends every open $all subscription with codes.Unavailable, as a node does
// when it shuts down or loses leadership, and returns how many it ended. New subscriptions are
// accepted as before.
func (s *Server) DropSubscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.subs)
	for k, cancel := range s.subs {
		cancel()
		delete(s.subs, k)
	}
	return n
}

// RefuseDiscovery makes the server answer the server-features call, the last step of a
// client's node discovery, with codes.Unavailable while on is true, so that a client's
// discovery fails while the server and the connections it has keep serving. Calls on
// connections the client already has are served as before.
func (s *Server) RefuseDiscovery(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseFeatures = on
}

// Close stops the server at once, ending open calls. It does not close the backing store.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.grpc.Stop()
	return nil
}

func (s *Server) wakeChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

func (s *Server) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.wake)
	s.wake = make(chan struct{})
}

// register makes a subscription droppable by DropSubscriptions.
func (s *Server) register(cancel context.CancelFunc) (unregister func()) {
	key := new(struct{})
	s.mu.Lock()
	s.subs[key] = cancel
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, key)
		s.mu.Unlock()
	}
}

type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
	s *Server
}

func (f featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	f.s.mu.Lock()
	refuse := f.s.refuseFeatures
	f.s.mu.Unlock()
	if refuse {
		return nil, status.Error(codes.Unavailable, "esdbtest: discovery refused (RefuseDiscovery)")
	}
	const svc = "event_store.client.streams.streams"
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: ServerVersion,
		Methods: []*serverfeatures.SupportedMethod{
			{ServiceName: svc, MethodName: "read"},
			{ServiceName: svc, MethodName: "append"},
		},
	}, nil
}

// envelope is how an EventStoreDB event's opaque parts are kept in the backing store's data.
type envelope struct {
	Data        []byte `json:"data"`
	Metadata    []byte `json:"metadata,omitempty"`
	ContentType string `json:"content_type,omitempty"`
}

type streamsService struct {
	api.UnimplementedStreamsServer
	s *Server
}

func (svc *streamsService) Append(srv api.Streams_AppendServer) error {
	ctx := srv.Context()
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "esdbtest: append must start with options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	var expected eventstore.ExpectedRevision
	switch v := opts.GetExpectedStreamRevision().(type) {
	case *api.AppendReq_Options_NoStream:
		expected = eventstore.NoStream
	case *api.AppendReq_Options_StreamExists:
		expected = eventstore.StreamExists
	case *api.AppendReq_Options_Revision:
		expected = eventstore.Exact(v.Revision)
	default:
		expected = eventstore.Any
	}
	var events []eventstore.EventData
	for {
		req, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		msg := req.GetProposedMessage()
		if msg == nil {
			return status.Error(codes.InvalidArgument, "esdbtest: expected a proposed message")
		}
		id, err := fromProtoUUID(msg.GetId())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "esdbtest: event id: %v", err)
		}
		data, err := json.Marshal(envelope{Data: msg.GetData(), Metadata: msg.GetCustomMetadata(), ContentType: msg.GetMetadata()["content-type"]})
		if err != nil {
			return status.Errorf(codes.Internal, "esdbtest: %v", err)
		}
		events = append(events, eventstore.EventData{ID: id, Type: msg.GetMetadata()["type"], Data: data})
	}

	res, err := svc.s.store.Append(ctx, stream, expected, events...)
	var wrong *eventstore.WrongExpectedRevisionError
	var dup *eventstore.DuplicateEventError
	switch {
	case errors.As(err, &wrong):
		return srv.SendAndClose(&api.AppendResp{Result: &api.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: wrongExpectedVersion(opts, wrong.Actual)}})
	case errors.As(err, &dup):
		return status.Errorf(codes.AlreadyExists, "esdbtest: event id %s is already stored elsewhere", dup.ID)
	case errors.Is(err, eventstore.ErrInvalidEvent):
		return status.Errorf(codes.InvalidArgument, "esdbtest: %v", err)
	case err != nil:
		return status.Errorf(codes.Internal, "esdbtest: append: %v", err)
	}
	success := &api.AppendResp_Success{}
	if len(events) > 0 {
		svc.s.broadcast()
		success.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: res.NextExpectedRevision}
		success.PositionOption = &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{
			CommitPosition: res.Position.Commit, PreparePosition: res.Position.Prepare,
		}}
	} else {
		success.PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
		last, err := svc.s.store.ReadStream(ctx, stream, eventstore.Backwards, eventstore.End, 1)
		switch {
		case errors.Is(err, eventstore.ErrStreamNotFound):
			success.CurrentRevisionOption = &api.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
		case err != nil:
			return status.Errorf(codes.Internal, "esdbtest: append: %v", err)
		default:
			success.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: last[0].Revision}
		}
	}
	return srv.SendAndClose(&api.AppendResp{Result: &api.AppendResp_Success_{Success: success}})
}

func wrongExpectedVersion(opts *api.AppendReq_Options, actual int64) *api.AppendResp_WrongExpectedVersion {
	w := &api.AppendResp_WrongExpectedVersion{}
	if actual == eventstore.NoRevision {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(actual)}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(actual)}
	}
	switch v := opts.GetExpectedStreamRevision().(type) {
	case *api.AppendReq_Options_NoStream:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case *api.AppendReq_Options_StreamExists:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
	case *api.AppendReq_Options_Revision:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: v.Revision}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: v.Revision}
	default:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
	}
	return w
}

func (svc *streamsService) Read(req *api.ReadReq, srv api.Streams_ReadServer) error {
	opts := req.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "esdbtest: read without options")
	}
	structured := opts.GetUuidOption().GetString_() == nil
	if opts.GetResolveLinks() {
		return status.Error(codes.Unimplemented, "esdbtest: link resolution is not implemented")
	}
	switch so := opts.GetStreamOption().(type) {
	case *api.ReadReq_Options_Stream:
		if opts.GetSubscription() != nil {
			return status.Error(codes.Unimplemented, "esdbtest: stream subscriptions are not implemented")
		}
		return svc.readStream(srv, so.Stream, opts.GetReadDirection(), opts.GetCount(), structured)
	case *api.ReadReq_Options_All:
		match, err := compileFilter(opts.GetFilter())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "esdbtest: filter: %v", err)
		}
		if opts.GetSubscription() != nil {
			return svc.subscribeAll(srv, so.All, match, opts.GetFilter() != nil, structured)
		}
		if opts.GetReadDirection() == api.ReadReq_Options_Backwards {
			return status.Error(codes.Unimplemented, "esdbtest: reading $all backwards is not implemented")
		}
		return svc.readAll(srv, so.All, opts.GetCount(), match, structured)
	default:
		return status.Error(codes.InvalidArgument, "esdbtest: read without a stream option")
	}
}

func (svc *streamsService) readStream(srv api.Streams_ReadServer, so *api.ReadReq_Options_StreamOptions, dir api.ReadReq_Options_ReadDirection, count uint64, structured bool) error {
	ctx := srv.Context()
	stream := string(so.GetStreamIdentifier().GetStreamName())
	if h := svc.s.readHook; h != nil {
		if err := h(ctx, stream); err != nil {
			return err
		}
	}
	d := eventstore.Forwards
	if dir == api.ReadReq_Options_Backwards {
		d = eventstore.Backwards
	}
	var from uint64
	switch v := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_Revision:
		from = v.Revision
	case *api.ReadReq_Options_StreamOptions_End:
		from = eventstore.End
	default: // start
		from = 0
	}
	for sent := uint64(0); sent < count; {
		n := min(count-sent, pageSize)
		evs, err := svc.s.store.ReadStream(ctx, stream, d, from, int(n))
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			if sent > 0 {
				return nil
			}
			return srv.Send(&api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
				StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(stream)},
			}}})
		}
		if err != nil {
			return status.Errorf(codes.Internal, "esdbtest: read %q: %v", stream, err)
		}
		for _, e := range evs {
			if err := sendEvent(srv, e, structured); err != nil {
				return err
			}
		}
		sent += uint64(len(evs))
		if uint64(len(evs)) < n {
			return nil
		}
		last := evs[len(evs)-1].Revision
		if d == eventstore.Forwards {
			from = last + 1
		} else {
			if last == 0 {
				return nil
			}
			from = last - 1
		}
	}
	return nil
}

// before returns a Position from which an exclusive read of the backing store includes p and
// may include earlier events of p's commit, which the caller skips (EventStoreDB reads $all
// forwards inclusively). Stepping back a whole commit keeps this right for backing stores that
// compare positions by Commit only.
func before(p eventstore.Position) eventstore.Position {
	if p.Commit == 0 {
		return eventstore.Start
	}
	return eventstore.Position{Commit: p.Commit - 1, Prepare: ^uint64(0)}
}

func (svc *streamsService) readAll(srv api.Streams_ReadServer, ao *api.ReadReq_Options_AllOptions, count uint64, match func(eventstore.RecordedEvent) bool, structured bool) error {
	ctx := srv.Context()
	var after, from eventstore.Position
	switch v := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Position:
		from = eventstore.Position{Commit: v.Position.GetCommitPosition(), Prepare: v.Position.GetPreparePosition()}
		after = before(from)
	case *api.ReadReq_Options_AllOptions_End:
		return nil // forwards from the end reads nothing
	}
	for sent := uint64(0); sent < count; {
		evs, err := svc.s.store.ReadAll(ctx, after, pageSize, eventstore.Filter{})
		if err != nil {
			return status.Errorf(codes.Internal, "esdbtest: read $all: %v", err)
		}
		for _, e := range evs {
			after = e.Position
			if e.Position.Less(from) || !match(e) {
				continue
			}
			if err := sendEvent(srv, e, structured); err != nil {
				return err
			}
			if sent++; sent == count {
				return nil
			}
		}
		if len(evs) < pageSize {
			return nil
		}
	}
	return nil
}

func (svc *streamsService) subscribeAll(srv api.Streams_ReadServer, ao *api.ReadReq_Options_AllOptions, match func(eventstore.RecordedEvent) bool, filtered, structured bool) error {
	ctx, cancel := context.WithCancel(srv.Context())
	defer cancel()
	defer svc.s.register(cancel)()
	dropped := func() error {
		if srv.Context().Err() != nil {
			return srv.Context().Err()
		}
		return status.Error(codes.Unavailable, "esdbtest: subscription dropped by the server")
	}

	var after eventstore.Position
	switch v := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Position:
		after = eventstore.Position{Commit: v.Position.GetCommitPosition(), Prepare: v.Position.GetPreparePosition()}
	case *api.ReadReq_Options_AllOptions_End:
		for {
			evs, err := svc.s.store.ReadAll(ctx, after, pageSize, eventstore.Filter{})
			if err != nil {
				return status.Errorf(codes.Internal, "esdbtest: subscribe: %v", err)
			}
			if len(evs) == 0 {
				break
			}
			after = evs[len(evs)-1].Position
		}
	}
	if err := srv.Send(&api.ReadResp{Content: &api.ReadResp_Confirmation{Confirmation: &api.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString(),
	}}}); err != nil {
		return err
	}
	caughtUp := false
	for {
		wake := svc.s.wakeChan()
		evs, err := svc.s.store.ReadAll(ctx, after, pageSize, eventstore.Filter{})
		if ctx.Err() != nil {
			return dropped()
		}
		if err != nil {
			return status.Errorf(codes.Internal, "esdbtest: subscribe: %v", err)
		}
		for _, e := range evs {
			after = e.Position
			if !match(e) {
				continue
			}
			if err := sendEvent(srv, e, structured); err != nil {
				return err
			}
		}
		if len(evs) > 0 {
			continue
		}
		if !caughtUp {
			caughtUp = true
			if filtered && !after.IsZero() {
				if err := srv.Send(&api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
					CommitPosition: after.Commit, PreparePosition: after.Prepare,
				}}}); err != nil {
					return err
				}
			}
			if err := srv.Send(&api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return dropped()
		case <-wake:
		}
	}
}

// compileFilter turns EventStoreDB filter options into a predicate. Nil options match all.
func compileFilter(f *api.ReadReq_Options_FilterOptions) (func(eventstore.RecordedEvent) bool, error) {
	if f == nil {
		return func(eventstore.RecordedEvent) bool { return true }, nil
	}
	expr, field := f.GetStreamIdentifier(), func(e eventstore.RecordedEvent) string { return e.Stream }
	if f.GetEventType() != nil {
		expr, field = f.GetEventType(), func(e eventstore.RecordedEvent) string { return e.Type }
	}
	if expr == nil {
		return nil, errors.New("no stream identifier or event type expression")
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, err
		}
		return func(e eventstore.RecordedEvent) bool { return re.MatchString(field(e)) }, nil
	}
	prefixes := expr.GetPrefix()
	return func(e eventstore.RecordedEvent) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(field(e), p) {
				return true
			}
		}
		return false
	}, nil
}

func sendEvent(srv api.Streams_ReadServer, e eventstore.RecordedEvent, structured bool) error {
	var env envelope
	if err := json.Unmarshal(e.Data, &env); err != nil {
		return status.Errorf(codes.Internal, "esdbtest: event %s was not written through this server: %v", e.ID, err)
	}
	if env.ContentType == "" {
		env.ContentType = "application/octet-stream"
	}
	if env.Data == nil {
		env.Data = []byte{}
	}
	if env.Metadata == nil {
		env.Metadata = []byte{}
	}
	// EventStoreDB's "created" is in 100-nanosecond ticks since the Unix epoch.
	created := e.RecordedAt.UnixNano() / 100
	return srv.Send(&api.ReadResp{Content: &api.ReadResp_Event{Event: &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               toProtoUUID(e.ID, structured),
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(e.Stream)},
			StreamRevision:   e.Revision,
			PreparePosition:  e.Position.Prepare,
			CommitPosition:   e.Position.Commit,
			Metadata: map[string]string{
				"type":         e.Type,
				"content-type": env.ContentType,
				"created":      fmt.Sprint(created),
			},
			CustomMetadata: env.Metadata,
			Data:           env.Data,
		},
		Position: &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: e.Position.Commit},
	}}})
}

func fromProtoUUID(u *shared.UUID) (uuid.UUID, error) {
	if s := u.GetStructured(); s != nil {
		var b [16]byte
		for i := 0; i < 8; i++ {
			b[i] = byte(uint64(s.GetMostSignificantBits()) >> (56 - 8*i))
			b[8+i] = byte(uint64(s.GetLeastSignificantBits()) >> (56 - 8*i))
		}
		return uuid.UUID(b), nil
	}
	return uuid.Parse(u.GetString_())
}

func toProtoUUID(id uuid.UUID, structured bool) *shared.UUID {
	if !structured {
		return &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}}
	}
	var most, least uint64
	for i := 0; i < 8; i++ {
		most = most<<8 | uint64(id[i])
		least = least<<8 | uint64(id[8+i])
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits: int64(most), LeastSignificantBits: int64(least),
	}}}
}
