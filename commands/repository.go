package commands

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// SnapshotPrefix starts the name of every snapshot stream. It deliberately does not start with
// connection.StreamPrefix, so subscribers of connection streams never see snapshots.
const SnapshotPrefix = "snapshot-"

// SnapshotEventType is the type of the events of a snapshot stream.
const SnapshotEventType = "ConnectionSnapshot"

// SnapshotStream returns the name of the snapshot stream of connection id:
// "snapshot-connection-<id>".
func SnapshotStream(id string) string { return SnapshotPrefix + connection.StreamName(id) }

// snapshotRecord is the body of a snapshot event.
type snapshotRecord struct {
	// Version is the revision of the connection stream the state includes.
	Version int64           `json:"version"`
	State   json.RawMessage `json:"state"`
}

// RepositoryOptions configures a Repository. The zero value is usable.
type RepositoryOptions struct {
	// CacheSize is how many connection states the in-memory LRU cache keeps. Default 10,000;
	// negative disables the cache (every Update loads from the snapshot and the stream).
	CacheSize int
	// SnapshotEvery writes a snapshot whenever an append takes the stream across a multiple of
	// it. Default 1,000; negative disables snapshots (neither read nor written).
	SnapshotEvery int
	// MaxAttempts bounds the appends of one Update that lose to concurrent writers. Default 10.
	MaxAttempts int
	// RetryBackoff is the base of the jittered pause between attempts. Default 2ms.
	RetryBackoff time.Duration
	// PageSize is how many events one stream read returns while loading. Default 4,096.
	PageSize int
	// Logger reports failed snapshot writes (which never fail a command). Default slog.Default().
	Logger *slog.Logger
}

func (o *RepositoryOptions) setDefaults() {
	if o.CacheSize == 0 {
		o.CacheSize = 10_000
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = 1_000
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 2 * time.Millisecond
	}
	if o.PageSize <= 0 {
		o.PageSize = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Repository loads connection aggregates and appends their decisions: the load → decide →
// append at the expected revision → retry on conflict loop, in one place. It is safe for
// concurrent use. Updates of one connection through one Repository are serialized in process
// (which avoids most conflicts); Updates through other Repositories or processes are ordered by
// the store's optimistic concurrency.
type Repository struct {
	store eventstore.Store
	opts  RepositoryOptions

	mu    sync.Mutex
	lru   *list.List // of *entry, most recently used first
	byID  map[string]*list.Element
	fence bool // false only in tests that show what breaks without the G1 fence
	// appended is the OnAppended callback (nil: none).
	appended atomic.Pointer[func(connID string, events []connection.Event)]
}

// OnAppended sets fn (nil: none) to be called after each append an Update makes, with the
// connection id and the events appended, in order, once they are durable; it runs on the
// appending goroutine while the connection is locked in this Repository, so it must return at
// once and must not call the Repository. It is a hint for in-process listeners (the
// dispatcher starts a connection's loop on it without waiting for the event log to show the
// event): what an event means is still read from the store.
func (r *Repository) OnAppended(fn func(connID string, events []connection.Event)) {
	if fn == nil {
		r.appended.Store(nil)
		return
	}
	r.appended.Store(&fn)
}

// entry is one cached connection. lock (a 1-slot channel, so waiting honours ctx) guards state.
type entry struct {
	id    string
	lock  chan struct{}
	state *connection.Connection // nil: not loaded (or unknown after a failed append)
}

// NewRepository returns a Repository on store.
func NewRepository(store eventstore.Store, opts RepositoryOptions) (*Repository, error) {
	if store == nil {
		return nil, errors.New("commands: NewRepository: nil store")
	}
	opts.setDefaults()
	return &Repository{store: store, opts: opts, lru: list.New(), byID: map[string]*list.Element{}, fence: true}, nil
}

// Decision decides the events of a command on the current state c. It must not mutate or keep
// c, and may be called several times (once per attempt) with newer states. Returning no events
// and no error is an idempotent no-op: nothing is appended.
type Decision func(c *connection.Connection) ([]connection.Event, error)

// Appended describes the outcome of a successful Update.
type Appended struct {
	// Events are the events appended, in order (none for a no-op).
	Events []connection.Event
	// FirstRevision is the stream revision of Events[0].
	FirstRevision uint64
	// Version is the stream's last revision after the Update (-1 for an empty stream).
	Version int64
	// Position is the global position of the last event appended (zero for a no-op).
	Position eventstore.Position
	// Existing is true when the store wrote nothing because events with the same ids were
	// stored at that place already (eventstore.AppendResult.Existing: another node appended the
	// same decision first). Events are then the events decided, not necessarily the ones stored
	// (their ids are equal, their bodies may differ); Position and Version are the stored ones'.
	Existing bool
}

// Update runs decide on the connection's current state and appends its events at the expected
// revision (NoStream for an empty stream), with metadata (tenant, actor, correlation and
// causation ids from ctx) and deterministic ids (connection.EventID). When another writer
// appended first, Update reads the new events and decides again, up to MaxAttempts times with a
// jittered pause, then fails with a *ConflictError. An error of decide, or of the store (for
// example eventstore.ErrDuplicateEventID), is returned as is and nothing is appended. The events
// are durable when Update returns (G6).
func (r *Repository) Update(ctx context.Context, connID string, actor string, decide Decision) (Appended, error) {
	return r.update(ctx, connID, actor, decide, uuid.Nil)
}

// update is Update; a non-nil claim derives every event id from connection.EventID and claim.
//
// Why a claim: deterministic ids make the store treat the same batch appended at the same place
// as a retry of one append ("idempotent success, writes nothing"). Two dispatchers deciding the
// dispatch of the same head on the same state produce the same batch, so without a claim both
// would be told they appended, and both would hand the message to WhatsApp (G5). DispatchNext
// therefore appends with a claim unique to its call: the loser of the race gets a wrong expected
// revision, reloads, and is refused by the domain.
func (r *Repository) update(ctx context.Context, connID string, actor string, decide Decision, claim uuid.UUID) (Appended, error) {
	e, err := r.acquire(ctx, connID)
	if err != nil {
		return Appended{}, err
	}
	defer r.release(e)

	stream := connection.StreamName(connID)
	var lastConflict error
	for attempt := 1; ; attempt++ {
		fresh, err := r.catchUp(ctx, e, lastConflict != nil)
		if err != nil {
			return Appended{}, err
		}
		c := e.state
		events, err := decide(c)
		if (err != nil || len(events) == 0) && !fresh {
			// A refusal or a no-op must not come from a cached state that other writers have
			// moved past (no append would reveal it): read forwards, decide again if needed.
			v := c.Version()
			if err := r.readForwards(ctx, e.id, c); err != nil {
				e.state = nil
				return Appended{}, err
			}
			if c.Version() != v {
				events, err = decide(c)
			}
		}
		if err != nil {
			return Appended{}, err
		}
		if len(events) == 0 {
			return Appended{Version: c.Version()}, nil
		}
		data, err := r.encode(ctx, stream, c, actor, events, claim)
		if err != nil {
			return Appended{}, err
		}
		expected := eventstore.NoStream
		if c.Version() >= 0 {
			expected = eventstore.Exact(uint64(c.Version()))
		}
		if !r.fence {
			expected = eventstore.Any
		}
		res, err := r.store.Append(ctx, stream, expected, data...)
		switch {
		case err == nil && res.Existing:
			// Another writer stored these ids first; its events may differ from ours.
			e.state = nil
			return Appended{Events: events, FirstRevision: uint64(c.Version() + 1), Version: int64(res.NextExpectedRevision),
				Position: res.Position, Existing: true}, nil
		case err == nil:
			first := uint64(c.Version() + 1)
			r.applyAppended(e, events, res)
			r.maybeSnapshot(ctx, e, first, res.NextExpectedRevision)
			if fn := r.appended.Load(); fn != nil {
				(*fn)(connID, events)
			}
			return Appended{Events: events, FirstRevision: first, Version: int64(res.NextExpectedRevision), Position: res.Position}, nil
		case errors.Is(err, eventstore.ErrWrongExpectedRevision):
			lastConflict = err
			if attempt >= r.opts.MaxAttempts {
				return Appended{}, &ConflictError{ConnectionID: connID, Attempts: attempt, Err: err}
			}
			if err := sleep(ctx, r.backoff(attempt)); err != nil {
				return Appended{}, err
			}
		case errors.Is(err, eventstore.ErrDuplicateEventID):
			// A decision taken on a cached state that other writers have moved past can name an
			// event id already stored: ids of events without a natural key derive from the
			// revision they would take, where another writer's event of the same type may be.
			// That is a conflict, not a replay: catch up and decide again. On a current state a
			// duplicate id is the caller's (a replayed enqueue, a clear completed already).
			v := c.Version()
			if rerr := r.readForwards(ctx, e.id, c); rerr != nil {
				e.state = nil
				return Appended{}, err
			}
			if c.Version() == v || attempt >= r.opts.MaxAttempts {
				return Appended{}, err
			}
			lastConflict = err
		default:
			// The append may or may not have been written: forget the state, reload next time.
			e.state = nil
			return Appended{}, fmt.Errorf("commands: append to %q: %w", stream, err)
		}
	}
}

// View calls fn with the connection's current state, read from the store (catching up the cached
// state). fn must not mutate or keep c.
func (r *Repository) View(ctx context.Context, connID string, fn func(c *connection.Connection) error) error {
	e, err := r.acquire(ctx, connID)
	if err != nil {
		return err
	}
	defer r.release(e)
	if _, err := r.catchUp(ctx, e, true); err != nil {
		return err
	}
	return fn(e.state)
}

func (r *Repository) encode(ctx context.Context, stream string, c *connection.Connection, actor string, events []connection.Event, claim uuid.UUID) ([]eventstore.EventData, error) {
	tenant := c.TenantID()
	if reg, ok := events[0].(connection.ConnectionRegistered); ok {
		tenant = reg.TenantID
	}
	md := eventstore.Metadata{
		TenantID:      tenant,
		Actor:         actor,
		CorrelationID: CorrelationIDFromContext(ctx),
		CausationID:   CausationIDFromContext(ctx),
	}
	out := make([]eventstore.EventData, len(events))
	for i, ev := range events {
		typ, body, err := connection.Encode(ev)
		if err != nil {
			return nil, fmt.Errorf("commands: encode %T: %w", ev, err)
		}
		rev := uint64(c.Version() + 1 + int64(i))
		id := connection.EventID(stream, rev, ev)
		if claim != uuid.Nil {
			id = uuid.NewSHA1(claim, id[:])
		}
		out[i] = eventstore.EventData{ID: id, Type: typ, Data: body, Metadata: md}
	}
	return out, nil
}

// applyAppended moves the cached state past the events just appended. If the store put them
// elsewhere than expected (only possible without the fence) or they do not apply, the state is
// dropped and reloaded on next use: the cache never serves a state older than an append.
func (r *Repository) applyAppended(e *entry, events []connection.Event, res eventstore.AppendResult) {
	want := uint64(e.state.Version() + int64(len(events)))
	if res.NextExpectedRevision != want {
		e.state = nil
		return
	}
	for _, ev := range events {
		if err := e.state.Apply(ev); err != nil {
			e.state = nil
			return
		}
	}
}

// catchUp makes e.state current: a cold entry is loaded from the latest snapshot and the events
// after it; a cached one reads the events after its version when force is set (after a conflict,
// and for View). Without force the cached state is used as is: the append's expected revision
// detects any staleness, and Update reads forwards before answering a refusal or a no-op. It
// reports whether the state was read from the store (fresh).
func (r *Repository) catchUp(ctx context.Context, e *entry, force bool) (fresh bool, err error) {
	if e.state == nil {
		c, err := r.loadCold(ctx, e.id)
		if err != nil {
			return false, err
		}
		e.state = c
		return true, nil
	}
	if !force {
		return false, nil
	}
	if err := r.readForwards(ctx, e.id, e.state); err != nil {
		e.state = nil
		return false, err
	}
	return true, nil
}

// loadCold builds a state from the latest usable snapshot plus the events after it.
func (r *Repository) loadCold(ctx context.Context, id string) (*connection.Connection, error) {
	c := connection.New()
	if r.opts.SnapshotEvery > 0 {
		recs, err := r.store.ReadStream(ctx, SnapshotStream(id), eventstore.Backwards, eventstore.End, 1)
		switch {
		case err == nil && len(recs) == 1:
			var rec snapshotRecord
			if json.Unmarshal(recs[0].Data, &rec) == nil {
				if s, err := connection.Restore(rec.State); err == nil && s.Version() == rec.Version {
					c = s
				}
			}
		case err != nil && !errors.Is(err, eventstore.ErrStreamNotFound):
			return nil, fmt.Errorf("commands: read snapshot of %q: %w", id, err)
		}
	}
	if err := r.readForwards(ctx, id, c); err != nil {
		return nil, err
	}
	return c, nil
}

// readForwards applies to c every event of the stream after c.Version().
func (r *Repository) readForwards(ctx context.Context, id string, c *connection.Connection) error {
	stream := connection.StreamName(id)
	for {
		recs, err := r.store.ReadStream(ctx, stream, eventstore.Forwards, uint64(c.Version()+1), r.opts.PageSize)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("commands: read %q: %w", stream, err)
		}
		for _, rec := range recs {
			ev, err := connection.Decode(rec.Type, rec.Data)
			if err != nil {
				return fmt.Errorf("commands: %q revision %d: %w", stream, rec.Revision, err)
			}
			if err := c.Apply(ev); err != nil {
				return fmt.Errorf("commands: %q revision %d: %w", stream, rec.Revision, err)
			}
		}
		if len(recs) < r.opts.PageSize {
			return nil
		}
	}
}

// maybeSnapshot writes a snapshot when the append [first, last] crossed a multiple of
// SnapshotEvery. A failure is logged, never returned: snapshots only speed up loading.
func (r *Repository) maybeSnapshot(ctx context.Context, e *entry, first, last uint64) {
	every := uint64(r.opts.SnapshotEvery)
	// The stream held first events before the append and last+1 after it.
	if r.opts.SnapshotEvery <= 0 || e.state == nil || (last+1)/every == first/every {
		return
	}
	if err := r.writeSnapshot(ctx, e.id, e.state); err != nil {
		r.opts.Logger.WarnContext(ctx, "commands: snapshot not written", "connection", e.id, "version", e.state.Version(), "error", err)
	}
}

func (r *Repository) writeSnapshot(ctx context.Context, id string, c *connection.Connection) error {
	state, err := c.Snapshot()
	if err != nil {
		return err
	}
	body, err := json.Marshal(snapshotRecord{Version: c.Version(), State: state})
	if err != nil {
		return err
	}
	stream := SnapshotStream(id)
	evID := uuid.NewSHA1(connection.Namespace, []byte(stream+"/"+strconv.FormatInt(c.Version(), 10)))
	_, err = r.store.Append(ctx, stream, eventstore.Any, eventstore.EventData{
		ID: evID, Type: SnapshotEventType, Data: body,
		Metadata: eventstore.Metadata{TenantID: c.TenantID(), Actor: connection.SystemActor},
	})
	if errors.Is(err, eventstore.ErrDuplicateEventID) {
		return nil // another writer saved the same version
	}
	return err
}

// acquire returns the locked cache entry of id, creating it if needed.
func (r *Repository) acquire(ctx context.Context, id string) (*entry, error) {
	if err := connection.ValidateKey("connection_id", id); err != nil {
		return nil, err
	}
	r.mu.Lock()
	var e *entry
	if el, ok := r.byID[id]; ok {
		r.lru.MoveToFront(el)
		e = el.Value.(*entry)
	} else {
		e = &entry{id: id, lock: make(chan struct{}, 1)}
		if r.opts.CacheSize > 0 {
			r.byID[id] = r.lru.PushFront(e)
			for r.lru.Len() > r.opts.CacheSize {
				last := r.lru.Back()
				r.lru.Remove(last)
				delete(r.byID, last.Value.(*entry).id)
			}
		}
	}
	r.mu.Unlock()
	select {
	case e.lock <- struct{}{}:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *Repository) release(e *entry) { <-e.lock }

func (r *Repository) backoff(attempt int) time.Duration {
	base := r.opts.RetryBackoff << min(attempt-1, 6)
	return base/2 + rand.N(base)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// eventByID is the optional capability of stores that index event ids (sqlite, postgres): the
// event stored under id, in whichever stream, in one lookup.
type eventByID interface {
	ReadEventByID(ctx context.Context, id uuid.UUID) (eventstore.RecordedEvent, bool, error)
}

// original returns the event of connID's stream whose store id is the natural-key id of probe
// (see findBackwards), with its global position: the event that accepted an idempotency key.
// With a store that indexes ids it is one lookup wherever the event lies; otherwise (esdb) it
// reads at most ReplayScan of the stream's latest events and reports false for an older one.
func (r *Repository) original(ctx context.Context, connID string, probe connection.Event) (connection.Event, eventstore.Position, bool, error) {
	ev, rec, found, err := r.originalRecord(ctx, connID, probe)
	return ev, rec.Position, found, err
}

// originalRecord is original with the stored record (its revision as well as its position).
func (r *Repository) originalRecord(ctx context.Context, connID string, probe connection.Event) (connection.Event, eventstore.RecordedEvent, bool, error) {
	stream := connection.StreamName(connID)
	byID, ok := r.store.(eventByID)
	if !ok {
		return r.findRecordBackwards(ctx, connID, ReplayScan, probe)
	}
	rec, found, err := byID.ReadEventByID(ctx, connection.EventID(stream, 0, probe))
	if err != nil {
		return nil, eventstore.RecordedEvent{}, false, fmt.Errorf("commands: look up %s of %q: %w", probe.EventType(), stream, err)
	}
	if !found || rec.Stream != stream || rec.Type != probe.EventType() {
		return nil, eventstore.RecordedEvent{}, false, nil
	}
	ev, err := connection.Decode(rec.Type, rec.Data)
	if err != nil {
		return nil, eventstore.RecordedEvent{}, false, fmt.Errorf("commands: %q revision %d: %w", stream, rec.Revision, err)
	}
	return ev, rec, true, nil
}

// positionAfter returns the position of the event n revisions after rec in its stream: the
// last event of an append that began with rec and wrote n more (a broadcast's BroadcastStarted
// and its MessageQueued), which is the position the original write was answered with. It
// returns rec's own position when that event is not there (n == 0, or a store that lost it).
func (r *Repository) positionAfter(ctx context.Context, rec eventstore.RecordedEvent, n uint64) (eventstore.Position, error) {
	if n == 0 {
		return rec.Position, nil
	}
	evs, err := r.store.ReadStream(ctx, rec.Stream, eventstore.Forwards, rec.Revision+n, 1)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("commands: read %q at revision %d: %w", rec.Stream, rec.Revision+n, err)
	}
	if len(evs) == 0 || evs[0].Revision != rec.Revision+n {
		return rec.Position, nil
	}
	return evs[0].Position, nil
}

// broadcastEnd returns the position of the last event of the append that recorded broadcast
// b, whose BroadcastStarted is rec: its last BroadcastQueued chunk, found by reading the chunks
// that follow rec until they hold b.Count recipients (at most MaxRecipients/BroadcastChunk
// events); or, in streams written before chunks, the event b.Count revisions after rec (its
// last MessageQueued).
func (r *Repository) broadcastEnd(ctx context.Context, rec eventstore.RecordedEvent, b connection.BroadcastStarted) (eventstore.Position, error) {
	next := rec.Revision + 1
	pos, covered := rec.Position, 0
	for covered < b.Count {
		evs, err := r.store.ReadStream(ctx, rec.Stream, eventstore.Forwards, next, 32)
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("commands: read %q at revision %d: %w", rec.Stream, next, err)
		}
		for _, e := range evs {
			if e.Type != connection.TypeBroadcastQueued {
				if covered == 0 {
					return r.positionAfter(ctx, rec, uint64(b.Count)) // the per-message form
				}
				return pos, nil
			}
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				return eventstore.Position{}, fmt.Errorf("commands: %q revision %d: %w", rec.Stream, e.Revision, err)
			}
			if ev.(connection.BroadcastQueued).BroadcastID != b.BroadcastID {
				return pos, nil
			}
			pos, covered = e.Position, covered+len(ev.(connection.BroadcastQueued).Recipients)
			if covered >= b.Count {
				return pos, nil
			}
		}
		if len(evs) == 0 {
			return pos, nil
		}
		next = evs[len(evs)-1].Revision + 1
	}
	return pos, nil
}

// findBackwards reads the stream from its end towards its start, at most limit events, and
// returns the event whose store id is the natural-key id of probe (connection.EventID of an
// event carrying only the message, broadcast or clear id: such ids do not depend on the
// revision). Only the match is decoded.
func (r *Repository) findBackwards(ctx context.Context, connID string, limit int, probe connection.Event) (connection.Event, bool, error) {
	ev, _, found, err := r.findRecordBackwards(ctx, connID, limit, probe)
	return ev, found, err
}

// findRecordBackwards is findBackwards that also returns the event's record.
func (r *Repository) findRecordBackwards(ctx context.Context, connID string, limit int, probe connection.Event) (connection.Event, eventstore.RecordedEvent, bool, error) {
	stream := connection.StreamName(connID)
	want := connection.EventID(stream, 0, probe)
	from := eventstore.End
	page := min(256, r.opts.PageSize) // replays are usually recent: start small, then grow
	for read := 0; read < limit; page = min(2*page, r.opts.PageSize) {
		n := min(page, limit-read)
		recs, err := r.store.ReadStream(ctx, stream, eventstore.Backwards, from, n)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil, eventstore.RecordedEvent{}, false, nil
		}
		if err != nil {
			return nil, eventstore.RecordedEvent{}, false, fmt.Errorf("commands: read %q: %w", stream, err)
		}
		for _, rec := range recs {
			if rec.ID != want {
				continue
			}
			ev, err := connection.Decode(rec.Type, rec.Data)
			if err != nil {
				return nil, eventstore.RecordedEvent{}, false, fmt.Errorf("commands: %q revision %d: %w", stream, rec.Revision, err)
			}
			return ev, rec, true, nil
		}
		read += len(recs)
		if len(recs) < n || recs[len(recs)-1].Revision == 0 {
			break
		}
		from = recs[len(recs)-1].Revision - 1
	}
	return nil, eventstore.RecordedEvent{}, false, nil
}
