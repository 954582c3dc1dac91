package commands

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	tenant = "tenant-a"
	phone  = "+491701234567"
)

var (
	operator = auth.Principal{TenantID: tenant, ID: "op-1", Role: auth.RoleOperator}
	sender   = auth.Principal{TenantID: tenant, ID: "svc-1", Role: auth.RoleSender}
	system   = SystemPrincipal(tenant)
)

func as(ctx context.Context, p auth.Principal) context.Context { return WithPrincipal(ctx, p) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	return ctx
}

func openSQLite(t testing.TB) eventstore.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t testing.TB) eventstore.Store {
	t.Helper()
	ctx := testCtx(t)
	// Group commit on, as the server runs it.
	st, err := postgres.Open(ctx, pgtest.URL(t), postgres.Options{GroupCommitters: postgres.DefaultGroupCommitters})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// stores are the event stores every store-dependent test runs on.
var stores = []struct {
	name string
	open func(testing.TB) eventstore.Store
}{{"sqlite", openSQLite}, {"postgres", openPostgres}}

// fixedClock returns a clock at a fixed time that tests can move.
type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// handlers is every handler on one repository.
type handlers struct {
	repo         *Repository
	register     *RegisterConnectionHandler
	policy       *SetOnBanPolicyHandler
	sending      *SetSendingPolicyHandler
	pair         *PairingSucceededHandler
	invalidate   *SessionInvalidatedHandler
	ban          *ReportBanHandler
	lift         *LiftBanHandler
	enqueue      *EnqueueMessageHandler
	broadcast    *StartBroadcastHandler
	dispatch     *DispatchNextHandler
	sent         *RecordSentHandler
	delivered    *RecordDeliveredHandler
	read         *RecordReadHandler
	failed       *RecordFailedHandler
	unknown      *RecordOutcomeUnknownHandler
	expire       *ExpireMessageHandler
	hold         *HoldQueueHandler
	resume       *ResumeQueueHandler
	requestClear *RequestClearHandler
	complete     *CompleteClearHandler
	problem      *RecordTransportProblemHandler
	deferSend    *DeferSendHandler
	retrySend    *RetrySendHandler
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newHandlers(t testing.TB, store eventstore.Store, opts RepositoryOptions, now Clock) *handlers {
	t.Helper()
	repo, err := NewRepository(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	idx := &streamIndex{store: store, msgs: map[uint64]QueuedMessage{}, texts: map[string]string{}}
	return &handlers{
		repo:         repo,
		register:     must(NewRegisterConnectionHandler(repo, now)),
		deferSend:    must(NewDeferSendHandler(repo, now)),
		retrySend:    must(NewRetrySendHandler(repo, now)),
		policy:       must(NewSetOnBanPolicyHandler(repo, now)),
		sending:      must(NewSetSendingPolicyHandler(repo, now)),
		pair:         must(NewPairingSucceededHandler(repo, now)),
		invalidate:   must(NewSessionInvalidatedHandler(repo, now)),
		ban:          must(NewReportBanHandler(repo, now)),
		lift:         must(NewLiftBanHandler(repo, now)),
		enqueue:      must(NewEnqueueMessageHandler(repo, now)),
		broadcast:    must(NewStartBroadcastHandler(repo, now)),
		dispatch:     must(NewDispatchNextHandler(repo, idx, now)),
		sent:         must(NewRecordSentHandler(repo, now)),
		delivered:    must(NewRecordDeliveredHandler(repo, now)),
		read:         must(NewRecordReadHandler(repo, now)),
		failed:       must(NewRecordFailedHandler(repo, now)),
		unknown:      must(NewRecordOutcomeUnknownHandler(repo, now)),
		expire:       must(NewExpireMessageHandler(repo, now)),
		hold:         must(NewHoldQueueHandler(repo, now)),
		resume:       must(NewResumeQueueHandler(repo, now)),
		requestClear: must(NewRequestClearHandler(repo, now)),
		complete:     must(NewCompleteClearHandler(repo, now)),
		problem:      must(NewRecordTransportProblemHandler(repo, now)),
	}
}

// registerActive registers connection id in tenant and pairs it.
func (h *handlers) registerActive(t testing.TB, ctx context.Context, id string) {
	t.Helper()
	if _, err := h.register.Handle(as(ctx, operator), RegisterConnection{ConnectionID: id, Phone: phone}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	if _, err := h.pair.Handle(as(ctx, system), PairingSucceeded{ConnectionID: id, JID: "49170@s.whatsapp.net"}); err != nil {
		t.Fatalf("pair %s: %v", id, err)
	}
}

// streamIndex is the test's stand-in for the pending-queue projection: it indexes the
// MessageQueued events of the streams it is asked about, reading forwards on a miss.
type streamIndex struct {
	store eventstore.Store
	mu    sync.Mutex
	next  map[string]uint64
	msgs  map[uint64]QueuedMessage // one connection per index in these tests: keyed by seq
	texts map[string]string        // broadcast id → text
}

func (x *streamIndex) QueuedMessage(ctx context.Context, connID string, seq uint64) (QueuedMessage, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if m, ok := x.msgs[seq]; ok {
		return m, nil
	}
	if x.next == nil {
		x.next = map[string]uint64{}
	}
	recs, err := x.store.ReadStream(ctx, connection.StreamName(connection.Key(tenant, connID)), eventstore.Forwards, x.next[connID], 0)
	if err != nil {
		return QueuedMessage{}, err
	}
	for _, rec := range recs {
		x.next[connID] = rec.Revision + 1
		ev, err := connection.Decode(rec.Type, rec.Data)
		if err != nil {
			return QueuedMessage{}, err
		}
		for _, ev := range connection.Expand(ev) {
			switch e := ev.(type) {
			case connection.BroadcastStarted:
				x.texts[e.BroadcastID.String()] = e.Text
			case connection.MessageQueued:
				text := e.Text
				if text == "" {
					text = x.texts[e.BroadcastID.String()]
				}
				x.msgs[e.Seq] = QueuedMessage{MessageID: e.MessageID, Seq: e.Seq, Recipient: e.Recipient, Text: text, BroadcastID: e.BroadcastID, ExpiresAt: e.ExpiresAt}
			}
		}
	}
	if m, ok := x.msgs[seq]; ok {
		return m, nil
	}
	return QueuedMessage{}, fmt.Errorf("no message queued at seq %d", seq)
}

// history reads and decodes the whole stream of connection id.
func history(t testing.TB, ctx context.Context, store eventstore.Store, id string) ([]invariants.Recorded, []eventstore.RecordedEvent) {
	t.Helper()
	recs, err := store.ReadStream(ctx, connection.StreamName(connection.Key(tenant, id)), eventstore.Forwards, 0, 0)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := make([]invariants.Recorded, len(recs))
	for i, rec := range recs {
		ev, err := connection.Decode(rec.Type, rec.Data)
		if err != nil {
			t.Fatalf("revision %d: %v", rec.Revision, err)
		}
		out[i] = invariants.Recorded{Revision: rec.Revision, Event: ev}
	}
	return out, recs
}

// countTypes counts the events of each type in a history.
func countTypes(h []invariants.Recorded) map[string]int {
	n := map[string]int{}
	for _, r := range h {
		n[r.Event.EventType()]++
	}
	return n
}

func sqliteOpen(ctx context.Context, dir string) (*sqlite.Store, error) {
	return sqlite.Open(ctx, filepath.Join(dir, "events.db"), sqlite.Options{})
}
