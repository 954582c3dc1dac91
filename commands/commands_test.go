package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// call is one command run against connection id.
type call struct {
	name  string
	right auth.Right
	run   func(ctx context.Context, h *handlers, id string) error
}

func calls() []call {
	ref := func(id string) MessageRef { return MessageRef{ConnectionID: id, MessageID: uuid.New(), Seq: 1} }
	return []call{
		{"register", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.register.Handle(ctx, RegisterConnection{ConnectionID: id, Phone: phone})
			return err
		}},
		{"set policy", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.policy.Handle(ctx, SetOnBanPolicy{ConnectionID: id, Policy: connection.OnBanResume})
			return err
		}},
		{"set sending policy", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			cap := 10
			_, err := h.sending.Handle(ctx, SetSendingPolicy{ConnectionID: id, Patch: connection.SendingPolicyPatch{DailyCap: &cap}})
			return err
		}},
		{"pairing succeeded", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.pair.Handle(ctx, PairingSucceeded{ConnectionID: id})
			return err
		}},
		{"session invalidated", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.invalidate.Handle(ctx, SessionInvalidated{ConnectionID: id, Reason: "401"})
			return err
		}},
		{"report ban", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.ban.Handle(ctx, ReportBan{ConnectionID: id, Kind: connection.BanPermanent, ReasonCode: "406"})
			return err
		}},
		{"lift ban", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.lift.Handle(ctx, LiftBan{ConnectionID: id})
			return err
		}},
		{"enqueue", auth.MessageSend, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.enqueue.Handle(ctx, EnqueueMessage{ConnectionID: id, IdempotencyKey: "k", Recipient: "+491709999999", Text: "hi"})
			return err
		}},
		{"start broadcast", auth.BroadcastMgmt, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.broadcast.Handle(ctx, StartBroadcast{ConnectionID: id, IdempotencyKey: "b", Recipients: []string{"+491709999999"}, Text: "hi"})
			return err
		}},
		{"dispatch next", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.dispatch.Handle(ctx, DispatchNext{ConnectionID: id})
			return err
		}},
		{"record sent", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.sent.Handle(ctx, RecordSent{MessageRef: ref(id)})
			return err
		}},
		{"record delivered", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.delivered.Handle(ctx, RecordDelivered{MessageRef: ref(id)})
			return err
		}},
		{"record read", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.read.Handle(ctx, RecordRead{MessageRef: ref(id)})
			return err
		}},
		{"record failed", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.failed.Handle(ctx, RecordFailed{MessageRef: ref(id), Code: "x"})
			return err
		}},
		{"record outcome unknown", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.unknown.Handle(ctx, RecordOutcomeUnknown{MessageRef: ref(id), Cause: "timeout"})
			return err
		}},
		{"defer send", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.deferSend.Handle(ctx, DeferSend{MessageRef: ref(id), Reason: "not_connected"})
			return err
		}},
		{"retry send", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.retrySend.Handle(ctx, RetrySend{MessageRef: ref(id)})
			return err
		}},
		{"expire", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.expire.Handle(ctx, ExpireMessage{ConnectionID: id, MessageID: uuid.New(), Seq: 1, ExpiresAt: t0})
			return err
		}},
		{"hold", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.hold.Handle(ctx, HoldQueue{ConnectionID: id})
			return err
		}},
		{"resume", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.resume.Handle(ctx, ResumeQueue{ConnectionID: id})
			return err
		}},
		{"request clear", auth.ConnectionEdit, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.requestClear.Handle(ctx, RequestClear{ConnectionID: id, IdempotencyKey: "c", Reason: "ban"})
			return err
		}},
		{"complete clear", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.complete.Handle(ctx, CompleteClear{ConnectionID: id, ClearID: uuid.New()})
			return err
		}},
		{"record transport problem", auth.System, func(ctx context.Context, h *handlers, id string) error {
			_, err := h.problem.Handle(ctx, RecordTransportProblem{ConnectionID: id, Kind: connection.ProblemStreamReplaced})
			return err
		}},
	}
}

// lacking returns a principal of tenant without right (every right but admin is lacked by some
// role; admin by every role but admin; auth.System by every role, admin first).
func lacking(right auth.Right) auth.Principal {
	for _, r := range auth.Roles() {
		if !r.Grants(right) {
			return auth.Principal{TenantID: tenant, ID: "p-" + r.String(), Role: r}
		}
	}
	panic("every role grants " + right.String())
}

func streamLen(t *testing.T, ctx context.Context, store eventstore.Store, id string) int {
	t.Helper()
	h, _ := history(t, ctx, store, id)
	return len(h)
}

func TestAuthorization(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	clock := &fixedClock{now: t0}
	h := newHandlers(t, store, RepositoryOptions{}, clock.Now)
	h.registerActive(t, ctx, "c-1")
	before := streamLen(t, ctx, store, "c-1")

	other := auth.Principal{TenantID: "tenant-b", ID: "admin-b", Role: auth.RoleAdmin}
	for _, c := range calls() {
		t.Run(c.name, func(t *testing.T) {
			p := lacking(c.right)
			err := c.run(as(ctx, p), h, "c-1")
			if !errors.Is(err, auth.ErrForbidden) {
				t.Errorf("role %s lacking %s: err = %v, want auth.ErrForbidden", p.Role, c.right, err)
			}
			if err := c.run(ctx, h, "c-1"); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("no principal: err = %v, want ErrUnauthenticated", err)
			}
			if c.name == "register" {
				// Ids are scoped to the tenant (G9): a third tenant registers the id that tenant-a
				// holds as its own, independent connection; only a second try in the same
				// tenant is refused. (tenant-b must not get one: it checks not-found below.)
				third := auth.Principal{TenantID: "tenant-c", ID: "admin-c", Role: auth.RoleAdmin}
				if err := c.run(as(ctx, third), h, "c-1"); err != nil {
					t.Errorf("another tenant registering a taken id: err = %v, want success", err)
				}
				if err := c.run(as(ctx, third), h, "c-1"); !errors.Is(err, connection.ErrAlreadyRegistered) {
					t.Errorf("registering an id twice in one tenant: err = %v, want ErrAlreadyRegistered", err)
				}
				if err := c.run(as(ctx, operator), h, "c-1"); !errors.Is(err, connection.ErrAlreadyRegistered) {
					t.Errorf("registering an id twice in one tenant: err = %v, want ErrAlreadyRegistered", err)
				}
				return
			}
			// Another tenant's connection answers exactly like a missing one (G9), also to
			// another tenant's system principal.
			other := other
			if c.right == auth.System {
				other = SystemPrincipal("tenant-b")
			}
			errOther := c.run(as(ctx, other), h, "c-1")
			errMissing := c.run(as(ctx, other), h, "c-missing")
			var nf1, nf2 *NotFoundError
			if !errors.As(errOther, &nf1) || !errors.As(errMissing, &nf2) {
				t.Fatalf("other tenant: err = %v; missing: err = %v; want *NotFoundError for both", errOther, errMissing)
			}
			if nf1.ConnectionID != "c-1" || fmt.Sprint(errMissing) != fmt.Sprint(&NotFoundError{ConnectionID: "c-missing"}) {
				t.Errorf("not-found errors differ in more than the id: %v / %v", errOther, errMissing)
			}
		})
	}
	if after := streamLen(t, ctx, store, "c-1"); after != before {
		t.Fatalf("refused commands wrote %d events", after-before)
	}
	if n := streamLen(t, ctx, store, "c-missing"); n != 0 {
		t.Fatalf("refused commands created a stream of %d events", n)
	}
}

func TestConstructorsRefuseNil(t *testing.T) {
	if _, err := NewRepository(nil, RepositoryOptions{}); err == nil {
		t.Error("NewRepository(nil) succeeded")
	}
	repo := must(NewRepository(openSQLite(t), RepositoryOptions{}))
	errs := []error{
		second(NewRegisterConnectionHandler(nil, SystemClock)), second(NewEnqueueMessageHandler(repo, nil)),
		second(NewDispatchNextHandler(repo, nil, SystemClock)), second(NewCompleteClearHandler(nil, SystemClock)),
		second(NewRecordSentHandler(repo, nil)), second(NewStartBroadcastHandler(nil, nil)),
		second(NewCommandBus(nil, nil)), second(NewDeferSendHandler(nil, SystemClock)), second(NewRetrySendHandler(repo, nil)),
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("constructor %d accepted a nil dependency", i)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestEnqueueIsIdempotent(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			h.registerActive(t, ctx, "c-1")
			cmd := EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "order-7", Recipient: "+491709999999", Text: "hi"}
			first, err := h.enqueue.Handle(as(ctx, sender), cmd)
			if err != nil {
				t.Fatal(err)
			}
			if first.Replayed || first.Seq != 1 || first.Position.IsZero() {
				t.Fatalf("first enqueue = %+v, want seq 1, not replayed, a position", first)
			}
			// Another message in between, then the retry through a cold repository too.
			if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "other", Recipient: "+491709999998", Text: "x"}); err != nil {
				t.Fatal(err)
			}
			cold := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0.Add(time.Minute)}).Now)
			for _, hh := range []*handlers{h, cold} {
				again, err := hh.enqueue.Handle(as(ctx, sender), cmd)
				if err != nil {
					t.Fatal(err)
				}
				if !again.Replayed || again.MessageID != first.MessageID || again.Seq != first.Seq {
					t.Fatalf("retry = %+v, want replay of %s at seq %d", again, first.MessageID, first.Seq)
				}
			}
			hist, _ := history(t, ctx, store, "c-1")
			if n := countTypes(hist)[connection.TypeMessageQueued]; n != 2 {
				t.Fatalf("%d MessageQueued, want 2", n)
			}
		})
	}
}

func TestClearIsIdempotentAndCompletesOnce(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			h.registerActive(t, ctx, "c-1")
			for i := range 3 {
				if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			cmd := RequestClear{ConnectionID: "c-1", IdempotencyKey: "clear-1", Reason: "banned mid-broadcast"}
			req, err := h.requestClear.Handle(as(ctx, operator), cmd)
			if err != nil {
				t.Fatal(err)
			}
			if req.Replayed || req.Requested.PurgeCount != 3 || req.Requested.ClearID != req.ClearID {
				t.Fatalf("request = %+v, want 3 purged", req)
			}
			again, err := h.requestClear.Handle(as(ctx, operator), cmd)
			if err != nil || !again.Replayed || again.ClearID != req.ClearID || again.Requested.PurgeCount != 3 {
				t.Fatalf("retried request = %+v, %v; want replay of %s", again, err, req.ClearID)
			}
			// G2 while clearing.
			_, err = h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "late", Recipient: "+491709999999", Text: "x"})
			if code, _ := connection.ErrorCode(err); code != connection.CodeQueueClearing {
				t.Fatalf("enqueue while clearing: err = %v, want code %s", err, connection.CodeQueueClearing)
			}
			done, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: req.ClearID})
			if err != nil || done.AlreadyCompleted || done.Cleared.PurgedCount != 3 {
				t.Fatalf("complete = %+v, %v", done, err)
			}
			// Called again (the clearing process restarted): the same report, nothing written.
			for _, hh := range []*handlers{h, newHandlers(t, store, RepositoryOptions{}, SystemClock)} {
				twice, err := hh.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: req.ClearID})
				if err != nil || !twice.AlreadyCompleted || twice.Cleared.ClearID != req.ClearID || twice.Cleared.PurgedCount != 3 {
					t.Fatalf("second complete = %+v, %v; want the recorded report", twice, err)
				}
			}
			// A request with the same key after completion is a replay too.
			late, err := h.requestClear.Handle(as(ctx, operator), cmd)
			if err != nil || !late.Replayed || late.Requested.PurgeCount != 3 {
				t.Fatalf("request after completion = %+v, %v; want replay", late, err)
			}
			hist, _ := history(t, ctx, store, "c-1")
			n := countTypes(hist)
			if n[connection.TypeClearQueueRequested] != 1 || n[connection.TypeQueueCleared] != 1 {
				t.Fatalf("events %v, want exactly one ClearQueueRequested and one QueueCleared", n)
			}
			// A never-requested clear is refused.
			if _, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: "c-1", ClearID: uuid.New()}); !errors.Is(err, connection.ErrNoClearInProgress) {
				t.Fatalf("complete of an unknown clear: err = %v", err)
			}
		})
	}
}

func TestFailedCommandWritesNothing(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
	h.registerActive(t, ctx, "c-1")
	before := streamLen(t, ctx, store, "c-1")
	failing := []error{
		second(h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "not a phone", Text: "x"})),
		second(h.broadcast.Handle(as(ctx, sender), StartBroadcast{ConnectionID: "c-1", IdempotencyKey: "b", Recipients: []string{"+491709999999", "bad"}, Text: "x"})),
		second(h.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: "c-1"})),
		second(h.lift.Handle(as(ctx, system), LiftBan{ConnectionID: "c-1"})),
		second(h.register.Handle(as(ctx, operator), RegisterConnection{ConnectionID: "c-1", Phone: phone})),
		second(h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", Reason: "no key"})),
	}
	for i, err := range failing {
		if _, ok := connection.ErrorCode(err); !ok {
			t.Errorf("command %d: err = %v, want a domain refusal", i, err)
		}
	}
	var de *NotDispatchableError
	if _, err := h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"}); !errors.As(err, &de) || de.Code != CodeNothingToDispatch || !errors.Is(err, ErrNothingToDispatch) {
		t.Errorf("dispatch of an empty queue: err = %v, want nothing to dispatch", err)
	}
	if after := streamLen(t, ctx, store, "c-1"); after != before {
		t.Fatalf("failed commands wrote %d events", after-before)
	}
}

// TestRetriesOnConflict runs concurrent writers through separate repositories (as separate
// processes would): every enqueue must land, each at a distinct Seq, after retrying on conflict.
func TestRetriesOnConflict(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			const writers, each = 6, 15
			hs := make([]*handlers, writers)
			for i := range hs {
				hs[i] = newHandlers(t, store, RepositoryOptions{MaxAttempts: 200, RetryBackoff: time.Millisecond}, SystemClock)
			}
			hs[0].registerActive(t, ctx, "c-1")
			var wg sync.WaitGroup
			var seqs sync.Map
			var failures atomic.Int32
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						r, err := hs[w].enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprintf("%d-%d", w, i), Recipient: "+491709999999", Text: "x"})
						if err != nil {
							t.Errorf("writer %d: %v", w, err)
							failures.Add(1)
							return
						}
						if _, dup := seqs.LoadOrStore(r.Seq, r.MessageID); dup {
							t.Errorf("seq %d given twice", r.Seq)
						}
					}
				})
			}
			wg.Wait()
			hist, _ := history(t, ctx, store, "c-1")
			if n := countTypes(hist)[connection.TypeMessageQueued]; n != writers*each {
				t.Fatalf("%d MessageQueued, want %d", n, writers*each)
			}
			// Every repository's cache saw or catches up to the same state.
			for i, h := range hs {
				var last uint64
				if err := h.repo.View(ctx, connection.Key(tenant, "c-1"), func(c *connection.Connection) error { last = c.LastSeq(); return nil }); err != nil {
					t.Fatal(err)
				}
				if last != writers*each {
					t.Fatalf("repository %d sees last seq %d, want %d", i, last, writers*each)
				}
			}
		})
	}
}

func TestConflictGivesUpAfterMaxAttempts(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{MaxAttempts: 3, RetryBackoff: time.Microsecond}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	other := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	attempts := 0
	_, err := h.repo.Update(ctx, connection.Key(tenant, "c-1"), "test", func(c *connection.Connection) ([]connection.Event, error) {
		attempts++
		// Another writer appends between every load and append.
		if _, err := other.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1"}); err != nil {
			if _, err := other.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: "c-1"}); err != nil {
				t.Fatal(err)
			}
		}
		return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: connection.OnBanResume, Actor: "test"}, t0)
	})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Attempts != 3 || attempts != 3 || !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("err = %v after %d attempts, want *ConflictError after 3", err, attempts)
	}
}

func TestMetadataOnEveryEvent(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	cctx := WithCausationID(WithCorrelationID(as(ctx, operator), "corr-1"), "cause-1")
	if _, err := h.hold.Handle(cctx, HoldQueue{ConnectionID: "c-1", Note: "n"}); err != nil {
		t.Fatal(err)
	}
	_, recs := history(t, ctx, store, "c-1")
	last := recs[len(recs)-1]
	want := eventstore.Metadata{TenantID: tenant, Actor: operator.ID, CorrelationID: "corr-1", CausationID: "cause-1"}
	if last.Metadata != want {
		t.Fatalf("metadata = %+v, want %+v", last.Metadata, want)
	}
	for _, r := range recs {
		if r.Metadata.TenantID != tenant || r.Metadata.Actor == "" {
			t.Fatalf("revision %d metadata %+v lacks tenant or actor", r.Revision, r.Metadata)
		}
	}
}

// TestDispatchFlow dispatches, expires and records outcomes, and checks that a stale dispatcher
// (another repository whose cache predates a clear) cannot dispatch a purged message (G1).
func TestDispatchFlow(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	clock := &fixedClock{now: t0}
	h := newHandlers(t, store, RepositoryOptions{}, clock.Now)
	h.registerActive(t, ctx, "c-1")
	for i, ttl := range []time.Duration{0, time.Minute, 0} {
		if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: fmt.Sprint("m", i), TTL: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
	if err != nil || d.Outcome != DispatchSend || d.Message.Seq != 1 || d.Message.Text != "m0" {
		t.Fatalf("dispatch = %+v, %v; want seq 1 to send", d, err)
	}
	if _, err := h.sent.Handle(as(ctx, system), RecordSent{MessageRef: MessageRef{ConnectionID: "c-1", MessageID: d.Message.MessageID, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sent.Handle(as(ctx, system), RecordSent{MessageRef: MessageRef{ConnectionID: "c-1", MessageID: d.Message.MessageID, Seq: 1}}); !errors.Is(err, connection.ErrNotInFlight) {
		t.Fatalf("second sent: err = %v, want ErrNotInFlight", err)
	}
	clock.mu.Lock()
	clock.now = t0.Add(2 * time.Minute)
	clock.mu.Unlock()
	d, err = h.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
	if err != nil || d.Outcome != DispatchExpired || d.Message.Seq != 2 {
		t.Fatalf("dispatch of the expired head = %+v, %v; want expired seq 2", d, err)
	}
	// A second dispatcher warms its cache, then a clear lands through the first.
	stale := newHandlers(t, store, RepositoryOptions{}, clock.Now)
	if err := stale.repo.View(ctx, connection.Key(tenant, "c-1"), func(*connection.Connection) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := h.requestClear.Handle(as(ctx, operator), RequestClear{ConnectionID: "c-1", IdempotencyKey: "c", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	_, err = stale.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
	if !errors.Is(err, connection.ErrQueueClearing) || !errors.Is(err, ErrNotDispatchable) {
		t.Fatalf("stale dispatcher after a clear: err = %v, want not dispatchable (queue clearing)", err)
	}
	hist, _ := history(t, ctx, store, "c-1")
	if n := countTypes(hist)[connection.TypeMessageDispatched]; n != 1 {
		t.Fatalf("%d MessageDispatched, want 1 (the purged seq 3 must never be dispatched)", n)
	}
}

// TestTwoDispatchersNeverShareAMessage: two dispatchers (separate repositories, like two
// instances) whose caches hold the same state decide the same dispatch. The store would take
// the second identical batch for a retry of the first and report success to both; the
// per-call claim makes the second lose the append, reload and take the next message (G5).
func TestTwoDispatchersNeverShareAMessage(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			a := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			b := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			a.registerActive(t, ctx, "c-1")
			for i := range 2 {
				if _, err := a.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			for _, h := range []*handlers{a, b} {
				if err := h.repo.View(ctx, connection.Key(tenant, "c-1"), func(*connection.Connection) error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
			da, err := a.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
			if err != nil {
				t.Fatal(err)
			}
			db, err := b.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
			if err != nil {
				t.Fatal(err)
			}
			if da.Message.MessageID == db.Message.MessageID || da.Message.Seq != 1 || db.Message.Seq != 2 {
				t.Fatalf("dispatcher a got seq %d (%s), b got seq %d (%s): want 1 and 2", da.Message.Seq, da.Message.MessageID, db.Message.Seq, db.Message.MessageID)
			}
		})
	}
}

// TestTwoRetriesOfOneDeferredSend: a deferred message's retry is fenced once. Two nodes (each
// with its own cached state) deciding the same retry: one appends MessageSendRetried, the other
// is refused, so only one may hand the message over (G1, G5). The fence of the winner is the
// stream revision of its MessageSendRetried.
func TestTwoRetriesOfOneDeferredSend(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			a := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			b := newHandlers(t, store, RepositoryOptions{}, SystemClock)
			a.registerActive(t, ctx, "c-1")
			if _, err := a.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "x"}); err != nil {
				t.Fatal(err)
			}
			d, err := a.dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
			if err != nil {
				t.Fatal(err)
			}
			ref := MessageRef{ConnectionID: "c-1", MessageID: d.Message.MessageID, Seq: d.Message.Seq}
			if _, err := a.retrySend.Handle(as(ctx, system), RetrySend{MessageRef: ref}); !errors.Is(err, connection.ErrNotInFlight) {
				t.Fatalf("retry before any refusal: %v, want ErrNotInFlight", err)
			}
			if _, err := a.deferSend.Handle(as(ctx, system), DeferSend{MessageRef: ref, Reason: "not_connected"}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.deferSend.Handle(as(ctx, system), DeferSend{MessageRef: ref, Reason: "not_connected"}); !errors.Is(err, connection.ErrNotInFlight) {
				t.Fatalf("second deferral: %v, want ErrNotInFlight", err)
			}
			for _, h := range []*handlers{a, b} { // both caches at the deferral
				if err := h.repo.View(ctx, connection.Key(tenant, "c-1"), func(*connection.Connection) error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
			var (
				wg   sync.WaitGroup
				res  [2]Result
				errs [2]error
			)
			for i, h := range []*handlers{a, b} {
				wg.Go(func() { res[i], errs[i] = h.retrySend.Handle(as(ctx, system), RetrySend{MessageRef: ref}) })
			}
			wg.Wait()
			won := 0
			for i := range errs {
				switch {
				case errs[i] == nil:
					won++
					hist, _ := history(t, ctx, store, "c-1")
					if r, ok := hist[res[i].Version].Event.(connection.MessageSendRetried); !ok || r.MessageID != ref.MessageID || r.Attempt != 2 {
						t.Fatalf("revision %d holds %#v, want the MessageSendRetried (attempt 2)", res[i].Version, hist[res[i].Version].Event)
					}
				case !errors.Is(errs[i], connection.ErrNotInFlight):
					t.Fatalf("losing retry: %v, want ErrNotInFlight", errs[i])
				}
			}
			if won != 1 {
				t.Fatalf("%d retries fenced, want exactly 1 (errors %v)", won, errs)
			}
		})
	}
}

// TestRefusalNeverFromStaleCache: a repository whose cache predates another writer's events
// must not refuse (or no-op) on the stale state: an operator resumes through node b a queue
// that node a held after b cached it.
func TestRefusalNeverFromStaleCache(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	a := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	b := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	a.registerActive(t, ctx, "c-1")
	if err := b.repo.View(ctx, connection.Key(tenant, "c-1"), func(*connection.Connection) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: "c-1"}); err != nil {
		t.Fatalf("resume through a node with a stale cache: %v", err)
	}
	if _, err := b.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: "c-1"}); !errors.Is(err, connection.ErrNotHeld) {
		t.Fatalf("second resume: err = %v, want ErrNotHeld", err)
	}
}

// countingMessages counts the reads of the QueuedMessages port it wraps.
type countingMessages struct {
	QueuedMessages
	reads atomic.Int64
}

func (c *countingMessages) QueuedMessage(ctx context.Context, connID string, seq uint64) (QueuedMessage, error) {
	c.reads.Add(1)
	return c.QueuedMessages.QueuedMessage(ctx, connID, seq)
}

// DispatchNext.Head stands in for the read of the head when it names the head's seq (the
// dispatcher reads it ahead, during the pacing wait); a head of another seq is ignored.
func TestDispatchNextTakesTheHeadGiven(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	var ids []uuid.UUID
	for i := range 3 {
		r, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.MessageID)
	}
	port := &countingMessages{QueuedMessages: must(h.dispatch.messages, nil)}
	dispatch := must(NewDispatchNextHandler(h.repo, port, SystemClock))

	given := QueuedMessage{MessageID: ids[0], Seq: 1, Recipient: "+491709999999", Text: "m0"}
	d, err := dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1", Head: given})
	if err != nil || d.Message != given || port.reads.Load() != 0 {
		t.Fatalf("dispatch with the head given = %+v, %v after %d reads; want the given message, no read", d.Message, err, port.reads.Load())
	}
	// A head of another seq than the queue's (2): read from the port.
	d, err = dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1", Head: QueuedMessage{MessageID: ids[2], Seq: 3, Text: "m2"}})
	if err != nil || d.Message.Seq != 2 || d.Message.Text != "m1" || port.reads.Load() != 1 {
		t.Fatalf("dispatch with another seq given = %+v, %v after %d reads; want seq 2 (m1) read once", d.Message, err, port.reads.Load())
	}
	hist, _ := history(t, ctx, store, "c-1")
	var got []uuid.UUID
	for _, r := range hist {
		if d, ok := r.Event.(connection.MessageDispatched); ok {
			got = append(got, d.MessageID)
		}
	}
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("dispatched %v, want %v", got, ids[:2])
	}
}

// A DispatchNext the domain refuses whatever the head (a held queue, a link not active, a
// stale epoch) reads no message: at 10,000 connections, held loops woken by their broadcasts
// each read their window through the 32-connection pool only to be refused (bench dispatch's
// RSS peak, benchmarks-history.md 2026-12-02). A queue resumed reads and dispatches again.
func TestDispatchNextRefusedReadsNoMessage(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: "k", Recipient: "+491709999999", Text: "m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1"}); err != nil {
		t.Fatal(err)
	}
	port := &countingMessages{QueuedMessages: must(h.dispatch.messages, nil)}
	dispatch := must(NewDispatchNextHandler(h.repo, port, SystemClock))
	var nd *NotDispatchableError
	_, err := dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
	if !errors.As(err, &nd) || nd.Code != connection.CodeQueueHeld || !errors.Is(err, connection.ErrQueueHeld) || port.reads.Load() != 0 {
		t.Fatalf("dispatch on a held queue: err = %v after %d reads; want queue_held, no read", err, port.reads.Load())
	}
	if _, err := h.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: "c-1"}); err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.Handle(as(ctx, system), DispatchNext{ConnectionID: "c-1"})
	if err != nil || d.Message.Seq != 1 || port.reads.Load() != 1 {
		t.Fatalf("dispatch after the resume = %+v, %v after %d reads; want seq 1 read once", d.Message, err, port.reads.Load())
	}
}
