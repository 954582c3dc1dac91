package commands

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
	"github.com/waqueue/waqueue/internal/testwait"
)

// Environment switches of TestConcurrencyInvariants.
const (
	// envSeed overrides the run's seed (the default is fixed, so a run is repeatable in what it
	// asks for; the interleaving is up to the scheduler).
	envSeed = "WAQUEUE_CONCURRENCY_SEED"
	// envUnfenced=1 makes the dispatchers append MessageDispatched with eventstore.Any instead of
	// the expected revision: the G1 fence is gone, and the checker must report violations (the
	// test then fails, which is the point of the switch).
	envUnfenced = "WAQUEUE_UNFENCED_DISPATCH"
	// envUnfencedRetry=1 makes the dispatchers retry a hand-over the transport refused the way
	// the dispatcher did before issue 10.1: look at the link and queue status, then hand the
	// message over again on its first fence. The checker must report violations.
	envUnfencedRetry = "WAQUEUE_UNFENCED_RETRY"
)

// recordingTransport is the WhatsApp stand-in: it records every attempt to hand a message to
// it, with the fence the dispatcher gave and the stream revision it observed at the attempt,
// and refuses every attempt while disconnected (nothing handed over: not connected).
type recordingTransport struct {
	store        eventstore.Store
	disconnected atomic.Bool
	mu           sync.Mutex
	sends        []invariants.Send
}

// handedOver counts the attempts the transport took (not refused).
func (r *recordingTransport) handedOver() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sends {
		if !s.Refused {
			n++
		}
	}
	return n
}

// Send attempts to hand message id over on fence; false when refused (disconnected).
func (r *recordingTransport) Send(ctx context.Context, t *testing.T, connID string, id uuid.UUID, fence int64) bool {
	// Read the stream's head before deciding: everything at or below it was recorded before
	// this attempt, which is what the checker orders the hand-over against.
	evs, err := r.store.ReadStream(ctx, connection.StreamName(connection.Key(tenant, connID)), eventstore.Backwards, eventstore.End, 1)
	if err != nil || len(evs) != 1 {
		t.Errorf("transport: read head: %v", err)
		return false
	}
	refused := r.disconnected.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, invariants.Send{MessageID: id, Order: len(r.sends), Fence: uint64(fence), Observed: evs[0].Revision, Refused: refused})
	return !refused
}

// TestConcurrencyInvariants runs many concurrent enqueuers and broadcasters, two dispatchers
// (each on its own repository, like two instances), and an operator and a transport doing bans,
// lifts, session losses, holds, resumes and clears at random, with a clearing loop completing the
// clears — through several repositories sharing one store, so that the store's optimistic
// concurrency, not an in-process lock, orders them. The invariant checker then verifies G1, G2,
// G3, G5 and G7 over the whole history and every recorded send.
func TestConcurrencyInvariants(t *testing.T) {
	seed := uint64(20261125)
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seed = v
	}
	target := 10_000
	if testing.Short() {
		target = 2_000
	}
	unfenced := os.Getenv(envUnfenced) == "1"
	unfencedRetry := os.Getenv(envUnfencedRetry) == "1"
	t.Logf("seed %d (override with %s), %d messages, unfenced dispatch %v, unfenced retry %v", seed, envSeed, target, unfenced, unfencedRetry)
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			runConcurrency(t, s.open(t), seed, target, unfenced, unfencedRetry)
		})
	}
}

func runConcurrency(t *testing.T, store eventstore.Store, seed uint64, target int, unfenced, unfencedRetry bool) {
	// A generous bound: the run takes well under a minute per store, but the machine is shared.
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	defer cancel()
	const conn = "c-stress"
	opts := RepositoryOptions{MaxAttempts: 1000, RetryBackoff: 200 * time.Microsecond, SnapshotEvery: 500}
	nodes := make([]*handlers, 3)
	for i := range nodes {
		nodes[i] = newHandlers(t, store, opts, SystemClock)
	}
	dispatchers := make([]*handlers, 2)
	for i := range dispatchers {
		dispatchers[i] = newHandlers(t, store, opts, SystemClock)
		dispatchers[i].repo.fence = !unfenced
	}
	nodes[0].registerActive(t, ctx, conn)

	var (
		transport                    = &recordingTransport{store: store}
		queued                       atomic.Int64
		enqueueDone, dispatchersStop atomic.Bool
		stats                        sync.Map // name → *atomic.Int64
		wg, workers, chaos           sync.WaitGroup
	)
	count := func(name string) {
		v, _ := stats.LoadOrStore(name, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	// unexpected reports an error that no correct run produces (refusals are expected).
	unexpected := func(who string, err error) {
		if err == nil || IsRefusal(err) || errors.Is(err, context.Canceled) {
			return
		}
		t.Errorf("%s: %v", who, err)
	}
	rng := func(stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

	// Enqueuers: 1:1 messages (some re-sent with the same key, some with a short TTL) and
	// broadcasts, until target messages were queued.
	for g := range 3 {
		workers.Go(func() {
			r, h := rng(uint64(g)), nodes[g]
			sctx := as(ctx, sender)
			var keys []string
			accepted := map[string]EnqueueMessage{} // key → the request it was accepted with
			for i := 0; queued.Load() < int64(target) && ctx.Err() == nil; i++ {
				switch {
				case r.IntN(10) < 3:
					n := 20 + r.IntN(130)
					rcpt := make([]string, n)
					base := r.IntN(9_000_000)
					for j := range rcpt {
						rcpt[j] = fmt.Sprintf("+49170%07d", base+j)
					}
					res, err := h.broadcast.Handle(sctx, StartBroadcast{ConnectionID: conn, IdempotencyKey: fmt.Sprintf("b-%d-%d", g, i), Recipients: rcpt, Text: "promo"})
					if err == nil {
						queued.Add(int64(res.Count))
						count("broadcasts")
					}
					unexpected("broadcast", err)
				case len(keys) > 0 && r.IntN(4) == 0:
					// A client's retry of an accepted key, usually a recent one: the same request
					// answers the original in any state (also while clearing, held or banned, and
					// after a send or a purge); another request under the key is refused (G5).
					key := keys[max(0, len(keys)-1-r.IntN(50))]
					orig := accepted[key]
					want := connection.MessageIDFor(tenant, conn, key)
					if r.IntN(3) == 0 {
						other := orig
						other.Text = "hello again"
						res, err := h.enqueue.Handle(sctx, other)
						if !errors.Is(err, connection.ErrIdempotencyKeyReused) {
							t.Errorf("enqueue under the used key %s with another text: %+v, %v; want ErrIdempotencyKeyReused", key, res, err)
						}
						count("enqueue keys reused")
						continue
					}
					res, err := h.enqueue.Handle(sctx, orig)
					if err != nil || !res.Replayed || res.MessageID != want {
						t.Errorf("retry of the accepted key %s: %+v, %v; want a replay of %s", key, res, err, want)
					}
					count("enqueue replays")
				default:
					key := fmt.Sprintf("m-%d-%d", g, i)
					var ttl time.Duration
					if r.IntN(10) == 0 {
						ttl = time.Duration(1+r.IntN(5)) * time.Millisecond
					}
					cmd := EnqueueMessage{ConnectionID: conn, IdempotencyKey: key, Recipient: fmt.Sprintf("+49171%07d", r.IntN(9_000_000)), Text: "hello", TTL: ttl}
					res, err := h.enqueue.Handle(sctx, cmd)
					if err == nil && res.Replayed {
						t.Errorf("first enqueue under key %s answered as a replay", key)
					}
					if err == nil {
						queued.Add(1)
						keys = append(keys, key)
						accepted[key] = cmd
					}
					unexpected("enqueue", err)
				}
			}
		})
	}

	// handOver hands a dispatched message to the transport; while it is refused (disconnected),
	// the refusal is recorded (DeferSend) and the retry fenced (RetrySend) after a pause. It
	// reports whether the message was handed over; if not, its end is recorded (not_sent) or a
	// clear recorded it.
	handOver := func(sys context.Context, h *handlers, r *rand.Rand, ref MessageRef, fence int64) bool {
		for {
			if transport.Send(ctx, t, conn, ref.MessageID, fence) {
				return true
			}
			count("refused hand-overs")
			if unfencedRetry { // the dispatcher before issue 10.1
				time.Sleep(time.Duration(500+r.IntN(3000)) * time.Microsecond)
				var ok bool
				_ = h.repo.View(ctx, conn, func(c *connection.Connection) error {
					ok = c.LinkStatus() == connection.LinkStatusActive && c.QueueStatus() == connection.QueueStatusOpen
					return nil
				})
				if !ok {
					_, err := h.failed.Handle(sys, RecordFailed{MessageRef: ref, Code: connection.FailureNotSent})
					unexpected("record not_sent", err)
					return false
				}
				continue
			}
			if _, err := h.deferSend.Handle(sys, DeferSend{MessageRef: ref, Reason: "not_connected"}); err != nil {
				t.Errorf("defer send of %s: %v", ref.MessageID, err)
				return false
			}
			time.Sleep(time.Duration(500+r.IntN(3000)) * time.Microsecond)
			res, err := h.retrySend.Handle(sys, RetrySend{MessageRef: ref})
			switch {
			case err == nil:
				fence = res.Version
				count("fenced retries")
			case errors.Is(err, connection.ErrNotInFlight):
				count("deferred, then failed not_sent by a clear")
				return false
			case IsRefusal(err):
				count("retry refused")
				// A clear may have failed it not_sent meanwhile: refused, or its event id is taken.
				if _, err := h.failed.Handle(sys, RecordFailed{MessageRef: ref, Code: connection.FailureNotSent}); err != nil &&
					!errors.Is(err, connection.ErrNotInFlight) && !errors.Is(err, eventstore.ErrDuplicateEventID) {
					t.Errorf("record not_sent of %s: %v", ref.MessageID, err)
				}
				return false
			default:
				t.Errorf("retry send of %s: %v", ref.MessageID, err)
				return false
			}
		}
	}

	// Dispatchers: dispatch next → transport → record the outcome.
	for g, h := range dispatchers {
		wg.Go(func() {
			r := rng(10 + uint64(g))
			sys := as(ctx, system)
			for !dispatchersStop.Load() && ctx.Err() == nil {
				d, err := h.dispatch.Handle(sys, DispatchNext{ConnectionID: conn})
				if err != nil {
					if errors.Is(err, ErrNotDispatchable) {
						time.Sleep(time.Duration(500+r.IntN(2000)) * time.Microsecond)
					}
					unexpected("dispatch", err)
					continue
				}
				if d.Outcome == DispatchExpired {
					count("expired by dispatch")
					continue
				}
				ref := MessageRef{ConnectionID: conn, MessageID: d.Message.MessageID, Seq: d.Message.Seq}
				if !handOver(sys, h, r, ref, d.Version) {
					continue
				}
				switch n := r.IntN(20); {
				case n == 0:
					_, err = h.failed.Handle(sys, RecordFailed{MessageRef: ref, Code: "not_on_whatsapp"})
				case n == 1:
					_, err = h.unknown.Handle(sys, RecordOutcomeUnknown{MessageRef: ref, Cause: "timeout"})
				default:
					_, err = h.sent.Handle(sys, RecordSent{MessageRef: ref, ServerID: "srv"})
					if err == nil && n == 2 {
						_, err = h.delivered.Handle(sys, RecordDelivered{MessageRef: ref})
					}
				}
				if err != nil && !unfenced {
					t.Errorf("record outcome of %s: %v", ref.MessageID, err)
				}
			}
		})
	}

	// Clearing process: completes every clear, sometimes twice.
	wg.Go(func() {
		r := rng(20)
		h := nodes[1]
		for !dispatchersStop.Load() && ctx.Err() == nil {
			var clr connection.ClearQueueRequested
			var clearing bool
			if err := h.repo.View(ctx, connection.Key(tenant, conn), func(c *connection.Connection) error { clr, clearing = c.CurrentClear(); return nil }); err != nil {
				t.Errorf("view: %v", err)
				return
			}
			if !clearing {
				time.Sleep(time.Millisecond)
				continue
			}
			time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
			for range 1 + r.IntN(2) {
				res, err := h.complete.Handle(as(ctx, system), CompleteClear{ConnectionID: conn, ClearID: clr.ClearID})
				if err != nil {
					t.Errorf("complete clear %s: %v", clr.ClearID, err)
					return
				}
				if res.AlreadyCompleted {
					count("clear completed twice")
				}
			}
		}
	})

	// The network: the transport loses and regains its connection at random, so hand-overs are
	// refused and retried while clears, holds, bans and session losses land (issue 10.1). It
	// stops with the chaos, so that the final steps below see a connected transport.
	chaos.Go(func() {
		r := rng(40)
		for !enqueueDone.Load() && ctx.Err() == nil {
			time.Sleep(time.Duration(1000+r.IntN(8000)) * time.Microsecond)
			if transport.disconnected.Load() {
				transport.disconnected.Store(false)
				count("reconnect")
			} else {
				transport.disconnected.Store(true)
				count("disconnect")
			}
		}
	})

	// Operator and transport events at random.
	chaos.Go(func() {
		r := rng(30)
		var bcasts []uuid.UUID
		for i := 0; !enqueueDone.Load() && ctx.Err() == nil; i++ {
			time.Sleep(time.Duration(5000+r.IntN(20000)) * time.Microsecond)
			h := nodes[r.IntN(len(nodes))]
			op, sys := as(ctx, operator), as(ctx, system)
			var (
				link     connection.LinkStatus
				held     bool
				clearing bool
			)
			if err := h.repo.View(ctx, connection.Key(tenant, conn), func(c *connection.Connection) error {
				link = c.LinkStatus()
				_, held = c.CurrentHold()
				_, clearing = c.CurrentClear()
				return nil
			}); err != nil {
				t.Errorf("view: %v", err)
				return
			}
			var err error
			var what string
			// Recover an impaired connection most of the time, so that messages flow between the
			// disruptions; otherwise disrupt it at random (the state may change meanwhile: every
			// command is still decided on the current state, refusals are expected).
			impaired := link != connection.LinkStatusActive || held
			switch n := r.IntN(100); {
			case impaired && n < 75 && link == connection.LinkStatusBanned:
				what = "lift"
				_, err = h.lift.Handle(sys, LiftBan{ConnectionID: conn, Reason: "expired"})
			case impaired && n < 75 && link == connection.LinkStatusSessionInvalid:
				what = "pair"
				_, err = h.pair.Handle(sys, PairingSucceeded{ConnectionID: conn})
			case impaired && n < 75:
				what = "resume"
				_, err = h.resume.Handle(op, ResumeQueue{ConnectionID: conn})
			case n < 20:
				what = "ban"
				_, err = h.ban.Handle(sys, ReportBan{ConnectionID: conn, Kind: connection.BanTemporary, ExpiresAt: time.Now().Add(time.Hour), ReasonCode: "101"})
			case n < 30:
				what = "session invalidated"
				_, err = h.invalidate.Handle(sys, SessionInvalidated{ConnectionID: conn, Reason: "401"})
			case n < 45:
				what = "hold"
				_, err = h.hold.Handle(op, HoldQueue{ConnectionID: conn})
			case n < 52:
				what = "policy"
				p := connection.OnBanHold
				if r.IntN(2) == 0 {
					p = connection.OnBanResume
				}
				_, err = h.policy.Handle(op, SetOnBanPolicy{ConnectionID: conn, Policy: p})
			case n < 75 && !clearing:
				what = "clear"
				cmd := RequestClear{ConnectionID: conn, IdempotencyKey: fmt.Sprint("clear-", i), Reason: "chaos",
					Then: []connection.ClearThen{{}, connection.ClearThenKeep, connection.ClearThenHold, connection.ClearThenResume, connection.ClearThenResume}[r.IntN(5)]}
				if len(bcasts) > 0 && r.IntN(4) == 0 {
					cmd.BroadcastID = bcasts[r.IntN(len(bcasts))]
				}
				var res RequestClearResult
				res, err = h.requestClear.Handle(op, cmd)
				if err == nil && r.IntN(3) == 0 { // the operator's retry
					again, err2 := h.requestClear.Handle(op, cmd)
					if err2 != nil || again.ClearID != res.ClearID {
						t.Errorf("retried clear: %+v, %v", again, err2)
					}
				}
			default:
				continue
			}
			if err == nil {
				count(what)
			}
			unexpected(what, err)
			if i%20 == 0 {
				bcasts = append(bcasts, connection.BroadcastIDFor(tenant, conn, fmt.Sprintf("b-%d-%d", r.IntN(3), r.IntN(i+1))))
			}
		}
	})

	workers.Wait()
	enqueueDone.Store(true)
	chaos.Wait() // no operator's clear lands in the final steps below, and the network is quiet
	// On a busy machine the random walk may have kept the queue impaired for the whole run (a ban
	// that held it early, with the enqueuers done before any resume): recover it and wait until
	// the dispatchers hand a message over, so that every run exercises sending as well as purging.
	// This waits on the transport's record, not on time.
	{
		transport.disconnected.Store(false)
		h := nodes[2]
		for ctx.Err() == nil && transport.handedOver() == 0 {
			var (
				link    connection.LinkStatus
				held    bool
				pending uint64
			)
			_ = h.repo.View(ctx, connection.Key(tenant, conn), func(c *connection.Connection) error {
				link, pending = c.LinkStatus(), c.Pending()
				_, held = c.CurrentHold()
				return nil
			})
			if pending == 0 {
				break // nothing left to send: the checker's own assertion below speaks
			}
			switch {
			case link == connection.LinkStatusBanned:
				_, _ = h.lift.Handle(as(ctx, system), LiftBan{ConnectionID: conn, Reason: "expired"})
			case link == connection.LinkStatusSessionInvalid:
				_, _ = h.pair.Handle(as(ctx, system), PairingSucceeded{ConnectionID: conn})
			case held:
				_, _ = h.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: conn})
			default:
				time.Sleep(time.Millisecond) // a dispatcher's turn: poll the record again
			}
		}
	}
	// Whatever the random walk did, end with a clear that has something to purge, so that every
	// run exercises purging: the random clears may all have met an empty or impaired queue. Hold
	// the queue, queue a few messages (nothing can dispatch them while held), clear.
	{
		h := nodes[0]
		op := as(ctx, operator)
		for ctx.Err() == nil {
			var clearing bool
			_ = h.repo.View(ctx, connection.Key(tenant, conn), func(c *connection.Connection) error { _, clearing = c.CurrentClear(); return nil })
			if !clearing {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := h.hold.Handle(op, HoldQueue{ConnectionID: conn}); err != nil && !errors.Is(err, connection.ErrAlreadyHeld) {
			t.Errorf("final hold: %v", err)
		}
		for i := range 3 {
			if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: conn, IdempotencyKey: fmt.Sprint("final-", i),
				Recipient: fmt.Sprintf("+49171%07d", i), Text: "final"}); err != nil {
				t.Errorf("final enqueue: %v", err)
			}
		}
		if _, err := h.requestClear.Handle(op, RequestClear{ConnectionID: conn, IdempotencyKey: "final-clear", Reason: "final"}); err != nil {
			t.Errorf("final clear: %v", err)
		} else {
			count("clear")
		}
	}
	// Let the link and queue recover so the dispatchers drain some of what is left.
	transport.disconnected.Store(false)
	h := nodes[2]
	_, _ = h.lift.Handle(as(ctx, system), LiftBan{ConnectionID: conn})
	_, _ = h.pair.Handle(as(ctx, system), PairingSucceeded{ConnectionID: conn})
	_, _ = h.resume.Handle(as(ctx, operator), ResumeQueue{ConnectionID: conn})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		var pending uint64
		_ = h.repo.View(ctx, connection.Key(tenant, conn), func(c *connection.Connection) error { pending = c.Pending(); return nil })
		if pending == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	dispatchersStop.Store(true)
	wg.Wait()

	hist, _ := history(t, ctx, store, conn)
	transport.mu.Lock()
	sends := transport.sends
	transport.mu.Unlock()
	rep := invariants.Check(hist, sends)
	var summary []string
	stats.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d events; queued %d, sends %d, purged %d, expired %d, acknowledged %d, pending %d, in flight %d; %v",
		len(hist), rep.Queued, rep.Sends, rep.Purged, rep.Expired, rep.Acknowledged, len(rep.Pending), len(rep.InFlight), summary)
	if len(rep.Violations) > 0 {
		byKind := map[string]int{}
		for _, v := range rep.Violations {
			byKind[string(v.Guarantee)+" "+string(v.Kind)]++
		}
		t.Errorf("%d violations by kind: %v", len(rep.Violations), byKind)
	}
	for i, v := range rep.Violations {
		if i == 40 {
			t.Errorf("... and %d more violations", len(rep.Violations)-40)
			break
		}
		t.Errorf("violation: %v", v)
	}
	if rep.Queued < target {
		t.Errorf("queued %d messages, want at least %d", rep.Queued, target)
	}
	if rep.Sends == 0 || rep.Purged == 0 {
		t.Errorf("the run exercised too little: %d sends, %d purged", rep.Sends, rep.Purged)
	}
	if len(rep.InFlight) != 0 && !unfenced {
		t.Errorf("%d messages left in flight, but every dispatch recorded its outcome", len(rep.InFlight))
	}
}
