// Package eventstore declares the event store port that every part of waqueue stands on, and the
// values that travel through it. Adapters live in subpackages (sqlite, postgres, esdb); the
// conformance suite every adapter must pass lives in storetest.
//
// The semantics map one-to-one onto EventStoreDB:
//   - streams are named by the caller (for example "connection-<id>");
//   - revisions are 0-based and gapless within a stream;
//   - a batch is appended atomically at an expected revision (Any, NoStream, StreamExists, Exact);
//   - every event carries a caller-given id; re-appending the same ids at the same place is an
//     idempotent success that writes nothing;
//   - the global log ($all) is totally ordered by Position, an exclusive start point for reads and
//     subscriptions and the value consumers checkpoint.
//
// Global order. Position order is consistent with every stream's revision order and with
// happens-before: an event whose append began after another append returned has a greater
// Position. A subscriber never sees an event with a Position lower than one it already saw,
// even when concurrent transactions commit out of order (adapters must guarantee this; see the
// postgres adapter for the xid8 snapshot technique).
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
)

// Store is the event store port. Implementations are safe for concurrent use.
type Store interface {
	// Append writes events to the end of stream atomically, provided the stream is at the
	// expected revision. Either all events are written or none. On a wrong expected revision
	// it returns a *WrongExpectedRevisionError (errors.Is(err, ErrWrongExpectedRevision)).
	// If every event id of the batch is already stored, in the same order, at consecutive
	// revisions of this stream that the expected revision is compatible with, Append writes
	// nothing and returns the original result (idempotent retry). An id stored anywhere else
	// yields a *DuplicateEventError (errors.Is(err, ErrDuplicateEventID)).
	// Appending zero events validates the expected revision and writes nothing.
	// Append returns only after the events are durable.
	Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error)

	// ReadStream reads up to limit events of stream starting at revision from (inclusive),
	// forwards or backwards. Use End with Backwards to start at the last event. A stream that
	// does not exist yields ErrStreamNotFound. limit <= 0 means no limit.
	ReadStream(ctx context.Context, stream string, dir Direction, from uint64, limit int) ([]RecordedEvent, error)

	// ReadAll reads up to limit events of the global log with a Position strictly greater than
	// after, in global order, keeping only events that match filter. limit <= 0 means no limit.
	// It never returns an event that a later call could precede with a lower Position.
	ReadAll(ctx context.Context, after Position, limit int, filter Filter) ([]RecordedEvent, error)

	// Subscribe delivers, in global order, every event with a Position strictly greater than
	// after that matches filter: first the history (catch-up), then new events as they commit
	// (live). It blocks until ctx is done (returning ctx.Err()), handle returns an error
	// (returned wrapped), or the store fails. handle is called from one goroutine, one event at
	// a time; the Position of the last event handled is what a consumer checkpoints.
	// Live delivery wakes on new commits; it does not poll in a tight loop.
	Subscribe(ctx context.Context, after Position, filter Filter, handle func(RecordedEvent) error) error

	// Close releases the store's resources.
	Close() error
}

// PageSubscriber is an optional interface of a Store: Subscribe, with the events handed over a
// page at a time as the store reads them, so that a consumer that works in batches (the
// projections' log subscriber) neither pays a call and a copy per event nor collects the
// events again into slices of its own. Use SubscribePages, which falls back on Subscribe.
type PageSubscriber interface {
	// SubscribePages delivers what Subscribe delivers, in the same order, in non-empty slices:
	// handle is called from one goroutine, one page at a time, and the page is the handler's
	// (the store neither reuses nor modifies it afterwards). The Position of a page's last
	// event is what a consumer that handled the page checkpoints. It returns like Subscribe.
	SubscribePages(ctx context.Context, after Position, filter Filter, handle func([]RecordedEvent) error) error
}

// SubscribePages subscribes to st's log with handle taking pages: st's own SubscribePages when
// it implements PageSubscriber, else Subscribe with a page of one event per call.
func SubscribePages(ctx context.Context, st Store, after Position, filter Filter, handle func([]RecordedEvent) error) error {
	if ps, ok := st.(PageSubscriber); ok {
		return ps.SubscribePages(ctx, after, filter, handle)
	}
	return st.Subscribe(ctx, after, filter, func(e RecordedEvent) error {
		return handle([]RecordedEvent{e})
	})
}

// EventData is an event to append.
type EventData struct {
	// ID is the caller-given event id. It must not be uuid.Nil. Deterministic ids make retries
	// idempotent.
	ID uuid.UUID
	// Type is the stable event type name, for example "MessageQueued". Never derived by reflection.
	Type string
	// Data is the event body as JSON. It must be valid JSON.
	Data json.RawMessage
	// Metadata travels with the event.
	Metadata Metadata
}

// Metadata is the envelope every event carries.
type Metadata struct {
	TenantID      string `json:"tenant_id,omitempty"`
	Actor         string `json:"actor,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	CausationID   string `json:"causation_id,omitempty"`
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	ID         uuid.UUID
	Stream     string
	Revision   uint64
	Position   Position
	Type       string
	Data       json.RawMessage
	Metadata   Metadata
	RecordedAt time.Time
}

// AppendResult tells where an append landed.
type AppendResult struct {
	// NextExpectedRevision is the stream's last revision after the append (the revision to
	// expect for the next append).
	NextExpectedRevision uint64
	// Position is the global position of the last event written (zero when none was written
	// by an empty append).
	Position Position
	// Existing is true when the append wrote nothing because the whole batch was stored
	// already (the idempotent retry described at Store.Append): the result is the original's.
	// The events stored are the ones with these ids, whose bodies may differ from the batch
	// given. Adapters that cannot tell (esdb: EventStoreDB answers a retry like a write) leave
	// it false.
	Existing bool
}

// Position is a point in the global log. It mirrors EventStoreDB's (commit, prepare) pair:
// positions are ordered by Commit, then Prepare. The zero Position is before the first event.
// Adapters define what the two numbers hold; consumers only store and compare them.
type Position struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
}

// Start is the Position before the first event of the global log.
var Start = Position{}

// Less reports whether p is before q in the global order.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

// IsZero reports whether p is Start.
func (p Position) IsZero() bool { return p == Start }

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Commit, p.Prepare) }

// Direction is the direction of a stream read.
type Direction int

const (
	// Forwards reads from lower to higher revisions.
	Forwards Direction = iota
	// Backwards reads from higher to lower revisions.
	Backwards
)

// End, as the from argument of ReadStream, means the stream's last revision (with Backwards)
// or past the end (with Forwards, which then reads nothing).
const End uint64 = math.MaxUint64

// Filter selects events of the global log. The zero Filter selects every event.
type Filter struct {
	// StreamPrefixes keeps events whose stream starts with one of these prefixes.
	StreamPrefixes []string
	// EventTypes keeps events whose type is one of these.
	EventTypes []string
}

// Match reports whether e passes the filter.
func (f Filter) Match(e RecordedEvent) bool {
	if len(f.StreamPrefixes) > 0 {
		ok := false
		for _, p := range f.StreamPrefixes {
			if len(e.Stream) >= len(p) && e.Stream[:len(p)] == p {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.EventTypes) > 0 {
		for _, t := range f.EventTypes {
			if e.Type == t {
				return true
			}
		}
		return false
	}
	return true
}

// ExpectedRevision is the precondition of an append. Build it with Any, NoStream,
// StreamExists or Exact; the zero value is Any.
type ExpectedRevision struct {
	kind expectKind
	rev  uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectStreamExists
	expectExact
)

var (
	// Any appends whatever state the stream is in.
	Any = ExpectedRevision{kind: expectAny}
	// NoStream appends only if the stream has no events.
	NoStream = ExpectedRevision{kind: expectNoStream}
	// StreamExists appends only if the stream has at least one event.
	StreamExists = ExpectedRevision{kind: expectStreamExists}
)

// Exact appends only if the stream's last revision is rev.
func Exact(rev uint64) ExpectedRevision { return ExpectedRevision{kind: expectExact, rev: rev} }

// IsAny, IsNoStream, IsStreamExists report the variant; Revision reports Exact's revision.
func (e ExpectedRevision) IsAny() bool          { return e.kind == expectAny }
func (e ExpectedRevision) IsNoStream() bool     { return e.kind == expectNoStream }
func (e ExpectedRevision) IsStreamExists() bool { return e.kind == expectStreamExists }

// Revision returns the revision of an Exact expectation and true, or 0 and false.
func (e ExpectedRevision) Revision() (uint64, bool) { return e.rev, e.kind == expectExact }

func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectNoStream:
		return "no-stream"
	case expectStreamExists:
		return "stream-exists"
	case expectExact:
		return fmt.Sprintf("revision %d", e.rev)
	default:
		return "any"
	}
}

// Check reports whether a stream whose last revision is actual (NoRevision when it has no
// events) satisfies e. Adapters use it so that every adapter decides alike.
func (e ExpectedRevision) Check(actual int64) bool {
	switch e.kind {
	case expectNoStream:
		return actual == NoRevision
	case expectStreamExists:
		return actual != NoRevision
	case expectExact:
		return actual != NoRevision && uint64(actual) == e.rev
	default:
		return true
	}
}

// NoRevision is the actual revision of a stream that has no events.
const NoRevision int64 = -1

// Sentinel errors. Match with errors.Is.
var (
	ErrWrongExpectedRevision = errors.New("eventstore: wrong expected revision")
	ErrDuplicateEventID      = errors.New("eventstore: event id already stored elsewhere")
	ErrStreamNotFound        = errors.New("eventstore: stream not found")
	ErrInvalidEvent          = errors.New("eventstore: invalid event")
	ErrClosed                = errors.New("eventstore: store closed")
)

// WrongExpectedRevisionError carries the values of a failed precondition.
type WrongExpectedRevisionError struct {
	Stream   string
	Expected ExpectedRevision
	// Actual is the stream's last revision, or NoRevision if it has no events.
	Actual int64
}

func (e *WrongExpectedRevisionError) Error() string {
	actual := "no stream"
	if e.Actual != NoRevision {
		actual = fmt.Sprintf("revision %d", e.Actual)
	}
	return fmt.Sprintf("eventstore: append to %q: expected %s, stream is at %s", e.Stream, e.Expected, actual)
}

// Is makes errors.Is(err, ErrWrongExpectedRevision) true.
func (e *WrongExpectedRevisionError) Is(target error) bool { return target == ErrWrongExpectedRevision }

// DuplicateEventError reports an event id that is already stored at another place.
type DuplicateEventError struct {
	ID     uuid.UUID
	Stream string // the stream the append targeted
}

func (e *DuplicateEventError) Error() string {
	return fmt.Sprintf("eventstore: append to %q: event id %s is already stored elsewhere", e.Stream, e.ID)
}

// Is makes errors.Is(err, ErrDuplicateEventID) true.
func (e *DuplicateEventError) Is(target error) bool { return target == ErrDuplicateEventID }

// Validate checks a batch before it is appended: a non-empty stream name, non-nil unique ids,
// non-empty types and valid JSON data. Adapters call it first so every adapter rejects alike.
func Validate(stream string, events []EventData) error {
	if stream == "" {
		return fmt.Errorf("%w: empty stream name", ErrInvalidEvent)
	}
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		if e.ID == uuid.Nil {
			return fmt.Errorf("%w: event %d of %q has no id", ErrInvalidEvent, i, stream)
		}
		if _, dup := seen[e.ID]; dup {
			return fmt.Errorf("%w: event id %s appears twice in one batch", ErrInvalidEvent, e.ID)
		}
		seen[e.ID] = struct{}{}
		if e.Type == "" {
			return fmt.Errorf("%w: event %s has no type", ErrInvalidEvent, e.ID)
		}
		if len(e.Data) > 0 && !json.Valid(e.Data) {
			return fmt.Errorf("%w: event %s data is not valid JSON", ErrInvalidEvent, e.ID)
		}
	}
	return nil
}

// Clock returns the current time; adapters take one so that recorded times are testable.
type Clock func() time.Time
